//! The producer side of an SPSC ring: pushes, batches, chunks and waits.

use super::*;

impl<T: Pod> Producer<T> {
    /// How this producer attached: its generation, its first position, the items it found
    /// unconsumed, and whose dead end it took over.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The position the next push takes (one more per item pushed, from
    /// [`Attachment::position`]).
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Whether pushes go on landing while the consumer is gone (`true`: for a successor,
    /// until the ring is full, which then reports the departure; the successor chooses
    /// with [`Resume`] whether it wants them), or fail at once with `PeerDied` /
    /// `Disconnected` (`false`, the default: nobody would pop them).
    pub fn buffer_while_unattended(&mut self, buffer: bool) {
        self.buffer = buffer;
    }

    /// The consumer's current attachment (`None` if none ever attached): items at
    /// positions from its `since` on are read by that consumer; earlier ones were read by an
    /// earlier one (and those in the ring when it attached, the backlog, may have been seen
    /// by a consumer that died too: at-least-once).
    pub fn consumer_attachment(&self) -> Option<PeerAttachment> {
        let c = &self.mem.ctrl().config;
        peer_attachment(&c.consumer, &c.consumer_since)
    }

    crate::handles::end_ring_info!();

    crate::handles::end_settings!(
        "pushes",
        "a push on a full ring checks that the consumer still runs, when its death cannot wake it"
    );

    /// Free slots now (reads the consumer's position).
    ///
    /// # Errors
    ///
    /// `Corrupted` if the consumer's position is impossible.
    pub fn free_slots(&mut self) -> Result<u64, ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        self.refresh_head().map_err(|_| ChunkError::Corrupted)?;
        Ok(self.mem.cap() - self.tail.wrapping_sub(self.head_cache))
    }

    /// Free slots, at least `want` of them if there are: the cached `head` answers when it
    /// shows `want` free, and only otherwise is `head` re-read. Polling `head` on every
    /// chunk would pull the consumer's line over on each call while it is busy.
    #[inline]
    fn free_for(&mut self, want: u64) -> Result<u64, ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        let cached = self.mem.cap() - self.tail.wrapping_sub(self.head_cache);
        if cached >= want {
            return Ok(cached);
        }
        self.free_slots()
    }

    /// Re-reads `head`, checking it is possible.
    #[inline]
    fn refresh_head(&mut self) -> Result<(), ()> {
        // Acquire: pairs with the consumer's Release store of `head` in `Consumer::advance`,
        // so its reads of the slots it freed happen before we overwrite them.
        let h = self.mem.ctrl().head.pos.load(Ordering::Acquire);
        if self.tail.wrapping_sub(h) > self.mem.cap() {
            return Err(());
        }
        self.head_cache = h;
        Ok(())
    }

    #[inline]
    fn publish(&mut self, tail: u64) {
        self.tail = tail;
        let c = self.mem.ctrl();
        // Release: publishes the slot writes; pairs with the Acquire load of `tail` in
        // `Consumer::refresh_tail`.
        c.tail.pos.store(tail, Ordering::Release);
        crate::fault_point!("spsc-producer-published");
        if wait::wake_one_if_waiting(self.registered, &c.consumer_waiting) {
            bump(&c.tail.wakeups);
        }
    }

    /// Pushes if there is room. Never blocks and makes no syscall unless the consumer
    /// sleeps, or a consumer attached since this handle last looked: then, once, the push
    /// arms its exit watch on it (a pidfd, and an `epoll_ctl` on the process's exit
    /// watcher; the watcher thread itself if none runs yet). `Ring::producer` arms it on
    /// the consumer attached at that time.
    ///
    /// # Errors
    ///
    /// `PeerDied` as soon as this process's exit watcher has heard that the consumer's
    /// process died (within about a millisecond of a SIGKILL), full or not; then, until a
    /// new consumer takes the end over, every push says the same. `Full`, or when full:
    /// `Disconnected` (consumer closed), `PeerDied` (consumer dead, checked at most every
    /// [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL): the only check where no pidfd can
    /// watch the consumer); `Corrupted`. The value comes back.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if !self.origin.is_current() {
            return Err(PushError::Forked(value));
        }
        match self.consumer_exited() {
            Left::No => {}
            Left::Died => return Err(PushError::PeerDied(value)),
            Left::Closed => return Err(PushError::Disconnected(value)),
        }
        if self.tail.wrapping_sub(self.head_cache) >= self.mem.cap() {
            if self.refresh_head().is_err() {
                return Err(PushError::Corrupted(value));
            }
            if self.tail.wrapping_sub(self.head_cache) >= self.mem.cap() {
                return Err(self.full(value));
            }
        }
        // SAFETY: `tail - head < cap`, so the slot at `tail` is free: the consumer read it
        // (its Release store of `head`, which we loaded with Acquire, is past it) and will
        // not touch it until we publish a `tail` beyond it.
        unsafe { mem::write(self.mem.slot(self.tail), value) };
        crate::fault_point!("spsc-producer-written");
        self.publish(self.tail.wrapping_add(1));
        Ok(())
    }

    #[cold]
    fn full<V>(&mut self, value: V) -> PushError<V> {
        let c = self.mem.ctrl();
        if self.stalled_at != self.tail {
            self.stalled_at = self.tail;
            bump(&c.tail.stalls);
        }
        // Acquire: pairs with the Release store in `End::release`.
        if c.config.consumer.state.load(Ordering::Acquire) == CLOSED {
            return PushError::Disconnected(value);
        }
        if cfg!(shm_loom) {
            // (Loom models hear deaths here only; no call looks at a remembered verdict.)
            if self.liveness.due() && self.consumer_dead() {
                return PushError::PeerDied(value);
            }
            return PushError::Full(value);
        }
        if self.liveness.due() {
            // Relaxed (both): which consumer the verdict was about. A word that did not move
            // across the verdict is the one it judged (a word names a pid and its start
            // time, so a dead holder's never comes back).
            let before = self.consumer_owner();
            if self.consumer_dead() {
                let after = self.consumer_owner();
                if before == after && after != 0 {
                    // Remembered, so every later call says `PeerDied` at once (as after the
                    // exit watcher's notice) until a successor takes the end over, rather
                    // than `Full` until the next liveness check.
                    self.watched = after;
                    self.deaths_at = u64::MAX;
                }
                return PushError::PeerDied(value);
            }
        }
        PushError::Full(value)
    }

    /// Whether the consumer died (as its exit notice tells) or closed its end: on every
    /// push, two loads that stay in this core's cache while nothing changes (the consumer's
    /// owner word, on a line written only by attach and release, and this handle's own
    /// death counter) and no syscall; a closer look only when one of them moved. Where no
    /// pidfd watches the consumer, a death is not seen here, and a full ring's liveness
    /// check sees it.
    #[inline]
    pub(super) fn consumer_exited(&mut self) -> Left {
        if cfg!(shm_loom) {
            return Left::No;
        }
        if self.buffer {
            // Still watch the consumer (a sleeper's wake-up), but report nothing.
            let _ = self.consumer_watch();
            return Left::No;
        }
        self.consumer_watch()
    }

    #[inline]
    fn consumer_watch(&mut self) -> Left {
        // Relaxed: a hint to look closer; the closer look checks the process itself.
        let word = self.consumer_owner();
        // Relaxed: as above; the closer look re-reads it with SeqCst (`deaths_seen`).
        let deaths = self.deaths.load(std::sync::atomic::Ordering::Relaxed);
        // A word of 0 (no consumer attached) always looks closer: the end may have closed
        // since we last looked, which moves neither the word nor the death counter.
        if word == self.watched && word != 0 && deaths == self.deaths_at {
            return Left::No;
        }
        self.consumer_exited_slow(word)
    }

    #[cold]
    fn consumer_exited_slow(&mut self, word: u64) -> Left {
        if word == self.watched && self.deaths_at == u64::MAX {
            // Known dead, and nobody has taken its end over.
            return Left::Died;
        }
        if word == 0 {
            // Acquire: pairs with the Release store in `End::release`. Closed: `watched` is
            // left as it was, so every push looks again (one load) until a consumer joins.
            if self
                .mem
                .ctrl()
                .config
                .consumer
                .state
                .load(Ordering::Acquire)
                == CLOSED
            {
                return Left::Closed;
            }
            self.watched = 0;
            self.deaths_at = end::deaths_seen(&self.deaths);
            return Left::No;
        }
        self.watched = word;
        self.deaths_at = end::deaths_seen(&self.deaths);
        let target = FlagTarget::of(&self.mem, |c| &c.producer_waiting);
        if self.peer.wake_on_exit(word, self.me, &target, &self.deaths) {
            return Left::No;
        }
        match self
            .mem
            .ctrl()
            .config
            .consumer
            .status_watched(&mut self.peer)
        {
            EndStatus::Attached { alive: false, .. } => {
                self.deaths_at = u64::MAX;
                Left::Died
            }
            EndStatus::Closed => {
                // Closed with its word still set (a consumer that died, or is, between its
                // release's two stores): not cached, so every push looks again.
                self.watched = u64::MAX;
                Left::Closed
            }
            _ => Left::No,
        }
    }

    /// The consumer end's owner word (pid and start time; 0 when nobody holds it).
    /// Relaxed: see each caller.
    #[inline]
    fn consumer_owner(&self) -> u64 {
        self.mem
            .ctrl()
            .config
            .consumer
            .owner
            .load(Ordering::Relaxed)
    }

    fn consumer_dead(&mut self) -> bool {
        matches!(
            self.mem
                .ctrl()
                .config
                .consumer
                .status_watched(&mut self.peer),
            EndStatus::Attached { alive: false, .. }
        )
    }

    /// Pushes, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// `Disconnected`, `PeerDied` (noticed within about [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)), `Corrupted`.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        // Fast path first: no deadline to build when there is room.
        match self.try_push(value) {
            Err(PushError::Full(v)) => self.push_until(v, Deadline::after(None)),
            other => other,
        }
    }

    /// [`push`](Self::push), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `push`, plus `Timeout`.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_until(value, Deadline::after(Some(timeout)))
    }

    fn push_until(&mut self, mut value: T, deadline: Deadline) -> Result<(), PushError<T>> {
        loop {
            match self.try_push(value) {
                Err(PushError::Full(v)) => value = v,
                other => return other,
            }
            match self.wait_for_space(deadline) {
                Ok(()) => {}
                Err(Stop::Timeout) => return Err(PushError::Timeout(value)),
                Err(Stop::Disconnected) => return Err(PushError::Disconnected(value)),
                Err(Stop::PeerDied) => return Err(PushError::PeerDied(value)),
                Err(Stop::Corrupted) => return Err(PushError::Corrupted(value)),
                Err(Stop::Interrupted) => return Err(PushError::Interrupted(value)),
            }
        }
    }

    fn wait_for_space(&mut self, deadline: Deadline) -> Result<(), Stop> {
        let r = self.wait_for_space_inner(deadline);
        if r.is_err() {
            self.waiter.abandon();
        }
        r
    }

    fn wait_for_space_inner(&mut self, deadline: Deadline) -> Result<(), Stop> {
        loop {
            // Before the checks below: a death after them shows in `ready` as a change.
            let seen = end::deaths_seen(&self.deaths);
            let strategy = self.strategy;
            let mut corrupted = false;
            let got = {
                let (mem, tail, head_cache) = (&self.mem, self.tail, &mut self.head_cache);
                let check_every = self.liveness.interval();
                wait::spin(
                    strategy,
                    &mut self.waiter,
                    wait::SPSC_POLL_PAUSES,
                    (&deadline, check_every),
                    || {
                        // Acquire: pairs with the consumer's Release store of `head` (as in
                        // `refresh_head`).
                        let h = mem.ctrl().head.pos.load(Ordering::Acquire);
                        if tail.wrapping_sub(h) > mem.cap() {
                            corrupted = true;
                            return Some(());
                        }
                        *head_cache = h;
                        (tail.wrapping_sub(h) < mem.cap()).then_some(())
                    },
                )
            };
            if corrupted {
                return Err(Stop::Corrupted);
            }
            if got.is_some() {
                return Ok(());
            }
            if self.waiter.was_cut() {
                self.liveness.expire();
            }
            let c = self.mem.ctrl();
            // Acquire: pairs with the Release store in `End::release`.
            if c.config.consumer.state.load(Ordering::Acquire) == CLOSED {
                return Err(Stop::Disconnected);
            }
            if self.liveness.due() && self.consumer_dead() {
                return Err(Stop::PeerDied);
            }
            if deadline.passed() {
                return Err(Stop::Timeout);
            }
            if crate::shutdown::requested() {
                return Err(Stop::Interrupted);
            }
            if self.waiter.may_sleep(strategy) {
                let full_head = self.tail.wrapping_sub(self.mem.cap());
                let c = self.mem.ctrl();
                sleep_on_peer(
                    Sleeper {
                        me: self.me,
                        peer_end: &c.config.consumer,
                        flag: FlagTarget::of(&self.mem, |c| &c.producer_waiting),
                        peer: &mut self.peer,
                        deaths: &self.deaths,
                        liveness: &mut self.liveness,
                        waiter: &mut self.waiter,
                    },
                    deadline,
                    seen,
                    // Relaxed: only a hint to skip the sleep; the loop re-reads `head`
                    // with Acquire.
                    || c.head.pos.load(Ordering::Relaxed) != full_head,
                );
            }
        }
    }

    /// Reserves exactly `n` slots to fill in place; nothing is visible to the consumer
    /// until [`WriteChunk::commit`]. The slots hold whatever they held (never uninitialised
    /// memory: the ring's memory is zeroed at creation and `T` is `Pod`).
    ///
    /// # Errors
    ///
    /// `TooFewSlots` with the number free; `Disconnected` / `PeerDied` once the consumer
    /// closed or died (heard as `try_push` hears it); `Corrupted`; `Forked`.
    pub fn write_chunk_uninit(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.consumer_left_chunk()?;
        let free = self.free_for(n as u64)?;
        if (n as u64) > free {
            return Err(ChunkError::TooFewSlots {
                available: free as usize,
            });
        }
        Ok(WriteChunk {
            start: self.tail,
            len: n,
            producer: self,
        })
    }

    /// [`push_slice`](Self::push_slice), saying why it stopped short: a departed or dead
    /// consumer (heard at once, as `try_push` hears it), a full ring, `Corrupted`, `Forked`.
    pub fn try_push_slice(&mut self, values: &[T]) -> Batch<PushError<()>> {
        let stop = |count, e| Batch {
            count,
            stopped: Some(e),
        };
        if !self.origin.is_current() {
            return stop(0, PushError::Forked(()));
        }
        if values.is_empty() {
            return Batch {
                count: 0,
                stopped: None,
            };
        }
        match self.consumer_exited() {
            Left::No => {}
            Left::Died => return stop(0, PushError::PeerDied(())),
            Left::Closed => return stop(0, PushError::Disconnected(())),
        }
        let n = self.push_slice(values);
        if n == values.len() {
            return Batch {
                count: n,
                stopped: None,
            };
        }
        match self.free_slots() {
            Err(_) => stop(n, PushError::Corrupted(())),
            Ok(_) => {
                let why = self.full(());
                stop(n, why)
            }
        }
    }

    /// Reserves up to `n` slots (as many as are free, at least one) to fill in place, like
    /// [`write_chunk_uninit`](Self::write_chunk_uninit) does exactly `n`.
    ///
    /// # Errors
    ///
    /// `TooFewSlots { available: 0 }` when the ring is full; `Disconnected` / `PeerDied`
    /// once the consumer closed or died (heard as `try_push` hears it); `Corrupted`;
    /// `Forked`.
    pub fn write_chunk_up_to(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.consumer_left_chunk()?;
        let free = self.free_for(n as u64)?;
        let k = n.min(free as usize);
        if k == 0 {
            return Err(match self.full(()) {
                PushError::Disconnected(()) => ChunkError::Disconnected,
                PushError::PeerDied(()) => ChunkError::PeerDied,
                _ => ChunkError::TooFewSlots { available: 0 },
            });
        }
        Ok(WriteChunk {
            start: self.tail,
            len: k,
            producer: self,
        })
    }

    /// The consumer's departure or death, as a chunk error.
    fn consumer_left_chunk(&mut self) -> Result<(), ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        match self.consumer_exited() {
            Left::No => Ok(()),
            Left::Died => Err(ChunkError::PeerDied),
            Left::Closed => Err(ChunkError::Disconnected),
        }
    }

    /// Pushes as many of `values` as fit now; returns how many
    /// ([`try_push_slice`](Self::try_push_slice) also says why it stopped short).
    pub fn push_slice(&mut self, values: &[T]) -> usize {
        let Ok(free) = self.free_for(values.len() as u64) else {
            return 0;
        };
        let n = values.len().min(free as usize);
        if n == 0 {
            return 0;
        }
        // `n` slots are free (just checked): no second check through `write_chunk_uninit`.
        let mut chunk = WriteChunk {
            start: self.tail,
            len: n,
            producer: self,
        };
        chunk.copy_from(&values[..n]);
        chunk.commit_all();
        n
    }

    /// Whether the consumer is gone: it closed its end (a dropped handle), or its process
    /// died holding it. No syscall while this handle's exit notice on that consumer is
    /// pending (the usual case once the producer has attached or pushed); otherwise one
    /// `/proc` lookup per call. A consumer that takes the end over makes it `false` again:
    /// abandonment is a state of the consumer's current generation, not of the ring.
    pub fn is_abandoned(&self) -> bool {
        self.mem.ctrl().config.consumer.gone(&self.peer)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the end is the parent's
        }
        let c = self.mem.ctrl();
        c.config.producer.release(self.me);
        // A consumer sleeping on an empty ring must wake to see us gone.
        wait::wake(&c.consumer_waiting, u32::MAX);
    }
}

/// `n` reserved slots of a producer, filled in place, published by `commit`.
///
/// A chunk taken before a `fork` is inert in the child (the end is the parent's, as for
/// every call there that returns `Forked`): its writes go nowhere, `as_mut_slices` lends
/// empty slices and `commit` publishes nothing.
pub struct WriteChunk<'a, T> {
    producer: &'a mut Producer<T>,
    start: u64,
    len: usize,
}

impl<T: Pod> WriteChunk<'_, T> {
    /// Number of reserved slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slots were reserved.
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
        let pos = self.start.wrapping_add(i as u64);
        // SAFETY: the slot lies in the reserved, unpublished range: only we access it.
        unsafe { mem::write(self.producer.mem.slot(pos), value) };
    }

    /// Fills the first `values.len()` reserved slots from `values` (a plain copy: writes
    /// observe nothing, so a peer that reads these slots meanwhile can only get garbage in
    /// its own process).
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
        if !self.producer.origin.is_current() {
            return;
        }
        #[cfg(not(shm_loom))]
        {
            let (first, first_len) = self.first_run(values.len());
            let second = self.producer.mem.slot_ptr(0).cast::<T>();
            // SAFETY: both runs lie inside the slot array (`first_run`), are reserved for
            // us until commit (no access of this process to them can race), do not overlap
            // `values` (our own memory), and `UnsafeCell<T>` has `T`'s layout.
            unsafe {
                std::ptr::copy_nonoverlapping(values.as_ptr(), first, first_len);
                std::ptr::copy_nonoverlapping(
                    values.as_ptr().add(first_len),
                    second,
                    values.len() - first_len,
                );
            }
        }
        #[cfg(shm_loom)]
        for (i, v) in values.iter().enumerate() {
            self.set(i, *v);
        }
    }

    /// The first reserved slot and how many of the first `n` lie before the wrap.
    #[cfg(not(shm_loom))]
    fn first_run(&self, n: usize) -> (*mut T, usize) {
        let cap = self.producer.mem.cap();
        let first_index = self.start & (cap - 1);
        let first_len = (n as u64).min(cap - first_index) as usize;
        (
            self.producer.mem.slot_ptr(self.start).cast::<T>(),
            first_len,
        )
    }

    /// The reserved slots as two slices (the second is non-empty when the chunk wraps), to
    /// fill in place.
    ///
    /// Zero-copy, so the promise is narrower than the rest of the ring's: your code holds a
    /// `&mut [T]` into memory another process can reach. The consumer never touches
    /// reserved slots, and a consumer that crashes touches nothing, but if your code *reads
    /// back* what it wrote while a hostile or buggy process keeps writing these slots, that
    /// read races (a data race in Rust's model: the compiler may assume the bytes did not
    /// change). Writing only is harmless. Use [`copy_from`](Self::copy_from) or
    /// [`set`](Self::set) where you cannot trust every process that maps the ring.
    #[cfg(not(shm_loom))]
    pub fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        if !self.producer.origin.is_current() {
            return (&mut [], &mut []);
        }
        let cap = self.producer.mem.cap();
        let first_index = self.start & (cap - 1);
        let first_len = (self.len as u64).min(cap - first_index) as usize;
        let first = self.producer.mem.slot_ptr(self.start).cast::<T>();
        let second = self.producer.mem.slot_ptr(0).cast::<T>();
        // SAFETY: both ranges lie inside the slot array (`first_index + first_len <= cap`,
        // `len - first_len <= first_index`), do not overlap, are reserved for us alone
        // until commit, hold valid `T`s (`Pod`, zero-initialised memory), and `UnsafeCell<T>`
        // has `T`'s layout. The borrow of `self` keeps the memory alive and exclusive.
        unsafe {
            (
                std::slice::from_raw_parts_mut(first, first_len),
                std::slice::from_raw_parts_mut(second, self.len - first_len),
            )
        }
    }

    /// Publishes the first `k` slots (at most `len()`); the rest are released unwritten.
    pub fn commit(self, k: usize) {
        let k = k.min(self.len);
        if k > 0 && self.producer.origin.is_current() {
            let tail = self.start.wrapping_add(k as u64);
            self.producer.publish(tail);
        }
    }

    /// Publishes every reserved slot.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<T: Pod> crate::select::Sealed for Producer<T> {}

/// Ready when there is room for an item, or when `try_push` has something to report (the
/// consumer closed or died, corruption, a fork).
impl<T: Pod> crate::select::Selectable for Producer<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() || !matches!(self.consumer_exited(), Left::No) {
            return true;
        }
        if self.tail.wrapping_sub(self.head_cache) < self.mem.cap() {
            return true;
        }
        if self.refresh_head().is_err() || self.tail.wrapping_sub(self.head_cache) < self.mem.cap()
        {
            return true;
        }
        if self.peer.take_exited() {
            // The consumer died (its exit notice fired): check it now.
            self.liveness.expire();
        }
        // What `try_push` says on a full ring (the same checks, the same remembered
        // verdict): anything but `Full` is for it to report.
        !matches!(self.full(()), PushError::Full(()))
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        let c = self.mem.ctrl();
        crate::select::arm_one(
            FlagTarget::of(&self.mem, |c| &c.producer_waiting),
            (&c.config.consumer, self.me),
            &mut self.peer,
            &self.deaths,
            &mut self.liveness,
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
                Err(PushError::Full(back)) => value = back,
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PushError::Interrupted(value));
            }
        }
    }
}
