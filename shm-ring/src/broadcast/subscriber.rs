//! The subscribing side of a broadcast ring: attach, receive, lap, batches and waits.

use super::*;
use crate::end::{sleep_on_peer, Deaths, FlagTarget, LivenessTimer, PeerWatch, Sleeper, CLOSED};
use crate::wait::{self, Deadline, WaitStrategy, Waiter};

/// One subscriber of a broadcast ring: receives every message from its position on, in
/// order. `&mut self` methods: one thread at a time. Dropping it frees its record.
pub struct Subscriber<T> {
    mem: Mem<Control, Slot<T>>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    /// Our truth of our position (only we write our record's `pos`).
    pos: u64,
    /// Whether the publisher waits for us (back-pressure, and not evicted yet).
    tethered: bool,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    peer: PeerWatch,
    waiter: Waiter,
    deaths: Deaths,
    subscription: Subscription,
}

/// What one slot holds for position `r`.
enum Read<T> {
    Value(T),
    /// Lapped: the slot's sequence word (past `r`'s).
    Lapped(u64),
    NotYet,
}

impl<T: Pod> Ring<T> {
    /// Subscribes at the live position: the first message received is the first published
    /// after this call.
    ///
    /// # Errors
    ///
    /// [`RingError::TooManyEndpoints`] if all [`MAX_SUBSCRIBERS`] records are held by live
    /// subscribers (a dead one's is taken over).
    pub fn subscribe(&self) -> Result<Subscriber<T>, RingError> {
        self.subscribe_with_history(0)
    }

    /// Subscribes with up to `history` messages published before this call (as many as
    /// were published, at most the ring's capacity), then everything after.
    ///
    /// History is as safe as every read: each message is checked against its slot's
    /// sequence word, so a message the publisher overwrites meanwhile (overwrite; or under
    /// back-pressure, one the publisher had already been cleared to overwrite by a scan
    /// that came before this subscriber's record was filled) is reported as
    /// [`RecvError::Lagged`], never delivered torn.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe), plus [`RingError::HistoryTooLong`] if
    /// `history > capacity`.
    pub fn subscribe_with_history(&self, history: u64) -> Result<Subscriber<T>, RingError> {
        let cap = self.mem.cap();
        if history > cap {
            return Err(RingError::HistoryTooLong {
                name: self.name.clone(),
                asked: history,
                capacity: cap,
            });
        }
        let c = self.mem.ctrl();
        let me = end::me();
        // A free record first; then one whose holder died (each such check reads `/proc`).
        let mut claimed = None;
        'passes: for pass in 0..2 {
            for (i, s) in c.subs.iter().enumerate() {
                if pass == 0 && s.end.owner.load(Ordering::Relaxed) != 0 {
                    continue;
                }
                if let Ok((gen, was)) = s.end.claim_from(me) {
                    claimed = Some((i, gen, was));
                    break 'passes;
                }
            }
        }
        let Some((index, generation, was)) = claimed else {
            return Err(RingError::TooManyEndpoints {
                name: self.name.clone(),
                role: Role::Subscriber,
                max: MAX_SUBSCRIBERS,
            });
        };
        let rec = &c.subs[index];
        // Relaxed: our own record's counters, reports for `stats`.
        rec.evicted.store(0, Ordering::Relaxed);
        rec.lagged.store(0, Ordering::Relaxed);
        // Acquire: pairs with the publisher's Release stores of `tail`.
        let t0 = c.publisher.tail.load(Ordering::Acquire);
        let published_so_far = t0.wrapping_sub(self.initial);
        let back = history.min(published_so_far);
        let start0 = t0.wrapping_sub(back);
        rec.pos.store(start0, Ordering::Relaxed);
        // Relaxed: a report (`stats` derives `received` from it), stored with the position.
        rec.since.store(start0, Ordering::Relaxed);
        crate::fault_point!("broadcast-subscriber-registered");
        // SeqCst: pairs with the publisher's SeqCst fence before its scan (`rescan`): either
        // its scan sees our record and position, or our load below sees the `tail` it had
        // then, and every slot it may overwrite on that scan's word lies before it.
        fence(Ordering::SeqCst);
        let t = c.publisher.tail.load(Ordering::Acquire);
        let start = if history == 0 { t } else { start0 };
        if start != start0 {
            // Relaxed: as above.
            rec.since.store(start, Ordering::Relaxed);
            // Release: as every position store (see `advance`).
            rec.pos.store(start, Ordering::Release);
        }
        let registered = shm_sync::barrier::register();
        // A back-pressure publisher asleep on this record as its previous holder left it (or
        // on our first, stale position) re-scans now rather than at the end of its slice.
        if self.policy == Policy::BackPressure {
            let _ = wait::wake_one_if_waiting(registered, &c.publisher_waiting);
        }
        Ok(Subscriber {
            mem: self.mem.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            pos: start,
            tethered: self.policy == Policy::BackPressure,
            strategy: WaitStrategy::default(),
            registered,
            liveness: LivenessTimer::new(),
            peer: PeerWatch::new(),
            waiter: Waiter::new(),
            deaths: Deaths::default(),
            subscription: Subscription {
                index,
                generation,
                position: start,
                history: if history == 0 {
                    0
                } else {
                    t.wrapping_sub(start)
                },
                took_over_from: (was != 0).then_some((was >> 32) as u32),
            },
        })
    }
}

impl<T: Pod> Subscriber<T> {
    /// This subscription: record, generation, first position, history.
    pub fn subscription(&self) -> Subscription {
        self.subscription
    }

    /// The position of the next message this subscriber receives.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Messages published that this subscriber has not read yet (reads `tail`; more than
    /// the capacity means it was lapped, which its next receive reports).
    pub fn lag(&self) -> u64 {
        // Acquire: pairs with the publisher's Release stores of `tail`.
        let t = self.mem.ctrl().publisher.tail.load(Ordering::Acquire);
        (t.wrapping_sub(self.pos) as i64).max(0) as u64
    }

    crate::handles::end_settings!(
        "receives",
        "a receive with nothing new checks that the publisher still runs, when its death cannot wake it"
    );
    crate::handles::end_ring_info!();

    fn record(&self) -> &SubscriberLine {
        &self.mem.ctrl().subs[self.index]
    }

    /// Reads position `r` from its slot, validated by the slot's sequence word.
    #[inline]
    fn read_at(&self, r: u64) -> Read<T> {
        let s = self.mem.slot(r);
        let want = published(r);
        // Acquire: pairs with the publisher's Release store of the even word: the value's
        // words are visible.
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 == want {
            let v = s.load();
            crate::fault_point!("broadcast-subscriber-copied");
            // Acquire fence: pairs with the Release fence after the publisher's odd store
            // (`Publisher::write`): if the copy saw a word of a later write, the load below
            // sees that write's odd word or later.
            fence(Ordering::Acquire);
            let s2 = s.seq.load(Ordering::Relaxed);
            if s2 == s1 {
                return Read::Value(v);
            }
            return Read::Lapped(s2);
        }
        if (s1.wrapping_sub(want) as i64) > 0 {
            Read::Lapped(s1)
        } else {
            Read::NotYet
        }
    }

    #[inline]
    fn advance(&mut self, pos: u64) {
        self.pos = pos;
        let c = self.mem.ctrl();
        let rec = &c.subs[self.index];
        // Release: our copies of the slots before `pos` happen before a back-pressure
        // publisher overwrites them; pairs with the Acquire load in `Publisher::rescan`.
        rec.pos.store(pos, Ordering::Release);
        crate::fault_point!("broadcast-subscriber-advanced");
        if self.tethered && wait::wake_one_if_waiting(self.registered, &c.publisher_waiting) {
            bump_by(&rec.wakeups, 1);
        }
    }

    /// Whether the publisher evicted this attachment (said once; then untethered).
    #[inline]
    fn evicted_now(&mut self) -> bool {
        if !self.tethered {
            return false;
        }
        let rec = self.record();
        let mark = EVICTED | u64::from(self.subscription.generation);
        // Relaxed: the publisher's mark; nothing is ordered by it (reads are validated).
        if rec.evicted.load(Ordering::Relaxed) == mark {
            self.tethered = false;
            return true;
        }
        false
    }

    /// The slot for `r` holds a later position (sequence word `seen`): skip to the oldest
    /// message the ring may still hold.
    #[cold]
    fn lapped(&mut self, r: u64, seen: u64) -> RecvError {
        let cap = self.mem.cap();
        let d = seen.wrapping_sub(published(r));
        // The position the slot holds (or is being written with): `seen` is `2q + 2` or
        // `2q + 1`, and `q` maps to `r`'s slot, so `q - r` is a whole number of laps.
        let ahead = d.div_ceil(2);
        if d > 1 << 62 || ahead % cap != 0 {
            return RecvError::Corrupted;
        }
        // Acquire: pairs with the publisher's Release stores of `tail`. Once it wrote
        // position `t`, the oldest slot still holding its own message is `t - cap + 1`'s.
        // `tail` may be behind what the slot showed (a batch not committed yet, or a store
        // not seen yet): then the slot's word alone bounds the skip.
        let t = self.mem.ctrl().publisher.tail.load(Ordering::Acquire);
        let dt = t.wrapping_sub(r);
        let by_slot = ahead - cap + 1;
        let by_tail = if dt <= 1 << 62 {
            dt.saturating_sub(cap - 1)
        } else {
            0
        };
        let n = by_slot.max(by_tail);
        self.pos = r.wrapping_add(n);
        let c = self.mem.ctrl();
        let rec = &c.subs[self.index];
        // Release: as in `advance` (we will never read the skipped slots).
        rec.pos.store(self.pos, Ordering::Release);
        bump_by(&rec.lagged, n);
        // A publisher waiting for us (back-pressure: we were lapped only through a join
        // whose history it was already cleared to overwrite) goes on.
        if self.tethered && wait::wake_one_if_waiting(self.registered, &c.publisher_waiting) {
            bump_by(&rec.wakeups, 1);
        }
        RecvError::Lagged(n)
    }

    /// Receives the next message if it is published. Never blocks and makes no syscall
    /// unless the publisher sleeps (back-pressure); the fast path reads only the slot.
    ///
    /// # Errors
    ///
    /// `Empty`; `Lagged(n)` (then the next call goes on); `Evicted` (once);
    /// `Disconnected` / `PeerDied` once everything published was read and the publisher is
    /// gone (death is checked at most every liveness interval); `Corrupted`; `Forked`.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, RecvError> {
        if !self.origin.is_current() {
            return Err(RecvError::Forked);
        }
        if self.evicted_now() {
            return Err(RecvError::Evicted);
        }
        let r = self.pos;
        match self.read_at(r) {
            Read::Value(v) => {
                self.advance(r.wrapping_add(1));
                Ok(v)
            }
            Read::Lapped(seen) => Err(self.lapped(r, seen)),
            Read::NotYet => Err(self.empty()),
        }
    }

    /// Whether our next position is published or lapped (something for `try_recv` to say).
    fn ready(&self) -> bool {
        let r = self.pos;
        // Acquire: as in `read_at`.
        let s1 = self.mem.slot(r).seq.load(Ordering::Acquire);
        (s1.wrapping_sub(published(r)) as i64) >= 0
    }

    #[cold]
    fn empty(&mut self) -> RecvError {
        let c = self.mem.ctrl();
        // Acquire: pairs with the Release store in `End::release`: everything the
        // publisher published before closing is visible to the re-check.
        if c.config.publisher.state.load(Ordering::Acquire) == CLOSED {
            return if self.ready() {
                RecvError::Empty
            } else {
                RecvError::Disconnected
            };
        }
        let known_dead = self
            .peer
            .known_dead(c.config.publisher.owner.load(Ordering::Relaxed));
        if (known_dead || self.liveness.due()) && self.publisher_dead() {
            return if self.ready() {
                RecvError::Empty
            } else {
                RecvError::PeerDied
            };
        }
        RecvError::Empty
    }

    fn publisher_dead(&mut self) -> bool {
        matches!(
            self.mem
                .ctrl()
                .config
                .publisher
                .status_watched(&mut self.peer),
            EndStatus::Attached { alive: false, .. }
        )
    }

    /// Receives the next message, waiting while nothing new is published.
    ///
    /// # Errors
    ///
    /// `Lagged(n)`, `Evicted`, `Disconnected`, `PeerDied` (noticed within about the
    /// liveness interval, or at once where the publisher's exit is watched), `Corrupted`,
    /// `Forked`, `Interrupted`.
    #[inline]
    pub fn recv(&mut self) -> Result<T, RecvError> {
        match self.try_recv() {
            Err(RecvError::Empty) => self.recv_until(Deadline::after(None)),
            other => other,
        }
    }

    /// [`recv`](Self::recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `recv`, plus `Timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_until(Deadline::after(Some(timeout)))
    }

    fn recv_until(&mut self, deadline: Deadline) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            if let Err(e) = self.wait_for_messages(deadline) {
                self.waiter.abandon();
                return Err(e);
            }
        }
    }

    fn wait_for_messages(&mut self, deadline: Deadline) -> Result<(), RecvError> {
        loop {
            let seen = end::deaths_seen(&self.deaths);
            let got = {
                let (mem, r) = (&self.mem, self.pos);
                let check_every = self.liveness.interval();
                wait::spin(
                    self.strategy,
                    &mut self.waiter,
                    wait::MPMC_POLL_PAUSES,
                    (&deadline, check_every),
                    || {
                        // Acquire: as in `read_at`.
                        let s1 = mem.slot(r).seq.load(Ordering::Acquire);
                        ((s1.wrapping_sub(published(r)) as i64) >= 0).then_some(())
                    },
                )
            };
            if got.is_some() {
                return Ok(());
            }
            if self.waiter.was_cut() {
                self.liveness.expire();
            }
            match self.empty() {
                RecvError::Empty => {}
                other => return Err(other),
            }
            if self.ready() {
                wait::ended(&mut self.waiter);
                return Ok(());
            }
            if deadline.passed() {
                return Err(RecvError::Timeout);
            }
            if crate::shutdown::requested() {
                return Err(RecvError::Interrupted);
            }
            if self.tethered && self.evicted_now() {
                return Err(RecvError::Evicted);
            }
            if self.waiter.may_sleep(self.strategy) {
                let r = self.pos;
                let c = self.mem.ctrl();
                let slot = self.mem.slot(r);
                sleep_on_peer(
                    Sleeper {
                        me: self.me,
                        peer_end: &c.config.publisher,
                        flag: FlagTarget::of(&self.mem, |c| &c.subscribers_waiting),
                        peer: &mut self.peer,
                        deaths: &self.deaths,
                        liveness: &mut self.liveness,
                        waiter: &mut self.waiter,
                    },
                    deadline,
                    seen,
                    // Relaxed: only a hint to skip the sleep; the loop re-reads with
                    // Acquire.
                    || {
                        let s1 = slot.seq.load(Ordering::Relaxed);
                        (s1.wrapping_sub(published(r)) as i64) >= 0
                    },
                );
            }
        }
    }

    /// Receives as many published messages as fit in `out`, in order, with one store of
    /// this subscriber's position for the batch (and one wake-up of a waiting publisher).
    /// Returns how many. A lap met after some messages ends the batch there (the next call
    /// reports it); met first, it is the error.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv) when no message is received.
    pub fn recv_slice(&mut self, out: &mut [T]) -> Result<usize, RecvError> {
        if !self.origin.is_current() {
            return Err(RecvError::Forked);
        }
        if self.evicted_now() {
            return Err(RecvError::Evicted);
        }
        let start = self.pos;
        let mut n = 0;
        while n < out.len() {
            let r = start.wrapping_add(n as u64);
            match self.read_at(r) {
                Read::Value(v) => {
                    out[n] = v;
                    n += 1;
                }
                Read::Lapped(seen) if n == 0 => return Err(self.lapped(r, seen)),
                Read::NotYet if n == 0 => return Err(self.empty()),
                _ => break,
            }
        }
        if n > 0 {
            self.advance(start.wrapping_add(n as u64));
        }
        Ok(n)
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return;
        }
        let c = self.mem.ctrl();
        c.subs[self.index].end.release(self.me);
        // A publisher waiting for us goes on.
        if self.tethered && wait::wake_one_if_waiting(self.registered, &c.publisher_waiting) {
            bump_by(&c.subs[self.index].wakeups, 1);
        }
    }
}

impl<T: Pod> crate::select::Sealed for Subscriber<T> {}

/// Ready when a message is (or a lap: `Lagged`), or when `try_recv` has something to
/// report (eviction, the publisher gone with everything read, a fork).
impl<T: Pod> crate::select::Selectable for Subscriber<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() || self.evicted_now() || self.ready() {
            return true;
        }
        if self.peer.take_exited() {
            // The publisher died (its exit notice fired): check it now.
            self.liveness.expire();
        }
        self.empty() != RecvError::Empty
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        let c = self.mem.ctrl();
        let mut armed = crate::select::arm_one(
            FlagTarget::of(&self.mem, |c| &c.subscribers_waiting),
            (&c.config.publisher, self.me),
            &mut self.peer,
            &self.deaths,
            &mut self.liveness,
        );
        // A tethered subscriber's eviction is seen by a look, not a wake: look once per
        // liveness interval.
        armed.watched &= !self.tethered;
        armed
    }
}

#[cfg(feature = "async")]
impl<T: Pod> Subscriber<T> {
    /// [`recv`](Self::recv) as a future (feature `async`): waits for a message without a
    /// thread of its own (see [`aio`](crate::aio)). Cancellation-safe: a future dropped
    /// before it is ready took nothing.
    ///
    /// # Errors
    ///
    /// As `recv`.
    pub async fn recv_async(&mut self) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Err(RecvError::Empty) => {}
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(RecvError::Interrupted);
            }
        }
    }
}
