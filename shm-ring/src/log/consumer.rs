//! A log's consumer: frames read in place, freed when dropped.

use std::time::{Duration, Instant};

use shm_sync::primitive::{fence, Ordering};

use super::*;
use crate::end::FlagTarget;
use crate::error::PopError;
use crate::mpmc::{CLOSED_CLEANLY, DIED};
use crate::wait::Deadline;

/// How closely a poll looks at the log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// One load at an unmarked or marked position: `Empty` / `InFlight` (the wait's fast
    /// path leaves `tail`, which every claim writes, alone).
    Fast,
    /// Also reads `tail` there, to tell a claim in flight from nothing, and starts or
    /// checks its claim timeout; the peers' liveness at most once per liveness interval.
    Full,
    /// `Full`, and the liveness check is due now (the caller's timer said so; asking the
    /// timer again would say no).
    Due,
}

impl Look {
    /// A `try_` call's look: `Due` once per liveness interval, `Fast` otherwise.
    #[inline]
    fn now(waits: &mut Waits) -> Look {
        // Loom models no clock: every look there is a full one (its claim timeouts are
        // the model's choices), so that the give-up and padding paths are explored.
        if cfg!(shm_loom) || waits.liveness.due() {
            Look::Due
        } else {
            Look::Fast
        }
    }

    /// Whether to check the peers' liveness in this poll.
    fn peers_due(self, waits: &mut Waits) -> bool {
        self == Look::Due || waits.liveness.due()
    }
}

/// A log's one consumer. `&mut self` methods: one thread at a time.
pub struct Consumer {
    ring: Ring,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    /// Where we have read to (`consumed`): the next record.
    head: u64,
    /// The `head` we last stored: everything before it is free for the producers.
    released: u64,
    /// How much read and not yet freed makes us free it (an eighth of the log).
    batch: u64,
    attachment: end::Attachment,
    waits: Waits,
    watches: Watches,
    stalled: bool,
    /// The position we wait on and since when (the claim timeout runs from there).
    stuck: Option<Stuck>,
    /// The last give-up: claims below its horizon (the `tail` it saw) were made before its
    /// wait began and inherit its start, so a dead process's claims cost one timeout.
    expired: Option<(u64, Instant)>,
    /// Where `step` last found nothing to read, the word it read there and `tail` then: a
    /// wait sleeps until one of them changes (a later read could miss the change).
    blocked: (u64, u64, u64),
    /// The message a poll last found at `head`, not yet taken: a record is not changed
    /// once committed until we free it, so `peek` then `try_recv` (or `ready_timeout`
    /// then `try_recv`) reads its header once.
    ready: Option<Found>,
    /// The marked claim (and the endpoint whose line marks it) found at the position we
    /// are stuck at: waited for while its producer lives, without reading every claim
    /// line again at each look.
    owned: Option<(usize, Owned)>,
}

/// A claim we wait on: its position, since when, and `tail` when the wait began (the
/// claims below it are all at least as old as the wait).
#[derive(Clone, Copy)]
struct Stuck {
    pos: u64,
    since: Instant,
    horizon: u64,
}

/// `Consumer::blocked`'s `tail` when a fast poll did not read it.
const UNKNOWN_TAIL: u64 = u64::MAX;

/// What the next record at a position turned out to be.
enum Step {
    /// A committed message: its header position, length, type and flags.
    Frame(Found),
    /// Nothing claimed there yet.
    Empty,
    /// Claimed and not committed (not yet marked, or being written).
    InFlight,
    Failed(PopError),
}

#[derive(Clone, Copy)]
struct Found {
    at: u64,
    len: usize,
    msg_type: u16,
    flags: u8,
}

/// A message read in place by [`Consumer::try_drain`]: valid for the call it is lent to.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Its type ([`Claim::set_type`](super::Claim::set_type)).
    pub msg_type: u16,
    /// Its flags ([`Claim::set_flags`](super::Claim::set_flags)).
    pub flags: u8,
    /// The byte position of its record.
    pub position: u64,
}

impl Consumer {
    pub(super) fn new(ring: Ring, me: u64, head: u64, attachment: end::Attachment) -> Consumer {
        Consumer {
            batch: (ring.settings.capacity / 8).max(8),
            ring,
            me,
            origin: shm_core::ThisProcess::now(),
            head,
            released: head,
            attachment,
            waits: Waits::new(),
            watches: Box::new(std::array::from_fn(|_| PeerWatch::new())),
            stalled: false,
            stuck: None,
            expired: None,
            blocked: (head, free_word(head), head),
            ready: None,
            owned: None,
        }
    }

    /// How this consumer attached (its generation, the position it started at, and the
    /// bytes waiting then, in `backlog`).
    pub fn attachment(&self) -> end::Attachment {
        self.attachment
    }

    /// The byte position read next.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Sets how blocking receives wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.waits.strategy = strategy;
    }

    /// Sets how often an empty log's receive checks that the producers still run
    /// (default [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)).
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.waits.liveness.set_interval(interval);
    }

    /// The next message, lent in place until the frame is dropped (which frees its space).
    /// Never waits.
    ///
    /// # Errors
    ///
    /// `Empty`; `InFlight` (the next message is claimed and not committed yet: its
    /// producer is writing it, or stalled or died before committing, which the claim
    /// timeout then settles); `Disconnected` / `PeerDied` once every producer closed /
    /// died (the last to leave says which) and the log is drained; `Corrupted`; `Forked`.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Frame<'_>, PopError> {
        let f = self.poll_now()?;
        Ok(self.frame(f))
    }

    /// [`try_recv`](Self::try_recv), waiting while there is nothing to receive.
    ///
    /// # Errors
    ///
    /// As `try_recv` but `Empty` and `InFlight`, plus `Interrupted`.
    #[inline]
    pub fn recv(&mut self) -> Result<Frame<'_>, PopError> {
        let f = self.poll_until(Deadline::after(None))?;
        Ok(self.frame(f))
    }

    /// [`recv`](Self::recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `recv`, plus `Timeout`.
    #[inline]
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame<'_>, PopError> {
        let f = self.poll_until(Deadline::after(Some(timeout)))?;
        Ok(self.frame(f))
    }

    /// The next message, lent without taking it: the next receive returns it again.
    /// Never waits.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    #[inline]
    pub fn peek(&mut self) -> Result<Message<'_>, PopError> {
        let f = self.poll_now()?;
        Ok(Message {
            bytes: self.bytes(f.at, f.len),
            msg_type: f.msg_type,
            flags: f.flags,
            position: f.at,
        })
    }

    /// Waits up to `timeout` until a message is ready, without taking it.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<(), PopError> {
        self.poll_until(Deadline::after(Some(timeout))).map(|_| ())
    }

    /// Lends each ready message, in order, to `f` (up to `max` of them), then frees them
    /// all with one store of `head`. Returns how many. Never waits.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv) when no message was ready (a problem met after
    /// some messages ends the batch there; the next call reports it).
    pub fn try_drain(
        &mut self,
        max: usize,
        mut f: impl FnMut(Message<'_>),
    ) -> Result<usize, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        let mut cur = self.head;
        let look = Look::now(&mut self.waits);
        let (mut n, mut bytes) = (0usize, 0u64);
        let mut stop = None;
        while n < max {
            match self.step(&mut cur, look) {
                Step::Frame(found) => {
                    f(Message {
                        bytes: self.bytes(found.at, found.len),
                        msg_type: found.msg_type,
                        flags: found.flags,
                        position: found.at,
                    });
                    n += 1;
                    bytes += found.len as u64;
                    cur = found
                        .at
                        .wrapping_add(record_span(found.len as u64, self.ring.settings.align));
                }
                Step::Empty => {
                    stop = Some(PopError::Empty);
                    break;
                }
                Step::InFlight => {
                    stop = Some(PopError::InFlight);
                    break;
                }
                Step::Failed(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        self.consume(cur, n as u64, bytes);
        if matches!(stop, Some(PopError::Empty | PopError::InFlight)) {
            self.free();
        }
        match stop {
            _ if n > 0 => Ok(n),
            // A message committed just as we found none (its producer then left): take it.
            Some(PopError::Empty) => match self.after_empty(look) {
                Ok(_) => self.try_drain(max, f),
                Err(e) => Err(e),
            },
            Some(e) => Err(e),
            None => Ok(0), // max == 0
        }
    }

    /// [`try_drain`](Self::try_drain), waiting (as [`recv_timeout`](Self::recv_timeout))
    /// until at least one message is ready.
    ///
    /// # Errors
    ///
    /// As `recv_timeout`.
    pub fn drain_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
        f: impl FnMut(Message<'_>),
    ) -> Result<usize, PopError> {
        if max == 0 {
            return Ok(0);
        }
        // Wait for the first without taking it, then drain from there.
        let found = self.poll_until(Deadline::after(Some(timeout)))?;
        let _ = found;
        self.try_drain(max, f)
    }

    /// Waits up to `timeout` until a producer is attached (returns at once if one is):
    /// for a consumer whose producers all left (`Disconnected` / `PeerDied`) or that none
    /// has joined yet, which would otherwise have to poll for the next one. It sleeps on
    /// the log's futex, which an attach wakes; dead producers still attached do not count
    /// (checked once per liveness interval).
    ///
    /// # Errors
    ///
    /// `Timeout`; `Interrupted` (a [shutdown](crate::shutdown) was requested); `Forked`.
    pub fn wait_for_producers(&mut self, timeout: Duration) -> Result<(), PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        let deadline = Deadline::after(Some(timeout));
        let c = self.ring.mem.ctrl();
        loop {
            // Before the look: an attach (and its wake) after it changes the digest.
            let owners = c.producers.owners_digest();
            c.producers.reap(&mut self.watches);
            if c.producers.attached() > 0 {
                return Ok(());
            }
            if deadline.passed() {
                return Err(PopError::Timeout);
            }
            if crate::shutdown::requested() {
                return Err(PopError::Interrupted);
            }
            let target = FlagTarget::of(&self.ring.mem, |c| &c.consumer_waiting);
            wait::park(
                &target,
                deadline.slice(self.waits.liveness.interval()),
                || c.producers.owners_digest() != owners,
                || None,
            );
        }
    }

    /// Whether every producer is gone (closed, or dead) after at least one attached.
    pub fn is_abandoned(&mut self) -> bool {
        self.producers_gone(Look::Due).is_some()
    }

    #[inline]
    fn frame(&mut self, f: Found) -> Frame<'_> {
        Frame {
            end: f
                .at
                .wrapping_add(record_span(f.len as u64, self.ring.settings.align)),
            found: f,
            consumer: self,
        }
    }

    /// The `len` bytes after the header at `at`.
    #[cfg(not(shm_loom))]
    #[inline]
    fn bytes(&self, at: u64, len: usize) -> &[u8] {
        let first = self
            .ring
            .mem
            .slot_ptr((at >> 3) + 1)
            .cast::<u8>()
            .cast_const();
        // SAFETY: `step` checked that the record lies inside the buffer without wrapping
        // (`off + span <= capacity`), so the bytes are inside the slot array; the header's
        // `COMMITTED` (loaded with Acquire) published them, and no honest peer writes them
        // until our release, which needs `&mut self` after this borrow ends.
        unsafe { std::slice::from_raw_parts(first, len) }
    }

    #[cfg(shm_loom)]
    #[inline]
    fn bytes(&self, _at: u64, _len: usize) -> &[u8] {
        &[]
    }

    /// One attempt at the next message: skips padding and holes (freeing them), settles
    /// claims stuck past the claim timeout.
    #[inline]
    fn poll(&mut self, look: Look) -> Result<Found, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        if let Some(f) = self.ready.filter(|f| f.at == self.head) {
            return Ok(f);
        }
        let mut cur = self.head;
        let step = self.step(&mut cur, look);
        if cur != self.head {
            self.consume(cur, 0, 0);
        }
        match step {
            Step::Frame(f) => {
                self.stalled = false;
                self.ready = Some(f);
                Ok(f)
            }
            Step::Empty => {
                self.free();
                self.after_empty(look)
            }
            Step::InFlight => {
                self.free();
                Err(PopError::InFlight)
            }
            Step::Failed(e) => Err(e),
        }
    }

    /// Reads records from `*cur` on: returns at the first message, or at nothing to read,
    /// leaving `*cur` at that record (past any padding and holes).
    /// `look`: how closely (see [`Look`]).
    fn step(&mut self, cur: &mut u64, look: Look) -> Step {
        let full = look != Look::Fast;
        let s = self.ring.settings;
        let cap = s.capacity;
        // One give-up per call: a word a hostile peer keeps flipping cannot keep us here.
        let mut gave_up = false;
        loop {
            let p = *cur;
            let behind = p.wrapping_sub(self.released);
            if behind >= cap {
                // A whole log of padding or holes read past (legal: all of it was claimed
                // and given up or dropped) ends at `tail`; farther is garbage.
                let t = self.ring.mem.ctrl().tail.pos.load(Ordering::Relaxed);
                if behind == cap && t == p {
                    self.blocked = (p, u64::MAX, t);
                    self.stuck = None;
                    return Step::Empty;
                }
                return Step::Failed(PopError::Corrupted);
            }
            // Acquire: pairs with the Release store of a producer's commit or
            // padding, so a committed message's bytes are visible.
            let w = self.ring.mem.slot(p >> 3).load(Ordering::Acquire);
            let off = p & (cap - 1);
            match state_of(w) {
                COMMITTED => {
                    let len = w & LEN;
                    if len > s.max_len || off + record_span(len, s.align) > cap {
                        return Step::Failed(PopError::Corrupted);
                    }
                    self.stuck = None;
                    return Step::Frame(Found {
                        at: p,
                        len: len as usize,
                        msg_type: ((w >> 32) & 0xffff) as u16,
                        flags: ((w >> 48) & 0xff) as u8,
                    });
                }
                PAD => {
                    let span = w & LEN;
                    if span == 0
                        || span % s.align != 0
                        || off + span > cap
                        || w & !LEN != pad_word(0)
                    {
                        return Step::Failed(PopError::Corrupted);
                    }
                    *cur = p.wrapping_add(span);
                }
                HOLE if w == HOLE_WORD => *cur = p.wrapping_add(s.align),
                FREE => {
                    if w != free_word(p) {
                        return Step::Failed(PopError::Corrupted);
                    }
                    if !full {
                        self.blocked = (p, w, UNKNOWN_TAIL);
                        return Step::Empty;
                    }
                    // Relaxed: whether anything is claimed at `p`; the claim's words are
                    // read with Acquire themselves.
                    let t = self.ring.mem.ctrl().tail.pos.load(Ordering::Relaxed);
                    let ahead = t.wrapping_sub(p);
                    self.blocked = (p, w, t);
                    if ahead == 0 {
                        self.stuck = None;
                        return Step::Empty;
                    }
                    if ahead > cap || t.wrapping_sub(self.released) > cap || t % s.align != 0 {
                        return Step::Failed(PopError::Corrupted);
                    }
                    if gave_up || !self.timed_out(p, t) {
                        return Step::InFlight;
                    }
                    gave_up = true;
                    let Some(o) = self.give_up(p) else {
                        continue; // holes now: read on past them
                    };
                    // Marked: a live producer writing in place is waited for, however
                    // long; a dead one's claim becomes padding.
                    if !look.peers_due(&mut self.waits) {
                        return Step::InFlight;
                    }
                    let c = self.ring.mem.ctrl();
                    if !c.producers.marker_dead(o.mark, &mut self.watches) {
                        return Step::InFlight;
                    }
                    if pad_claim(&self.ring.mem, &s, p, o) {
                        bump(&c.head.abandoned, 1);
                    }
                    self.owned = None;
                    self.settled();
                }
                _ => return Step::Failed(PopError::Corrupted),
            }
        }
    }

    /// Whether the claim at `p` has been pending past the claim timeout: counted from the
    /// first time we waited on it (when `tail` was `tail`), or inherited from the last
    /// settled claim's wait for a claim made before that wait began.
    fn timed_out(&mut self, p: u64, tail: u64) -> bool {
        #[cfg(shm_loom)]
        {
            let _ = (p, tail);
            shm_sync::primitive::world::timed_out()
        }
        #[cfg(not(shm_loom))]
        {
            let now = Instant::now();
            let since = match self.stuck {
                Some(st) if st.pos == p => st.since,
                _ => {
                    let st = match self.expired {
                        Some((horizon, since)) if (horizon.wrapping_sub(p) as i64) > 0 => Stuck {
                            pos: p,
                            since,
                            horizon,
                        },
                        _ => Stuck {
                            pos: p,
                            since: now,
                            horizon: tail,
                        },
                    };
                    self.stuck = Some(st);
                    st.since
                }
            };
            now.duration_since(since) >= self.ring.settings.claim_timeout
        }
    }

    /// The stuck claim was settled (given up, or padded): claims below its wait's horizon
    /// inherit the wait's start.
    fn settled(&mut self) {
        if let Some(st) = self.stuck.take() {
            self.expired = Some((st.horizon, st.since));
        }
    }

    /// Gives up the claims from `from` on that are not marked yet (all made before the
    /// wait at `from` began, so all at least one claim timeout old): stores the horizon
    /// (`tail` when the wait began) in the give-up line, then reads every producer's
    /// claim line, then turns every record start (each `align` bytes) from `from` up to
    /// the first marked claim, or the horizon, that is still `FREE` of its own lap into a
    /// `HOLE` (of `align` bytes), one compare-exchange each. No claimant there writes any
    /// more: one whose mark we did not see sees the horizon after its mark (the two
    /// fences), and gives up. Returns the marked claim at `from`, if there is one (the
    /// holes stop before a marked claim farther on; the next look reaches it).
    fn give_up(&mut self, from: u64) -> Option<Owned> {
        let (mem, s) = (&self.ring.mem, self.ring.settings);
        let c = mem.ctrl();
        // The claim we found marked here last time, if its line still marks it (one load,
        // not all of them: a producer that saw our horizon too unmarks it).
        if let Some((k, o)) = self.owned {
            if o.covers(from) && Owned::of(&c.claims[k], &s) == Some(o) {
                return Some(o);
            }
            self.owned = None;
        }
        // Under loom, which models no clock, `tail` now.
        let horizon = match self.stuck {
            Some(st) if st.pos == from => st.horizon,
            _ => c.tail.pos.load(Ordering::Relaxed),
        };
        // Relaxed: ordered by the fence. Only ever raised (a successor's first give-up
        // may find a predecessor's farther on).
        if horizon.wrapping_sub(c.given_up.below.load(Ordering::Relaxed)) as i64 > 0 {
            c.given_up.below.store(horizon, Ordering::Relaxed);
        }
        // SeqCst: the Dekker pair with a producer's fence in `mark_words` (its mark, then
        // its read of the horizon).
        fence(Ordering::SeqCst);
        // The nearest marked claim at or after `from`, before the horizon.
        let span = horizon.wrapping_sub(from);
        let mut first: Option<(u64, usize, Owned)> = None;
        for (k, line) in c.claims.iter().enumerate() {
            let Some(o) = Owned::of(line, &s) else {
                continue;
            };
            let off = if o.covers(from) {
                0
            } else {
                o.at.wrapping_sub(from)
            };
            if off < span && first.is_none_or(|(f, _, _)| off < f) {
                first = Some((off, k, o));
            }
        }
        if let Some((0, k, o)) = first {
            self.owned = Some((k, o));
            return Some(o);
        }
        let stop = first.map_or(horizon, |(off, _, _)| from.wrapping_add(off));
        let mut p = from;
        while p != stop {
            // Relaxed: the word's own modification order decides; a hole publishes
            // nothing, and no claimant writes a word it did not mark (above).
            if mem
                .slot(p >> 3)
                .compare_exchange(
                    free_word(p),
                    HOLE_WORD,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                break;
            }
            p = p.wrapping_add(s.align);
        }
        crate::fault_point!("log-consumer-gave-up");
        if p != from {
            bump(&c.head.skipped, 1);
        }
        self.settled();
        None
    }

    /// Records `self.head..to` as read (frames dropped, padding skipped), counting `n`
    /// messages of `bytes`; frees it for the producers once a batch is pending or a
    /// producer waits for room.
    #[inline]
    fn consume(&mut self, to: u64, n: u64, bytes: u64) {
        let c = self.ring.mem.ctrl();
        if n > 0 {
            bump(&c.head.received, n);
            bump(&c.head.bytes, bytes);
        }
        if to == self.head {
            return;
        }
        // Relaxed: for a successor (`Ring::consumer`), which frees what we read; the
        // Release fence in `free` orders it before our rewrite of those words.
        c.head.consumed.store(to, Ordering::Relaxed);
        self.head = to;
        // Relaxed: a hint; a producer about to sleep re-checks `head` after announcing
        // itself, and we free everything before we wait ourselves.
        if to.wrapping_sub(self.released) >= self.batch
            || shm_sync::sleepers::anyone(c.producers_waiting.waiting.load(Ordering::Relaxed))
        {
            self.free();
        }
    }

    /// Frees everything read (`released..head`) for the producers: rewrites its words to
    /// `FREE` of their next lap, then stores `head`.
    fn free(&mut self) {
        if self.head == self.released {
            return;
        }
        let c = self.ring.mem.ctrl();
        // Keeps our store of `consumed` (in `consume`) before the rewrite below, so that a
        // successor, which looks only after our death (the death, not an atomic, is what
        // orders our writes before its reads), never finds rewritten words past
        // `consumed`: the compiler may not sink that store past this fence.
        fence(Ordering::Release);
        release_words(
            &self.ring.mem,
            self.released,
            self.head,
            self.ring.settings.align,
        );
        crate::fault_point!("log-consumer-rewritten");
        // Release: our reads of the records and the `FREE` words above happen before a
        // producer's Acquire load of `head`, after which it may claim the space.
        c.head.pos.store(self.head, Ordering::Release);
        self.released = self.head;
        if wait::wake_if_waiting(self.waits.registered, &c.producers_waiting, u32::MAX) {
            bump(&c.head.wakeups, 1);
        }
    }

    /// Nothing claimed: `Empty`, or the producers' departure once the log is drained.
    fn after_empty(&mut self, look: Look) -> Result<Found, PopError> {
        let c = self.ring.mem.ctrl();
        if !std::mem::replace(&mut self.stalled, true) {
            bump(&c.head.empty_stalls, 1);
        }
        match self.producers_gone(look) {
            None => Err(PopError::Empty),
            Some(how) => {
                // Everyone left: anything they committed first.
                let mut cur = self.head;
                match self.step(&mut cur, if look == Look::Due { look } else { Look::Full }) {
                    Step::Frame(f) => Ok(f),
                    Step::Failed(e) => Err(e),
                    Step::InFlight => Err(PopError::InFlight),
                    Step::Empty if how == DIED => Err(PopError::PeerDied),
                    Step::Empty if how == CLOSED_CLEANLY => Err(PopError::Disconnected),
                    Step::Empty => Err(PopError::PeerDied),
                }
            }
        }
    }

    /// How the last producer left, once none is attached (`None` while one is, or none
    /// ever was). Reaps dead ones: at once for a `Due` look, once per liveness interval
    /// for a `Full` one, never for a `Fast` one (whose caller asked the timer already:
    /// asking it twice per poll shifts which ask lands on its clock reads, and a polling
    /// consumer's looks then never come due).
    fn producers_gone(&mut self, look: Look) -> Option<u32> {
        let c = self.ring.mem.ctrl();
        let reap = match look {
            Look::Due => true,
            Look::Full => self.waits.liveness.due(),
            Look::Fast => false,
        };
        if reap {
            c.producers.reap(&mut self.watches);
        }
        c.producers.gone()
    }

    /// `poll` for a `try_` call: the full check (`tail`, claim timeouts) once per
    /// liveness interval.
    #[inline]
    fn poll_now(&mut self) -> Result<Found, PopError> {
        let look = Look::now(&mut self.waits);
        self.poll(look)
    }

    fn poll_until(&mut self, deadline: Deadline) -> Result<Found, PopError> {
        let mut full = false;
        loop {
            match self.poll(if full { Look::Full } else { Look::Fast }) {
                Ok(f) => {
                    wait::ended(&mut self.waits.waiter);
                    return Ok(f);
                }
                Err(PopError::Empty | PopError::InFlight) => {}
                Err(e) => {
                    self.waits.waiter.abandon();
                    return Err(e);
                }
            }
            match self.wait_for_messages(deadline) {
                Ok(check) => full = check,
                Err(e) => {
                    self.waits.waiter.abandon();
                    return Err(e);
                }
            }
        }
    }

    /// Spins, then sleeps, until the word at `head` or `tail` moves (or a producer
    /// attaches, detaches or dies; the deadline; a shutdown). Returns whether the next
    /// poll should be a full one: after the spin budget ran out (claim timeouts, the
    /// producers' departure) and before any sleep (which needs `tail`).
    fn wait_for_messages(&mut self, deadline: Deadline) -> Result<bool, PopError> {
        let seen = end::deaths_seen(&self.waits.deaths);
        let (mem, (at, word, tail)) = (&self.ring.mem, self.blocked);
        // Relaxed: hints; `poll` re-reads with Acquire.
        let moved = || mem.slot(at >> 3).load(Ordering::Relaxed) != word;
        let check_every = self.waits.liveness.interval();
        let got = wait::spin(
            self.waits.strategy,
            &mut self.waits.waiter,
            wait::MPMC_POLL_PAUSES,
            (&deadline, check_every),
            || moved().then_some(()),
        );
        if got.is_some() {
            return Ok(false);
        }
        if tail == UNKNOWN_TAIL {
            // A fast poll found nothing and the spin found no change: look closer first.
            return Ok(true);
        }
        if self.waits.waiter.was_cut() {
            self.waits.liveness.expire();
        }
        if deadline.passed() {
            return Err(PopError::Timeout);
        }
        if crate::shutdown::requested() {
            return Err(PopError::Interrupted);
        }
        if !self.waits.waiter.may_sleep(self.waits.strategy) {
            return Ok(true);
        }
        if self
            .watches
            .iter_mut()
            .fold(false, |any, p| p.take_exited() | any)
        {
            // A watched producer died while we were not asleep: check it now.
            self.waits.liveness.expire();
            return Ok(true);
        }
        let c = mem.ctrl();
        let owners = c.producers.owners_digest();
        // With every producer gone and a dead one's claim pending, sleep out the slice
        // rather than spin: only a change of that wakes us.
        let gone = c.producers.gone().is_some();
        let target = FlagTarget::of(mem, |c| &c.consumer_waiting);
        let slice = c.producers.sleep_slice(
            &mut self.watches,
            (self.me, &self.waits.deaths),
            &target,
            self.waits.liveness.interval(),
            self.stuck.is_some(),
        );
        let deaths = &self.waits.deaths;
        self.waits.waiter.sleeping();
        wait::park(
            &target,
            deadline.slice(slice),
            || {
                // Relaxed: hints to skip the sleep; `poll` re-reads with Acquire.
                moved()
                    || c.tail.pos.load(Ordering::Relaxed) != tail
                    || c.producers.gone().is_some() != gone
                    || end::deaths_seen(deaths) != seen
                    || c.producers.owners_digest() != owners
            },
            || None,
        );
        self.waits.liveness.expire();
        Ok(true)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.origin.is_current() {
            return; // a forked child's copy: the end is the parent's
        }
        self.free();
        let c = self.ring.mem.ctrl();
        c.config.consumer.release(self.me);
        // Producers sleeping on a full log must wake to see us gone.
        wait::wake(&c.producers_waiting, u32::MAX);
    }
}

/// A message lent in place ([`Consumer::try_recv`]); dropping it frees its space (and any
/// padding before it) for the producers.
pub struct Frame<'a> {
    consumer: &'a mut Consumer,
    found: Found,
    end: u64,
}

impl Frame<'_> {
    /// Its type ([`Claim::set_type`](super::Claim::set_type)).
    #[inline]
    pub fn msg_type(&self) -> u16 {
        self.found.msg_type
    }

    /// Its flags ([`Claim::set_flags`](super::Claim::set_flags)).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.found.flags
    }

    /// The byte position of its record.
    pub fn position(&self) -> u64 {
        self.found.at
    }
}

impl std::ops::Deref for Frame<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.consumer.bytes(self.found.at, self.found.len)
    }
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("position", &self.found.at)
            .field("len", &self.found.len)
            .field("msg_type", &self.found.msg_type)
            .field("flags", &self.found.flags)
            .finish()
    }
}

impl Drop for Frame<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.consumer.origin.is_current() {
            return; // a forked child's copy: frees nothing of the parent's
        }
        let len = self.found.len as u64;
        self.consumer.consume(self.end, 1, len);
    }
}

impl crate::select::Sealed for Consumer {}

/// Ready when a message is, or when `try_recv` has something to report (every producer
/// gone with the log drained, corruption, a fork).
impl crate::select::Selectable for Consumer {
    fn select_ready(&mut self) -> bool {
        if self
            .watches
            .iter_mut()
            .fold(false, |any, p| p.take_exited() | any)
        {
            // A producer died (its exit notice fired): check it now.
            self.waits.liveness.expire();
        }
        !matches!(self.poll_now(), Err(PopError::Empty | PopError::InFlight))
    }

    fn select_arm(&mut self) -> crate::select::Armed {
        let c = self.ring.mem.ctrl();
        let target = FlagTarget::of(&self.ring.mem, |c| &c.consumer_waiting);
        let watched =
            c.producers
                .wake_on_deaths(&mut self.watches, self.me, &target, &self.waits.deaths);
        // The first look after the sleep is a full one (claim timeouts, the producers'
        // liveness): a sleeping select looks once per slice, too rarely for the timer's
        // count of polls.
        self.waits.liveness.expire();
        crate::select::Armed {
            flag: target.line(),
            keep: target.to_ref(),
            // A claim in flight is settled by a look after its claim timeout: wake once
            // per liveness interval meanwhile, not once per watched slice.
            watched: watched && self.stuck.is_none(),
            _shutdown: crate::shutdown::register(&target),
        }
    }
}

#[cfg(feature = "async")]
impl Consumer {
    /// [`recv`](Self::recv) as a future (feature `async`): waits for a message without a
    /// thread of its own (see [`aio`](crate::aio)); a claim in flight is settled as `recv`
    /// settles it. Cancellation-safe: a future dropped before it is ready took nothing.
    ///
    /// # Errors
    ///
    /// As `recv`.
    pub async fn recv_async(&mut self) -> Result<Frame<'_>, PopError> {
        loop {
            match self.poll_now() {
                Ok(f) => return Ok(self.frame(f)),
                Err(PopError::Empty | PopError::InFlight) => {}
                Err(e) => return Err(e),
            }
            if crate::aio::ready(self).await.is_err() {
                return Err(PopError::Interrupted);
            }
        }
    }
}
