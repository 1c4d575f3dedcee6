//! Cross-process synchronisation primitives that live inside a shm-core segment.
//!
//! Work in progress: the primitives (spinlock, robust futex mutex, condvar, semaphore,
//! seqlock) arrive with their own issue. The crate builds so the workspace layout is final.

pub use shm_core;
