//! A log's producers: claim, write in place, commit.

use std::time::Duration;

use shm_sync::primitive::{fence, Ordering};

use super::*;
use crate::end::{sleep_on_peer, FlagTarget, Sleeper, CLOSED};
use crate::error::SendError;
use crate::wait::Deadline;

/// One of a log's producers. `&mut self` methods: one thread at a time per handle; as
/// many handles (in as many processes) as [`MAX_PRODUCERS`].
pub struct Producer {
    ring: Ring,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    mark: Mark,
    attachment: Attachment,
    /// The last `head` we read.
    head_cache: u64,
    waits: Waits,
    /// The consumer's process, watched.
    peer: PeerWatch,
    /// Whether we counted the stall we are in.
    stalled: bool,
}

/// Where a claim landed: its padding (if it wrapped) and its record.
#[derive(Clone, Copy)]
struct Reserved {
    /// The position of the padding record, if any, and its span.
    pad: Option<(u64, u64)>,
    /// The record's header position.
    at: u64,
    /// The record's span (header and the claimed length rounded up).
    span: u64,
}

impl Producer {
    pub(super) fn new(ring: Ring, me: u64, index: usize, attachment: Attachment) -> Producer {
        // Acquire: pairs with the consumer's Release store of `head`, as in `reserve`.
        let head_cache = ring.mem.ctrl().head.pos.load(Ordering::Acquire);
        settle_predecessor(&ring, index, head_cache);
        Producer {
            mark: Mark::new(index, attachment.generation),
            ring,
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            attachment,
            head_cache,
            waits: Waits::new(),
            peer: PeerWatch::new(),
            stalled: false,
        }
    }

    /// This producer's endpoint and attachment.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The largest message this log takes.
    pub fn max_len(&self) -> usize {
        self.ring.settings.max_len as usize
    }

    /// Sets how blocking claims and sends wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.waits.strategy = strategy;
    }

    /// Sets how often a claim on a full log checks that the consumer still runs (default
    /// [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)).
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.waits.liveness.set_interval(interval);
    }

    /// Claims room for a message of up to `max` bytes, to write in place
    /// ([`Claim::buf`]) and then [`commit`](Claim::commit); dropping the claim instead
    /// gives the space up (it becomes padding). Never waits.
    ///
    /// # Errors
    ///
    /// `Full`, `TooLong` (`max` over the log's `max_len`), `Disconnected` (the consumer
    /// closed the log), `PeerDied` (noticed on a full log within about the liveness
    /// interval), `Expired` (this call stalled past the claim timeout between claiming
    /// and marking), `Corrupted`, `Forked`.
    ///
    /// The claim is a compare-exchange of `tail`, retried while other producers win it:
    /// lock-free, not wait-free. A hostile process that keeps rewriting `tail` keeps the
    /// call retrying for as long as it goes on (each retry re-checks the space against
    /// `head`; garbage gives `Corrupted`); this is where the promise that a hostile peer
    /// causes no hang stops.
    #[inline]
    pub fn try_claim(&mut self, max: usize) -> Result<Claim<'_>, SendError> {
        let r = self.reserve(max, true)?;
        self.mark(r, max)
    }

    /// [`try_claim`](Self::try_claim), waiting while the log is full.
    ///
    /// # Errors
    ///
    /// As `try_claim` but `Full`, plus `Interrupted`.
    pub fn claim(&mut self, max: usize) -> Result<Claim<'_>, SendError> {
        self.claim_until(max, Deadline::after(None))
    }

    /// [`claim`](Self::claim), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `claim`, plus `Timeout`.
    #[inline]
    pub fn claim_timeout(&mut self, max: usize, timeout: Duration) -> Result<Claim<'_>, SendError> {
        // Fast path first: no deadline (no clock read) when there is room.
        match self.reserve(max, false) {
            Ok(r) => match self.mark_words(r) {
                Ok(()) => return Ok(self.lend(r, max)),
                Err(SendError::Expired) => {}
                Err(e) => return Err(e),
            },
            Err(SendError::Full) => {}
            Err(e) => return Err(e),
        }
        self.claim_until(max, Deadline::after(Some(timeout)))
    }

    /// A blocking claim: a claim that expired (this thread stalled past the claim timeout
    /// before marking it; nothing was written) is made again, within the deadline.
    fn claim_until(&mut self, max: usize, deadline: Deadline) -> Result<Claim<'_>, SendError> {
        let r = loop {
            let r = self.reserve_until(max, deadline)?;
            match self.mark_words(r) {
                Ok(()) => break r,
                Err(SendError::Expired) if !deadline.passed() => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(self.lend(r, max))
    }

    /// Sends `msg` (message type 0, no flags): a claim of its length, a copy, a commit.
    ///
    /// # Errors
    ///
    /// As [`try_claim`](Self::try_claim).
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut c = self.try_claim(msg.len())?;
        c.buf().copy_from_slice(msg);
        c.commit(msg.len())
    }

    /// [`try_send`](Self::try_send), waiting while the log is full.
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut c = self.claim(msg.len())?;
        c.buf().copy_from_slice(msg);
        c.commit(msg.len())
    }

    /// [`send`](Self::send), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`claim_timeout`](Self::claim_timeout).
    #[inline]
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        let mut c = self.claim_timeout(msg.len(), timeout)?;
        c.buf().copy_from_slice(msg);
        c.commit(msg.len())
    }

    /// Whether the consumer is gone: it closed its end, or its process died.
    pub fn is_abandoned(&self) -> bool {
        self.ring.mem.ctrl().config.consumer.gone(&self.peer)
    }

    /// Removes the log's name if it still names this log (not a successor's made since).
    #[cfg(not(shm_loom))]
    pub(crate) fn unlink_log(&self) {
        self.ring.mem.unlink();
    }

    /// The byte position this producer's next record would land at if claimed now (for
    /// reports; other producers move it).
    pub fn tail(&self) -> u64 {
        self.ring.mem.ctrl().tail.pos.load(Ordering::Relaxed)
    }

    /// P1: claims the space for a record of up to `max` bytes (and the padding before it,
    /// if it would straddle the end of the buffer). `poll_checks`: a `try_` call, which
    /// looks at the consumer's liveness (rate-limited) when the log is full.
    #[inline]
    fn reserve(&mut self, max: usize, poll_checks: bool) -> Result<Reserved, SendError> {
        if !self.origin.is_current() {
            return Err(SendError::Forked);
        }
        let settings = self.ring.settings;
        if max as u64 > settings.max_len {
            return Err(SendError::TooLong {
                len: max,
                max: settings.max_len as usize,
            });
        }
        let c = self.ring.mem.ctrl();
        // Relaxed: a hint; a consumer that closed leaves for good (a successor reopens).
        if c.config.consumer.state.load(Ordering::Relaxed) == CLOSED {
            return Err(SendError::Disconnected);
        }
        let cap = settings.capacity;
        let span = record_span(max as u64, settings.align);
        let mut refreshed = None;
        loop {
            // Relaxed: the compare-exchange below decides; nothing is read through `tail`.
            let t = c.tail.pos.load(Ordering::Relaxed);
            let off = t & (cap - 1);
            let pad = if off + span > cap { cap - off } else { 0 };
            let total = pad + span;
            let used = t.wrapping_sub(self.head_cache);
            if used > cap || used + total > cap {
                if refreshed.is_none() {
                    // Acquire: pairs with the consumer's Release store of `head`, which
                    // came after it rewrote the freed words to `FREE` of their next lap.
                    self.head_cache = c.head.pos.load(Ordering::Acquire);
                    refreshed = Some(t);
                    continue;
                }
                if used > cap {
                    // More than the log apart: the consumer freed and producers claimed
                    // between our two loads (read again), or garbage (the same values
                    // twice running). Acquire: as above.
                    let h = c.head.pos.load(Ordering::Acquire);
                    if h == self.head_cache && refreshed == Some(t) || t % settings.align != 0 {
                        return Err(SendError::Corrupted);
                    }
                    self.head_cache = h;
                    refreshed = Some(t);
                    continue;
                }
                return Err(self.full(poll_checks));
            }
            if c.tail
                .pos
                .compare_exchange(
                    t,
                    t.wrapping_add(total),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                crate::fault_point!("log-producer-claimed");
                self.stalled = false;
                return Ok(Reserved {
                    pad: (pad > 0).then_some((t, pad)),
                    at: t.wrapping_add(pad),
                    span,
                });
            }
        }
    }

    /// Why a claim found the log full: the consumer closed or died, or just `Full`.
    fn full(&mut self, poll_checks: bool) -> SendError {
        let c = self.ring.mem.ctrl();
        if !std::mem::replace(&mut self.stalled, true) {
            c.tail.full_stalls.fetch_add(1, Ordering::Relaxed);
        }
        if !poll_checks || self.waits.liveness.due() {
            match c.config.consumer.status_watched(&mut self.peer) {
                EndStatus::Closed => return SendError::Disconnected,
                EndStatus::Attached { alive: false, .. } => return SendError::PeerDied,
                _ => {}
            }
        }
        SendError::Full
    }

    fn reserve_until(&mut self, max: usize, deadline: Deadline) -> Result<Reserved, SendError> {
        loop {
            match self.reserve(max, false) {
                Err(SendError::Full) => {}
                Ok(r) => {
                    wait::ended(&mut self.waits.waiter);
                    return Ok(r);
                }
                Err(e) => {
                    self.waits.waiter.abandon();
                    return Err(e);
                }
            }
            if let Err(e) = self.wait_for_room(max, deadline) {
                self.waits.waiter.abandon();
                return Err(e);
            }
        }
    }

    /// Waits until `head` moves far enough for a record of `max` (or the deadline, the
    /// consumer's departure, a shutdown).
    fn wait_for_room(&mut self, max: usize, deadline: Deadline) -> Result<(), SendError> {
        let cap = self.ring.settings.capacity;
        let span = record_span(max as u64, self.ring.settings.align);
        let seen = end::deaths_seen(&self.waits.deaths);
        let mem = &self.ring.mem;
        // Whether the claim `reserve` makes would fit now (its padding included).
        let room = || {
            let c = mem.ctrl();
            // Relaxed (both): a hint; `reserve` re-reads `head` with Acquire.
            let t = c.tail.pos.load(Ordering::Relaxed);
            let h = c.head.pos.load(Ordering::Relaxed);
            let off = t & (cap - 1);
            let pad = if off + span > cap { cap - off } else { 0 };
            t.wrapping_add(pad + span).wrapping_sub(h) <= cap
        };
        let check_every = self.waits.liveness.interval();
        let got = wait::spin(
            self.waits.strategy,
            &mut self.waits.waiter,
            wait::MPMC_POLL_PAUSES,
            (&deadline, check_every),
            || room().then_some(()),
        );
        if got.is_some() {
            return Ok(());
        }
        if self.waits.waiter.was_cut() {
            self.waits.liveness.expire();
        }
        match self.full(true) {
            SendError::Full => {}
            e => return Err(e),
        }
        if deadline.passed() {
            return Err(SendError::Timeout);
        }
        if crate::shutdown::requested() {
            return Err(SendError::Interrupted);
        }
        if self.waits.waiter.may_sleep(self.waits.strategy) {
            let c = self.ring.mem.ctrl();
            // The `head` our failed claim saw (a later read could miss the release we
            // wait for).
            let head = self.head_cache;
            sleep_on_peer(
                Sleeper {
                    me: self.me,
                    peer_end: &c.config.consumer,
                    flag: FlagTarget::of(&self.ring.mem, |c| &c.producers_waiting),
                    peer: &mut self.peer,
                    deaths: &self.waits.deaths,
                    liveness: &mut self.waits.liveness,
                    waiter: &mut self.waits.waiter,
                },
                deadline,
                seen,
                // Relaxed: a hint to skip the sleep; `reserve` re-reads with Acquire.
                || c.head.pos.load(Ordering::Relaxed) != head,
            );
        }
        Ok(())
    }

    /// P2, then the record lent as a claim.
    #[inline]
    fn mark(&mut self, r: Reserved, max: usize) -> Result<Claim<'_>, SendError> {
        self.mark_words(r)?;
        Ok(self.lend(r, max))
    }

    /// P2: marks what `reserve` claimed, in our claim line, then looks whether the
    /// consumer gave it up first; then writes the padding before it, if any.
    #[inline]
    fn mark_words(&mut self, r: Reserved) -> Result<(), SendError> {
        let mem = &self.ring.mem;
        let c = mem.ctrl();
        let line = &c.claims[self.index];
        let start = r.pad.map_or(r.at, |(at, _)| at);
        let total = r.at.wrapping_add(r.span).wrapping_sub(start);
        // Release: after our clear of the last claim's `at` (commit / drop), for the
        // Acquire load in `Owned::of` (which then re-reads `at`); published with `at`
        // below.
        line.span
            .store(claim_word(self.mark, total), Ordering::Release);
        // Release: orders the span before the claim, for the Acquire load in `Owned::of`
        // (the consumer's, or our endpoint's next owner's).
        line.at.store(start | 1, Ordering::Release);
        // SeqCst: the Dekker pair with the consumer's fence in `give_up` (its store of the
        // horizon, then its read of the claim lines): either it sees our mark (and waits
        // for us, or pads the claim once we are dead), or we see its horizon below (and
        // write nothing), or both; never neither.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        let below = c.given_up.below.load(Ordering::Relaxed);
        if below.wrapping_sub(start) as i64 > 0 {
            // Given up (we stalled past the claim timeout since `reserve`): nothing of
            // ours is written. Release: as the mark.
            line.at.store(NO_CLAIM, Ordering::Release);
            // An honest horizon is a `tail` some claim saw, never ahead of the one now.
            let t = c.tail.pos.load(Ordering::Relaxed);
            if below.wrapping_sub(t) as i64 > 0 {
                return Err(SendError::Corrupted);
            }
            return Err(SendError::Expired);
        }
        crate::fault_point!("log-producer-marked");
        if let Some((at, span)) = r.pad {
            // Release: pairs with the consumer's Acquire load of the word. A plain store
            // over `FREE`: the consumer changes a marked claim's words only once the
            // endpoint that marked it is dead, and we live.
            mem.slot(at >> 3).store(pad_word(span), Ordering::Release);
        }
        Ok(())
    }

    /// After a commit or abort: our claim line names no claim (see `Owned::of`).
    #[inline]
    fn unmark(&self) {
        // Release: after the header store (a consumer that reads the line cleared, with
        // Acquire, then finds the header written), and before the next claim's `span`.
        self.ring.mem.ctrl().claims[self.index]
            .at
            .store(NO_CLAIM, Ordering::Release);
    }

    #[inline]
    fn lend(&mut self, r: Reserved, max: usize) -> Claim<'_> {
        Claim {
            producer: self,
            at: r.at,
            max,
            span: r.span,
            msg_type: 0,
            flags: 0,
            done: false,
        }
    }

    /// The bytes of the record at `at`, `len` of them after its header.
    #[cfg(not(shm_loom))]
    #[inline]
    fn bytes_mut(&mut self, at: u64, len: usize) -> &mut [u8] {
        let first = self.ring.mem.slot_ptr((at >> 3) + 1).cast::<u8>();
        // SAFETY: the record's span lies inside the buffer without wrapping (`reserve`
        // put padding before it otherwise), so `len` bytes from the word after the header
        // are inside the slot array; we marked the record, so no honest peer touches
        // those bytes until our commit (or abort) hands them to the consumer, and the
        // borrow of `self` ends before that.
        unsafe { std::slice::from_raw_parts_mut(first, len) }
    }

    /// Loom models no payload bytes (the words are loom atomics): an empty slice.
    #[cfg(shm_loom)]
    #[inline]
    fn bytes_mut(&mut self, _at: u64, _len: usize) -> &mut [u8] {
        &mut []
    }
}

/// Settles what the endpoint's last owner left in its claim line: a claim it died writing,
/// still unread (between `head` and `tail`), becomes padding (as the consumer would make it
/// after the claim timeout; whichever of us is first). Then the line is ours.
fn settle_predecessor(ring: &Ring, index: usize, head: u64) {
    let (mem, s) = (&ring.mem, &ring.settings);
    let c = mem.ctrl();
    let line = &c.claims[index];
    if let Some(o) = Owned::of(line, s) {
        // Relaxed: a bound; the pads compare-exchange from the claim's own `FREE` words,
        // which a claim read and freed since no longer holds.
        let tail = c.tail.pos.load(Ordering::Relaxed);
        let unread = tail.wrapping_sub(head);
        if o.at.wrapping_sub(head) < unread
            && o.at.wrapping_add(o.span).wrapping_sub(head) <= unread
        {
            pad_claim(mem, s, o.at, o);
        }
    }
    // Release: orders the pads before it, for a consumer that reads the line (Acquire)
    // and then finds the words.
    line.at.store(NO_CLAIM, Ordering::Release);
}

#[cfg(shm_loom)]
impl Producer {
    /// Loom only: this handle's process dies now: marked dead, its endpoint left attached
    /// and its claim line as it is (a claim it forgot stays marked), no destructor run.
    pub fn die(self) {
        shm_sync::primitive::world::die(self.me >> 32);
        std::mem::forget(self);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the endpoint is the parent's
        }
        let c = self.ring.mem.ctrl();
        c.producers.detach(self.index, self.me);
        // A sleeping consumer must wake to see whether we were the last.
        wait::wake(&c.consumer_waiting, u32::MAX);
    }
}

/// Room for one message, marked for its producer: write it in place ([`buf`](Self::buf)),
/// then [`commit`](Self::commit) the length written. Dropped uncommitted, the space becomes
/// padding and nothing is delivered.
pub struct Claim<'a> {
    producer: &'a mut Producer,
    at: u64,
    max: usize,
    span: u64,
    msg_type: u16,
    flags: u8,
    done: bool,
}

impl Claim<'_> {
    /// The claimed bytes (as many as were claimed), to write the message into.
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        if !self.producer.origin.is_current() {
            return &mut []; // a forked child's copy: writes nowhere
        }
        let (at, max) = (self.at, self.max);
        self.producer.bytes_mut(at, max)
    }

    /// The message's type (a number for the consumer; 0 unless set).
    #[inline]
    pub fn set_type(&mut self, msg_type: u16) {
        self.msg_type = msg_type;
    }

    /// The message's flags (8 bits for the consumer; 0 unless set).
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.flags = flags;
    }

    /// The byte position of this record's header.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// P3: publishes the first `len` bytes written as the message.
    ///
    /// # Errors
    ///
    /// `TooLong` if `len` exceeds what was claimed (the claim is then given up, as on
    /// drop); `Forked` in a forked child (the claim is the parent's: nothing is written).
    #[inline]
    pub fn commit(mut self, len: usize) -> Result<(), SendError> {
        if !self.producer.origin.is_current() {
            self.done = true;
            return Err(SendError::Forked); // the claim is the parent's
        }
        if len > self.max {
            return Err(SendError::TooLong { len, max: self.max });
        }
        self.done = true;
        crate::fault_point!("log-producer-written");
        let mem = &self.producer.ring.mem;
        let used = record_span(len as u64, self.producer.ring.settings.align);
        if used < self.span {
            // The rest of the claim: padding. Relaxed: published by the commit below.
            mem.slot((self.at + used) >> 3)
                .store(pad_word(self.span - used), Ordering::Relaxed);
        }
        // Release: publishes the message's bytes (and the padding after it); pairs with
        // the consumer's Acquire load of the header. A plain store over `FREE`: the
        // consumer changes a marked claim's words only once the endpoint that marked it is
        // dead, and we live.
        mem.slot(self.at >> 3).store(
            committed_word(len as u64, self.msg_type, self.flags),
            Ordering::Release,
        );
        self.producer.unmark();
        crate::fault_point!("log-producer-committed");
        self.wake();
        Ok(())
    }

    #[inline]
    fn wake(&self) {
        let p = &*self.producer;
        let c = p.ring.mem.ctrl();
        if wait::wake_one_if_waiting(p.waits.registered, &c.consumer_waiting) {
            c.tail.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.done || !self.producer.origin.is_current() {
            return;
        }
        let p = &*self.producer;
        let mem = &p.ring.mem;
        // Release: pairs with the consumer's Acquire load; it skips the padding. A plain
        // store, as in `commit`.
        mem.slot(self.at >> 3)
            .store(pad_word(self.span), Ordering::Release);
        p.unmark();
        p.ring
            .mem
            .ctrl()
            .tail
            .aborted
            .fetch_add(1, Ordering::Relaxed);
        self.wake();
    }
}

/// A log producer as [`select`](crate::select::select) (or
/// [`aio::ready`](crate::aio::ready)) waits on it: ready once a message of `len` bytes
/// fits (or the claim has something to report: the consumer gone, `len` past `max_len`,
/// corruption, a fork). Made by [`Producer::room_for`]; a [`Producer`] itself selects as
/// `room_for(max_len)`.
pub struct Room<'a> {
    producer: &'a mut Producer,
    len: usize,
}

impl Producer {
    /// This producer, waiting for room for a message of `len` bytes (see [`Room`]).
    pub fn room_for(&mut self, len: usize) -> Room<'_> {
        Room {
            producer: self,
            len,
        }
    }

    /// Whether a claim of `len` bytes would return now (room, or an error to report).
    fn room_ready(&mut self, len: usize) -> bool {
        let settings = self.ring.settings;
        let c = self.ring.mem.ctrl();
        // Relaxed (all): hints; the claim that follows re-reads `head` with Acquire.
        if !self.origin.is_current()
            || len as u64 > settings.max_len
            || c.config.consumer.state.load(Ordering::Relaxed) == CLOSED
        {
            return true;
        }
        let (cap, span) = (settings.capacity, record_span(len as u64, settings.align));
        let t = c.tail.pos.load(Ordering::Relaxed);
        let h = c.head.pos.load(Ordering::Relaxed);
        let off = t & (cap - 1);
        let pad = if off + span > cap { cap - off } else { 0 };
        // More than the log apart: a race between the two loads, or garbage: let the
        // claim decide (it reads again, and calls persistent garbage `Corrupted`).
        if t.wrapping_sub(h) > cap || t.wrapping_add(pad + span).wrapping_sub(h) <= cap {
            return true;
        }
        if self.peer.take_exited() {
            // The consumer died (its exit notice fired): check it now.
            self.waits.liveness.expire();
        }
        self.full(true) != SendError::Full
    }

    fn room_arm(&mut self) -> crate::select::Armed {
        let c = self.ring.mem.ctrl();
        crate::select::arm_one(
            FlagTarget::of(&self.ring.mem, |c| &c.producers_waiting),
            (&c.config.consumer, self.me),
            &mut self.peer,
            &self.waits.deaths,
            &mut self.waits.liveness,
        )
    }
}

impl crate::select::Sealed for Room<'_> {}

impl crate::select::Selectable for Room<'_> {
    fn select_ready(&mut self) -> bool {
        self.producer.room_ready(self.len)
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        self.producer.room_arm()
    }
}

impl crate::select::Sealed for Producer {}

impl crate::select::Selectable for Producer {
    fn select_ready(&mut self) -> bool {
        let max = self.ring.settings.max_len as usize;
        self.room_ready(max)
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        self.room_arm()
    }
}

#[cfg(feature = "async")]
impl Producer {
    /// [`claim`](Self::claim) as a future (feature `async`): waits for room without a
    /// thread of its own (see [`aio`](crate::aio)). A future dropped before it is ready
    /// has claimed nothing.
    ///
    /// # Errors
    ///
    /// As `claim`.
    pub async fn claim_async(&mut self, max: usize) -> Result<Claim<'_>, SendError> {
        loop {
            match self.reserve(max, true) {
                Ok(r) => match self.mark_words(r) {
                    Ok(()) => return Ok(self.lend(r, max)),
                    // This task stalled past the claim timeout before marking (nothing
                    // was written): claim again.
                    Err(SendError::Expired) => continue,
                    Err(e) => return Err(e),
                },
                Err(SendError::Full) => {}
                Err(e) => return Err(e),
            }
            if crate::aio::ready(&mut self.room_for(max)).await.is_err() {
                return Err(SendError::Interrupted);
            }
        }
    }

    /// [`send`](Self::send) as a future (feature `async`): a [`claim_async`](Self::claim_async)
    /// of its length, a copy, a commit. A future dropped before it is ready has sent nothing.
    ///
    /// # Errors
    ///
    /// As `send`.
    pub async fn send_async(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut c = self.claim_async(msg.len()).await?;
        c.buf().copy_from_slice(msg);
        c.commit(msg.len())
    }
}
