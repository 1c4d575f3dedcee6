//! A condition variable for [`Mutex`], across processes.

use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::mutex::{Mutex, MutexGuard};
use crate::primitive::{fence, AtomicU32, Ordering};

/// A condition variable that works with [`Mutex`] between processes.
///
/// Two words: `seq`, a counter every notify bumps (the futex word waiters sleep on), and
/// `waiters`, how many may sleep, so a notify makes a syscall only when someone sleeps.
/// A waiter reads `seq` while it still holds the mutex, then unlocks and sleeps only while
/// `seq` is unchanged: a notify that follows the unlock changes `seq` first, so it is never
/// lost. Wake-ups may be spurious (as with every condvar): wait in a loop on the condition,
/// or use [`wait_while`](Self::wait_while).
///
/// A waiter killed while asleep leaves `waiters` one too high; that costs later notifies a
/// needless `FUTEX_WAKE`, never a lost or wrong wake-up.
#[repr(C)]
pub struct Condvar {
    seq: AtomicU32,
    waiters: AtomicU32,
}

#[cfg(not(shm_loom))]
// SAFETY: two `AtomicU32`s: any bit pattern valid, zero is a fresh condvar, no Drop glue.
unsafe impl shm_core::ShmSafe for Condvar {}

#[cfg(not(shm_loom))]
static_assertions::assert_eq_size!(Condvar, u64);

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

type WaitResult<'a, T> = Result<MutexGuard<'a, T>, LockError<MutexGuard<'a, T>>>;

impl Condvar {
    /// A new condvar.
    pub fn new() -> Condvar {
        Condvar {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Unlocks the mutex, sleeps until notified, and locks it again.
    ///
    /// # Errors
    ///
    /// What re-locking returns: `OwnerDied` (with the guard) if another holder died while
    /// we slept, or `NotRecoverable`.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> WaitResult<'a, T> {
        self.wait_inner(guard, None).0
    }

    /// [`wait`](Self::wait) for at most `timeout` (monotonic clock). The flag is `true` if
    /// the timeout passed. The guard always comes back: once the timeout has passed, this
    /// still waits for the mutex (as `std::sync::Condvar::wait_timeout` does), so a holder
    /// that keeps it past the deadline delays the return.
    ///
    /// # Errors
    ///
    /// As `wait`.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (WaitResult<'a, T>, bool) {
        self.wait_inner(guard, Some(timeout))
    }

    /// Waits until `condition` is false, re-checking after every wake-up.
    ///
    /// # Errors
    ///
    /// As `wait`.
    pub fn wait_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> WaitResult<'a, T> {
        while condition(&mut guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits until `condition` is false or `timeout` passes. The flag is `true` on timeout
    /// (with the condition still true).
    ///
    /// # Errors
    ///
    /// As `wait`.
    pub fn wait_timeout_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (WaitResult<'a, T>, bool) {
        let Some(deadline) = crate::primitive::deadline_after(timeout) else {
            return (self.wait_while(guard, condition), false);
        };
        while condition(&mut guard) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (Ok(guard), true);
            }
            match self.wait_timeout(guard, left) {
                (Ok(g), _) => guard = g,
                (Err(e), t) => return (Err(e), t),
            }
        }
        (Ok(guard), false)
    }

    fn wait_inner<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> (WaitResult<'a, T>, bool) {
        let deadline = timeout.and_then(crate::primitive::deadline_after);
        // Read under the mutex: any notify for a state change made after we unlock comes
        // after this in `seq`'s modification order.
        // Acquire: pairs with the Release increment in `notify_*`.
        let seq = self.seq.load(Ordering::Acquire);
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: with the fence in `notify_*` (between its `seq` increment and its
        // `waiters` load), either the notifier sees us counted, or our futex wait sees `seq`
        // changed. (Fences rather than SeqCst accesses, which loom does not model.)
        fence(Ordering::SeqCst);
        let mutex: &'a Mutex<T> = guard.unlock_and_forget();
        // Sleep in slices, re-checking `seq` after each: a notifier killed between its
        // increment and its wake (or a woken waiter killed before it acts) then costs us a
        // slice, not forever: the increment is already there to see.
        let mut timed_out = false;
        loop {
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        timed_out = true;
                        break;
                    }
                    left.min(crate::primitive::SLEEP_SLICE)
                }
                None => crate::primitive::SLEEP_SLICE,
            };
            crate::futex::wait(&self.seq, seq, Some(slice));
            if self.seq.load(Ordering::Relaxed) != seq {
                break;
            }
        }
        crate::fault_point!("condvar-woken");
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        // Re-lock without a deadline, as std does: the caller always gets the guard back
        // (with the timeout as the flag), even when another party holds the mutex across
        // the deadline. A dead holder is still noticed (`OwnerDied`, with the guard).
        (mutex.relock(), timed_out)
    }

    /// Wakes one waiter (in any process).
    pub fn notify_one(&self) {
        // Release: pairs with the Acquire load of `seq` in `wait_inner`.
        self.seq.fetch_add(1, Ordering::Release);
        crate::fault_point!("condvar-notified");
        // SeqCst fence: pairs with the fence in `wait_inner`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            crate::futex::wake(&self.seq, 1);
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        // Release: pairs with the Acquire load of `seq` in `wait_inner`.
        self.seq.fetch_add(1, Ordering::Release);
        // SeqCst fence: pairs with the fence in `wait_inner`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            crate::futex::wake_all(&self.seq);
        }
    }
}
