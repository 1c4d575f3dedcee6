//! How a blocked side waits: spin, then (if allowed) sleep on the very position word that
//! will change, with a flag so the other side makes a syscall only when someone sleeps.

use std::time::{Duration, Instant};

use shm_sync::primitive::{AtomicU32, Backoff, Ordering};

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
    #[inline]
    pub fn after(timeout: Option<Duration>) -> Deadline {
        // An `Instant` overflow (a huge timeout) means no deadline.
        Deadline(timeout.and_then(shm_sync::primitive::deadline_after))
    }

    #[inline]
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

/// Where sleepers of one side announce themselves and sleep: an *eventcount*.
///
/// | field     | meaning                                                        |
/// | --------- | -------------------------------------------------------------- |
/// | `waiting` | how many may be asleep (or about to be)                        |
/// | `epoch`   | bumped by a waker before each `FUTEX_WAKE`; the futex word      |
///
/// A sleeper reads `epoch`, counts itself in `waiting`, re-checks its condition after a
/// heavy barrier, and sleeps only while `epoch` is unchanged. A waker changes what the
/// sleeper waits for (a position, or an end's state), passes a light barrier, and only if
/// `waiting != 0` bumps `epoch` and wakes. Either the sleeper's re-check sees the change,
/// or the waker sees the sleeper and its bump makes the sleeper's futex wait return. Sleeping
/// on `epoch` rather than on the position itself is what lets a *disconnect*, which moves no
/// position, wake a sleeper without a lost wake-up. The line is written only by sleepers and
/// by wakers of sleepers, so the publisher's check of `waiting` on every publish hits a
/// clean line in its own cache.
#[repr(C, align(128))]
pub(crate) struct FlagLine {
    pub(crate) waiting: AtomicU32,
    pub(crate) epoch: AtomicU32,
}

impl FlagLine {
    pub fn new() -> FlagLine {
        FlagLine {
            waiting: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
        }
    }
}

/// The sleeping half: announce, re-check `ready` after a heavy barrier, sleep (at most
/// `slice`) unless a waker bumped the epoch meanwhile. After a slice that ended with no
/// wake and nothing ready, `again` decides (it checks the deadline and the peer's
/// liveness): `Some(slice)` sleeps another slice *without re-announcing* (the heavy
/// barrier is paid once per wait, not once per slice: a long idle wait costs one futex
/// timeout and one liveness check per slice), `None` returns to the caller.
pub(crate) fn park(
    flag: &FlagLine,
    slice: Option<Duration>,
    ready: impl Fn() -> bool,
    mut again: impl FnMut() -> Option<Option<Duration>>,
) {
    // Acquire: pairs with the Release bump in `wake`, ordering our re-check after it.
    let epoch = flag.epoch.load(Ordering::Acquire);
    flag.waiting.fetch_add(1, Ordering::Relaxed);
    // Heavy barrier: orders our `waiting` increment before the re-check below, and forces
    // the waker's change-then-check through a full barrier too (see shm_sync::barrier).
    let ordered = shm_sync::barrier::heavy();
    // If the heavy barrier failed, a waker that skipped its fence may miss our flag: sleep
    // in short slices so a missed wake costs at most a millisecond.
    let cap = |s: Option<Duration>| {
        if ordered {
            s
        } else {
            Some(s.map_or(Duration::from_millis(1), |s| {
                s.min(Duration::from_millis(1))
            }))
        }
    };
    if !ready() {
        let mut slice = cap(slice);
        loop {
            shm_sync::futex::wait(&flag.epoch, epoch, slice);
            // Still announced, so every publish since the barrier either bumped the epoch
            // or is visible to `ready` (the barrier ordered our flag before it).
            // Acquire: pairs with the Release bump in `wake`.
            if cfg!(shm_loom) || flag.epoch.load(Ordering::Acquire) != epoch || ready() {
                break;
            }
            match again() {
                Some(s) => slice = cap(s),
                None => break,
            }
        }
    } else {
        // Ready already (e.g. a claimed slot not yet published): let the other side run
        // rather than spin straight back here (loom needs this yield to stay finite).
        shm_sync::primitive::yield_now();
    }
    flag.waiting.fetch_sub(1, Ordering::Relaxed);
}

/// The waking half, after the change a sleeper waits for: wake up to `n` sleepers if any
/// announced themselves. Returns whether a wake was issued.
#[inline]
pub(crate) fn wake_if_waiting(registered: bool, flag: &FlagLine, n: u32) -> bool {
    shm_sync::barrier::light(registered);
    if flag.waiting.load(Ordering::Relaxed) != 0 {
        wake(flag, n);
        true
    } else {
        false
    }
}

/// Bumps the epoch and wakes up to `n` sleepers (unconditionally: for rare events such
/// as a disconnect).
#[cold]
pub(crate) fn wake(flag: &FlagLine, n: u32) {
    // Release: pairs with the Acquire load of `epoch` in `park`.
    flag.epoch.fetch_add(1, Ordering::Release);
    shm_sync::futex::wake(&flag.epoch, n);
}

/// Spin hints between two SPSC polls in `BusySpin`. On the 2-core VM, `shmring bench`
/// measured the SPSC round trip at 356-369 ns with 1 hint, 300-304 ns with 4 and 308-315 ns
/// with 8 (three runs each, floor 250-280 ns); with the vCPUs sharing a core (floor 70-90
/// ns), 1 hint gave 110 ns against 140-170 ns, but cost one-at-a-time throughput
/// (87-106 against 106-128 M msg/s, 4 runs each).
pub(crate) const SPSC_POLL_PAUSES: u32 = if cfg!(shm_loom) { 1 } else { 4 };
/// Spin hints between two MPMC polls in `BusySpin`: with the vCPUs sharing a core, 1 hint
/// measured a 160-170 ns round trip against 250-260 ns with 4, and about the same
/// throughput (32-37 against 36-40 M msg/s, 4 runs each).
pub(crate) const MPMC_POLL_PAUSES: u32 = 1;

/// Spins per `strategy` until `try_once` yields something. Returns `None` when the caller
/// should check its deadline and its peer, and then (`SpinThenPark`) sleep.
///
/// `pauses` is how many spin hints `BusySpin` puts between two polls: the trade between
/// noticing the other side sooner and leaving its line alone so it can publish several
/// items per poll. SPSC polls the producer's position word, which the producer stores on
/// every publish, so polling too often takes that line from it on each item
/// ([`SPSC_POLL_PAUSES`]). MPMC polls the slot's sequence word, which each item's producer
/// writes twice (mark, publish) and its consumer twice (mark, release) anyway
/// ([`MPMC_POLL_PAUSES`]).
pub(crate) fn spin<R>(
    strategy: WaitStrategy,
    pauses: u32,
    mut try_once: impl FnMut() -> Option<R>,
) -> Option<R> {
    match strategy {
        WaitStrategy::BusySpin => {
            for _ in 0..1024 {
                if let Some(r) = try_once() {
                    return Some(r);
                }
                for _ in 0..pauses {
                    shm_sync::primitive::spin_hint();
                }
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
