//! A counting semaphore and an auto/manual-reset event, across processes.

use std::time::{Duration, Instant};

use crate::error::WaitError;
use crate::primitive::{deadline_after, fence, AtomicU32, Ordering, SLEEP_SLICE};

/// A counting semaphore shared between processes.
///
/// `count` is the futex word: acquirers sleep while it is 0. `waiters` counts sleepers so
/// that `release` makes a syscall only when someone sleeps. The count never goes below
/// zero (every decrement is a compare-exchange from a positive value), and `release`
/// refuses to push it past [`Semaphore::MAX`].
#[repr(C)]
pub struct Semaphore {
    count: AtomicU32,
    waiters: AtomicU32,
}

#[cfg(not(shm_loom))]
// SAFETY: two `AtomicU32`s: any bit pattern valid, zero is an empty semaphore, no Drop glue.
unsafe impl shm_core::ShmSafe for Semaphore {}

#[cfg(not(shm_loom))]
static_assertions::assert_eq_size!(Semaphore, u64);

/// `release` would push the count past [`Semaphore::MAX`]; nothing was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// The count found.
    pub count: u32,
    /// What was asked to be released.
    pub requested: u32,
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "releasing {} permits would push the semaphore's count ({}) past {}",
            self.requested,
            self.count,
            Semaphore::MAX
        )
    }
}

impl std::error::Error for Overflow {}

impl Semaphore {
    /// The largest count.
    pub const MAX: u32 = i32::MAX as u32;

    /// A semaphore holding `permits` (capped at [`MAX`](Self::MAX)).
    pub fn new(permits: u32) -> Semaphore {
        Semaphore {
            count: AtomicU32::new(permits.min(Self::MAX)),
            waiters: AtomicU32::new(0),
        }
    }

    /// Takes a permit if one is available now.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the count is 0.
    pub fn try_acquire(&self) -> Result<(), WaitError> {
        let mut c = self.count.load(Ordering::Relaxed);
        while c > 0 {
            // Acquire: pairs with the Release increment in `release`, so what the releaser
            // wrote before releasing is visible to us.
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => c = now,
            }
        }
        Err(WaitError::WouldBlock)
    }

    /// Takes a permit, sleeping until one is released.
    pub fn acquire(&self) {
        // Without a deadline the only error is unreachable.
        let _ = self.acquire_until(None);
    }

    /// Takes a permit, waiting at most `timeout` (monotonic clock).
    ///
    /// # Errors
    ///
    /// `Timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        match deadline_after(timeout) {
            Some(d) => self.acquire_until(Some(d)),
            None => {
                self.acquire();
                Ok(())
            }
        }
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        loop {
            if self.try_acquire().is_ok() {
                return Ok(());
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(WaitError::Timeout);
                    }
                    left.min(SLEEP_SLICE)
                }
                None => SLEEP_SLICE,
            };
            self.waiters.fetch_add(1, Ordering::Relaxed);
            // SeqCst fence: with the fence in `release` (between its increment and its
            // waiters load), either the releaser sees us counted and wakes us, or our futex
            // wait sees count != 0. Sleeping in slices bounds what a releaser killed before
            // its wake (or a woken waiter killed before it takes the permit) costs us.
            fence(Ordering::SeqCst);
            crate::futex::wait(&self.count, 0, Some(left));
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds `n` permits and wakes up to `n` sleepers.
    ///
    /// # Errors
    ///
    /// [`Overflow`] if the count would pass [`MAX`](Self::MAX); nothing is added.
    pub fn release(&self, n: u32) -> Result<(), Overflow> {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            let next = c
                .checked_add(n)
                .filter(|&v| v <= Self::MAX)
                .ok_or(Overflow {
                    count: c,
                    requested: n,
                })?;
            // Release: pairs with the Acquire CAS in `try_acquire`.
            match self
                .count
                .compare_exchange_weak(c, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        crate::fault_point!("semaphore-released");
        // SeqCst fence: pairs with the fence in `acquire_until`.
        fence(Ordering::SeqCst);
        if n > 0 && self.waiters.load(Ordering::Relaxed) != 0 {
            crate::futex::wake(&self.count, n);
        }
        Ok(())
    }

    /// The count now (a snapshot).
    pub fn available(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// How an [`Event`] behaves once set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Stays set, releasing every waiter, until [`Event::reset`].
    Manual,
    /// Releases one waiter and clears itself.
    Auto,
}

/// A one-bit signal between processes: set / wait / reset.
///
/// `state` (the futex word) is 0 (clear) or 1 (set); `mode` is 0 manual, 1 auto.
#[repr(C)]
pub struct Event {
    state: AtomicU32,
    waiters: AtomicU32,
    mode: AtomicU32,
    _reserved: AtomicU32,
}

#[cfg(not(shm_loom))]
// SAFETY: `AtomicU32`s only: any bit pattern valid, zero is a clear manual-reset event.
unsafe impl shm_core::ShmSafe for Event {}

#[cfg(not(shm_loom))]
static_assertions::assert_eq_size!(Event, [u32; 4]);

impl Event {
    /// A clear event.
    pub fn new(reset: Reset) -> Event {
        Event {
            state: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            mode: AtomicU32::new(reset as u32),
            _reserved: AtomicU32::new(0),
        }
    }

    /// Initialises a zeroed event in place.
    ///
    /// # Safety
    ///
    /// No other thread or process may access `self` during the call.
    pub unsafe fn init_in_place(&self, reset: Reset) {
        self.state.store(0, Ordering::Relaxed);
        self.mode.store(reset as u32, Ordering::Relaxed);
    }

    /// Manual or auto reset (anything but 1 reads as manual).
    pub fn reset_mode(&self) -> Reset {
        if self.mode.load(Ordering::Relaxed) == Reset::Auto as u32 {
            Reset::Auto
        } else {
            Reset::Manual
        }
    }

    /// Sets the event: a manual event releases every waiter, an auto event one.
    pub fn set(&self) {
        // Release: pairs with the Acquire in `try_wait`.
        self.state.store(1, Ordering::Release);
        crate::fault_point!("event-set");
        // SeqCst fence: pairs with the fence in `wait_until` (either we see the waiter, or
        // its futex wait sees state != 0).
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            match self.reset_mode() {
                Reset::Manual => {
                    crate::futex::wake_all(&self.state);
                }
                Reset::Auto => {
                    crate::futex::wake(&self.state, 1);
                }
            }
        }
    }

    /// Clears the event.
    pub fn reset(&self) {
        self.state.store(0, Ordering::Relaxed);
    }

    /// Whether set, without waiting; an auto event is cleared by a successful call.
    pub fn try_wait(&self) -> bool {
        match self.reset_mode() {
            // Acquire: pairs with the store in `set`.
            Reset::Manual => self.state.load(Ordering::Acquire) != 0,
            // Any non-zero state counts as set (a scribbled 2 must not spin a waiter
            // forever); the swap consumes it.
            Reset::Auto => {
                self.state.load(Ordering::Relaxed) != 0
                    && self.state.swap(0, Ordering::Acquire) != 0
            }
        }
    }

    /// Waits until set.
    pub fn wait(&self) {
        let _ = self.wait_until(None);
    }

    /// Waits until set, at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        match deadline_after(timeout) {
            Some(d) => self.wait_until(Some(d)),
            None => {
                self.wait();
                Ok(())
            }
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        loop {
            if self.try_wait() {
                return Ok(());
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(WaitError::Timeout);
                    }
                    left.min(SLEEP_SLICE)
                }
                None => SLEEP_SLICE,
            };
            self.waiters.fetch_add(1, Ordering::Relaxed);
            // SeqCst fence: pairs with the fence in `set`. Slices: see `Semaphore`.
            fence(Ordering::SeqCst);
            crate::futex::wait(&self.state, 0, Some(left));
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
