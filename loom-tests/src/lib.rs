//! Loom models of shmring's algorithms live in `tests/`; build them with
//! `RUSTFLAGS="--cfg shm_loom"`.
