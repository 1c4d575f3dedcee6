//! The consumer side of an MPMC ring: claims, reads, skips, batches and waits.

use super::*;

impl<T: Pod> Consumer<T> {
    /// Whether the ring's name still leads to this ring: see `Ring::is_current`.
    #[cfg(not(shm_loom))]
    pub fn is_current(&self) -> bool {
        self.ring.is_current()
    }

    /// How this handle attached: its endpoint slot, the slot's generation, and whose dead
    /// endpoint it took over.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The position of the latest message lost to this consumer: its claim was reclaimed by
    /// producers after the claim timeout (it stalled between claiming and marking or
    /// releasing), behind the latest `Expired` (or a batch that delivered fewer than it
    /// claimed). The message at that position was delivered to nobody, and is counted in
    /// `reclaimed`. `None` if it never happened.
    pub fn last_loss(&self) -> Option<u64> {
        self.last_loss
    }

    crate::handles::end_settings!(
        "pops",
        "a pop on an empty ring checks that the producers still run, when their deaths cannot wake it"
    );

    /// Another consumer handle (a new endpoint) on the same ring.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints`.
    pub fn try_clone(&self) -> Result<Consumer<T>, RingError> {
        self.ring.consumer()
    }

    /// One try at popping. With `check_claims` false (the spin loop of a blocking pop), a
    /// slot that is not yet published is reported `Blocked` at once, without reading
    /// `tail`: a consumer that polls `tail` keeps it shared, so the producer's next claim
    /// (its compare-exchange of `tail`) would wait for that line to come back, on the
    /// round trip's critical path. Telling "empty" from "claimed but stuck", and the claim
    /// timeout, are for the checks made once per spin budget (`check_claims` true).
    #[inline]
    fn attempt(&mut self, check_claims: bool) -> Attempt<T> {
        self.scan(check_claims, |me, pos| {
            match me.ring.mem.ctrl().head.pos.compare_exchange_weak(
                pos,
                pos.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => Ok(me.take(pos)),
                Err(now) => Err(now),
            }
        })
    }

    /// Whether a pop would find an item, an error to report, or nothing (`Blocked`),
    /// without taking anything: [`attempt`](Self::attempt)'s walk (a claim past the claim
    /// timeout is given up as there), stopping at a published item instead of claiming it.
    fn probe(&mut self) -> Attempt<()> {
        self.scan(true, |_, _| Ok(Attempt::Done(())))
    }

    /// The walk from `head` that `attempt` and `probe` share: `published` is called on a
    /// published `pos` and either ends the walk or gives the `head` to go on from.
    #[inline]
    fn scan<R>(
        &mut self,
        check_claims: bool,
        mut published: impl FnMut(&mut Self, u64) -> Result<Attempt<R>, u64>,
    ) -> Attempt<R> {
        let mut pos = self.ring.mem.ctrl().head.pos.load(Ordering::Relaxed);
        let mut retries = 0;
        loop {
            retries += 1;
            if retries > MAX_RETRIES {
                return Attempt::Failed(Failure::Corrupted);
            }
            let mem = &self.ring.mem;
            let c = mem.ctrl();
            let cap = mem.cap();
            let slot = mem.slot(pos);
            // Acquire: pairs with the producer's Release publish (and marks) of `seq`.
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == seq_of(pos, PUBLISHED) {
                match published(self, pos) {
                    Ok(a) => return a,
                    Err(now) => {
                        pos = now;
                        continue;
                    }
                }
            }
            let lap = laps(seq, pos);
            let state = seq & STATE;
            if lap == 0 && (state == FREE || state == WRITING) {
                if !check_claims {
                    return Attempt::Blocked;
                }
                // Relaxed: the Acquire load of `seq` above already keeps this load after
                // it, and `tail` is only ever written by Relaxed CASes: nothing to pair with.
                let tail = c.tail.pos.load(Ordering::Relaxed);
                if state == FREE && tail == pos {
                    return Attempt::Blocked; // empty
                }
                if tail.wrapping_sub(pos).wrapping_sub(1) >= cap {
                    // A stale `pos`, a read that raced, or garbage: re-read (bounded).
                    pos = c.head.pos.load(Ordering::Relaxed);
                    shm_sync::primitive::spin_hint();
                    continue;
                }
                // A producer claimed `pos` and has not published it.
                if !stuck_too_long(
                    &mut self.stuck,
                    &mut self.expired,
                    pos,
                    tail,
                    self.claim_timeout,
                ) {
                    return Attempt::Blocked;
                }
                self.stuck = None;
                // Give it up only if unmarked, or marked by an endpoint that is dead (the
                // mark came with `seq`, loaded with Acquire).
                if state == WRITING && !c.producers.marker_dead(Mark::of(seq), &mut self.peers) {
                    return Attempt::Blocked;
                }
                // Release: the next lap's producer (Acquire load of `seq`) is ordered after
                // our verdict, and so after whatever the dead writer did (under loom the
                // verdict is a Release/Acquire pair with the death). Nobody touches the value
                // here: the claim is unmarked, or its writer is dead.
                if slot
                    .seq
                    .compare_exchange(
                        seq,
                        seq_of(pos.wrapping_add(cap), FREE),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    c.head.expired.fetch_add(1, Ordering::Relaxed);
                    crate::fault_point!("mpmc-consumer-skipping");
                    crate::loom_death_point!(self, "mpmc-consumer-skipping");
                    self.finish_skip(pos);
                    self.wake_producers();
                }
                pos = c.head.pos.load(Ordering::Relaxed);
                continue;
            }
            // Whole laps further on: the slot was reused by a later lap while `head` still
            // stood here (a producer gave back its claim of `pos + cap`, a hole lapping a
            // hole, which needed `pos` released first), so `pos` is released too. Bounded
            // by `tail` (Relaxed: only a bound on a tag already loaded with Acquire), so
            // garbage cannot pass for it.
            let later_lap = is_later_lap(lap, cap, c.tail.pos.load(Ordering::Relaxed), pos);
            if lap == cap || later_lap {
                // Released (consumed or skipped), and perhaps already claimed, marked or
                // published by the next lap's producer. A consumer claims (moves `head`)
                // before it releases, so if `head` still points here, a consumer died (or
                // stalls) between a skip's two steps: finish it.
                if c.head.pos.load(Ordering::Relaxed) == pos {
                    self.finish_skip(pos);
                }
                pos = c.head.pos.load(Ordering::Relaxed);
                continue;
            }
            if lap == cap.wrapping_neg() & TAG
                && (state == PUBLISHED || state == READING)
                && c.head.pos.load(Ordering::Relaxed) == pos
            {
                // The previous lap's item is still claimed (or being read) by a consumer
                // that has not released it: a stalled one, or a dead one whose claim the
                // producers give up after the claim timeout. Nothing is ready at `pos` yet.
                return Attempt::Blocked;
            }
            // READING at `pos` (another consumer has it), a later lap, or garbage: re-read.
            pos = c.head.pos.load(Ordering::Relaxed);
            shm_sync::primitive::spin_hint();
        }
    }

    /// Moves `head` past a skipped `pos` (any consumer may finish a skip).
    fn finish_skip(&self, pos: u64) {
        let _ = self.ring.mem.ctrl().head.pos.compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Marks the claimed `pos` READING, reads it and releases its slot.
    fn take(&mut self, pos: u64) -> Attempt<T> {
        let mem = &self.ring.mem;
        let cap = mem.cap();
        let slot = mem.slot(pos);
        self.stuck = None;
        crate::fault_point!("mpmc-consumer-claimed");
        crate::loom_death_point!(self, "mpmc-consumer-claimed");
        let mine = marked(pos, READING, self.mark);
        // Mark READING, naming our endpoint in the same step. Release: pairs with the
        // Acquire load of `seq` by a producer that checks the mark's endpoint. Fails only if
        // producers reclaimed our unmarked claim after the claim timeout: then we read
        // nothing (the slot may be rewritten) and report it.
        if slot
            .seq
            .compare_exchange(
                seq_of(pos, PUBLISHED),
                mine,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.last_loss = Some(pos);
            return Attempt::Failed(Failure::Expired);
        }
        // SAFETY: the slot is marked READING by us: no producer writes it until we release
        // it, and it is given up only once our endpoint is dead.
        let v = unsafe { mem::read(&slot.value) };
        crate::fault_point!("mpmc-consumer-read");
        crate::loom_death_point!(self, "mpmc-consumer-read");
        // Release: our read happens before the next lap's producer writes; pairs with the
        // producer's Acquire load of `seq`. A compare-exchange from our own mark: if
        // producers gave the slot up (they judged us dead, wrongly), the value may have been
        // rewritten under us, so it is dropped and reported, never delivered.
        if slot
            .seq
            .compare_exchange(
                mine,
                seq_of(pos.wrapping_add(cap), FREE),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.last_loss = Some(pos);
            return Attempt::Failed(Failure::Expired);
        }
        crate::fault_point!("mpmc-consumer-released");
        self.wake_producers();
        Attempt::Done(v)
    }

    fn wake_producers(&self) {
        let c = self.ring.mem.ctrl();
        if wait::wake_if_waiting(self.registered, &c.producers_waiting, 1) {
            c.head.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn producers_gone(&mut self) -> Option<Failure> {
        let side = &self.ring.mem.ctrl().producers;
        if self.liveness.due() {
            side.reap(&mut self.peers);
        }
        match side.gone()? {
            DIED => Some(Failure::PeerDied),
            _ => Some(Failure::Disconnected),
        }
    }

    /// Pops if an item is ready. Never sleeps; when the ring is not empty but the next
    /// item's push is between its claim and its publish, polls for it [`IN_FLIGHT_POLLS`]
    /// times first (so a running producer is waited for, as crossbeam's `ArrayQueue` does).
    ///
    /// # Errors
    ///
    /// `Empty` (nothing claimed or published: `head == tail`); `InFlight` (not empty: the
    /// next push has not published after the polls); once drained with every producer
    /// gone, `Disconnected` / `PeerDied`; `Expired` (see the module docs); `Corrupted`.
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        match self.attempt(true) {
            Attempt::Done(v) => {
                self.stalled = false;
                Ok(v)
            }
            Attempt::Failed(f) => Err(fail_pop(f)),
            Attempt::Blocked => {
                if cfg!(not(shm_loom)) && self.in_flight() {
                    // Not empty: a push is between its claim and its publish. Wait a moment
                    // for it, as an in-process queue would (linearizable unless it stalls).
                    for _ in 0..IN_FLIGHT_POLLS {
                        shm_sync::primitive::spin_hint();
                        match self.attempt(false) {
                            Attempt::Done(v) => {
                                self.stalled = false;
                                return Ok(v);
                            }
                            Attempt::Failed(f) => return Err(fail_pop(f)),
                            Attempt::Blocked if self.in_flight() => {}
                            Attempt::Blocked => break,
                        }
                    }
                }
                match self.after_empty() {
                    // (Not under loom: a report only, whose loads would multiply the
                    // interleavings of every model.)
                    Err(PopError::Empty) if cfg!(not(shm_loom)) && self.in_flight() => {
                        Err(PopError::InFlight)
                    }
                    other => other,
                }
            }
        }
    }

    /// Whether the ring is not empty though the pop was blocked: a push claimed the slot
    /// at `head` and has not published it.
    fn in_flight(&self) -> bool {
        let c = self.ring.mem.ctrl();
        // Relaxed: a verdict on a blocked attempt, re-checked by the caller's next try.
        c.head.pos.load(Ordering::Relaxed) != c.tail.pos.load(Ordering::Relaxed)
    }

    fn after_empty(&mut self) -> Result<T, PopError> {
        if !std::mem::replace(&mut self.stalled, true) {
            self.ring
                .mem
                .ctrl()
                .head
                .stalls
                .fetch_add(1, Ordering::Relaxed);
        }
        let Some(gone) = self.producers_gone() else {
            return Err(PopError::Empty);
        };
        // Everyone left: drain what they published before reporting it.
        match self.attempt(true) {
            Attempt::Done(v) => Ok(v),
            Attempt::Failed(f) => Err(fail_pop(f)),
            Attempt::Blocked => {
                let c = self.ring.mem.ctrl();
                let (head, tail) = (
                    c.head.pos.load(Ordering::Relaxed),
                    c.tail.pos.load(Ordering::Relaxed),
                );
                if head != tail && self.stuck.is_some() {
                    // A dead producer's claim is pending; it expires within the timeout.
                    Err(PopError::Empty)
                } else {
                    Err(fail_pop(gone))
                }
            }
        }
    }

    /// Pops, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// `Disconnected`, `PeerDied`, `Expired`, `Corrupted`.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        // Fast path first: no deadline to build when an item is ready.
        match self.attempt(false) {
            Attempt::Done(v) => {
                self.stalled = false;
                Ok(v)
            }
            Attempt::Failed(f) => Err(fail_pop(f)),
            Attempt::Blocked => self.pop_until(Deadline::after(None)),
        }
    }

    /// [`pop`](Self::pop), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `pop`, plus `Timeout`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        self.pop_until(Deadline::after(Some(timeout)))
    }

    fn pop_until(&mut self, deadline: Deadline) -> Result<T, PopError> {
        loop {
            // Before the checks below: a death after them shows in `ready` as a change.
            let seen = end::deaths_seen(&self.deaths);
            let strategy = self.strategy;
            let mut outcome = None;
            let mut waiter = self.waiter;
            let check_every = self.liveness.interval();
            wait::spin(
                strategy,
                &mut waiter,
                wait::MPMC_POLL_PAUSES,
                (&deadline, check_every),
                || match self.attempt(false) {
                    Attempt::Blocked => None,
                    other => {
                        outcome = Some(other);
                        Some(())
                    }
                },
            );
            self.waiter = waiter;
            if waiter.was_cut() {
                self.liveness.expire();
            }
            // Once per spin budget, the full check: empty, or a claim stuck past the claim
            // timeout (which this gives up).
            let r = match outcome.unwrap_or_else(|| self.attempt(true)) {
                Attempt::Done(v) => Ok(v),
                Attempt::Failed(f) => Err(fail_pop(f)),
                Attempt::Blocked => match self.after_empty() {
                    Err(PopError::Empty) if deadline.passed() => Err(PopError::Timeout),
                    Err(PopError::Empty) if crate::shutdown::requested() => {
                        Err(PopError::Interrupted)
                    }
                    Err(PopError::Empty) => {
                        self.sleep(strategy, deadline, seen);
                        continue;
                    }
                    other => other,
                },
            };
            match r {
                Ok(_) => {
                    self.stalled = false;
                    wait::ended(&mut self.waiter);
                }
                Err(_) => self.waiter.abandon(),
            }
            return r;
        }
    }

    /// Sleeps (if `strategy` parks) until an item may be ready: a producer moved `tail` or
    /// published the slot at `head`, the producers left, one of them died (its exit notice
    /// bumps `deaths` past `seen` and wakes us), a slice ended, or the deadline passed.
    fn sleep(&mut self, strategy: WaitStrategy, deadline: Deadline, seen: u64) {
        if !self.waiter.may_sleep(strategy) {
            return;
        }
        // Every spent notice is taken (each says so once), not only the first.
        if take_any_exited(&mut *self.peers) {
            // A watched peer died while we were not asleep (its notice woke nobody): let
            // the caller's next check reap it now.
            self.liveness.expire();
            return;
        }
        let c = self.ring.mem.ctrl();
        let tail = c.tail.pos.load(Ordering::Relaxed);
        let head = c.head.pos.load(Ordering::Relaxed);
        // A claim we waited on that is no longer the one at `head` (another consumer took
        // that item) is no reason for short slices.
        if self.stuck.is_some_and(|s| s.pos != head) {
            self.stuck = None;
        }
        let owners = c.producers.owners_digest();
        let target = FlagTarget::of(&self.ring.mem, |c| &c.consumers_waiting);
        let slice = c.producers.sleep_slice(
            &mut self.peers,
            (self.me, &self.deaths),
            &target,
            self.liveness.interval(),
            self.stuck.is_some(),
        );
        let deaths = &self.deaths;
        self.waiter.sleeping();
        wait::park(
            &target,
            deadline.slice(slice),
            || {
                // Relaxed: a hint to skip the sleep; `attempt` re-reads with Acquire.
                c.tail.pos.load(Ordering::Relaxed) != tail
                    || self.ring.mem.slot(head).seq.load(Ordering::Relaxed)
                        == seq_of(head, PUBLISHED)
                    || c.producers.gone().is_some()
                    || end::deaths_seen(deaths) != seen
                    // A producer attached since our scan: re-arm the watches first.
                    || c.producers.owners_digest() != owners
            },
            || None,
        );
        self.liveness.expire();
    }

    /// Pops as many items as are ready into `out`, in order; returns how many. The run
    /// of published slots at `head` is claimed with one compare-exchange (where `try_pop`
    /// makes one per item); each is then marked, read and released as `try_pop` does.
    /// Never blocks. Returns 0 when the ring is empty, the producers are gone, or this
    /// handle's claims expired; [`try_pop_slice`](Self::try_pop_slice) says which. An item
    /// whose claim expired while this handle stalled past the claim timeout is not
    /// delivered (as with `try_pop`'s `Expired`).
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        self.pop_slice_why(out, false).count
    }

    /// [`pop_slice`](Self::pop_slice), saying why it stopped short: `Empty`, `InFlight`,
    /// once drained with every producer gone `Disconnected` / `PeerDied`, `Expired` (this
    /// handle stalled past the claim timeout inside the batch: producers reclaimed the
    /// items it had claimed from `count` on; they are lost, and counted in `reclaimed`),
    /// `Corrupted`, `Forked`.
    pub fn try_pop_slice(&mut self, out: &mut [T]) -> Batch<PopError> {
        self.pop_slice_why(out, true)
    }

    /// The batch pop; `why`: find out why it stopped short (as `try_pop` does, which may
    /// take one more item from departed producers' leftovers).
    fn pop_slice_why(&mut self, out: &mut [T], why: bool) -> Batch<PopError> {
        let stop = |count, e| Batch {
            count,
            stopped: Some(e),
        };
        if !self.origin.is_current() {
            return stop(0, PopError::Forked);
        }
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done) as u64;
            match self.claim_run(want) {
                Some((pos, n)) => {
                    let k = self.take_run(pos, n, &mut out[done..]);
                    done += k;
                    if k < n as usize {
                        return stop(done, PopError::Expired);
                    }
                }
                // Nothing published at `head`: the one-slot path's full check, which skips
                // a producer claim stuck past the claim timeout.
                None => match self.attempt(true) {
                    Attempt::Done(v) => {
                        self.stalled = false;
                        out[done] = v;
                        done += 1;
                    }
                    Attempt::Failed(f) => return stop(done, fail_pop(f)),
                    Attempt::Blocked if !why => return stop(done, PopError::Empty),
                    Attempt::Blocked => match self.after_empty() {
                        Ok(v) => {
                            out[done] = v;
                            done += 1;
                        }
                        Err(PopError::Empty) if cfg!(not(shm_loom)) && self.in_flight() => {
                            return stop(done, PopError::InFlight)
                        }
                        Err(e) => return stop(done, e),
                    },
                },
            }
        }
        Batch {
            count: done,
            stopped: None,
        }
    }

    /// Claims the run of published slots at `head`, at most `want` (and one ring) long,
    /// with one compare-exchange of `head`. `None` if the slot at `head` is not published.
    fn claim_run(&mut self, want: u64) -> Option<(u64, u64)> {
        let mem = &self.ring.mem;
        claim_run(mem, &mem.ctrl().head.pos, PUBLISHED, want, 1).ok()
    }

    /// Marks, reads and releases the claimed positions `pos..pos + n` into `out`, in order;
    /// returns how many were delivered: all but those whose claims expired (producers
    /// reclaimed them while we stalled past the claim timeout).
    fn take_run(&mut self, pos: u64, n: u64, out: &mut [T]) -> usize {
        let mem = &self.ring.mem;
        let cap = mem.cap();
        self.stuck = None;
        crate::fault_point!("mpmc-consumer-claimed");
        crate::loom_death_point!(self, "mpmc-consumer-claimed");
        // Mark the whole run first: a claimed slot left unmarked while we read the others
        // could be reclaimed by a producer whose wait on an earlier slot of the run timed
        // out (its later waits inherit that start), losing an item of a live consumer.
        // Release: as in `take`. Fails only if producers reclaimed that claim (we stalled
        // past the claim timeout between our claim and this mark): that item is lost,
        // counted in `reclaimed`.
        for i in 0..n {
            let p = pos.wrapping_add(i);
            let _ = mem.slot(p).seq.compare_exchange(
                seq_of(p, PUBLISHED),
                marked(p, READING, self.mark),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        let mut got = 0;
        for i in 0..n {
            let p = pos.wrapping_add(i);
            let slot = mem.slot(p);
            let mine = marked(p, READING, self.mark);
            // Ours if it holds our mark: nobody else writes `mine`. Relaxed: what orders our
            // read after the producer's publish is `claim_run`'s Acquire load of this
            // slot's PUBLISHED `seq`, before our claim.
            if slot.seq.load(Ordering::Relaxed) != mine {
                self.last_loss = Some(p);
                continue;
            }
            // SAFETY: marked READING by us: no producer writes it until we release it, and
            // it is given up only once our endpoint is dead.
            let v = unsafe { mem::read(&slot.value) };
            crate::fault_point!("mpmc-consumer-read");
            crate::loom_death_point!(self, "mpmc-consumer-read");
            // Release: as in `take`; a failed exchange means the value may have been
            // rewritten under us: dropped, never delivered.
            if slot
                .seq
                .compare_exchange(
                    mine,
                    seq_of(p.wrapping_add(cap), FREE),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                self.last_loss = Some(p);
                continue;
            }
            crate::fault_point!("mpmc-consumer-released");
            out[got] = v;
            got += 1;
        }
        self.stalled = false;
        let c = mem.ctrl();
        if wait::wake_if_waiting(
            self.registered,
            &c.producers_waiting,
            (n as usize).min(MAX_ENDPOINTS) as u32,
        ) {
            c.head.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        got
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the endpoint is the parent's
        }
        let c = self.ring.mem.ctrl();
        c.consumers.detach(self.index, self.me);
        // Sleeping producers must wake to see whether we were the last.
        wait::wake(&c.producers_waiting, u32::MAX);
    }
}

impl<T: Pod> crate::select::Sealed for Consumer<T> {}

impl<T: Pod> crate::select::Selectable for Consumer<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() {
            return true;
        }
        match self.probe() {
            Attempt::Done(()) | Attempt::Failed(_) => true,
            Attempt::Blocked => {
                if take_any_exited(&mut *self.peers) {
                    // A producer died (its exit notice fired): check it now.
                    self.liveness.expire();
                }
                if self.producers_gone().is_none() {
                    return false;
                }
                // Every producer left: ready to report it, unless a dead producer's claim
                // is pending (as `try_pop` says: `Empty` until it expires).
                let c = self.ring.mem.ctrl();
                // Relaxed: a verdict re-checked by the `try_pop` that follows.
                let (head, tail) = (
                    c.head.pos.load(Ordering::Relaxed),
                    c.tail.pos.load(Ordering::Relaxed),
                );
                head == tail || self.stuck.is_none()
            }
        }
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        self.ring.mem.ctrl().producers.arm(
            &mut self.peers,
            (self.me, &self.deaths),
            FlagTarget::of(&self.ring.mem, |c| &c.consumers_waiting),
            &mut self.liveness,
            self.stuck.is_some(),
        )
    }
}

#[cfg(feature = "async")]
impl<T: Pod> Consumer<T> {
    /// [`pop`](Self::pop) as a future (feature `async`): waits for an item without a
    /// thread of its own (see [`aio`](crate::aio)). Cancellation-safe: a future dropped
    /// before it is ready took nothing.
    ///
    /// # Errors
    ///
    /// As `pop`.
    pub async fn pop_async(&mut self) -> Result<T, PopError> {
        loop {
            match self.try_pop() {
                Err(PopError::Empty | PopError::InFlight) => {}
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PopError::Interrupted);
            }
        }
    }
}
