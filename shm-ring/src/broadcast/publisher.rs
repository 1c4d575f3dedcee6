//! The publishing end of a broadcast ring: publishes, batches, back-pressure and eviction.

use super::*;
use crate::end::LivenessTimer;
use crate::wait::{self, Deadline, WaitStrategy, Waiter};

/// The publishing end of a broadcast ring (one per ring). `&mut self` methods: one thread
/// at a time.
pub struct Publisher<T> {
    mem: Mem<Control, Slot<T>>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    /// Our truth of `tail` (only we write it).
    tail: u64,
    policy: Policy,
    untether: Option<Duration>,
    /// Back-pressure: the lowest position an attached subscriber may still read, as the
    /// last scan of the records found it (`tail` if none holds us back). We write up to
    /// `floor + capacity - 1` before scanning again.
    floor: u64,
    /// The record that set `floor`, if any.
    blocker: Option<usize>,
    /// The blocker's owner word, position and eviction word as that scan read them: a
    /// wait for room ends when they change (compared with what the scan read, not with a
    /// later look, so a move between the scan and the sleep is never slept through).
    blocker_seen: (u64, u32, u64, u64),
    /// The blocker as first seen holding us back at its position: record, owner word,
    /// position, since when (for the untether timeout).
    blocked: Option<(usize, u32, u64, u64, Instant)>,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    waiter: Waiter,
    stalled_at: u64,
    attachment: Attachment,
}

#[cfg(not(shm_loom))]
use std::time::Instant;
/// Loom has no clock: the untether timeout's verdict is loom's choice.
#[cfg(shm_loom)]
#[derive(Clone, Copy)]
struct Instant;
#[cfg(shm_loom)]
impl Instant {
    fn now() -> Instant {
        Instant
    }
    fn elapsed(&self) -> Duration {
        if shm_sync::primitive::world::timed_out() {
            Duration::MAX
        } else {
            Duration::ZERO
        }
    }
}

/// Why a wait for room ended without any.
enum Stop {
    Timeout,
    Interrupted,
}

impl<T: Pod> Ring<T> {
    /// Joins as the publisher (with the default [`WaitStrategy`]). A publisher whose
    /// process died is taken over: the new one goes on from the last position the dead
    /// one published (a slot it was writing when it died was never published, and is
    /// written anew).
    ///
    /// # Errors
    ///
    /// [`RingError::RoleTaken`] if a live process holds the publisher end.
    pub fn publisher(&self) -> Result<Publisher<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (generation, was) = c
            .config
            .publisher
            .claim_role(me, &self.name, Role::Publisher)?;
        // Acquire: pairs with the previous publisher's Release stores of `tail`.
        let mut tail = c.publisher.tail.load(Ordering::Acquire);
        // A predecessor killed between publishing slots and storing `tail` (mid-batch, or
        // between one publish's two steps) left those positions published: go on after
        // them, or subscribers that read them would miss our first messages, and one that
        // copied a slot we rewrite with the same sequence word would take a mix of both
        // writes for a value. At most a ring of them. Acquire: pairs with its Release
        // stores of the even words.
        let start = tail;
        while tail.wrapping_sub(start) < self.mem.cap()
            && self.mem.slot(tail).seq.load(Ordering::Acquire) == published(tail)
        {
            tail = tail.wrapping_add(1);
        }
        if tail != start {
            // Release: as every publish's store of `tail`.
            c.publisher.tail.store(tail, Ordering::Release);
        }
        // Relaxed: a report for subscribers and `inspect`.
        c.config.publisher_since.store(tail, Ordering::Relaxed);
        // Subscribers asleep re-arm their watch on the new publisher, so its death wakes
        // them.
        if !cfg!(shm_loom) {
            wait::wake(&c.subscribers_waiting, u32::MAX);
        }
        let mut p = Publisher {
            mem: self.mem.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            tail,
            policy: self.policy,
            untether: self.untether,
            floor: tail,
            blocker: None,
            blocker_seen: (0, 0, 0, 0),
            blocked: None,
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            waiter: Waiter::new(),
            stalled_at: tail.wrapping_sub(1),
            attachment: Attachment::claimed(generation, was, tail, 0),
        };
        if p.policy == Policy::BackPressure {
            p.rescan();
        }
        Ok(p)
    }
}

impl<T: Pod> Publisher<T> {
    /// How this publisher attached: its generation, its first position, whose dead end it
    /// took over.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The position of the next message published.
    pub fn position(&self) -> u64 {
        self.tail
    }

    crate::handles::end_settings!(
        "publishes (back-pressure)",
        "a blocked publish checks that the subscriber holding it back still runs, and whether it stalled past the untether timeout"
    );
    crate::handles::end_ring_info!();

    /// The ring's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Writes `v` at position `p` (a slot we own: back-pressure checked room first).
    #[inline]
    fn write(&self, p: u64, v: &T) {
        let s = self.mem.slot(p);
        // Relaxed: ordered before the value's words by the fence below.
        s.seq.store(writing(p), Ordering::Relaxed);
        // Release fence: pairs with the Acquire fence in `Subscriber::read_at`. A
        // subscriber whose copy saw any word stored below sees this odd word (or later) in
        // its second load of `seq`, and throws the copy away.
        fence(Ordering::Release);
        s.store(v);
        crate::fault_point!("broadcast-publisher-wrote");
        // Release: pairs with the subscriber's Acquire load of `seq`: whoever sees the even
        // word sees the value's words.
        s.seq.store(published(p), Ordering::Release);
        crate::fault_point!("broadcast-publisher-sealed");
    }

    /// Makes positions up to `tail` known to `tail`'s readers and wakes sleepers.
    #[inline]
    fn commit(&mut self, tail: u64) {
        self.tail = tail;
        let c = self.mem.ctrl();
        // Release: pairs with the Acquire loads of `tail` (a subscriber's lag and attach, a
        // successor publisher's attach).
        c.publisher.tail.store(tail, Ordering::Release);
        crate::fault_point!("broadcast-publisher-published");
        if wait::wake_once_if_waiting(self.registered, &c.subscribers_waiting, u32::MAX) {
            bump_by(&c.publisher.wakeups, 1);
        }
    }

    /// Positions we may write now, up to `want`: all of them under overwrite; under
    /// back-pressure those whose slot no attached subscriber may still read.
    #[inline]
    fn room(&mut self, want: u64) -> u64 {
        if self.policy == Policy::Overwrite {
            return want;
        }
        let cap = self.mem.cap();
        let free = cap - self.tail.wrapping_sub(self.floor);
        if free >= want {
            return want;
        }
        self.rescan();
        let mut room = (cap - self.tail.wrapping_sub(self.floor)).min(want);
        // Still short: every caller (a `try_` loop, a batch, a blocked wait) checks the
        // blocker for death or the untether timeout once per liveness interval.
        if room < want && self.liveness.due() && self.evict_blockers() {
            room = (cap - self.tail.wrapping_sub(self.floor)).min(want);
        }
        room
    }

    /// Evicts blockers while the blocker is dead or past the untether timeout (each
    /// eviction rescans, and the next blocker is checked at once, so k dead subscribers cost
    /// one liveness interval, not k). Returns whether any was evicted.
    fn evict_blockers(&mut self) -> bool {
        let mut any = false;
        for _ in 0..RECORDS {
            if !self.check_blocker() {
                break;
            }
            any = true;
        }
        any
    }

    /// Back-pressure: scans the subscriber records for the lowest position one may still
    /// read, into `floor` and `blocker`.
    fn rescan(&mut self) {
        let c = self.mem.ctrl();
        let (tail, cap) = (self.tail, self.mem.cap());
        // SeqCst: pairs with the SeqCst fence a joining subscriber makes between storing
        // its position and loading `tail` (`Ring::subscribe_with_history`): either this
        // scan sees its record (attached, with its position), or its load sees `tail` as
        // it was before this scan, and it starts no earlier than that.
        fence(Ordering::SeqCst);
        let mut floor = tail;
        let mut blocker = None;
        let mut seen = (0, 0, 0, 0);
        for (i, s) in c.subs.iter().enumerate() {
            // Relaxed: whether the record is held; the position below is what we act on.
            let w = s.end.owner.load(Ordering::Relaxed);
            if w == 0 || s.end.state.load(Ordering::Relaxed) != end::ATTACHED {
                continue;
            }
            let gen = s.end.gen.load(Ordering::Relaxed);
            let evicted = s.evicted.load(Ordering::Relaxed);
            if evicted == EVICTED | u64::from(gen) {
                continue;
            }
            // Acquire: pairs with the subscriber's Release store of its position, made
            // after its copies of the slots before it: those copies happen before we
            // overwrite the slots.
            let p = s.pos.load(Ordering::Acquire);
            // More than a ring behind (or ahead of us) is no position an attached
            // subscriber holds for long, but it is one we may read: a joining subscriber's
            // first store, seen stale after it stored a later one (loom found the message
            // lost when such records were skipped), or a hostile record. Either holds us
            // back a whole ring, as a stalled subscriber does, until it moves, dies, or is
            // untethered.
            let behind = tail.wrapping_sub(p).min(cap);
            if behind > tail.wrapping_sub(floor) {
                floor = tail.wrapping_sub(behind);
                blocker = Some(i);
                seen = (w, gen, p, evicted);
            }
        }
        self.floor = floor;
        self.blocker = blocker;
        self.blocker_seen = seen;
    }

    /// Back-pressure, blocked: evicts the blocker if its process died, or if it stayed at
    /// one position past the untether timeout. Returns whether it did.
    fn check_blocker(&mut self) -> bool {
        let Some(i) = self.blocker else {
            return false;
        };
        let c = self.mem.ctrl();
        let s = &c.subs[i];
        // Acquire, and before the owner word: pairs with the Release bump of `gen` in
        // `End::claim_from`, which comes after its owner compare-exchange. If we read the
        // generation of a subscriber that just took the record over, we read its (live)
        // owner word too; if we read the dead one's, the mark we may set names that dead
        // attachment's generation, which the newcomer's reads do not match.
        let gen = s.end.gen.load(Ordering::Acquire);
        let w = s.end.owner.load(Ordering::Relaxed);
        let p = s.pos.load(Ordering::Relaxed);
        // The same attachment (record, generation, owner) at the same position since when?
        let stalled = match (self.untether, self.blocked) {
            (Some(limit), Some((j, bg, bw, bp, since))) if (j, bg, bw, bp) == (i, gen, w, p) => {
                since.elapsed() >= limit
            }
            (Some(_), _) => {
                self.blocked = Some((i, gen, w, p, Instant::now()));
                false
            }
            (None, _) => false,
        };
        if !stalled && !end::is_dead(w) {
            return false;
        }
        // Relaxed: the subscriber learns it on its next read; its reads are validated by
        // the slots' sequence words whether or not it knows yet, so nothing is ordered.
        if s.evicted
            .compare_exchange(
                0,
                EVICTED | u64::from(gen),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            bump_by(&c.publisher.evictions, 1);
        } else {
            // An earlier eviction of another attachment (or garbage): overwrite it.
            s.evicted.store(EVICTED | u64::from(gen), Ordering::Relaxed);
        }
        crate::fault_point!("broadcast-publisher-evicted");
        self.blocked = None;
        self.rescan();
        true
    }

    /// Publishes `v` if there is room. Under overwrite there always is: it never waits
    /// and makes no syscall unless a subscriber sleeps.
    ///
    /// # Errors
    ///
    /// `Full` (back-pressure: the slowest attached subscriber is a ring behind), `Forked`.
    #[inline]
    pub fn try_publish(&mut self, v: T) -> Result<(), PublishError<T>> {
        if !self.origin.is_current() {
            return Err(PublishError::Forked(v));
        }
        if self.room(1) == 0 {
            if self.stalled_at != self.tail {
                self.stalled_at = self.tail;
                bump_by(&self.mem.ctrl().publisher.stalls, 1);
            }
            return Err(PublishError::Full(v));
        }
        let p = self.tail;
        self.write(p, &v);
        self.commit(p.wrapping_add(1));
        Ok(())
    }

    /// Publishes `v`, waiting (back-pressure) while the slowest attached subscriber is a
    /// ring behind. Under overwrite, the same as [`try_publish`](Self::try_publish).
    ///
    /// # Errors
    ///
    /// `Forked`, `Interrupted`.
    #[inline]
    pub fn publish(&mut self, v: T) -> Result<(), PublishError<T>> {
        match self.try_publish(v) {
            Err(PublishError::Full(v)) => self.publish_until(v, Deadline::after(None)),
            other => other,
        }
    }

    /// [`publish`](Self::publish), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `publish`, plus `Timeout`.
    pub fn publish_timeout(&mut self, v: T, timeout: Duration) -> Result<(), PublishError<T>> {
        self.publish_until(v, Deadline::after(Some(timeout)))
    }

    fn publish_until(&mut self, mut v: T, deadline: Deadline) -> Result<(), PublishError<T>> {
        loop {
            match self.try_publish(v) {
                Err(PublishError::Full(back)) => v = back,
                other => return other,
            }
            let r = self.wait_for_room(deadline);
            if r.is_err() {
                self.waiter.abandon();
            }
            match r {
                Ok(()) => {}
                Err(Stop::Timeout) => return Err(PublishError::Timeout(v)),
                Err(Stop::Interrupted) => return Err(PublishError::Interrupted(v)),
            }
        }
    }

    /// Publishes as many of `values` as there is room for now, in order, with one store of
    /// `tail` and at most one wake-up for the batch. Under overwrite that is all of them.
    /// Returns how many.
    ///
    /// # Errors
    ///
    /// `Forked` (carrying `()`; nothing was published).
    pub fn publish_slice(&mut self, values: &[T]) -> Result<usize, PublishError<()>> {
        if !self.origin.is_current() {
            return Err(PublishError::Forked(()));
        }
        let n = self.room(values.len() as u64) as usize;
        if n < values.len() && self.stalled_at != self.tail {
            self.stalled_at = self.tail;
            bump_by(&self.mem.ctrl().publisher.stalls, 1);
        }
        if n == 0 {
            return Ok(0);
        }
        // Committed a ring at a time at most, so `tail` is never a lap behind the slots
        // (a successor that takes over from a death mid-batch starts after what was sealed).
        let cap = self.mem.cap() as usize;
        for run in values[..n].chunks(cap) {
            let start = self.tail;
            for (i, v) in run.iter().enumerate() {
                self.write(start.wrapping_add(i as u64), v);
            }
            self.commit(start.wrapping_add(run.len() as u64));
        }
        Ok(n)
    }

    /// The blocker's record as it stands: owner word, position, eviction word.
    fn blocker_state(mem: &Mem<Control, Slot<T>>, blocker: Option<usize>) -> (u64, u32, u64, u64) {
        match blocker {
            None => (0, 0, 0, 0),
            Some(i) => {
                let s = &mem.ctrl().subs[i];
                // Relaxed: hints that something moved; `rescan` re-reads with Acquire.
                (
                    s.end.owner.load(Ordering::Relaxed),
                    s.end.gen.load(Ordering::Relaxed),
                    s.pos.load(Ordering::Relaxed),
                    s.evicted.load(Ordering::Relaxed),
                )
            }
        }
    }

    fn wait_for_room(&mut self, deadline: Deadline) -> Result<(), Stop> {
        loop {
            // What the last scan (the caller's failed `room`, or ours below) read of the
            // blocker: anything else means it moved, died, left or was evicted.
            let before = self.blocker_seen;
            let got = {
                let (mem, blocker) = (&self.mem, self.blocker);
                let check_every = self.liveness.interval();
                wait::spin(
                    self.strategy,
                    &mut self.waiter,
                    wait::MPMC_POLL_PAUSES,
                    (&deadline, check_every),
                    || (Self::blocker_state(mem, blocker) != before).then_some(()),
                )
            };
            if got.is_some() && self.room(1) > 0 {
                return Ok(());
            }
            if self.waiter.was_cut() {
                self.liveness.expire();
            }
            if self.liveness.due() {
                self.evict_blockers();
            }
            if self.room(1) > 0 {
                wait::ended(&mut self.waiter);
                return Ok(());
            }
            if deadline.passed() {
                return Err(Stop::Timeout);
            }
            if crate::shutdown::requested() {
                return Err(Stop::Interrupted);
            }
            if self.waiter.may_sleep(self.strategy) {
                // The scan in the failed `room` above set `blocker_seen`.
                let before = self.blocker_seen;
                let (mem, blocker) = (&self.mem, self.blocker);
                let slice = deadline.slice(self.liveness.interval());
                self.waiter.sleeping();
                wait::park(
                    &crate::end::FlagTarget::of(&self.mem, |c| &c.publisher_waiting),
                    slice,
                    || Self::blocker_state(mem, blocker) != before,
                    || None,
                );
                // Each slice ends with a check of the blocker (death, untether).
                self.liveness.expire();
            }
        }
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return;
        }
        let c = self.mem.ctrl();
        c.config.publisher.release(self.me);
        // Sleeping subscribers learn the close (`Disconnected` once drained).
        wait::wake(&c.subscribers_waiting, u32::MAX);
    }
}

impl<T: Pod> crate::select::Sealed for Publisher<T> {}

/// Ready when a publish would not wait: always under overwrite; under back-pressure, once
/// the slowest attached subscriber leaves room (or is evicted, dead or untethered).
impl<T: Pod> crate::select::Selectable for Publisher<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() {
            return true;
        }
        if self.liveness.due() {
            self.evict_blockers();
        }
        self.room(1) > 0
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        let target = crate::end::FlagTarget::of(&self.mem, |c| &c.publisher_waiting);
        // The first look after the sleep checks the blocker (death, untether); the
        // publisher's own wait re-checks once per liveness interval, and so does this.
        self.liveness.expire();
        crate::select::Armed {
            flag: target.line(),
            keep: target.to_ref(),
            watched: false,
            _shutdown: crate::shutdown::register(&target),
        }
    }
}

#[cfg(feature = "async")]
impl<T: Pod> Publisher<T> {
    /// [`publish`](Self::publish) as a future (feature `async`): under back-pressure,
    /// waits for room without a thread of its own (see [`aio`](crate::aio)); under
    /// overwrite it never waits. A future dropped before it is ready has not published `v`.
    ///
    /// # Errors
    ///
    /// As `publish`.
    pub async fn publish_async(&mut self, v: T) -> Result<(), PublishError<T>> {
        let mut v = v;
        loop {
            match self.try_publish(v) {
                Err(PublishError::Full(back)) => v = back,
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PublishError::Interrupted(v));
            }
        }
    }
}
