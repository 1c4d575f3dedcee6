//! How a blocked side waits: spin, then (if allowed) sleep on the very position word that
//! will change, with a flag so the other side makes a syscall only when someone sleeps.

use std::time::{Duration, Instant};

use shm_sync::primitive::{AtomicU32, AtomicU64, Backoff, Ordering};

/// How a blocked `push`/`pop` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin (with `spin_loop` hints) and never sleep: the lowest latency, for a core
    /// dedicated to this thread (trading). Burns that core while waiting.
    BusySpin,
    /// Spin briefly, yield, then sleep on a futex until the other side publishes: for audio
    /// and general use. An idle waiter uses no CPU; the other side pays a syscall only
    /// while someone sleeps.
    #[default]
    SpinThenPark,
}

/// When a wait gives up.
#[derive(Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(timeout: Option<Duration>) -> Deadline {
        // An `Instant` overflow (a huge timeout) means no deadline.
        Deadline(timeout.and_then(shm_sync::primitive::deadline_after))
    }

    pub fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// How long one sleep may last: until the deadline, and at most `slice`.
    pub fn slice(&self, slice: Duration) -> Option<Duration> {
        match self.0 {
            Some(d) => Some(d.saturating_duration_since(Instant::now()).min(slice)),
            None => Some(slice),
        }
    }
}

/// The sleeping half of the handshake: announce in `waiting`, re-check `ready` after a
/// heavy barrier, then sleep on the low half of `word` while it still reads `expected`.
/// Returns after a wake, a timeout slice, or at once if `ready` already holds.
pub(crate) fn park(
    waiting: &AtomicU32,
    word: &AtomicU64,
    expected: u64,
    slice: Option<Duration>,
    ready: impl Fn() -> bool,
) {
    waiting.fetch_add(1, Ordering::Relaxed);
    // Heavy barrier: orders our `waiting` increment before the re-check below, and forces
    // the publisher's store-then-check through a full barrier too (see shm_sync::barrier).
    let ordered = shm_sync::barrier::heavy();
    if !ready() {
        // If the heavy barrier failed, a publisher that skipped its fence may miss our flag:
        // sleep in short slices so a missed wake costs at most a millisecond.
        let slice = if ordered {
            slice
        } else {
            Some(slice.map_or(Duration::from_millis(1), |s| {
                s.min(Duration::from_millis(1))
            }))
        };
        shm_sync::futex::wait_low(word, expected as u32, slice);
    }
    waiting.fetch_sub(1, Ordering::Relaxed);
}

/// The publishing half: after storing `word`, wake a sleeper if one announced itself.
/// Returns whether a wake was issued.
#[inline]
pub(crate) fn wake_if_waiting(
    registered: bool,
    waiting: &AtomicU32,
    word: &AtomicU64,
    n: u32,
) -> bool {
    shm_sync::barrier::light(registered);
    if waiting.load(Ordering::Relaxed) != 0 {
        shm_sync::futex::wake_low(word, n);
        true
    } else {
        false
    }
}

/// Spins per `strategy` until `try_once` yields something. Returns `None` when the caller
/// should check its deadline and its peer, and then (`SpinThenPark`) sleep.
pub(crate) fn spin<R>(
    strategy: WaitStrategy,
    mut try_once: impl FnMut() -> Option<R>,
) -> Option<R> {
    match strategy {
        WaitStrategy::BusySpin => {
            for _ in 0..1024 {
                if let Some(r) = try_once() {
                    return Some(r);
                }
                #[cfg(not(shm_loom))]
                std::hint::spin_loop();
                #[cfg(shm_loom)]
                shm_sync::primitive::yield_now();
            }
            None
        }
        WaitStrategy::SpinThenPark => {
            let backoff = Backoff::new();
            loop {
                if let Some(r) = try_once() {
                    return Some(r);
                }
                if backoff.is_completed() {
                    return None;
                }
                backoff.snooze();
            }
        }
    }
}
