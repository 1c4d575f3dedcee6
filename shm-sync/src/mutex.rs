//! A futex-backed, process-shared, robust mutex, with optional priority inheritance.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::error::{robust, LockError};
use crate::owner::{self, Start, TID_MASK};
use crate::primitive::{AtomicU32, AtomicU64, Backoff, MutPtr, Ordering, UnsafeCell};

/// Set in the lock word while threads may be sleeping on it (the kernel's `FUTEX_WAITERS`).
const WAITERS: u32 = 0x8000_0000;
/// How long a sleeping waiter sleeps before it re-checks that the holder lives. This bounds
/// how late a dead holder is noticed when nobody unlocks.
pub const MUTEX_LIVENESS_INTERVAL: Duration = Duration::from_millis(10);

/// How a [`Mutex`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `FUTEX_WAIT`/`FUTEX_WAKE` with a waiters bit: fastest hand-off, no priority
    /// inheritance. Waiters wake every [`MUTEX_LIVENESS_INTERVAL`] to check the holder.
    #[default]
    Normal,
    /// `FUTEX_LOCK_PI2`/`FUTEX_UNLOCK_PI`: the kernel queues waiters by priority and lends
    /// the holder the priority of the highest waiter (what real-time audio threads need),
    /// and reports a holder that exited (`ESRCH`). Each contended lock or unlock is a
    /// syscall. Needs Linux 5.14+ (`FUTEX_LOCK_PI2`, see [`pi_supported`]): on an older
    /// kernel `Shared` refuses it, and a mutex built by hand runs `Normal`.
    PriorityInheritance,
}

/// Whether [`Protocol::PriorityInheritance`] works on this kernel: it needs
/// `FUTEX_LOCK_PI2` (Linux 5.14+), the only PI lock operation whose timeout runs on the
/// monotonic clock. Probed once per process (one syscall that changes nothing).
///
/// Where it is missing, [`Shared::create`](crate::Shared::create) and
/// [`Shared::open`](crate::Shared::open) refuse a PI mutex with an error that says so, and a
/// mutex made with [`Mutex::with_protocol`] or [`Mutex::init_in_place`] runs the normal
/// protocol (every process on the machine shares the kernel, so all of them do), which
/// [`Mutex::protocol`] reports: no priority inheritance, but the same robustness.
pub fn pi_supported() -> bool {
    #[cfg(any(shm_loom, miri))]
    return false;
    #[cfg(not(any(shm_loom, miri)))]
    {
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(crate::sys::lock_pi2_supported)
    }
}

/// The protocol a mutex built here records: `PriorityInheritance` only where this kernel can
/// run it, so that every process that later uses the word runs the same protocol (the
/// protocol is a property of the shared word, not of each process's probe).
fn runnable(protocol: Protocol) -> Protocol {
    if protocol == Protocol::PriorityInheritance && !pi_supported() {
        Protocol::Normal
    } else {
        protocol
    }
}

/// A mutex shared between processes.
///
/// Lock word (`u32`, the futex word), in the kernel's PI-futex format so both protocols
/// share it:
///
/// | bits      | meaning                                             |
/// | --------- | --------------------------------------------------- |
/// | 0..=29    | thread id of the holder; 0 = unlocked               |
/// | 31        | `WAITERS`: someone may sleep on the word; unlock must wake |
///
/// Uncontended lock and unlock are one compare-exchange / swap each, no syscall.
///
/// **Robustness.** When the holder dies (SIGKILL, thread exit), the next locker gets
/// [`LockError::OwnerDied`] with the guard: it holds the lock, repairs the data and calls
/// [`MutexGuard::mark_consistent`]; if it drops the guard without doing so, the mutex
/// becomes not recoverable and every later lock fails with `NotRecoverable`. Death is
/// detected without the robust list (glibc owns each thread's `set_robust_list` slot, and
/// shmring leaves it alone): a waiter checks the holder's tid and thread start time in
/// `/proc` — when it is gone, or its tid now names a newer thread, the holder is dead.
/// Normal waiters re-check every [`MUTEX_LIVENESS_INTERVAL`]. PI waiters learn it from the
/// kernel: a holder that dies with waiters queued has its lock handed to the top waiter,
/// which then finds the holder's start time still recorded (every unlock clears it), and a
/// `FUTEX_LOCK_PI2` on the word of a holder that is already gone fails with `ESRCH`. Only
/// then is a PI word taken from a dead holder in user space: `try_lock` asks the kernel
/// first (`FUTEX_TRYLOCK_PI`), since while it hands a dead holder's lock to a queued waiter
/// a user-space compare-exchange would make two holders; a dead holder whose tid the
/// caller now reuses (`EDEADLK`) has its word freed by the kernel (`FUTEX_UNLOCK_PI`).
///
/// The holder records `tid << 32 | low 32 bits of its start time` in `owner` right after its
/// compare-exchange; a checker only trusts that record when its tid matches the word's.
/// One window is documented rather than closed: if a holder dies between the two *and* its
/// tid is reused by a live thread before anyone looks, the dead holder cannot be told from
/// the live one: `lock` then waits for that thread, and `lock_timeout` returns `Timeout`.
/// In PI mode the same holds for a dead holder whose tid is reused before the kernel
/// reports `ESRCH`. Holders are identified within one pid namespace.
#[repr(C)]
pub struct Mutex<T> {
    word: AtomicU32,
    state: AtomicU32,
    protocol: AtomicU32,
    _reserved: AtomicU32,
    /// `tid << 32 | (start & 0xffff_ffff)` of the holder, 0 when unlocked cleanly.
    owner: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex hands the `T` to one thread at a time, so `T: Send` suffices.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the `T` inside.
unsafe impl<T: Send> Send for Mutex<T> {}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of fixed-width atomics and a `Pod` payload: every bit pattern is
// valid (garbage in the word reads as a holder that is dead or alive, never as UB), zero is
// "unlocked, consistent, normal protocol", the payload is only accessed by the holder, and
// there is no Drop glue.
unsafe impl<T: bytemuck::Pod + Send> shm_core::ShmSafe for Mutex<T> {}

#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::size_of::<Mutex<u64>>(), 32);
#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(Mutex<u64>, owner), 16);
#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(Mutex<u64>, data), 24);

/// The `owner` record of thread `me`.
fn owner_word(me: owner::Me) -> u64 {
    me.word()
}

type LockResult<'a, T> = Result<MutexGuard<'a, T>, LockError<MutexGuard<'a, T>>>;

impl<T> Mutex<T> {
    /// A new unlocked mutex (for use inside one process, or under loom).
    pub fn new(value: T) -> Mutex<T> {
        Mutex::with_protocol(value, Protocol::Normal)
    }

    /// A new unlocked mutex using `protocol`.
    pub fn with_protocol(value: T, protocol: Protocol) -> Mutex<T> {
        Mutex {
            word: AtomicU32::new(0),
            state: AtomicU32::new(robust::CONSISTENT),
            protocol: AtomicU32::new(runnable(protocol) as u32),
            _reserved: AtomicU32::new(0),
            owner: AtomicU64::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Initialises a zeroed mutex in place.
    ///
    /// # Safety
    ///
    /// No other thread or process may access `self` during the call (e.g. it lies in a
    /// segment still inside its creator's `create_with`).
    pub unsafe fn init_in_place(&self, value: T, protocol: Protocol) {
        self.word.store(0, Ordering::Relaxed);
        self.state.store(robust::CONSISTENT, Ordering::Relaxed);
        self.protocol
            .store(runnable(protocol) as u32, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        // SAFETY: the caller guarantees exclusive access.
        self.data.with_mut(|p| unsafe { p.write(value) });
    }

    /// The protocol in effect: the one chosen at creation (anything but 1 reads as
    /// `Normal`), except that `PriorityInheritance` runs as `Normal` on a kernel without
    /// `FUTEX_LOCK_PI2` (see [`pi_supported`]).
    pub fn protocol(&self) -> Protocol {
        if self.protocol_requested() == Protocol::PriorityInheritance && pi_supported() {
            Protocol::PriorityInheritance
        } else {
            Protocol::Normal
        }
    }

    /// The protocol recorded in the mutex, whether or not this kernel can run it (a mutex
    /// built here records `Normal` where priority inheritance cannot run; one built by a
    /// process that could may still say `PriorityInheritance`).
    pub fn protocol_requested(&self) -> Protocol {
        if self.protocol.load(Ordering::Relaxed) == Protocol::PriorityInheritance as u32 {
            Protocol::PriorityInheritance
        } else {
            Protocol::Normal
        }
    }

    /// Takes the lock if it is free. Never sleeps.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, `WouldDeadlock`, `NotRecoverable`, or `OwnerDied` if the word names a
    /// holder that is dead.
    pub fn try_lock(&self) -> LockResult<'_, T> {
        if self.is_not_recoverable() {
            return Err(LockError::NotRecoverable);
        }
        let me = owner::me();
        // Acquire: pairs with the Release swap in `unlock` (or the kernel's hand-off).
        match self
            .word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => self.acquired(me, None),
            Err(w) if self.held_by(w, me) => Err(LockError::WouldDeadlock),
            #[cfg(not(shm_loom))]
            Err(w) if self.protocol() == Protocol::PriorityInheritance => self.try_lock_pi(w, me),
            Err(w) => self
                .recover_if_dead(w, me)
                .unwrap_or(Err(LockError::WouldBlock)),
        }
    }

    /// `try_lock` of a PI mutex whose word `w` is not free. A holder that looks dead may be
    /// having its lock handed by the kernel to a waiter queued in `FUTEX_LOCK_PI2` (the
    /// kernel rewrites the word for that waiter whatever user space wrote meanwhile), so the
    /// word is never taken from it in user space: the kernel decides (`FUTEX_TRYLOCK_PI`),
    /// and only once it answers `ESRCH` (no such task, and no kernel state for the lock) is
    /// the word recovered with a compare-exchange. A live holder costs no syscall.
    #[cfg(not(shm_loom))]
    fn try_lock_pi(&self, w: u32, me: owner::Me) -> LockResult<'_, T> {
        if !self.holder_looks_dead(w, me) {
            return Err(LockError::WouldBlock);
        }
        match crate::sys::futex_trylock_pi(&self.word) {
            // The kernel made us the owner (its hand-off is a full barrier); the dead
            // holder's record, still set, makes this `OwnerDied`.
            Ok(()) => self.acquired(me, None),
            Err(e) => match e.raw_os_error() {
                // Only from the word the kernel judged (with the waiters bit it set), never
                // from one another recoverer wrote since.
                Some(libc::ESRCH) => self
                    .recover_if_dead(w | WAITERS, me)
                    .unwrap_or(Err(LockError::WouldBlock)),
                // A dead holder whose tid we now reuse: let the kernel free the word, then
                // try to take it like anyone (the dead holder's record makes it `OwnerDied`).
                Some(libc::EDEADLK) => {
                    self.release_reused_tid();
                    // Acquire: pairs with the Release in `unlock` (or the kernel's release).
                    match self.word.compare_exchange(
                        0,
                        me.tid,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => self.acquired(me, None),
                        Err(_) => Err(LockError::WouldBlock),
                    }
                }
                // Held, being handed over, or a word the kernel will not take.
                _ => Err(LockError::WouldBlock),
            },
        }
    }

    /// After `FUTEX_LOCK_PI2`/`FUTEX_TRYLOCK_PI` answered `EDEADLK` for a word that names
    /// our tid without our record (a dead holder whose tid this thread reuses): asks the
    /// kernel to release it. The kernel checks the tid (ours), then refuses (`EINVAL`) while
    /// it is handing the dead holder's lock to a queued waiter, and otherwise clears the
    /// word under its own lock, so nothing races its hand-off. The caller then takes the
    /// word like any locker; the dead holder's record makes that `OwnerDied`.
    #[cfg(not(shm_loom))]
    fn release_reused_tid(&self) {
        if crate::sys::futex_unlock_pi(&self.word).is_err() {
            std::thread::yield_now();
        }
    }

    /// Whether the word `w` names a holder that is certainly dead (a recorded thread that
    /// is gone, or our own tid without our record), as [`recover_if_dead`] judges.
    fn holder_looks_dead(&self, w: u32, me: owner::Me) -> bool {
        let tid = w & TID_MASK;
        if tid == 0 {
            return false;
        }
        let rec = self.owner.load(Ordering::Relaxed);
        // The record describes the holder only if it names the word's tid; otherwise the
        // holder is between its CAS and its record, and only "no such task" proves death.
        let start = if (rec >> 32) as u32 == tid {
            Start::Low32(rec as u32)
        } else {
            Start::Unknown
        };
        if tid == me.tid {
            // Our own tid in the word, but not our record: a dead holder's reused tid.
            rec != owner_word(me)
        } else {
            owner::is_dead(tid, start)
        }
    }

    /// Takes the lock, sleeping while it is held.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (you hold the lock), `NotRecoverable`, `WouldDeadlock`.
    pub fn lock(&self) -> LockResult<'_, T> {
        self.lock_until(None)
    }

    /// [`lock`](Self::lock), giving up after `timeout` (measured on the monotonic clock).
    ///
    /// # Errors
    ///
    /// As `lock`, plus `Timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<'_, T> {
        self.lock_until(crate::primitive::deadline_after(timeout))
    }

    /// Whether `w` names the calling thread as a *live* holder (a real re-lock), as
    /// opposed to a dead holder whose tid the calling thread now reuses.
    fn held_by(&self, w: u32, me: owner::Me) -> bool {
        w & TID_MASK == me.tid && self.owner.load(Ordering::Relaxed) == owner_word(me)
    }

    fn lock_until(&self, deadline: Option<Instant>) -> LockResult<'_, T> {
        if self.is_not_recoverable() {
            return Err(LockError::NotRecoverable);
        }
        let me = owner::me();
        // Fast path: uncontended, one compare-exchange.
        // Acquire: pairs with the Release swap in `unlock`.
        match self
            .word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return self.acquired(me, None),
            Err(w) if self.held_by(w, me) => return Err(LockError::WouldDeadlock),
            Err(_) => {}
        }
        // Spin briefly: most critical sections are short.
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                // Acquire: pairs with the Release swap in `unlock`.
                if self
                    .word
                    .compare_exchange_weak(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.acquired(me, None);
                }
            }
            backoff.snooze();
        }
        match self.protocol() {
            Protocol::Normal => self.lock_slow(me, deadline),
            #[cfg(not(shm_loom))]
            Protocol::PriorityInheritance => self.lock_pi(me, deadline),
            #[cfg(shm_loom)]
            Protocol::PriorityInheritance => unreachable!("protocol() is Normal under loom"),
        }
    }

    /// Sleeps on the word with the waiters bit set (Drepper's "mutex 2"): a thread that
    /// takes the lock after sleeping keeps `WAITERS`, since others may still sleep.
    fn lock_slow(&self, me: owner::Me, deadline: Option<Instant>) -> LockResult<'_, T> {
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & TID_MASK == 0 {
                // Acquire: pairs with the Release swap in `unlock`.
                if self
                    .word
                    .compare_exchange(w, me.tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.acquired(me, None);
                }
                // Lost the race: a spin hint before re-reading (under loom, a yield).
                crate::primitive::spin_hint();
                continue;
            }
            if let Some(r) = self.recover_if_dead(w, me) {
                return r;
            }
            if self.held_by(w, me) {
                return Err(LockError::WouldDeadlock);
            }
            if w & WAITERS == 0
                && self
                    .word
                    .compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                // The word changed under us: a spin hint before re-reading it (under loom, a
                // yield, after which loom shows us the new word rather than a stale one).
                crate::primitive::spin_hint();
                continue;
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LockError::Timeout);
                    }
                    left.min(MUTEX_LIVENESS_INTERVAL)
                }
                None => MUTEX_LIVENESS_INTERVAL,
            };
            // Under loom the futex model ignores the slice (so a missing wake is a
            // deadlock loom reports); here the slice bounds how late a death is noticed.
            if crate::futex::wait(&self.word, w | WAITERS, Some(slice))
                == crate::futex::WaitOutcome::ValueChanged
            {
                // As above: the word we read is already stale.
                crate::primitive::spin_hint();
            }
            if self.is_not_recoverable() {
                return Err(LockError::NotRecoverable);
            }
        }
    }

    #[cfg(not(shm_loom))]
    fn lock_pi(&self, me: owner::Me, deadline: Option<Instant>) -> LockResult<'_, T> {
        loop {
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LockError::Timeout);
                    }
                    left.min(MUTEX_LIVENESS_INTERVAL * 10)
                }
                None => MUTEX_LIVENESS_INTERVAL * 10,
            };
            // The word as the kernel will judge it (if nobody changes it meanwhile).
            let before = self.word.load(Ordering::Relaxed);
            match crate::sys::futex_lock_pi(&self.word, Some(crate::sys::monotonic_after(slice))) {
                // The kernel made us the owner; its hand-off is a full barrier.
                Ok(()) => return self.acquired(me, None),
                Err(e) => match e.raw_os_error() {
                    // The word names a task that no longer exists: recover in user space.
                    // (Only on ESRCH: while the kernel may still hand the lock to a queued
                    // waiter, a user-space CAS would race its fix-up of the word.) Only from
                    // the very word the kernel judged (it set the waiters bit on the way):
                    // a word another recoverer wrote since was never judged.
                    Some(libc::ESRCH) => {
                        if before & TID_MASK == 0 {
                            continue;
                        }
                        if let Some(r) = self.recover_if_dead(before | WAITERS, me) {
                            return r;
                        }
                        std::thread::yield_now();
                    }
                    Some(libc::EDEADLK) => {
                        let w = self.word.load(Ordering::Relaxed);
                        if self.held_by(w, me) {
                            return Err(LockError::WouldDeadlock);
                        }
                        // A dead holder whose tid we reuse: never recovered in user space,
                        // which could race the kernel's hand-off to a queued waiter.
                        if w & TID_MASK == me.tid {
                            self.release_reused_tid();
                        }
                    }
                    Some(libc::ETIMEDOUT) | Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                    // EPERM/EINVAL (a word the kernel will not accept, e.g. garbage, or one
                    // whose dead holder's lock it is handing over): take a free word in user
                    // space, else back off. (ENOSYS, a kernel without FUTEX_LOCK_PI2, never
                    // gets here: `protocol()` is then `Normal`.)
                    _ => {
                        // Acquire: pairs with the Release in `unlock`.
                        if self
                            .word
                            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            return self.acquired(me, None);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
            }
            if self.is_not_recoverable() {
                return Err(LockError::NotRecoverable);
            }
        }
    }

    /// If `w` names a dead holder, takes the lock from it (keeping the waiters bit) and
    /// returns `OwnerDied`. `None` if the holder may be alive or the word changed.
    fn recover_if_dead(&self, w: u32, me: owner::Me) -> Option<LockResult<'_, T>> {
        if !self.holder_looks_dead(w, me) {
            return None;
        }
        // Acquire: the dead holder published nothing; this orders us after whoever last
        // released. The CAS only succeeds if the dead holder still holds the word.
        self.word
            .compare_exchange(
                w,
                me.tid | (w & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| self.acquired(me, Some(w & owner::TID_MASK)))
    }

    /// `died`: the tid of the dead holder we took the lock from, if we took it from one.
    fn acquired(&self, me: owner::Me, died: Option<u32>) -> LockResult<'_, T> {
        // `owner` doubles as a "held" mark: every unlock zeroes it before releasing the
        // word, so finding it non-zero means the previous holder never unlocked. That is how
        // a PI waiter learns of a death: when the holder dies with waiters queued, the
        // kernel hands the lock to the top waiter without any error. Only the holder writes
        // `owner` (we hold the lock now), so a load and a store do: no read-modify-write.
        let prev = self.owner.load(Ordering::Relaxed);
        crate::fault_point!("mutex-locked-unrecorded");
        self.owner.store(owner_word(me), Ordering::Relaxed);
        let owner_died = died.is_some() || prev != 0;
        // The record names the holder that never unlocked; without one (it died between
        // taking the word and recording itself), the word named it.
        let died = if prev != 0 {
            Some((prev >> 32) as u32)
        } else {
            died
        };
        let guard = MutexGuard {
            mutex: self,
            ptr: std::mem::ManuallyDrop::new(self.data.get_mut()),
            died,
        };
        // A verdict of not recoverable stands, even when we took the lock from a holder that
        // died after giving it (between storing the verdict and releasing the word): a
        // second death must not turn it back into a repair obligation.
        if self.is_not_recoverable() {
            drop(guard);
            return Err(LockError::NotRecoverable);
        }
        if owner_died {
            self.state.store(robust::INCONSISTENT, Ordering::Relaxed);
            return Err(LockError::OwnerDied(guard));
        }
        match self.state.load(Ordering::Relaxed) {
            robust::CONSISTENT => Ok(guard),
            robust::INCONSISTENT => Err(LockError::OwnerDied(guard)),
            _ => {
                drop(guard);
                Err(LockError::NotRecoverable)
            }
        }
    }

    fn unlock(&self) {
        if self.state.load(Ordering::Relaxed) == robust::INCONSISTENT {
            self.state.store(robust::NOT_RECOVERABLE, Ordering::Relaxed);
        }
        self.owner.store(0, Ordering::Relaxed);
        crate::fault_point!("mutex-unlocking");
        #[cfg(not(shm_loom))]
        if self.protocol() == Protocol::PriorityInheritance {
            let me = owner::me().tid;
            // Release: publishes the data; pairs with the Acquire CAS of the next locker.
            if self
                .word
                .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
                .is_err()
            {
                // Waiters queued in the kernel: it hands the lock to the top one. If it
                // refuses (the word was scribbled, or we were recovered from), leave the
                // word alone: clearing it could release a lock the kernel gave another.
                let _ = crate::sys::futex_unlock_pi(&self.word);
            }
            self.wake_if_not_recoverable();
            return;
        }
        // Release: publishes the data; pairs with the Acquire CAS of the next locker.
        let prev = self.word.swap(0, Ordering::Release);
        crate::fault_point!("mutex-released");
        if prev & WAITERS != 0 {
            crate::futex::wake(&self.word, 1);
        }
        self.wake_if_not_recoverable();
    }

    /// After a holder left the mutex not recoverable, every sleeper must wake to see it.
    fn wake_if_not_recoverable(&self) {
        if self.is_not_recoverable() {
            crate::futex::wake_all(&self.word);
        }
    }

    /// Whether a holder died and the data was never repaired.
    pub fn is_not_recoverable(&self) -> bool {
        !matches!(
            self.state.load(Ordering::Relaxed),
            robust::CONSISTENT | robust::INCONSISTENT
        )
    }

    /// Whether the mutex is held right now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK != 0
    }

    /// The holder's thread id, if held (a snapshot, for diagnostics).
    pub fn holder_tid(&self) -> Option<u32> {
        let tid = self.word.load(Ordering::Relaxed) & TID_MASK;
        (tid != 0).then_some(tid)
    }

    /// Releases the lock held through `guard` without dropping the guard's borrow: for
    /// [`Condvar`](crate::Condvar), which re-locks before returning the guard.
    pub(crate) fn unlock_for_wait(&self) {
        self.unlock();
    }

    /// Re-locks after a condvar wait (without a deadline: the waiter always gets its guard
    /// back).
    pub(crate) fn relock(&self) -> LockResult<'_, T> {
        self.lock_until(None)
    }
}

/// Access to a [`Mutex`]'s data; unlocks on drop.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    /// Dropped by hand, before the unlock, so the data access ends before another thread
    /// can start one (which loom checks).
    ptr: std::mem::ManuallyDrop<MutPtr<T>>,
    /// The tid of the dead holder this lock was taken from, if it was.
    died: Option<u32>,
}

impl<'a, T> MutexGuard<'a, T> {
    /// After [`LockError::OwnerDied`]: the thread id of the holder that died (for a
    /// single-threaded process, its pid), as its record or the lock word named it. `None`
    /// for a guard taken from a live holder's unlock.
    pub fn dead_owner(&self) -> Option<u32> {
        self.died
    }

    /// After [`LockError::OwnerDied`]: the data is repaired; later holders get plain guards.
    pub fn mark_consistent(&mut self) {
        self.mutex
            .state
            .store(robust::CONSISTENT, Ordering::Relaxed);
    }

    /// The mutex this guard locks.
    pub fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }

    /// Releases the lock and hands back the mutex without running `Drop` twice.
    pub(crate) fn unlock_and_forget(self) -> &'a Mutex<T> {
        let this = std::mem::ManuallyDrop::new(self);
        let m = this.mutex;
        // SAFETY: `this` is never used or dropped again, so moving `ptr` out of it is a
        // plain move.
        let ptr = unsafe { std::ptr::read(&this.ptr) };
        // Dropping it ends the data access (which loom tracks) before the unlock; outside
        // loom it is a no-op.
        #[allow(clippy::drop_non_drop)]
        drop(std::mem::ManuallyDrop::into_inner(ptr));
        m.unlock_for_wait();
        m
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock: no other thread accesses the
        // data, and only `&self`-shared references are made here.
        self.ptr.with(|p| unsafe { &*p })
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference from this guard.
        self.ptr.with(|p| unsafe { &mut *p })
    }
}

impl<T> std::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MutexGuard { .. }")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, and not used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.ptr) };
        self.mutex.unlock();
    }
}

#[cfg(shm_loom)]
impl<T> MutexGuard<'_, T> {
    /// Loom only: the holding thread "dies" now, holding the lock (it never unlocks).
    pub fn die_holding(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the data access ends as a dead thread's would.
        unsafe { std::mem::ManuallyDrop::drop(&mut this.ptr) };
        crate::owner::loom_die();
    }
}
