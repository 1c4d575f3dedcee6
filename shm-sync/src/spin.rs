//! A test-and-test-and-set spinlock that lives in shared memory and notices a dead holder.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::error::{robust, LockError};
use crate::owner::{self, Start};
use crate::primitive::{yield_now, AtomicU32, AtomicU64, Backoff, MutPtr, Ordering, UnsafeCell};

/// How often a waiter that has exhausted its spin budget checks whether the holder lives.
pub const SPIN_LIVENESS_INTERVAL: Duration = Duration::from_millis(2);

/// A spinlock for short critical sections shared between processes.
///
/// Lock word (`u64`):
///
/// | value                               | meaning                               |
/// | ----------------------------------- | ------------------------------------- |
/// | `0`                                 | unlocked                              |
/// | `tid << 32 \| (start_time & 0xffff_ffff)` | held by thread `tid`, started at `start_time` |
///
/// The holder's identity is written by the same compare-exchange that takes the lock, so
/// there is no moment at which the lock is held by nobody known. A waiter spins with
/// `crossbeam_utils::Backoff`, then yields, and every [`SPIN_LIVENESS_INTERVAL`] checks the
/// holder; if that thread is gone (or its tid now belongs to a thread with another start
/// time), it takes the lock over with one compare-exchange from the dead holder's word and
/// gets [`LockError::OwnerDied`].
///
/// `T` is `bytemuck::Pod`: a holder killed mid-write leaves bytes that are still a valid
/// `T`, which the next holder repairs.
#[repr(C)]
pub struct SpinLock<T> {
    word: AtomicU64,
    state: AtomicU32,
    _reserved: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `T` to one thread at a time, so sharing the lock
// shares `T` only by moving access between threads, which `T: Send` permits.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T` inside.
unsafe impl<T: Send> Send for SpinLock<T> {}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of fixed-width atomics and a `Pod` payload (checked by the bound):
// every bit pattern is valid, zero is "unlocked, consistent", the payload is only accessed
// by the lock holder, and there is no Drop glue.
unsafe impl<T: bytemuck::Pod + Send> shm_core::ShmSafe for SpinLock<T> {}

#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::size_of::<SpinLock<u64>>(), 24);
#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(SpinLock<u64>, state), 8);
#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(SpinLock<u64>, data), 16);

fn word_of(me: owner::Me) -> u64 {
    me.word()
}

impl<T> SpinLock<T> {
    /// A new unlocked spinlock (for use inside one process, or under loom).
    pub fn new(value: T) -> SpinLock<T> {
        SpinLock {
            word: AtomicU64::new(0),
            state: AtomicU32::new(robust::CONSISTENT),
            _reserved: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    ///
    /// `WouldBlock` if held, `NotRecoverable`, or `OwnerDied` if the holder is dead (checked
    /// only when the word names a holder).
    pub fn try_lock(&self) -> Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>> {
        let me = word_of(owner::me());
        // Acquire: pairs with the Release store in `SpinLockGuard::drop`, so the previous
        // holder's writes to the data are visible to us.
        match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => self.acquired(None),
            Err(w) if w == me => Err(LockError::WouldDeadlock),
            Err(w) if holder_dead(w) => self.take_over(w, me).unwrap_or(Err(LockError::WouldBlock)),
            Err(_) => Err(LockError::WouldBlock),
        }
    }

    /// Takes the lock, spinning then yielding until it is free or its holder is found dead.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (you hold the lock), `NotRecoverable`, `WouldDeadlock`.
    pub fn lock(&self) -> Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>> {
        self.lock_until(None)
    }

    /// [`lock`](Self::lock), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `lock`, plus `Timeout`.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>> {
        self.lock_until(crate::primitive::deadline_after(timeout))
    }

    fn lock_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>> {
        let me = word_of(owner::me());
        let backoff = Backoff::new();
        let mut next_check: Option<Instant> = None;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                // Acquire: pairs with the Release store in `SpinLockGuard::drop`.
                if self
                    .word
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.acquired(None);
                }
                // Another locker won: a spin hint before re-reading (under loom, a yield,
                // after which loom shows us the winner's word rather than a stale 0 forever).
                crate::primitive::spin_hint();
                continue;
            }
            if w == me {
                return Err(LockError::WouldDeadlock);
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            // Spin budget spent: check the holder now and then, honour the deadline, yield.
            let now = (cfg!(not(shm_loom)) || deadline.is_some()).then(Instant::now);
            let due = match (now, next_check) {
                (Some(now), Some(at)) => now >= at,
                _ => true,
            };
            if due {
                if holder_dead(w) {
                    if let Some(r) = self.take_over(w, me) {
                        return r;
                    }
                    // The word changed (another locker took over first): re-read it after
                    // a yield (under loom, which then shows us the new word, not the stale
                    // dead one forever).
                    yield_now();
                    continue;
                }
                next_check = now.map(|n| n + SPIN_LIVENESS_INTERVAL);
            }
            if let (Some(d), Some(now)) = (deadline, now) {
                if now >= d {
                    return Err(LockError::Timeout);
                }
            }
            yield_now();
        }
    }

    /// Replaces a dead holder's word with ours. `None` if the word changed meanwhile.
    #[allow(clippy::type_complexity)]
    fn take_over(
        &self,
        dead: u64,
        me: u64,
    ) -> Option<Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>>> {
        // Acquire: pairs with whatever Release the dead holder's predecessor made; the dead
        // holder itself published nothing, which is why the data is suspect.
        self.word
            .compare_exchange(dead, me, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.acquired(Some((dead >> 32) as u32)))
    }

    /// `died`: the tid of the dead holder we took the word from, if we took it from one.
    fn acquired(
        &self,
        died: Option<u32>,
    ) -> Result<SpinLockGuard<'_, T>, LockError<SpinLockGuard<'_, T>>> {
        let owner_died = died.is_some();
        let guard = SpinLockGuard {
            lock: self,
            ptr: std::mem::ManuallyDrop::new(self.data.get_mut()),
            died,
        };
        // A verdict of not recoverable stands, even when the holder we took the word from
        // died after giving it (between storing the verdict and freeing the word).
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
            // A holder that got OwnerDied died too before repairing: still inconsistent.
            robust::INCONSISTENT => Err(LockError::OwnerDied(guard)),
            _ => {
                drop(guard);
                Err(LockError::NotRecoverable)
            }
        }
    }

    /// Whether the lock is held right now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// The holder's thread id, if held (a snapshot, for diagnostics).
    pub fn holder_tid(&self) -> Option<u32> {
        let w = self.word.load(Ordering::Relaxed);
        (w != 0).then_some((w >> 32) as u32)
    }

    /// Whether the lock is held by a thread that is certainly dead (reads `/proc`).
    pub fn holder_is_dead(&self) -> bool {
        let w = self.word.load(Ordering::Relaxed);
        w != 0 && holder_dead(w)
    }

    /// Whether a holder died and the data was never repaired.
    pub fn is_not_recoverable(&self) -> bool {
        !matches!(
            self.state.load(Ordering::Relaxed),
            robust::CONSISTENT | robust::INCONSISTENT
        )
    }

    /// Initialises a zeroed spinlock in place with `value`.
    ///
    /// # Safety
    ///
    /// No other thread or process may access `self` during the call (e.g. it lies in a
    /// segment still inside its creator's `create_with`).
    pub unsafe fn init_in_place(&self, value: T) {
        self.word.store(0, Ordering::Relaxed);
        self.state.store(robust::CONSISTENT, Ordering::Relaxed);
        // SAFETY: the caller guarantees exclusive access, so writing the data is race-free.
        self.data.with_mut(|p| unsafe { p.write(value) });
    }
}

fn holder_dead(w: u64) -> bool {
    let tid = (w >> 32) as u32;
    owner::is_dead(tid, Start::Low32(w as u32))
}

/// Access to a [`SpinLock`]'s data; unlocks on drop.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    ptr: std::mem::ManuallyDrop<MutPtr<T>>,
    /// The tid of the dead holder this lock was taken from, if it was.
    died: Option<u32>,
}

impl<T> SpinLockGuard<'_, T> {
    /// After [`LockError::OwnerDied`]: the thread id of the holder that died (for a
    /// single-threaded process, its pid), as the lock word named it. `None` for a guard
    /// taken from a free lock (or one inherited inconsistent from a holder that repaired
    /// nothing and unlocked).
    pub fn dead_owner(&self) -> Option<u32> {
        self.died
    }

    /// After [`LockError::OwnerDied`]: the data is repaired; later holders get plain guards.
    pub fn mark_consistent(&mut self) {
        self.lock.state.store(robust::CONSISTENT, Ordering::Relaxed);
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock: no other thread accesses the
        // data, and only `&self`-shared references are made here.
        self.ptr.with(|p| unsafe { &*p })
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference from this guard.
        self.ptr.with(|p| unsafe { &mut *p })
    }
}

impl<T> std::fmt::Debug for SpinLockGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpinLockGuard { .. }")
    }
}

#[cfg(shm_loom)]
impl<T> SpinLockGuard<'_, T> {
    /// Loom only: the holding thread "dies" now, holding the lock (it never unlocks).
    pub fn die_holding(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the data access ends as a dead thread's would.
        unsafe { std::mem::ManuallyDrop::drop(&mut this.ptr) };
        crate::owner::loom_die();
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, and not used after: the data access ends
        // before the unlock lets another thread start one (which loom checks).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.ptr) };
        if self.lock.state.load(Ordering::Relaxed) == robust::INCONSISTENT {
            self.lock
                .state
                .store(robust::NOT_RECOVERABLE, Ordering::Relaxed);
        }
        crate::fault_point!("spin-unlocking");
        // Release: publishes our writes to the data (and to `state`); pairs with the Acquire
        // compare-exchange of the next locker.
        self.lock.word.store(0, Ordering::Release);
    }
}
