//! Process-shared futex wait and wake on a 32-bit word in a mapping.
//!
//! Always the shared form (never `FUTEX_PRIVATE_FLAG`, which keys waiters by the process's
//! own address space and so never wakes a waiter in another process). Timeouts are relative
//! and measured on `CLOCK_MONOTONIC`. Every outcome may be spurious: callers re-check the
//! word in a loop.
//!
//! Under `cfg(shm_loom)` the same API is a loom model: a wait checks the word and enqueues
//! atomically under one lock (as the kernel's hash-bucket lock does), and sleeps until a
//! wake picks it, so a missing wake shows up as a loom deadlock. Timed waits sleep like
//! untimed ones there.

use std::time::Duration;

use crate::primitive::{AtomicU32, AtomicU64};

/// How a [`wait`] ended. Re-check the word whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by a [`wake`] (or spuriously).
    Woken,
    /// The word did not hold `expected` when the kernel checked it.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleeps while `*word == expected`, up to `timeout` (`None`: no limit).
#[cfg(not(shm_loom))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    // EINTR, and anything unexpected, read as an interruption; callers re-check.
    outcome(crate::sys::futex_wait(word, expected, timeout))
}

/// Wakes up to `n` threads waiting on `word`, in any process; returns how many woke.
#[cfg(not(shm_loom))]
pub fn wake(word: &AtomicU32, n: u32) -> u32 {
    crate::sys::futex_wake(word, n)
}

/// How a [`wait_any`] ended. Re-check the words whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitAnyOutcome {
    /// Woken by a [`wake`] of the word at this index (or spuriously).
    Woken(usize),
    /// A word did not hold its expected value when the kernel checked.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
    /// The kernel has no `futex_waitv` (Linux < 5.16, or a seccomp filter refuses it):
    /// the caller must fall back (see [`wait_any`]).
    Unsupported,
}

/// The most words [`wait_any`] takes at once.
pub const WAIT_ANY_MAX: usize = 128;

/// Sleeps while each `*word == expected`, until a [`wake`] of any of them, up to
/// `timeout`: `futex_waitv(2)`, shared (Linux >= 5.16; timeouts on `CLOCK_MONOTONIC`).
/// Where the kernel refuses it, says `Unsupported` at once: a caller then sleeps on one
/// word in short slices and re-checks the others, which is what shm-ring's select does.
/// More than [`WAIT_ANY_MAX`] words: `Unsupported` too.
#[cfg(not(shm_loom))]
pub fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> WaitAnyOutcome {
    match crate::sys::futex_waitv(words, timeout) {
        Ok(i) => WaitAnyOutcome::Woken(i),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) => WaitAnyOutcome::ValueChanged,
            Some(libc::ETIMEDOUT) => WaitAnyOutcome::TimedOut,
            Some(libc::ENOSYS | libc::EPERM | libc::EINVAL) => WaitAnyOutcome::Unsupported,
            _ => WaitAnyOutcome::Interrupted,
        },
    }
}

#[cfg(not(shm_loom))]
fn outcome(r: std::io::Result<()>) -> WaitOutcome {
    match r {
        Ok(()) => WaitOutcome::Woken,
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) => WaitOutcome::ValueChanged,
            Some(libc::ETIMEDOUT) => WaitOutcome::TimedOut,
            _ => WaitOutcome::Interrupted,
        },
    }
}

/// Sleeps while the low 32 bits of `word` equal `expected`, up to `timeout`: waiting on a
/// 64-bit position (as shm-ring does) without a separate 32-bit word.
#[cfg(not(shm_loom))]
pub fn wait_low(word: &AtomicU64, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    outcome(crate::sys::futex_wait_low(word, expected, timeout))
}

/// Wakes up to `n` threads sleeping in [`wait_low`] on `word`.
#[cfg(not(shm_loom))]
pub fn wake_low(word: &AtomicU64, n: u32) -> u32 {
    crate::sys::futex_wake_low(word, n)
}

#[cfg(shm_loom)]
mod model {
    use super::*;
    use loom::sync::{Condvar, Mutex};

    #[derive(Default)]
    pub(super) struct Table {
        next: u64,
        waiting: Vec<(usize, u64)>,
        /// Woken waiters: their id, and the key that woke them.
        woken: Vec<(u64, usize)>,
    }

    loom::lazy_static! {
        pub(super) static ref TABLE: Mutex<Table> = Mutex::new(Table::default());
        pub(super) static ref CV: Condvar = Condvar::new();
    }

    fn key<W>(word: &W) -> usize {
        word as *const W as usize
    }

    /// Sleeps while `*word == expected` (the loom model). A timed wait once the model has
    /// let time pass (`primitive::world::time_passes`) ends at once, as a slice that is
    /// over: the clock is read under the table's lock, which `time_passes` takes after
    /// setting it, so a waiter either sees it or is woken by it. Before that, and for
    /// untimed waits, timeouts are ignored, so a missing wake is a deadlock loom reports.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        // SeqCst: the model's stand-in for the kernel's full barrier before it compares the
        // word (futex_wait's smp_mb), which pairs with the wakers' fences.
        wait_keyed(key(word), timeout.is_some(), || {
            word.load(crate::primitive::Ordering::SeqCst) == expected
        })
    }

    /// Sleeps while each `*word == expected`, until a wake of any (the loom model of
    /// `futex_waitv`): checks every word and enqueues on every key under one lock.
    pub fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> WaitAnyOutcome {
        let mut t = TABLE.lock().unwrap();
        // SeqCst: as in `wait`.
        if words
            .iter()
            .any(|(w, e)| w.load(crate::primitive::Ordering::SeqCst) != *e)
        {
            return WaitAnyOutcome::ValueChanged;
        }
        if timeout.is_some() && crate::primitive::world::timed_out() {
            drop(t);
            loom::thread::yield_now();
            return WaitAnyOutcome::TimedOut;
        }
        let id = t.next;
        t.next += 1;
        for (w, _) in words {
            t.waiting.push((key(*w), id));
        }
        loop {
            t = CV.wait(t).unwrap();
            if let Some(i) = t.woken.iter().position(|&w| w.0 == id) {
                let (_, k) = t.woken.swap_remove(i);
                // Off every other word's queue too.
                t.waiting.retain(|&(_, w)| w != id);
                let at = words.iter().position(|(w, _)| key(*w) == k).unwrap_or(0);
                return WaitAnyOutcome::Woken(at);
            }
        }
    }

    /// [`wait`] on the low half of a 64-bit word (the loom model).
    pub fn wait_low(word: &AtomicU64, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        // SeqCst: as in `wait`.
        wait_keyed(key(word), timeout.is_some(), || {
            word.load(crate::primitive::Ordering::SeqCst) as u32 == expected
        })
    }

    /// [`wake`] for [`wait_low`] (the loom model).
    pub fn wake_low(word: &AtomicU64, n: u32) -> u32 {
        wake_keyed(key(word), n)
    }

    /// Checks the word and enqueues under one lock, as the kernel does under its
    /// hash-bucket lock, so a wake cannot slip between the check and the sleep.
    fn wait_keyed(key: usize, timed: bool, still: impl FnOnce() -> bool) -> WaitOutcome {
        let mut t = TABLE.lock().unwrap();
        if !still() {
            return WaitOutcome::ValueChanged;
        }
        if timed && crate::primitive::world::timed_out() {
            drop(t);
            // Let the others run: loom then shows this thread fresh values, so a waiter
            // whose slices keep ending makes progress.
            loom::thread::yield_now();
            return WaitOutcome::TimedOut;
        }
        let id = t.next;
        t.next += 1;
        t.waiting.push((key, id));
        loop {
            t = CV.wait(t).unwrap();
            if let Some(i) = t.woken.iter().position(|&w| w.0 == id) {
                t.woken.swap_remove(i);
                return WaitOutcome::Woken;
            }
        }
    }

    /// Wakes up to `n` waiters on `word` (the loom model).
    pub fn wake(word: &AtomicU32, n: u32) -> u32 {
        wake_keyed(key(word), n)
    }

    /// Wakes every sleeper on every word (the model of "time passes": each sleep slice
    /// ends). Callers re-check their condition after any wake.
    pub(crate) fn wake_every_sleeper() {
        // After the clock was set (see `wait`).
        let mut t = TABLE.lock().unwrap();
        let mut ids: Vec<(u64, usize)> = t.waiting.drain(..).map(|(k, id)| (id, k)).collect();
        // A `wait_any` waiter is queued once per word: woken once.
        ids.sort_unstable();
        ids.dedup_by_key(|w| w.0);
        let any = !ids.is_empty();
        t.woken.extend(ids);
        if any {
            CV.notify_all();
        }
    }

    fn wake_keyed(key: usize, n: u32) -> u32 {
        let mut t = TABLE.lock().unwrap();
        let mut woke = 0;
        while woke < n {
            let Some(i) = t.waiting.iter().position(|w| w.0 == key) else {
                break;
            };
            let (_, id) = t.waiting.remove(i);
            // A `wait_any` waiter leaves its other words' queues too.
            t.waiting.retain(|&(_, w)| w != id);
            t.woken.push((id, key));
            woke += 1;
        }
        if woke > 0 {
            CV.notify_all();
        }
        woke
    }
}

#[cfg(shm_loom)]
pub(crate) use model::wake_every_sleeper;
#[cfg(shm_loom)]
pub use model::{wait, wait_any, wait_low, wake, wake_low};

/// Wakes every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> u32 {
    wake(word, i32::MAX as u32)
}
