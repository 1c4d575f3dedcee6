//! How a blocked side waits: spin, then (if allowed) sleep on the eventcount of the side it
//! waits for (a [`FlagLine`]: a sleeper count and an epoch), so the other side makes a
//! syscall only when someone sleeps.

use std::time::{Duration, Instant};

use shm_sync::primitive::{AtomicU32, Ordering};
use shm_sync::sleepers;

/// How a blocked `push`/`pop` (and `push_timeout`/`pop_timeout`) waits once the ring is
/// full or empty. While data flows no strategy costs anything: a wait begins only when a
/// call finds nothing to do, and its first polls read no clock.
///
/// Measured with `shmring bench` on the project's 2-core VM (AMD EPYC, 2026-12-01, 10
/// runs; "S" when its vCPUs shared a core, floor 70-120 ns, "X" when on separate cores,
/// floor 440-530 ns): rows `spsc-bursty-*`, a feed of bursts of 200 messages 5 µs apart
/// (200k msg/s), 1 ms between bursts, into one consumer process; and the idle rows, a
/// consumer blocked in `pop` on a ring nobody writes.
///
/// | strategy | while waiting | one-way latency p50 | `FUTEX_WAKE`s per push | consumer CPU (bursty) | idle consumer |
/// | --- | --- | --- | --- | --- | --- |
/// | `BusySpin` | polls, never sleeps | S 120-141 ns, X 381-401 ns | 0 | 98-100% | a whole core |
/// | `SpinThenPark` (default) | polls for an adaptive budget (10-100 µs), yields twice, sleeps | S 175-195 ns, X 426-461 ns (1.12-1.56x `BusySpin`) | 0.50-0.62% (one per burst) | 50-52% | 0.018-0.033% of a core, 1 wake-up a second |
/// | `Budget(b)` | polls for `b.spin`, yields `b.yields` times, sleeps | as `SpinThenPark` when `b.spin` covers the gaps between messages | as `SpinThenPark` | as `SpinThenPark` | as `SpinThenPark` |
///
/// The p99 of a parking strategy (29-83 µs in those runs) is the first message of a burst,
/// which finds the consumer asleep: a futex wake-up on this VM. While data flows, the
/// blocking calls cost what polling costs: `try_push`/`try_pop` loops against `push`/`pop`
/// on the same ring between two threads (`benches/examples/loops.rs`, 40 interleaved
/// rounds), `BusySpin` at 1.06x, 1.01x and 1.39x the loop's rate in the VM's three states
/// (medians), `SpinThenPark` at 1.07x, 1.01x and 1.49x.
///
/// A sleeping side is woken by the other side's publish (a futex on the ring's flag line,
/// issued only while someone sleeps), by a disconnect, by its deadline, and by the death of
/// its peer, which the process's exit watcher (one thread, started by the first end that
/// sleeps or the first SPSC producer that watches its consumer, over the peers' pidfds)
/// turns into a wake-up. Where no pidfd can be had, a sleeper
/// re-checks its peer every liveness interval instead (`set_liveness_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Poll (with `spin_loop` hints) and never sleep: the lowest latency, for a core
    /// dedicated to this thread (trading). Burns that core while waiting.
    BusySpin,
    /// Poll for an adaptive budget, yield, then sleep on a futex until the other side
    /// publishes: for audio and general use. The budget starts at 50 µs and follows how
    /// long this handle's recent waits lasted: a wait that ended after `w` (within
    /// 100 µs) makes the next budget at least `4 * w`, a wait that slept for longer than
    /// 100 µs shrinks it by a quarter, down to 10 µs. So messages that arrive in bursts are
    /// caught while polling, and only the first of a burst pays a wake-up, while a handle
    /// whose waits are long (an idle feed, a 2.7 ms audio period) sleeps after 10 µs.
    #[default]
    SpinThenPark,
    /// Poll for `spin`, yield `yields` times, then sleep: a fixed budget, in the manner of
    /// Aeron's `BackoffIdleStrategy` and the disruptor's phased back-off. However long the
    /// budget, a wait still ends at its deadline and checks its peer every liveness
    /// interval. With `spin` of
    /// zero a wait sleeps after 72 polls (8 that read no clock, then one round of 64 before
    /// the first clock read) and its yields.
    Budget(SpinBudget),
}

/// The fixed budget of [`WaitStrategy::Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinBudget {
    /// How long to poll before yielding (the clock is read every 64 polls).
    pub spin: Duration,
    /// How many `sched_yield`s (each followed by a poll) before sleeping.
    pub yields: u32,
}

impl WaitStrategy {
    /// Whether a wait may sleep.
    #[inline]
    pub(crate) fn parks(self) -> bool {
        !matches!(self, WaitStrategy::BusySpin)
    }
}

/// The adaptive spin budget's bounds (see [`WaitStrategy::SpinThenPark`]), and where it
/// starts: half way up.
const ADAPT_MIN_NS: u64 = 10_000;
const ADAPT_MAX_NS: u64 = 100_000;
const ADAPT_START_NS: u64 = ADAPT_MAX_NS / 2;

/// One handle's waiting state: the adaptive budget, and the wait in progress.
#[derive(Clone, Copy)]
pub(crate) struct Waiter {
    budget_ns: u64,
    /// When the wait in progress began spinning on the clock (`None`: it has not, or
    /// there is none).
    started: Option<Instant>,
    /// Whether the wait in progress slept.
    slept: bool,
    /// Yields the wait in progress made so far.
    yielded: u32,
    /// The last `spin` returned to let its caller check its deadline and its peer before
    /// the budget was spent: the caller must not sleep yet, and the next `spin` goes on.
    cut: bool,
}

impl Waiter {
    pub fn new() -> Waiter {
        Waiter {
            budget_ns: ADAPT_START_NS,
            started: None,
            slept: false,
            yielded: 0,
            cut: false,
        }
    }

    /// The wait in progress ended with data (or an error): learn from how long it took.
    #[inline]
    fn done(&mut self) {
        self.yielded = 0;
        self.cut = false;
        let Some(t0) = self.started.take() else {
            return; // ended within the free polls: nothing to learn, nothing to pay
        };
        let w = t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let slept = std::mem::take(&mut self.slept);
        self.budget_ns = if w <= ADAPT_MAX_NS {
            // It ended soon: a budget of 4 w would have caught it while polling.
            let want = w.saturating_mul(4).clamp(ADAPT_MIN_NS, ADAPT_MAX_NS);
            if slept {
                want.max(self.budget_ns.saturating_mul(2)).min(ADAPT_MAX_NS)
            } else {
                want.max(self.budget_ns - self.budget_ns / 16)
            }
        } else if slept {
            // A long wait: polling was wasted. Shrink.
            (self.budget_ns - self.budget_ns / 4).max(ADAPT_MIN_NS)
        } else {
            self.budget_ns
        };
    }

    /// The wait in progress is about to sleep.
    pub fn sleeping(&mut self) {
        self.slept = true;
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    /// The wait in progress ended without data (an error, a timeout): forget it.
    pub fn abandon(&mut self) {
        self.started = None;
        self.slept = false;
        self.yielded = 0;
        self.cut = false;
    }

    /// Whether the wait may sleep now: the strategy parks and the last `spin` spent its
    /// budget (it was not cut short to let the caller check its deadline and peer).
    pub fn may_sleep(&self, strategy: WaitStrategy) -> bool {
        strategy.parks() && !self.cut
    }

    /// Whether the last `spin` was cut short for the caller's checks (its deadline or the
    /// liveness interval passed) rather than ended by its budget: the caller checks its
    /// peer now, not on its usual every-256th-poll schedule, which a spin that is cut once
    /// per interval would stretch 256-fold.
    pub fn was_cut(&self) -> bool {
        self.cut
    }

    /// The current adaptive budget, for tests.
    #[cfg(all(test, not(shm_loom)))]
    fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns)
    }
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

    /// Whether it had passed at `now`.
    #[inline]
    pub fn passed_at(&self, now: Instant) -> bool {
        self.0.is_some_and(|d| now >= d)
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
/// | `waiting` | how many may be asleep (or about to be); bit 31: woken already   |
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
///
/// While it sleeps, a sleeper is registered with this process's shutdown (if
/// [`Shutdown::on_signals`](crate::Shutdown) installed it), which wakes it; a requested
/// shutdown counts as ready.
pub(crate) fn park(
    target: &crate::end::FlagTarget<'_>,
    slice: Option<Duration>,
    ready: impl Fn() -> bool,
    mut again: impl FnMut() -> Option<Option<Duration>>,
) {
    let flag = target.line();
    // Before the epoch is read: a shutdown's wake that comes after this either bumps the
    // epoch we then read (and `ready` sees the request), or wakes our futex wait.
    let _registered = crate::shutdown::register(target);
    let ready = || ready() || crate::shutdown::requested();
    // Acquire: pairs with the Release bump in `wake`, ordering our re-check after it.
    let epoch = flag.epoch.load(Ordering::Acquire);
    // Count ourselves in and clear `WOKEN` (Release: pairs with the Acquire in
    // `sleepers::first_wake`, so our read of `epoch` above happens before a once-per-round
    // waker's bump, which our futex wait then sees as a change), then the heavy barrier:
    // it orders the announcement before the re-check below, and forces the waker's
    // change-then-check through a full barrier too (see shm_sync::barrier).
    let ordered = sleepers::announce(&flag.waiting);
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
    sleepers::retire(&flag.waiting);
}

/// The waking half, after the change a sleeper waits for: wake up to `n` sleepers if any
/// announced themselves. Returns whether a wake was issued.
#[inline]
pub(crate) fn wake_if_waiting(registered: bool, flag: &FlagLine, n: u32) -> bool {
    shm_sync::barrier::light(registered);
    // Relaxed: ordered by the barrier.
    if sleepers::anyone(flag.waiting.load(Ordering::Relaxed)) {
        wake(flag, n);
        true
    } else {
        false
    }
}

/// [`wake_if_waiting`] for a flag that only one side's one handle sleeps on (SPSC): wakes
/// once per sleep, not once per publish. A sleeper woken by a futex takes tens of
/// microseconds on a VM to run again and count itself out; a bursty feed would pay a
/// `FUTEX_WAKE` for every message it published meanwhile. The first waker to see the
/// sleeper sets `WOKEN` and wakes; later ones see the bit and skip, until the sleeper
/// announces itself again (which clears it).
#[inline]
pub(crate) fn wake_one_if_waiting(registered: bool, flag: &FlagLine) -> bool {
    wake_once_if_waiting(registered, flag, 1)
}

/// [`wake_one_if_waiting`] for a flag many handles sleep on (broadcast subscribers): the
/// first waker after any announcement wakes up to `n` sleepers and sets `WOKEN`; later
/// wakers skip until one of them announces itself again. Sound for many sleepers as for
/// one: every announcement clears `WOKEN`, so a sleeper that announced after the last wake
/// is woken by the next change, and one that announced before it was woken by it (its
/// futex wait sees the epoch that wake bumped).
#[inline]
pub(crate) fn wake_once_if_waiting(registered: bool, flag: &FlagLine, n: u32) -> bool {
    shm_sync::barrier::light(registered);
    if sleepers::first_wake(&flag.waiting) {
        wake(flag, n);
        return true;
    }
    false
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

/// Polls before a wait reads the clock: a wait this short costs no clock read.
const FREE_POLLS: u32 = 8;
/// Polls between two clock reads while spinning.
const POLLS_PER_CLOCK: u32 = 64;
/// Yields after the adaptive budget runs out, before the wait sleeps.
const ADAPT_YIELDS: u32 = 2;

/// Polls per `strategy` until `try_once` yields something. Returns `None` when the caller
/// should check its deadline and its peer, and then (if the strategy parks) sleep.
///
/// `pauses` is how many spin hints go between two polls: the trade between noticing the
/// other side sooner and leaving its line alone so it can publish several items per poll.
/// SPSC polls the producer's position word, which the producer stores on every publish, so
/// polling too often takes that line from it on each item ([`SPSC_POLL_PAUSES`]). MPMC polls
/// the slot's sequence word, which each item's producer writes twice (mark, publish) and its
/// consumer twice (mark, release) anyway ([`MPMC_POLL_PAUSES`]).
///
/// The first [`FREE_POLLS`] polls read no clock; a wait that lasts longer reads it every
/// [`POLLS_PER_CLOCK`] polls, to end the spin budget and to learn from (the adaptive
/// budget of `SpinThenPark`).
#[inline]
///
/// A budget longer than `check_every` (the caller's liveness interval), or past `deadline`,
/// is cut: `spin` returns `None` at least every `check_every` and as soon as the deadline
/// passes, so the caller checks its deadline and its peer, and (while
/// [`Waiter::may_sleep`] says no) calls `spin` again, which goes on with the same budget.
pub(crate) fn spin<R>(
    strategy: WaitStrategy,
    waiter: &mut Waiter,
    pauses: u32,
    (deadline, check_every): (&Deadline, Duration),
    mut try_once: impl FnMut() -> Option<R>,
) -> Option<R> {
    waiter.cut = false;
    let mut poll = || -> Option<R> {
        let r = try_once();
        if r.is_none() {
            for _ in 0..pauses {
                shm_sync::primitive::spin_hint();
            }
        }
        r
    };
    if cfg!(shm_loom) {
        // Loom must see every retry as a yield and stay finite: one poll for the parking
        // strategies (then the sleep path), a bounded loop for `BusySpin`.
        let polls = if strategy.parks() { 1 } else { 1024 };
        for _ in 0..polls {
            if let Some(r) = poll() {
                return Some(r);
            }
        }
        return None;
    }
    for _ in 0..FREE_POLLS {
        if let Some(r) = poll() {
            waiter.done();
            return Some(r);
        }
    }
    let (spin_ns, yields) = match strategy {
        // Back to the caller every 1024 polls, to check its deadline and its peer.
        WaitStrategy::BusySpin => {
            for _ in 0..1024 - FREE_POLLS {
                if let Some(r) = poll() {
                    return Some(r);
                }
            }
            return None;
        }
        WaitStrategy::SpinThenPark => (waiter.budget_ns, ADAPT_YIELDS),
        WaitStrategy::Budget(b) => (b.spin.as_nanos().min(u128::from(u64::MAX)) as u64, b.yields),
    };
    let call0 = Instant::now();
    let t0 = *waiter.started.get_or_insert(call0);
    // Whether this call must hand back to the caller before the budget is spent.
    let cut_now = |now: Instant, waiter: &mut Waiter| {
        if deadline.passed_at(now) {
            return true; // the caller reports the timeout
        }
        if now.saturating_duration_since(call0) >= check_every {
            waiter.cut = true;
            return true;
        }
        false
    };
    loop {
        for _ in 0..POLLS_PER_CLOCK {
            if let Some(r) = poll() {
                waiter.done();
                return Some(r);
            }
        }
        let now = Instant::now();
        if now.saturating_duration_since(t0).as_nanos() >= u128::from(spin_ns) {
            break;
        }
        if cut_now(now, waiter) {
            return None;
        }
    }
    while waiter.yielded < yields {
        waiter.yielded += 1;
        shm_sync::primitive::yield_now();
        if let Some(r) = poll() {
            waiter.done();
            return Some(r);
        }
        if cut_now(Instant::now(), waiter) {
            return None;
        }
    }
    None
}

/// A wait that ended through the caller's own check (after a sleep, say) rather than
/// inside [`spin`]: learn from it as `spin` would.
#[inline]
pub(crate) fn ended(waiter: &mut Waiter) {
    waiter.done();
}

#[cfg(all(test, not(shm_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_count_a_peer_zeroed_does_not_wrap_into_an_unseen_announcement() {
        let keep: std::sync::Arc<dyn std::any::Any + Send + Sync> = std::sync::Arc::new(());
        let target = crate::end::FlagTarget::leaked(&keep);
        let flag = target.line();
        // A peer zeroes the count while we are announced (our `ready` plays that peer).
        park(
            &target,
            Some(Duration::from_millis(1)),
            || {
                flag.waiting.store(0, Ordering::Relaxed);
                true
            },
            || None,
        );
        assert_eq!(flag.waiting.load(Ordering::Relaxed) & sleepers::COUNT, 0);
        // Whether a sleeper's announcement is visible to a waker while it sleeps.
        let announced = || {
            let seen = std::cell::Cell::new(false);
            let ready = || {
                seen.set(flag.waiting.load(Ordering::Relaxed) & sleepers::COUNT != 0);
                true
            };
            park(&target, Some(Duration::from_millis(1)), ready, || None);
            seen.get()
        };
        assert!(announced(), "an announced sleeper counted as none");
        // A count at its top (garbage) saturates rather than wrapping to 0.
        flag.waiting.store(sleepers::COUNT, Ordering::Relaxed);
        assert!(announced(), "a saturated count wrapped to 0");
    }

    #[test]
    fn the_adaptive_budget_grows_after_short_sleeps_and_shrinks_after_long_ones() {
        let mut w = Waiter::new();
        assert_eq!(w.budget(), Duration::from_nanos(ADAPT_START_NS));
        // A wait that slept but ended 30 µs after it began: the budget must cover 4 x 30.
        w.started = Some(Instant::now() - Duration::from_micros(30));
        w.slept = true;
        w.done();
        assert_eq!(w.budget(), Duration::from_nanos(ADAPT_MAX_NS));
        // Long sleeps (an idle feed) shrink it, down to the floor and no further.
        for _ in 0..40 {
            w.started = Some(Instant::now() - Duration::from_millis(5));
            w.slept = true;
            w.done();
        }
        assert_eq!(w.budget(), Duration::from_nanos(ADAPT_MIN_NS));
        // A wait ended while polling after 10 µs: at least 4 x 10 µs next time.
        w.started = Some(Instant::now() - Duration::from_micros(10));
        w.done();
        assert!(w.budget() >= Duration::from_micros(40), "{:?}", w.budget());
        // A wait within the free polls leaves it alone.
        let b = w.budget();
        w.done();
        assert_eq!(w.budget(), b);
    }

    #[test]
    fn a_long_budget_is_cut_for_the_deadline_and_the_liveness_interval() {
        let long = WaitStrategy::Budget(SpinBudget {
            spin: Duration::from_secs(3600),
            yields: u32::MAX,
        });
        // The deadline ends the spin (the caller then reports its timeout).
        let mut w = Waiter::new();
        let t = Instant::now();
        let d = Deadline::after(Some(Duration::from_millis(20)));
        assert_eq!(
            spin(long, &mut w, 0, (&d, Duration::MAX), || None::<()>),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // The liveness interval cuts it, without letting the caller sleep; the next call
        // goes on with the same budget.
        let mut w = Waiter::new();
        let none = Deadline::after(None);
        let every = Duration::from_millis(5);
        assert_eq!(spin(long, &mut w, 0, (&none, every), || None::<()>), None);
        assert!(!w.may_sleep(long), "cut short: no sleep yet");
        let started = w.started;
        assert_eq!(spin(long, &mut w, 0, (&none, every), || None::<()>), None);
        assert_eq!(w.started, started, "the same wait goes on");
    }

    #[test]
    fn a_spin_budget_of_zero_gives_up_after_the_free_polls() {
        let mut w = Waiter::new();
        let mut polls = 0u32;
        let b = WaitStrategy::Budget(SpinBudget {
            spin: Duration::ZERO,
            yields: 3,
        });
        assert_eq!(
            spin(
                b,
                &mut w,
                0,
                (&Deadline::after(None), Duration::MAX),
                || {
                    polls += 1;
                    None::<()>
                }
            ),
            None
        );
        assert_eq!(polls, FREE_POLLS + POLLS_PER_CLOCK + 3);
        assert!(w.may_sleep(b));
        // A huge budget saturates instead of overflowing, and data ends it.
        let mut w = Waiter::new();
        let huge = WaitStrategy::Budget(SpinBudget {
            spin: Duration::MAX,
            yields: u32::MAX,
        });
        let mut n = 0u32;
        assert_eq!(
            spin(
                huge,
                &mut w,
                0,
                (&Deadline::after(None), Duration::MAX),
                || {
                    n += 1;
                    (n == 500).then_some(7)
                }
            ),
            Some(7)
        );
    }
}
