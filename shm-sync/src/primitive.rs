//! The atomics, cell and scheduling hooks every algorithm in this crate is written against:
//! `loom`'s under `cfg(shm_loom)`, `core`/`std`'s otherwise. Loom's types cannot live in a
//! real mapping, so loom builds heap-allocate the primitives through the same constructors.

#[cfg(shm_loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(shm_loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(shm_loom)]
pub use loom::thread::yield_now;
#[cfg(not(shm_loom))]
pub use std::thread::yield_now;

#[cfg(shm_loom)]
pub use loom::cell::{MutPtr, UnsafeCell};

/// `std`'s `UnsafeCell` with loom's interface (`with`, `with_mut`, `get_mut`).
#[cfg(not(shm_loom))]
#[repr(transparent)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(shm_loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    pub const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    pub fn get_mut(&self) -> MutPtr<T> {
        MutPtr(self.0.get())
    }
}

/// A tracked mutable pointer into an [`UnsafeCell`] (loom's `MutPtr` outside loom).
#[cfg(not(shm_loom))]
pub struct MutPtr<T>(*mut T);

#[cfg(not(shm_loom))]
impl<T> MutPtr<T> {
    /// Runs `f` with the raw pointer (loom's `MutPtr::with`).
    pub fn with<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0)
    }

    /// # Safety
    ///
    /// The caller must have exclusive access to the value while the reference lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn deref(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusive access.
        unsafe { &mut *self.0 }
    }
}

/// Spins with exponential backoff, then yields: `crossbeam_utils::Backoff` outside loom, a
/// plain `yield_now` under loom (which must see every spin as a yield to stay finite).
pub struct Backoff {
    #[cfg(not(shm_loom))]
    inner: crossbeam_utils::Backoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Backoff {
        Backoff {
            #[cfg(not(shm_loom))]
            inner: crossbeam_utils::Backoff::new(),
        }
    }

    /// One step of busy-waiting.
    pub fn snooze(&self) {
        #[cfg(not(shm_loom))]
        self.inner.snooze();
        #[cfg(shm_loom)]
        yield_now();
    }

    /// Whether spinning has gone on long enough that the caller should block instead.
    pub fn is_completed(&self) -> bool {
        #[cfg(not(shm_loom))]
        return self.inner.is_completed();
        #[cfg(shm_loom)]
        return true;
    }
}

/// `now + timeout`, or `None` (no deadline) if that overflows `Instant`.
pub fn deadline_after(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// How long a sleeper sleeps before it re-checks on its own, so that a waker killed
/// between its store and its wake (or a woken waiter killed before it acts) costs a
/// sleeper at most this long, never forever.
pub const SLEEP_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// A busy-wait hint: `spin_loop` outside loom, a yield under loom (which must see every
/// retry loop yield, or it explores it forever).
#[inline]
pub fn spin_hint() {
    #[cfg(not(shm_loom))]
    std::hint::spin_loop();
    #[cfg(shm_loom)]
    yield_now();
}

/// The world outside the threads of a loom model, as the algorithms see it: the clock that
/// ends timeouts and sleep slices, and which processes are dead. A model chooses when time
/// passes and who dies; loom chooses when each thread notices (both are atomics read with
/// loads whose value loom explores), so the timeout and dead-peer paths of every protocol are
/// explored, including a party that was timed out or given up while only stalled.
#[cfg(shm_loom)]
pub mod world {
    use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    loom::lazy_static! {
        static ref CLOCK: AtomicBool = AtomicBool::new(false);
        static ref DEAD: AtomicU64 = AtomicU64::new(0);
        /// The next identity: a plain (not loom-tracked) counter, but one per execution, as
        /// loom makes its lazy statics anew for each execution of each model (models that
        /// run at once on other test threads have their own).
        static ref NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    }

    /// A fresh identity for a "process" (a ring handle, a lock-holding thread): 1, 2, ...
    /// in each execution, so each of the (at most 64) identities of a model has its own
    /// bit in the dead set. (A counter shared by all executions, as this once was, let two
    /// models running at once on two test threads hand one execution identities 64 apart,
    /// which shared a bit: the death of one made a live holder look dead.)
    pub fn new_identity() -> u64 {
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(id < 64, "a loom model used more than 63 identities");
        id
    }

    /// Time passes: every timeout may now read as expired (to a thread that sees this
    /// store), and every thread asleep on a futex wakes as at the end of its sleep slice.
    pub fn time_passes() {
        // Relaxed: a thread may go on reading the clock as not yet expired (loom explores
        // both), as a timer that has not fired yet would.
        CLOCK.store(true, Ordering::Relaxed);
        crate::futex::wake_every_sleeper();
    }

    /// Whether a timeout that was started has expired, as this thread can tell.
    pub fn timed_out() -> bool {
        // Relaxed: see `time_passes`; once seen, it stays seen (coherence).
        CLOCK.load(Ordering::Relaxed)
    }

    fn bit(id: u64) -> u64 {
        1 << (id % 64)
    }

    /// The "process" `id` dies: it runs no further step of any protocol.
    pub fn die(id: u64) {
        // Release: pairs with the Acquire load in `is_dead`: whoever judges it dead sees
        // everything it did, as the kernel's reaping of a process orders its last stores
        // before anyone learns of its death.
        DEAD.fetch_or(bit(id), Ordering::Release);
    }

    /// Whether `id` is known dead here (loom chooses whether a death is seen yet).
    pub fn is_dead(id: u64) -> bool {
        // Acquire: pairs with the Release in `die`.
        DEAD.load(Ordering::Acquire) & bit(id) != 0
    }
}
