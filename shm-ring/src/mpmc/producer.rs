//! The producer side of an MPMC ring: claims, fills, batches and chunks.

use super::*;

impl<T: Pod> Producer<T> {
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

    /// The position of this producer's latest claim that consumers gave up after the claim
    /// timeout (it stalled between claiming and marking or publishing), behind the latest
    /// `Expired` (or a batch that stopped short with it). Nothing was published there; the
    /// value came back to the caller (a batch: the items from the count on). `None` if it
    /// never happened.
    pub fn last_loss(&self) -> Option<u64> {
        self.last_loss
    }

    crate::handles::end_settings!(
        "pushes",
        "a push on a full ring checks that the consumers still run, when their deaths cannot wake it"
    );

    /// Another producer handle (a new endpoint) on the same ring.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints`.
    pub fn try_clone(&self) -> Result<Producer<T>, RingError> {
        self.ring.producer()
    }

    /// One try at pushing. With `check_claims` false (the spin loop of a blocking push),
    /// a slot whose previous lap is still published or being read is reported `Blocked`
    /// at once, without reading `head`: polling `head` would keep its line shared and
    /// slow down every consumer's claim. Whether that lap's consumer claim is stuck (and
    /// its claim timeout) is checked once per spin budget (`check_claims` true).
    #[inline]
    fn attempt(&mut self, value: &T, check_claims: bool) -> Attempt<()> {
        self.scan(check_claims, |me, pos| {
            let c = me.ring.mem.ctrl();
            if c.tail
                .pos
                .compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return Err(c.tail.pos.load(Ordering::Relaxed));
            }
            Ok(me.fill(pos, value))
        })
    }

    /// Whether a push would find room, an error to report, or neither (`Blocked`),
    /// without pushing: [`attempt`](Self::attempt)'s walk (a consumer claim past the claim
    /// timeout is given up as there), stopping at a free slot instead of claiming it.
    fn probe(&mut self) -> Attempt<()> {
        self.scan(true, |_, _| Ok(Attempt::Done(())))
    }

    /// The walk from `tail` that `attempt` and `probe` share: `free` is called on a slot
    /// free for this lap and either ends the walk or gives the `tail` to go on from.
    #[inline]
    fn scan(
        &mut self,
        check_claims: bool,
        mut free: impl FnMut(&mut Self, u64) -> Result<Attempt<()>, u64>,
    ) -> Attempt<()> {
        let mut pos = self.ring.mem.ctrl().tail.pos.load(Ordering::Relaxed);
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
            // Acquire: pairs with the consumer's Release release of the previous lap (its
            // read of that value happens before we overwrite it), with the Release of a skip
            // or of a dead reader's reclaim, and (through the release sequence a reclaim's
            // read-modify-write continues) with the publish of a value reclaimed unread.
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == seq_of(pos, FREE) {
                match free(self, pos) {
                    Ok(a) => return a,
                    Err(now) => {
                        pos = now;
                        continue;
                    }
                }
            }
            let lap = laps(seq, pos);
            if lap == 0 {
                // Another producer claimed `pos` this lap; move on (re-reading: persistent
                // impossible values are called corruption after MAX_RETRIES).
                pos = c.tail.pos.load(Ordering::Relaxed);
                shm_sync::primitive::spin_hint();
                continue;
            }
            if lap != cap.wrapping_neg() & TAG {
                // A later lap (our `pos` is stale), or garbage: re-read.
                pos = c.tail.pos.load(Ordering::Relaxed);
                shm_sync::primitive::spin_hint();
                continue;
            }
            // The previous lap's slot is still in use.
            let state = seq & STATE;
            if !check_claims && (state == PUBLISHED || state == READING) {
                return Attempt::Blocked;
            }
            let prev = pos.wrapping_sub(cap);
            if state == PUBLISHED {
                // Relaxed: the Acquire load of `seq` above already keeps this load after
                // it, and `head` is only ever written by Relaxed CASes: nothing to pair with.
                let head = c.head.pos.load(Ordering::Relaxed);
                let claimed = head.wrapping_sub(prev).wrapping_sub(1) < cap;
                if claimed
                    && stuck_too_long(
                        &mut self.stuck,
                        &mut self.expired,
                        pos,
                        // In our positions: `prev` < `head` is `pos` < `head + cap`.
                        head.wrapping_add(cap),
                        self.claim_timeout,
                    )
                {
                    // A consumer claimed it but never marked it: reclaim. Its mark, a
                    // compare-exchange from (prev, PUBLISHED), then fails, so it never
                    // reads a slot we rewrite.
                    self.stuck = None;
                    // Acquire: pairs with the Release publish of the previous lap's value
                    // (we are about to overwrite it; its consumer never marked it).
                    if slot
                        .seq
                        .compare_exchange(
                            seq,
                            seq_of(pos, FREE),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        c.tail.expired.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                return Attempt::Blocked;
            }
            if state == READING {
                // Relaxed: as for the PUBLISHED case above; only a horizon.
                let head = c.head.pos.load(Ordering::Relaxed);
                // A reader marked `prev`, so it was claimed: `prev < head`. A `head` that
                // says otherwise is garbage, and must not become a horizon that later
                // positions inherit an expired start from: then nothing inherits.
                let horizon = if head.wrapping_sub(prev).wrapping_sub(1) < cap {
                    head.wrapping_add(cap)
                } else {
                    pos.wrapping_add(1)
                };
                if stuck_too_long(
                    &mut self.stuck,
                    &mut self.expired,
                    pos,
                    horizon,
                    self.claim_timeout,
                ) {
                    self.stuck = None;
                    // The mark came with `seq` (Acquire above), so its endpoint's generation
                    // and owner word, written before it, are visible to the check.
                    // AcqRel (on the CAS below): Acquire pairs with the dead reader's
                    // Release mark; whether its reads of the value are over is the death
                    // verdict's to say (a process the kernel has reaped issues no more
                    // loads; under loom the verdict is a Release/Acquire pair with the
                    // death). Release: our rewrite is ordered after our verdict for the
                    // next consumer.
                    if c.consumers.marker_dead(Mark::of(seq), &mut self.peers)
                        && slot
                            .seq
                            .compare_exchange(
                                seq,
                                seq_of(pos, FREE),
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        // The reader died mid-read: its claim is void.
                        c.tail.expired.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                return Attempt::Blocked;
            }
            // FREE or WRITING: the previous lap's producer is not done (consumers give up
            // that claim if its producer is gone): the ring is full.
            return Attempt::Blocked;
        }
    }

    /// Marks the claimed `pos` WRITING, writes `value` and publishes it.
    #[inline]
    fn fill(&mut self, pos: u64, value: &T) -> Attempt<()> {
        let mem = &self.ring.mem;
        let slot = mem.slot(pos);
        crate::fault_point!("mpmc-producer-claimed");
        crate::loom_death_point!(self, "mpmc-producer-claimed");
        let mine = marked(pos, WRITING, self.mark);
        // Mark WRITING, naming our endpoint in the same step. Release: pairs with the
        // Acquire load of `seq` by a consumer that checks the mark's endpoint (our claim of
        // it, and its generation, happened before). Fails only if consumers skipped our
        // unmarked claim after the claim timeout: then nothing is written and the value is
        // handed back.
        if slot
            .seq
            .compare_exchange(
                seq_of(pos, FREE),
                mine,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.last_loss = Some(pos);
            return Attempt::Failed(Failure::Expired);
        }
        // SAFETY: the slot is marked WRITING by us: no consumer reads it before we
        // publish, and it is given up only once our endpoint is dead.
        unsafe { mem::write(&slot.value, *value) };
        crate::fault_point!("mpmc-producer-written");
        crate::loom_death_point!(self, "mpmc-producer-written");
        // Publish. Release: pairs with the consumer's Acquire load of `seq`. A compare-
        // exchange from our own mark: if consumers gave the slot up (they judged us dead,
        // wrongly), nothing is published and the value comes back.
        if slot
            .seq
            .compare_exchange(
                mine,
                seq_of(pos, PUBLISHED),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.last_loss = Some(pos);
            return Attempt::Failed(Failure::Expired);
        }
        crate::fault_point!("mpmc-producer-published");
        self.stuck = None;
        let c = mem.ctrl();
        if wait::wake_if_waiting(self.registered, &c.consumers_waiting, 1) {
            c.tail.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        Attempt::Done(())
    }

    /// Pushes if there is room. Never sleeps; when the ring is not full but the next slot
    /// is still being read by a consumer, polls for it [`IN_FLIGHT_POLLS`] times first.
    ///
    /// # Errors
    ///
    /// `Full` (the ring holds `capacity` items, claimed or published); `InFlight` (not
    /// full: a consumer has not finished the next slot's previous item); when full also
    /// `Disconnected` / `PeerDied` (all consumers gone); `Expired` (see the module docs);
    /// `Corrupted`. The value comes back.
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if !self.origin.is_current() {
            return Err(PushError::Forked(value));
        }
        if let Some(f) = self.consumers_left() {
            return Err(fail_push(f, value));
        }
        match self.attempt(&value, true) {
            Attempt::Done(()) => {
                self.stalled = false;
                Ok(())
            }
            Attempt::Failed(f) => Err(fail_push(f, value)),
            Attempt::Blocked => {
                if cfg!(not(shm_loom)) && self.in_flight() {
                    // Not full: a consumer is finishing the previous lap's item. Wait a
                    // moment for it, as an in-process queue would.
                    for _ in 0..IN_FLIGHT_POLLS {
                        shm_sync::primitive::spin_hint();
                        match self.attempt(&value, false) {
                            Attempt::Done(()) => {
                                self.stalled = false;
                                return Ok(());
                            }
                            Attempt::Failed(f) => return Err(fail_push(f, value)),
                            Attempt::Blocked if self.in_flight() => {}
                            Attempt::Blocked => break,
                        }
                    }
                }
                self.count_stall();
                match self.consumers_gone() {
                    Some(f) => Err(fail_push(f, value)),
                    None if cfg!(not(shm_loom)) && self.in_flight() => {
                        Err(PushError::InFlight(value))
                    }
                    None => Err(PushError::Full(value)),
                }
            }
        }
    }

    /// Whether the ring is not full though the push was blocked: the slot at `tail` still
    /// holds an item a consumer is reading.
    fn in_flight(&self) -> bool {
        let c = self.ring.mem.ctrl();
        // Relaxed: a verdict on a blocked attempt, re-checked by the caller's next try.
        let (head, tail) = (
            c.head.pos.load(Ordering::Relaxed),
            c.tail.pos.load(Ordering::Relaxed),
        );
        tail.wrapping_sub(head) < self.ring.mem.cap()
    }

    /// Counts a full stall, once per wait.
    fn count_stall(&mut self) {
        if !std::mem::replace(&mut self.stalled, true) {
            self.ring
                .mem
                .ctrl()
                .tail
                .stalls
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every consumer has left (closed, or died as its exit notice tells) before
    /// the ring fills: on every push, two loads that stay in this core's cache while
    /// nothing changes (the consumers' `changes` word, bumped by attaches and detaches, and
    /// this handle's own death counter) and no syscall; a look at the table only when one
    /// of them moved. Where no pidfd watches a consumer, its death is not seen here, and a
    /// full ring's check (`consumers_gone`) sees it.
    #[inline]
    pub(super) fn consumers_left(&mut self) -> Option<Failure> {
        if cfg!(shm_loom) || self.buffer {
            return None;
        }
        let side = &self.ring.mem.ctrl().consumers;
        // Relaxed: hints to look closer; the closer look reads the table itself.
        let now = (
            side.changes.load(Ordering::Relaxed),
            self.deaths.load(std::sync::atomic::Ordering::Relaxed),
        );
        if now == self.seen {
            return None;
        }
        self.consumers_left_slow(now.0)
    }

    #[cold]
    fn consumers_left_slow(&mut self, changes: u32) -> Option<Failure> {
        let deaths = end::deaths_seen(&self.deaths);
        let side = &self.ring.mem.ctrl().consumers;
        // Watch every consumer attached now (its death bumps `deaths` and wakes us).
        let target = FlagTarget::of(&self.ring.mem, |c| &c.producers_waiting);
        let _ = side.wake_on_deaths(&mut self.peers, self.me, &target, &self.deaths);
        side.reap(&mut self.peers);
        match side.gone() {
            None => {
                self.seen = (changes, deaths);
                None
            }
            // Gone: not cached, so every push looks again until a consumer attaches.
            Some(DIED) => Some(Failure::PeerDied),
            Some(_) => Some(Failure::Disconnected),
        }
    }

    /// Whether pushes go on landing while every consumer is gone (`true`: for a successor,
    /// until the ring is full, which then reports the departure), or fail at once with
    /// `PeerDied` / `Disconnected` (`false`, the default: nobody would pop them). A work
    /// queue whose consumers restart buffers; a feed whose stale items nobody wants does
    /// not.
    pub fn buffer_while_unattended(&mut self, buffer: bool) {
        self.buffer = buffer;
    }

    /// Whether every consumer is gone (closed, or its process dead): no one will pop what
    /// is pushed now. One `/proc` lookup (or pidfd poll) per consumer attached.
    pub fn is_abandoned(&mut self) -> bool {
        let side = &self.ring.mem.ctrl().consumers;
        side.reap(&mut self.peers);
        side.gone().is_some()
    }

    fn consumers_gone(&mut self) -> Option<Failure> {
        let side = &self.ring.mem.ctrl().consumers;
        if self.liveness.due() {
            side.reap(&mut self.peers);
        }
        match side.gone()? {
            DIED => Some(Failure::PeerDied),
            _ => Some(Failure::Disconnected),
        }
    }

    /// Pushes, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// `Disconnected`, `PeerDied`, `Expired`, `Corrupted`.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if !self.origin.is_current() {
            return Err(PushError::Forked(value));
        }
        if let Some(f) = self.consumers_left() {
            return Err(fail_push(f, value));
        }
        // Fast path first: no deadline to build when there is room.
        match self.attempt(&value, false) {
            Attempt::Done(()) => {
                self.stalled = false;
                Ok(())
            }
            Attempt::Failed(f) => Err(fail_push(f, value)),
            Attempt::Blocked => self.push_until(value, Deadline::after(None)),
        }
    }

    /// [`push`](Self::push), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `push`, plus `Timeout`.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        if !self.origin.is_current() {
            return Err(PushError::Forked(value));
        }
        if let Some(f) = self.consumers_left() {
            return Err(fail_push(f, value));
        }
        self.push_until(value, Deadline::after(Some(timeout)))
    }

    fn push_until(&mut self, value: T, deadline: Deadline) -> Result<(), PushError<T>> {
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
                || match self.attempt(&value, false) {
                    Attempt::Blocked => None,
                    other => {
                        outcome = Some(other);
                        Some(())
                    }
                },
            );
            // Once per spin budget, the full check: full, or a consumer claim stuck past
            // the claim timeout (which this reclaims).
            self.waiter = waiter;
            if waiter.was_cut() {
                self.liveness.expire();
            }
            let r = match outcome.unwrap_or_else(|| self.attempt(&value, true)) {
                Attempt::Done(()) => Ok(()),
                Attempt::Failed(f) => Err(fail_push(f, value)),
                Attempt::Blocked => {
                    self.count_stall();
                    if let Some(f) = self.consumers_gone() {
                        Err(fail_push(f, value))
                    } else if deadline.passed() {
                        Err(PushError::Timeout(value))
                    } else if crate::shutdown::requested() {
                        Err(PushError::Interrupted(value))
                    } else {
                        self.sleep(strategy, deadline, seen);
                        continue;
                    }
                }
            };
            match r {
                Ok(()) => {
                    self.stalled = false;
                    wait::ended(&mut self.waiter);
                }
                Err(_) => self.waiter.abandon(),
            }
            return r;
        }
    }

    /// Sleeps (if `strategy` parks) until the ring may have room: a consumer moved `head`
    /// or freed the slot at `tail`, the consumers left, one of them died (its exit notice
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
        let head = c.head.pos.load(Ordering::Relaxed);
        let tail = c.tail.pos.load(Ordering::Relaxed);
        // A claim we waited on that is no longer the one at `tail` (another producer took
        // that position) is no reason for short slices.
        if self.stuck.is_some_and(|s| s.pos != tail) {
            self.stuck = None;
        }
        let owners = c.consumers.owners_digest();
        let target = FlagTarget::of(&self.ring.mem, |c| &c.producers_waiting);
        let slice = c.consumers.sleep_slice(
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
                c.head.pos.load(Ordering::Relaxed) != head
                    || self.ring.mem.slot(tail).seq.load(Ordering::Relaxed) == seq_of(tail, FREE)
                    || c.consumers.gone().is_some()
                    || end::deaths_seen(deaths) != seen
                    // A consumer attached since our scan: re-arm the watches first.
                    || c.consumers.owners_digest() != owners
            },
            || None,
        );
        self.liveness.expire();
    }

    /// Pushes as many of `values` as fit now, in order; returns how many. The run of free
    /// slots at `tail` is claimed with one compare-exchange (where `try_push` makes one per
    /// value); each slot is then marked, written and published as `try_push` does, so a
    /// producer killed or stalled mid-batch costs the consumers one claim timeout for the
    /// whole batch (the claims after the first inherit its wait). Never blocks.
    ///
    /// Returns fewer than `values.len()` when the ring fills, and 0 when it is full, the
    /// consumers are gone, this handle's claims expired (it stalled past the claim timeout),
    /// or the ring is corrupted. [`try_push_slice`](Self::try_push_slice) says which (the
    /// values not published are the ones past the count: push them again).
    pub fn push_slice(&mut self, values: &[T]) -> usize {
        self.push_slice_why(values, false).count
    }

    /// [`push_slice`](Self::push_slice), saying why it stopped short: `Full` (or, when
    /// full, departed or dead consumers), `InFlight`, `Expired` (this handle stalled past
    /// the claim timeout inside the batch: the items from `count` on were not published),
    /// `Corrupted`, `Forked`.
    pub fn try_push_slice(&mut self, values: &[T]) -> Batch<PushError<()>> {
        self.push_slice_why(values, true)
    }

    /// The batch push; `why`: find out why it stopped short (a stall count and, on a full
    /// ring, a look for departed consumers, as `try_push` makes).
    fn push_slice_why(&mut self, values: &[T], why: bool) -> Batch<PushError<()>> {
        let stop = |count, e| Batch {
            count,
            stopped: Some(e),
        };
        if !self.origin.is_current() {
            return stop(0, PushError::Forked(()));
        }
        if !values.is_empty() {
            if let Some(f) = self.consumers_left() {
                return stop(0, fail_push(f, ()));
            }
        }
        let mut done = 0;
        while done < values.len() {
            let rest = &values[done..];
            let n = match self.claim_run(rest.len() as u64) {
                Some((pos, n)) => {
                    let k = self.fill_run(pos, &rest[..n as usize]);
                    if k < n as usize {
                        return stop(done + k, PushError::Expired(()));
                    }
                    k
                }
                // Nothing free at `tail`: the one-slot path's full check, which reclaims a
                // consumer claim stuck past the claim timeout.
                None => match self.attempt(&rest[0], true) {
                    Attempt::Done(()) => {
                        self.stalled = false;
                        1
                    }
                    Attempt::Failed(f) => return stop(done, fail_push(f, ())),
                    Attempt::Blocked if !why => return stop(done, PushError::Full(())),
                    Attempt::Blocked => {
                        self.count_stall();
                        let e = match self.consumers_gone() {
                            Some(f) => fail_push(f, ()),
                            None if cfg!(not(shm_loom)) && self.in_flight() => {
                                PushError::InFlight(())
                            }
                            None => PushError::Full(()),
                        };
                        return stop(done, e);
                    }
                },
            };
            done += n;
        }
        Batch {
            count: done,
            stopped: None,
        }
    }

    /// Claims the run of free slots at `tail`, at most `want` (and one ring) long, with one
    /// compare-exchange of `tail`. `None` if the slot at `tail` is not free.
    fn claim_run(&mut self, want: u64) -> Option<(u64, u64)> {
        let mem = &self.ring.mem;
        claim_run(mem, &mem.ctrl().tail.pos, FREE, want, 1).ok()
    }

    /// Marks, writes and publishes the claimed positions `pos..pos + values.len()`, in
    /// order; returns how many were published. Claims that cannot be used (consumers gave
    /// up the first of them: we stalled past the claim timeout) are given up here at
    /// once, as consumers would after the timeout, so no value is published after one that
    /// was not.
    fn fill_run(&mut self, pos: u64, values: &[T]) -> usize {
        let n = values.len();
        let marked_n = self.mark_run(pos, n);
        for (i, v) in values[..marked_n].iter().enumerate() {
            // SAFETY: the slot is marked WRITING by us (`mark_run`): no consumer reads it
            // before we publish, and it is given up only once our endpoint is dead.
            unsafe { mem::write(&self.ring.mem.slot(pos.wrapping_add(i as u64)).value, *v) };
            crate::fault_point!("mpmc-producer-written");
            crate::loom_death_point!(self, "mpmc-producer-written");
        }
        self.publish_run(pos, marked_n, marked_n)
    }

    /// Marks the claimed positions `pos..pos + n` WRITING, in order, naming our endpoint;
    /// returns how many were marked (all of them unless consumers gave the first unmarked
    /// one up: we stalled past the claim timeout). The unmarked rest is given back.
    fn mark_run(&mut self, pos: u64, n: usize) -> usize {
        crate::fault_point!("mpmc-producer-claimed");
        crate::loom_death_point!(self, "mpmc-producer-claimed");
        let mem = &self.ring.mem;
        // Mark every slot first, so that a death from here on leaves marks naming us.
        // Release: as in `fill`.
        let mut marked_n = n;
        for i in 0..n {
            let p = pos.wrapping_add(i as u64);
            if mem
                .slot(p)
                .seq
                .compare_exchange(
                    seq_of(p, FREE),
                    marked(p, WRITING, self.mark),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                marked_n = i;
                self.last_loss = Some(p);
                break;
            }
        }
        self.give_back(pos, marked_n, n, marked_n);
        marked_n
    }

    /// Publishes the first `k` of the `marked_n` positions from `pos` that we marked and
    /// wrote, in order, stopping at the first that consumers pre-empted (they judged our
    /// endpoint dead); gives back the marked rest; returns how many were published.
    fn publish_run(&mut self, pos: u64, k: usize, marked_n: usize) -> usize {
        let mem = &self.ring.mem;
        let c = mem.ctrl();
        let mut published = 0;
        for i in 0..k.min(marked_n) {
            let p = pos.wrapping_add(i as u64);
            // Release: pairs with the consumer's Acquire load of `seq` (as in `fill`).
            if mem
                .slot(p)
                .seq
                .compare_exchange(
                    marked(p, WRITING, self.mark),
                    seq_of(p, PUBLISHED),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                break;
            }
            published += 1;
            crate::fault_point!("mpmc-producer-published");
        }
        self.give_back(pos, published, marked_n, marked_n);
        if published > 0 {
            self.stuck = None;
            self.stalled = false;
            if wait::wake_if_waiting(
                self.registered,
                &c.consumers_waiting,
                published.min(MAX_ENDPOINTS) as u32,
            ) {
                c.tail.wakeups.fetch_add(1, Ordering::Relaxed);
            }
        }
        published
    }

    /// Gives back the claimed positions `pos + from .. pos + to` unpublished: those below
    /// `marked_n` carry our mark, the others none. Each becomes the next lap's FREE, as a
    /// consumer's skip leaves it; a consumer at that position finishes the skip (moves
    /// `head`) at once. Release: as for a skip, the next lap's producer is ordered after us.
    /// A failed exchange: consumers gave it up already.
    fn give_back(&self, pos: u64, from: usize, to: usize, marked_n: usize) {
        let mem = &self.ring.mem;
        let cap = mem.cap();
        for i in from..to {
            let p = pos.wrapping_add(i as u64);
            let was = if i < marked_n {
                marked(p, WRITING, self.mark)
            } else {
                seq_of(p, FREE)
            };
            if mem
                .slot(p)
                .seq
                .compare_exchange(
                    was,
                    seq_of(p.wrapping_add(cap), FREE),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                mem.ctrl().head.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Claims exactly `n` free slots at `tail` with one compare-exchange and marks them,
    /// to fill in place: nothing is visible to consumers until [`WriteChunk::commit`].
    /// The slots hold whatever they held (never uninitialised memory: the ring is zeroed
    /// at creation and `T` is `Pod`).
    ///
    /// Consumers reach the chunk's first slot and wait there (it is marked by a live
    /// endpoint) until the chunk is committed or dropped: commit soon. A chunk dropped
    /// without `commit` gives its slots back (consumers skip them at once).
    ///
    /// # Errors
    ///
    /// `TooFewSlots` with the number free now (nothing is claimed then); `Expired` if this
    /// handle stalled past the claim timeout between its claim and its marks (consumers
    /// gave the slots up; nothing was claimed for the chunk); `Forked`.
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.write_chunk_min(n, n)
    }

    /// Reserves up to `n` slots (as many as are free at `tail` now, at least one) with one
    /// compare-exchange, like [`write_chunk`](Self::write_chunk) does exactly `n`.
    ///
    /// # Errors
    ///
    /// `TooFewSlots { available: 0 }` when the slot at `tail` is not free; `Disconnected`
    /// / `PeerDied` once every consumer closed or died (heard as `try_push` hears it);
    /// `Expired`; `Corrupted`; `Forked`.
    pub fn write_chunk_up_to(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.write_chunk_min(n, n.min(1))
    }

    /// A chunk of at most `n` and at least `min` slots.
    fn write_chunk_min(&mut self, n: usize, min: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        if n > 0 {
            match self.consumers_left() {
                Some(Failure::PeerDied) => return Err(ChunkError::PeerDied),
                Some(Failure::Disconnected) => return Err(ChunkError::Disconnected),
                _ => {}
            }
        }
        if n == 0 {
            return Ok(WriteChunk {
                start: self.ring.mem.ctrl().tail.pos.load(Ordering::Relaxed),
                len: 0,
                producer: self,
            });
        }
        let mem = &self.ring.mem;
        let (pos, n) = match claim_run(mem, &mem.ctrl().tail.pos, FREE, n as u64, min as u64) {
            Ok((pos, k)) => (pos, k as usize),
            Err(u64::MAX) => return Err(ChunkError::Corrupted),
            Err(free) => {
                return Err(ChunkError::TooFewSlots {
                    available: free as usize,
                })
            }
        };
        let marked_n = self.mark_run(pos, n);
        if marked_n < n {
            // `mark_run` gave back the unmarked rest; give back the marked start too.
            self.give_back(pos, 0, marked_n, marked_n);
            return Err(ChunkError::Expired);
        }
        Ok(WriteChunk {
            start: pos,
            len: n,
            producer: self,
        })
    }
}

/// `n` claimed and marked slots of an MPMC producer, filled in place, published by
/// [`commit`](Self::commit) (see [`Producer::write_chunk`]). MPMC slots are interleaved
/// with their sequence words, so a chunk lends no slices: fill it with `set` or
/// `copy_from`.
///
/// A chunk taken before a `fork` is inert in the child (its marks are the parent's, as is
/// the end for every call there that returns `Forked`): its writes go nowhere, `commit`
/// publishes nothing and returns 0, and dropping it gives nothing back.
pub struct WriteChunk<'a, T: Pod> {
    producer: &'a mut Producer<T>,
    start: u64,
    len: usize,
}

impl<T: Pod> WriteChunk<'_, T> {
    /// Number of claimed slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slots were claimed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes slot `i` of the chunk.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn set(&mut self, i: usize, value: T) {
        assert!(i < self.len, "chunk index {i} out of range 0..{}", self.len);
        if !self.producer.origin.is_current() {
            return;
        }
        let slot = self
            .producer
            .ring
            .mem
            .slot(self.start.wrapping_add(i as u64));
        // SAFETY: the slot is claimed and marked WRITING by us (`write_chunk`): no consumer
        // reads it before we publish, and it is given up only once our endpoint is dead.
        unsafe { mem::write(&slot.value, value) };
    }

    /// Fills the first `values.len()` slots from `values`.
    ///
    /// # Panics
    ///
    /// If `values.len() > len()`.
    pub fn copy_from(&mut self, values: &[T]) {
        assert!(
            values.len() <= self.len,
            "{} values for a chunk of {}",
            values.len(),
            self.len
        );
        for (i, v) in values.iter().enumerate() {
            self.set(i, *v);
        }
    }

    /// Publishes the first `k` slots (at most `len()`), in order, and gives the rest back
    /// unpublished; returns how many were published: `k`, unless consumers gave this
    /// handle's marks up meanwhile (they judged its endpoint dead), when the count stops
    /// at the first slot they took.
    pub fn commit(mut self, k: usize) -> usize {
        let n = std::mem::take(&mut self.len);
        if !self.producer.origin.is_current() {
            return 0;
        }
        self.producer.publish_run(self.start, k.min(n), n)
    }

    /// Publishes every slot; returns how many were published (see `commit`).
    pub fn commit_all(self) -> usize {
        let n = self.len;
        self.commit(n)
    }
}

impl<T: Pod> Drop for WriteChunk<'_, T> {
    fn drop(&mut self) {
        if self.len > 0 && self.producer.origin.is_current() {
            // Not committed: give every slot back, so consumers pass them at once.
            self.producer.publish_run(self.start, 0, self.len);
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the endpoint is the parent's
        }
        let c = self.ring.mem.ctrl();
        c.producers.detach(self.index, self.me);
        // Sleeping consumers must wake to see whether we were the last.
        wait::wake(&c.consumers_waiting, u32::MAX);
    }
}

impl<T: Pod> crate::select::Sealed for Producer<T> {}

impl<T: Pod> crate::select::Selectable for Producer<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() || self.consumers_left().is_some() {
            return true;
        }
        match self.probe() {
            Attempt::Done(()) | Attempt::Failed(_) => true,
            Attempt::Blocked => {
                if take_any_exited(&mut *self.peers) {
                    // A consumer died (its exit notice fired): check it now.
                    self.liveness.expire();
                }
                self.consumers_gone().is_some()
            }
        }
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        self.ring.mem.ctrl().consumers.arm(
            &mut self.peers,
            (self.me, &self.deaths),
            FlagTarget::of(&self.ring.mem, |c| &c.producers_waiting),
            &mut self.liveness,
            self.stuck.is_some(),
        )
    }
}

#[cfg(feature = "async")]
impl<T: Pod> Producer<T> {
    /// [`push`](Self::push) as a future (feature `async`): waits for room without a
    /// thread of its own (see [`aio`](crate::aio)). A future dropped before it is ready
    /// has not pushed `value`.
    ///
    /// # Errors
    ///
    /// As `push`.
    pub async fn push_async(&mut self, value: T) -> Result<(), PushError<T>> {
        let mut value = value;
        loop {
            match self.try_push(value) {
                Err(PushError::Full(back) | PushError::InFlight(back)) => value = back,
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PushError::Interrupted(value));
            }
        }
    }
}
