//! Cross-process synchronisation primitives that live inside a shared-memory mapping.
//!
//! Every primitive is `#[repr(C)]`, made of fixed-width atomics (plus a `Pod` payload),
//! valid when zeroed, and built in place inside a [`shm_core`] segment, so any process that
//! maps the segment can use it:
//!
//! - [`SpinLock`]: test-and-test-and-set with backoff; notices a dead holder.
//! - [`Mutex`]: futex-backed, uncontended lock/unlock without a syscall, robust
//!   ([`LockError::OwnerDied`] / `NotRecoverable`), optional priority inheritance.
//! - [`Condvar`]: for `Mutex`, no lost wake-ups, `wait_timeout` on the monotonic clock.
//! - [`Semaphore`] and [`Event`] (auto/manual reset).
//! - [`SeqLock`]: one writer at a time publishes a `Pod` value; readers never block it and
//!   never return a torn value.
//! - [`futex`]: the process-shared wait/wake that shm-ring reuses, and [`barrier`], the
//!   asymmetric fences that keep its publish path free of full fences.
//!
//! [`Shared`] puts one primitive in a segment of its own:
//!
//! ```
//! use shm_sync::{LockError, Mutex, Protocol, Shared};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-sync-doc-lib-{}", std::process::id());
//! let counter = Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal))?;
//!
//! // Any process: open by name and lock. If a holder was killed, we learn it.
//! let other = Shared::<Mutex<u64>>::open(&name)?;
//! let mut guard = match other.lock() {
//!     Ok(g) => g,
//!     Err(LockError::OwnerDied(mut g)) => {
//!         // repair *g here, then:
//!         g.mark_consistent();
//!         g
//!     }
//!     Err(e) => return Err(e.to_string().into()),
//! };
//! *guard += 1;
//! drop(guard);
//! assert_eq!(*counter.lock().map_err(|e| e.to_string())?, 1);
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]

pub mod barrier;
mod condvar;
mod error;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
pub mod futex;
mod mutex;
mod owner;
#[doc(hidden)]
pub mod primitive;
mod semaphore;
mod seqlock;
#[cfg(not(shm_loom))]
mod shared;
pub mod sleepers;
mod spin;
#[cfg(not(shm_loom))]
mod sys;
#[cfg(not(shm_loom))]
mod table;

pub use condvar::Condvar;
pub use error::{LockError, WaitError};
pub use mutex::{pi_supported, Mutex, MutexGuard, Protocol, MUTEX_LIVENESS_INTERVAL};
#[cfg(shm_loom)]
pub use owner::loom_die;
pub use semaphore::{Event, Overflow, Reset, Semaphore};
pub use seqlock::{Changes, SeqLock, SeqLockError, WriterStatus};
#[cfg(not(shm_loom))]
pub use shared::{InPlace, Shared, SYNC_LAYOUT_VERSION};
pub use shm_core;
pub use spin::{SpinLock, SpinLockGuard, SPIN_LIVENESS_INTERVAL};
#[cfg(not(shm_loom))]
pub use table::{CachePadded, SeqLockTable, TABLE_MAX_LEN};

/// Marks a step of a protocol where a test may kill the process (feature `fault-injection`).
macro_rules! fault_point {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        $crate::fault::point($name);
    };
}
pub(crate) use fault_point;
