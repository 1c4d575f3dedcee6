//! The consumer side of an SPSC ring: pops, batches, chunks, resumes and waits.

use super::*;

impl<T: Pod> Consumer<T> {
    /// How this consumer attached: its generation, its first position, the backlog it
    /// receives or the items it skipped, and whose dead end it took over.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The position of the next item this consumer pops (one more per item popped, from
    /// [`Attachment::position`]): an item popped at a position below
    /// `attachment().position + attachment().backlog` was in the ring when this consumer
    /// took over.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// The producer's current attachment (`None` if none ever attached): items at
    /// positions from its `since` on come from that producer, earlier ones from an earlier
    /// one (which may have died mid-stream).
    pub fn producer_attachment(&self) -> Option<PeerAttachment> {
        let c = &self.mem.ctrl().config;
        peer_attachment(&c.producer, &c.producer_since)
    }

    crate::handles::end_ring_info!();

    crate::handles::end_settings!(
        "pops",
        "a pop on an empty ring checks that the producer still runs, when its death cannot wake it"
    );

    /// Items ready now (reads the producer's position).
    ///
    /// # Errors
    ///
    /// `Corrupted` if the producer's position is impossible.
    pub fn len(&mut self) -> Result<u64, ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        self.refresh_tail().map_err(|_| ChunkError::Corrupted)?;
        Ok(self.tail_cache.wrapping_sub(self.head))
    }

    /// Whether nothing is ready now.
    pub fn is_empty(&mut self) -> bool {
        self.len().map_or(true, |n| n == 0)
    }

    /// Items ready, at least `want` of them if there are: the cached `tail` answers when
    /// it shows `want` ready, and only otherwise is `tail` re-read (see
    /// `Producer::free_for`).
    #[inline]
    fn ready_for(&mut self, want: u64) -> Result<u64, ChunkError> {
        if !self.origin.is_current() {
            return Err(ChunkError::Forked);
        }
        let cached = self.tail_cache.wrapping_sub(self.head);
        if cached >= want {
            return Ok(cached);
        }
        self.len()
    }

    #[inline]
    fn refresh_tail(&mut self) -> Result<(), ()> {
        // Acquire: pairs with the producer's Release store of `tail` in `Producer::publish`,
        // so the slot writes before it are visible.
        let t = self.mem.ctrl().tail.pos.load(Ordering::Acquire);
        if t.wrapping_sub(self.head) > self.mem.cap() {
            return Err(());
        }
        self.tail_cache = t;
        Ok(())
    }

    #[inline]
    fn advance(&mut self, head: u64) {
        self.head = head;
        let c = self.mem.ctrl();
        // Release: our reads of the freed slots happen before the producer reuses them;
        // pairs with the Acquire load of `head` in `Producer::refresh_head`.
        c.head.pos.store(head, Ordering::Release);
        crate::fault_point!("spsc-consumer-published");
        if wait::wake_one_if_waiting(self.registered, &c.producer_waiting) {
            bump(&c.head.wakeups);
        }
    }

    /// Pops if an item is ready. Never blocks and makes no syscall unless the producer
    /// sleeps.
    ///
    /// # Errors
    ///
    /// `Empty`; `Disconnected` / `PeerDied` once the ring is drained and the producer is
    /// gone (death is checked at most every [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)); `Corrupted`.
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        if self.tail_cache == self.head {
            if self.refresh_tail().is_err() {
                return Err(PopError::Corrupted);
            }
            if self.tail_cache == self.head {
                return Err(self.empty());
            }
        }
        // SAFETY: `head < tail`: the producer published this slot (Release store of `tail`,
        // loaded with Acquire) and will not write it again until we move `head` past it.
        let v = unsafe { mem::read(self.mem.slot(self.head)) };
        crate::fault_point!("spsc-consumer-read");
        self.advance(self.head.wrapping_add(1));
        Ok(v)
    }

    #[cold]
    fn empty(&mut self) -> PopError {
        let c = self.mem.ctrl();
        if self.stalled_at != self.head {
            self.stalled_at = self.head;
            bump(&c.head.stalls);
        }
        // Acquire: pairs with the Release store in `End::release`: everything the producer
        // published before closing is visible to the re-read below.
        if c.config.producer.state.load(Ordering::Acquire) == CLOSED {
            return match self.refresh_tail() {
                Err(()) => PopError::Corrupted,
                Ok(()) if self.tail_cache != self.head => PopError::Empty,
                Ok(()) => PopError::Disconnected,
            };
        }
        // A producer already found dead is reported again at once (no syscall); others are
        // checked once per liveness interval.
        let known_dead = self
            .peer
            .known_dead(c.config.producer.owner.load(Ordering::Relaxed));
        if (known_dead || self.liveness.due()) && self.producer_dead() {
            return match self.refresh_tail() {
                Err(()) => PopError::Corrupted,
                Ok(()) if self.tail_cache != self.head => PopError::Empty,
                Ok(()) => PopError::PeerDied,
            };
        }
        PopError::Empty
    }

    fn producer_dead(&mut self) -> bool {
        matches!(
            self.mem
                .ctrl()
                .config
                .producer
                .status_watched(&mut self.peer),
            EndStatus::Attached { alive: false, .. }
        )
    }

    /// Pops, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// `Disconnected`, `PeerDied` (noticed within about [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)),
    /// `Corrupted`.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        // Fast path first: no deadline to build when an item is ready.
        match self.try_pop() {
            Err(PopError::Empty) => self.pop_until(Deadline::after(None)),
            other => other,
        }
    }

    /// [`pop`](Self::pop), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `pop`, plus `Timeout`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        self.pop_until(Deadline::after(Some(timeout)))
    }

    fn pop_until(&mut self, deadline: Deadline) -> Result<T, PopError> {
        loop {
            match self.try_pop() {
                Err(PopError::Empty) => {}
                other => return other,
            }
            match self.wait_for_items(deadline) {
                Ok(()) => {}
                Err(Stop::Timeout) => return Err(PopError::Timeout),
                Err(Stop::Disconnected) => return Err(PopError::Disconnected),
                Err(Stop::PeerDied) => return Err(PopError::PeerDied),
                Err(Stop::Corrupted) => return Err(PopError::Corrupted),
                Err(Stop::Interrupted) => return Err(PopError::Interrupted),
            }
        }
    }

    fn wait_for_items(&mut self, deadline: Deadline) -> Result<(), Stop> {
        let r = self.wait_for_items_inner(deadline);
        if r.is_err() {
            self.waiter.abandon();
        }
        r
    }

    fn wait_for_items_inner(&mut self, deadline: Deadline) -> Result<(), Stop> {
        loop {
            // Before the checks below: a death after them shows in `ready` as a change.
            let seen = end::deaths_seen(&self.deaths);
            let strategy = self.strategy;
            let mut corrupted = false;
            let got = {
                let (mem, head, tail_cache) = (&self.mem, self.head, &mut self.tail_cache);
                let check_every = self.liveness.interval();
                wait::spin(
                    strategy,
                    &mut self.waiter,
                    wait::SPSC_POLL_PAUSES,
                    (&deadline, check_every),
                    || {
                        // Acquire: pairs with the producer's Release store of `tail` (as in
                        // `refresh_tail`).
                        let t = mem.ctrl().tail.pos.load(Ordering::Acquire);
                        if t.wrapping_sub(head) > mem.cap() {
                            corrupted = true;
                            return Some(());
                        }
                        *tail_cache = t;
                        (t != head).then_some(())
                    },
                )
            };
            if corrupted {
                return Err(Stop::Corrupted);
            }
            if got.is_some() {
                return Ok(());
            }
            // `empty` decides Disconnected / PeerDied after a final re-read of `tail`.
            if self.waiter.was_cut() {
                self.liveness.expire();
            }
            match self.empty() {
                PopError::Empty => {}
                PopError::Disconnected => return Err(Stop::Disconnected),
                PopError::PeerDied => return Err(Stop::PeerDied),
                _ => return Err(Stop::Corrupted),
            }
            if self.tail_cache != self.head {
                wait::ended(&mut self.waiter);
                return Ok(());
            }
            if deadline.passed() {
                return Err(Stop::Timeout);
            }
            if crate::shutdown::requested() {
                return Err(Stop::Interrupted);
            }
            if self.waiter.may_sleep(strategy) {
                let head = self.head;
                let c = self.mem.ctrl();
                sleep_on_peer(
                    Sleeper {
                        me: self.me,
                        peer_end: &c.config.producer,
                        flag: FlagTarget::of(&self.mem, |c| &c.consumer_waiting),
                        peer: &mut self.peer,
                        deaths: &self.deaths,
                        liveness: &mut self.liveness,
                        waiter: &mut self.waiter,
                    },
                    deadline,
                    seen,
                    // Relaxed: only a hint to skip the sleep; the loop re-reads `tail`
                    // with Acquire.
                    || c.tail.pos.load(Ordering::Relaxed) != head,
                );
            }
        }
    }

    /// Borrows exactly `n` ready items in place; they are freed by [`ReadChunk::commit`].
    ///
    /// # Errors
    ///
    /// `TooFewSlots` with the number ready; with none ready, `Disconnected` / `PeerDied`
    /// once the producer closed or died and everything it published was read (as `try_pop`
    /// says); `Corrupted`; `Forked`.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        let ready = self.ready_for(n as u64)?;
        if (n as u64) > ready {
            if ready == 0 && n > 0 {
                self.producer_left_chunk()?;
            }
            return Err(ChunkError::TooFewSlots {
                available: ready as usize,
            });
        }
        Ok(ReadChunk {
            start: self.head,
            len: n,
            consumer: self,
        })
    }

    /// Borrows up to `n` ready items (as many as are ready, at least one) in place, like
    /// [`read_chunk`](Self::read_chunk) does exactly `n`.
    ///
    /// # Errors
    ///
    /// `TooFewSlots { available: 0 }` when nothing is ready; `Disconnected` / `PeerDied`
    /// once the producer closed or died and everything it published was read; `Corrupted`;
    /// `Forked`.
    pub fn read_chunk_up_to(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        let ready = self.ready_for(n as u64)?;
        let k = n.min(ready as usize);
        if k == 0 {
            if n > 0 {
                self.producer_left_chunk()?;
            }
            return Err(ChunkError::TooFewSlots { available: 0 });
        }
        Ok(ReadChunk {
            start: self.head,
            len: k,
            consumer: self,
        })
    }

    /// With nothing ready: the producer's departure or death (everything it published
    /// read), as a chunk error.
    fn producer_left_chunk(&mut self) -> Result<(), ChunkError> {
        match self.empty() {
            PopError::Disconnected => Err(ChunkError::Disconnected),
            PopError::PeerDied => Err(ChunkError::PeerDied),
            PopError::Corrupted => Err(ChunkError::Corrupted),
            _ => Ok(()),
        }
    }

    /// [`pop_slice`](Self::pop_slice), saying why it stopped short: `Empty`, or, once the
    /// producer closed or died and everything it published was read, `Disconnected` /
    /// `PeerDied`; `Corrupted`; `Forked`.
    pub fn try_pop_slice(&mut self, out: &mut [T]) -> Batch<PopError> {
        if !self.origin.is_current() {
            return Batch {
                count: 0,
                stopped: Some(PopError::Forked),
            };
        }
        let n = self.pop_slice(out);
        if n == out.len() {
            return Batch {
                count: n,
                stopped: None,
            };
        }
        let why = match self.refresh_tail() {
            Err(()) => PopError::Corrupted,
            Ok(()) => self.empty(),
        };
        Batch {
            count: n,
            stopped: Some(why),
        }
    }

    /// Pops as many items as are ready into `out`; returns how many
    /// ([`try_pop_slice`](Self::try_pop_slice) also says why it stopped short).
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        let Ok(ready) = self.ready_for(out.len() as u64) else {
            return 0;
        };
        let n = out.len().min(ready as usize);
        if n == 0 {
            return 0;
        }
        // `n` items are ready (just checked): no second check through `read_chunk`.
        let chunk = ReadChunk {
            start: self.head,
            len: n,
            consumer: self,
        };
        chunk.copy_to(&mut out[..n]);
        chunk.commit_all();
        n
    }

    /// Whether the producer is gone: it closed its end (a dropped handle), or its process
    /// died holding it. No syscall while this handle's exit notice on that producer is
    /// pending (armed once this consumer has slept); otherwise one `/proc` lookup per call.
    /// What it published may still be in the ring. A producer that takes the end over makes
    /// it `false` again: abandonment is a state of the producer's current generation, not of
    /// the ring (see [`Consumer::producer_attachment`]).
    pub fn is_abandoned(&self) -> bool {
        self.mem.ctrl().config.producer.gone(&self.peer)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the end is the parent's
        }
        let c = self.mem.ctrl();
        c.config.consumer.release(self.me);
        // A producer sleeping on a full ring must wake to see us gone.
        wait::wake(&c.producer_waiting, u32::MAX);
    }
}

/// `n` ready items of a consumer, read in place, freed by `commit`.
pub struct ReadChunk<'a, T> {
    consumer: &'a mut Consumer<T>,
    start: u64,
    len: usize,
}

impl<T: Pod> ReadChunk<'_, T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `i` of the chunk.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        assert!(i < self.len, "chunk index {i} out of range 0..{}", self.len);
        let pos = self.start.wrapping_add(i as u64);
        // SAFETY: the slot lies in the published, unconsumed range: the producer will not
        // write it until we commit past it.
        unsafe { mem::read(self.consumer.mem.slot(pos)) }
    }

    /// Copies the first `out.len()` items into `out`, with atomic word loads: race-free in
    /// this process whatever the producer's process does meanwhile (a peer that scribbles
    /// into published slots makes the copy garbage, never undefined behaviour).
    ///
    /// # Panics
    ///
    /// If `out.len() > len()`.
    pub fn copy_to(&self, out: &mut [T]) {
        assert!(
            out.len() <= self.len,
            "{} items asked of a chunk of {}",
            out.len(),
            self.len
        );
        #[cfg(not(shm_loom))]
        {
            let cap = self.consumer.mem.cap();
            let first_index = self.start & (cap - 1);
            let first_len = (out.len() as u64).min(cap - first_index) as usize;
            let first = self.consumer.mem.slot_ptr(self.start).cast::<T>();
            let second = self.consumer.mem.slot_ptr(0).cast::<T>();
            let (a, b) = out.split_at_mut(first_len);
            // SAFETY: both runs lie inside the slot array (`first_index + first_len <= cap`,
            // the rest from slot 0 is shorter than the chunk), hold published `T`s the
            // producer will not write until we commit, and `UnsafeCell<T>` has `T`'s
            // layout; any bytes are a valid `Pod`.
            unsafe {
                mem::atomic_load_slice(first, a);
                mem::atomic_load_slice(second, b);
            }
        }
        #[cfg(shm_loom)]
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.get(i);
        }
    }

    /// The items as two slices (the second is non-empty when the chunk wraps), read in
    /// place.
    ///
    /// Zero-copy, so the promise is narrower than the rest of the ring's: the slices are
    /// plain references into memory another process can write. The producer never writes
    /// published slots before you commit, and a producer that crashes writes nothing, but a
    /// hostile or buggy process that keeps *writing* these slots while you hold the slices
    /// is a data race in Rust's model (the compiler may assume the bytes do not change under
    /// a `&[T]`). Use [`copy_to`](Self::copy_to), [`get`](Self::get) or
    /// [`Consumer::pop_slice`] (atomic word loads) where you cannot trust every process
    /// that maps the ring.
    #[cfg(not(shm_loom))]
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let cap = self.consumer.mem.cap();
        let first_index = self.start & (cap - 1);
        let first_len = (self.len as u64).min(cap - first_index) as usize;
        let first = self.consumer.mem.slot_ptr(self.start).cast::<T>();
        let second = self.consumer.mem.slot_ptr(0).cast::<T>();
        // SAFETY: both ranges lie inside the slot array, hold published `T`s the producer
        // will not write until we commit, and `UnsafeCell<T>` has `T`'s layout.
        unsafe {
            (
                std::slice::from_raw_parts(first, first_len),
                std::slice::from_raw_parts(second, self.len - first_len),
            )
        }
    }

    /// Frees the first `k` items (at most `len()`); the rest stay for the next read.
    pub fn commit(self, k: usize) {
        let k = k.min(self.len);
        // A chunk taken before a `fork` frees nothing in the child: the end is the parent's.
        if k > 0 && self.consumer.origin.is_current() {
            let head = self.start.wrapping_add(k as u64);
            self.consumer.advance(head);
        }
    }

    /// Frees every item of the chunk.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<T: Pod> crate::select::Sealed for Consumer<T> {}

/// Ready when an item is, or when `try_pop` has something to report (the producer gone
/// with the ring drained, corruption, a fork).
impl<T: Pod> crate::select::Selectable for Consumer<T> {
    fn select_ready(&mut self) -> bool {
        if !self.origin.is_current() || self.tail_cache != self.head {
            return true;
        }
        if self.refresh_tail().is_err() || self.tail_cache != self.head {
            return true;
        }
        if self.peer.take_exited() {
            // The producer died (its exit notice fired): check it now.
            self.liveness.expire();
        }
        self.empty() != PopError::Empty
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        let c = self.mem.ctrl();
        crate::select::arm_one(
            FlagTarget::of(&self.mem, |c| &c.consumer_waiting),
            (&c.config.producer, self.me),
            &mut self.peer,
            &self.deaths,
            &mut self.liveness,
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
                Err(PopError::Empty) => {}
                r => return r,
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PopError::Interrupted);
            }
        }
    }
}
