//! Loom models of shmring's algorithms (in `tests/models.rs`) and their *broken twins*.
//!
//! A loom model that passes is evidence only if it would fail on a bug. So every model has a
//! twin: a small copy of the algorithm under test with one planted bug (an ordering
//! weakened to `Relaxed`, a missing wake, a missing re-check), run through the same model
//! body, which loom must reject. The twins live here, in the test crate, never in the
//! shipped crates.
//!
//! Build and run (see the README's Development section):
//!
//! ```text
//! RUSTFLAGS="--cfg shm_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p loom-tests --release --target-dir target/loom
//! ```

#[cfg(shm_loom)]
pub mod twins;
