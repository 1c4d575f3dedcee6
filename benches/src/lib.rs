//! Criterion benches of shmring live in `benches/benches/`; they arrive with the bench issue.
