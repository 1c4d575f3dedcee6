//! Typed SPSC and MPMC rings between processes, over shm-core segments.
//!
//! Work in progress: the rings arrive with their own issue. The crate builds so the
//! workspace layout is final.

pub use shm_core;
pub use shm_sync;
