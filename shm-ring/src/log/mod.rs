//! A byte log: variable-length messages from any number of producer processes to one
//! consumer, written and read in place.
//!
//! ```
//! use shm_ring::log;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-ring-doc-log-{}", std::process::id());
//! // The matcher creates the log: 64 KiB, messages of up to 1 KiB.
//! let ring = log::Builder::new(&name).capacity(64 << 10).max_len(1024).create()?;
//! let mut rx = ring.consumer()?;
//! // A gateway (any process) writes an order in place, then commits its length.
//! let mut tx = log::open(&name)?.producer()?;
//! let mut claim = tx.try_claim(64)?;
//! claim.buf()[..5].copy_from_slice(b"BUY 7");
//! claim.set_type(1);
//! claim.commit(5)?;
//! tx.try_send(b"SELL 3")?;
//! // The matcher reads each frame where it lies; dropping it frees the space.
//! let frame = rx.try_recv()?;
//! assert_eq!((&frame[..], frame.msg_type()), (&b"BUY 7"[..], 1));
//! drop(frame);
//! assert_eq!(&rx.try_recv()?[..], b"SELL 3");
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The log is `capacity` bytes (a power of two) of 8-byte words. A message is a record: one
//! header word, then the message, rounded up to the log's record alignment (8 bytes by
//! default; up to 4096, set at creation). Only the words where a record may start (every
//! `align` bytes) are ever read as headers, and only they are rewritten on release. A record never straddles the end
//! of the buffer: a claim that would is preceded by a padding record to the end. `tail` is
//! the byte position claimed next (producers compare-exchange it), `head` the position
//! read next (the consumer stores it); both only grow.
//!
//! Each word's top 3 bits say what it is:
//!
//! | state     | low bits                                        | written by            |
//! | --------- | ----------------------------------------------- | --------------------- |
//! | FREE      | the word's position / 8 (61 bits): its lap      | the consumer (release)|
//! | COMMITTED | length, message type, flags                     | a producer's commit   |
//! | PAD       | the padding record's span in bytes              | producer or consumer  |
//! | HOLE      | one word the consumer gave up                   | the consumer          |
//!
//! # Protocol
//!
//! - **Claim** (P1): a producer compare-exchanges `tail` from `t` to `t + span` (with the
//!   padding to the end of the buffer first, if the record would straddle it), after
//!   checking against `head` that the space is free.
//! - **Mark** (P2): it writes the claim (its position and span, and the generation of
//!   its endpoint) into its endpoint's claim line, a line only it writes; a `SeqCst`
//!   fence; then it reads the consumer's give-up horizon. A claim starting below the
//!   horizon was given up while this producer stalled after P1: it unmarks it and writes
//!   nothing (`Expired`). (The mark stays out of the header, which the consumer polls, so
//!   that it never waits on the consumer's cache; a compare-exchange there cost the round
//!   trip a third.) The padding before a wrapped record is written after the mark.
//! - **Commit** (P3): it writes the message, then stores the header `COMMITTED` (Release).
//!   Dropping a claim instead turns it into padding.
//! - **Read**: the consumer reads the header at `head` (Acquire). `COMMITTED`: the frame,
//!   lent in place. `PAD`, `HOLE`: skipped. `FREE` with `tail` past it: a claim in flight.
//!   After the claim timeout the consumer gives up what is not marked: it stores the
//!   horizon (`tail` when it began waiting), a `SeqCst` fence, then reads every claim line;
//!   every `FREE` record start from there to the first marked claim (or the horizon)
//!   becomes a `HOLE`, one compare-exchange each. The two fences make it a Dekker pair:
//!   a claimant either is seen marked or sees the horizon, so none writes into a hole.
//!   A marked claim is waited for while its producer lives (its bytes are being written
//!   in place, so its space must not be reused under it); once its endpoint is dead, its
//!   `FREE` pieces become padding (the consumer does that, or the endpoint's next owner
//!   at attach, whichever is first: both compare-exchange from `FREE`).
//! - **Release**: the consumer records how far it has read (`consumed`, one store per
//!   frame, so that a successor frees what its predecessor read and redelivers nothing it
//!   dropped); in batches (an eighth of the log, or when a producer waits for room, or
//!   when it has nothing more to read) it rewrites every word read to `FREE` of the next
//!   lap, then stores `head` (Release), which frees the space.
//!
//! Nothing read from shared memory is trusted: a header whose length points past the
//! buffer or past the log's `max_len`, a `FREE` word of another lap, a `tail` more than
//! the capacity ahead, or a give-up horizon ahead of `tail` give `Corrupted`, never a read
//! out of bounds or a hang; a claim line naming an impossible claim is ignored.
//!
//! # Where the promise stops
//!
//! Frames and claims lend the log's bytes as slices (`&[u8]`, `&mut [u8]`), as SPSC chunks
//! do: a peer that writes into a record it does not own races with that slice. Honest
//! peers never do (the protocol hands each record to one side at a time); a hostile one
//! can make a frame's contents garbage, never make a read leave the buffer.

use std::time::Duration;

use shm_sync::primitive::{AtomicU64, Ordering};

use crate::end::{self, Deaths, End, EndStatus, LivenessTimer, PeerWatch};
use crate::error::{RingError, Role};
use crate::mem::{self, Mem};
use crate::mpmc::{Mark, Side, MAX_ENDPOINTS};
use crate::wait::{self, FlagLine, WaitStrategy, Waiter};

mod consumer;
mod producer;
#[cfg(not(shm_loom))]
mod shared;

pub use crate::mpmc::Attachment;
pub use consumer::{Consumer, Frame, Message};
pub use producer::{Claim, Producer, Room};
#[cfg(not(shm_loom))]
pub use shared::{create, open, open_or_create, Builder};

/// Version of the log's control-block layout; part of the segment's fingerprint.
pub const LOG_LAYOUT_VERSION: u64 = 2;

/// The most producers attached at once.
pub const MAX_PRODUCERS: usize = MAX_ENDPOINTS;

/// How long a claim may stay unmarked, or marked by a dead producer, before the consumer
/// gives it up (the default; set with [`Builder::claim_timeout`]).
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_millis(100);

/// The largest message by default: 1 KiB less its header.
pub const DEFAULT_MAX_LEN: u64 = 1024 - 8;

/// The top 3 bits of a word: what it is.
const STATE_SHIFT: u32 = 61;
const FREE: u64 = 0;
// State 1 was the in-header mark of layout 1; no honest peer writes it now.
const COMMITTED: u64 = 2;
const PAD: u64 = 3;
const HOLE: u64 = 4;
/// The low 61 bits.
const LOW: u64 = (1 << STATE_SHIFT) - 1;
/// A length (claimed, committed, or a padding span).
const LEN: u64 = 0xffff_ffff;

/// The word a position holds while free for its own lap.
#[inline]
pub(crate) fn free_word(pos: u64) -> u64 {
    (pos >> 3) & LOW
}

#[inline]
fn state_of(w: u64) -> u64 {
    w >> STATE_SHIFT
}

/// A claim line's `span` word: the claim's span (its padding included), and the mark of
/// the attachment that made it.
#[inline]
fn claim_word(mark: Mark, span: u64) -> u64 {
    (u64::from(mark.gen) << 37) | (u64::from(mark.index) << 32) | (span & LEN)
}

/// The mark in a claim line's `span` word (any bits: the index is masked into range).
#[inline]
fn mark_of(w: u64) -> Mark {
    Mark {
        index: ((w >> 32) & (MAX_ENDPOINTS as u64 - 1)) as u32,
        gen: ((w >> 37) & ((1 << crate::mpmc::GEN_BITS) - 1)) as u32,
    }
}

/// A committed header: `len` bytes, the user's type and flags.
#[inline]
fn committed_word(len: u64, msg_type: u16, flags: u8) -> u64 {
    (COMMITTED << STATE_SHIFT) | (u64::from(flags) << 48) | (u64::from(msg_type) << 32) | len
}

#[inline]
fn pad_word(span: u64) -> u64 {
    (PAD << STATE_SHIFT) | span
}

const HOLE_WORD: u64 = HOLE << STATE_SHIFT;

/// The bytes a record of `len` takes: its header and the message, rounded up to the log's
/// record alignment `align` (a power of two, at least 8).
#[inline]
pub(crate) fn record_span(len: u64, align: u64) -> u64 {
    (8 + len).div_ceil(align) * align
}

/// The record alignment a builder asks for, made a power of two in 8 ..= 4096.
pub(crate) fn round_align(align: u64) -> u64 {
    align.clamp(8, 4096).next_power_of_two()
}

/// Immutable configuration and the consumer's end.
#[repr(C, align(128))]
pub(crate) struct ConfigLine {
    /// The buffer's 8-byte words (a power of two), as every kind records its slots.
    pub capacity: AtomicU64,
    pub initial: AtomicU64,
    pub max_len: AtomicU64,
    pub claim_timeout_ns: AtomicU64,
    /// Records start at multiples of this (a power of two, 8 ..= 4096).
    pub align: AtomicU64,
    pub consumer: End,
    /// The position the current consumer attached at.
    pub consumer_since: AtomicU64,
}

/// The producers' line: `tail` and the counters they write when they stall.
#[repr(C, align(128))]
pub(crate) struct TailLine {
    pub pos: AtomicU64,
    /// Times a producer found the log full.
    pub full_stalls: AtomicU64,
    /// `FUTEX_WAKE`s producers issued.
    pub wakeups: AtomicU64,
    /// Claims producers dropped without committing (their space became padding).
    pub aborted: AtomicU64,
}

/// The consumer's line: `head`, the release in progress, and its counters.
#[repr(C, align(128))]
pub(crate) struct HeadLine {
    pub pos: AtomicU64,
    /// Where the consumer has read to (frames dropped, padding skipped): `pos` catches up
    /// in batches, and a successor that finds it ahead of `pos` frees the stretch itself.
    pub consumed: AtomicU64,
    /// Messages received, and their bytes.
    pub received: AtomicU64,
    pub bytes: AtomicU64,
    /// Unmarked claims given up after the claim timeout (`HOLE`s), counted per give-up.
    pub skipped: AtomicU64,
    /// Claims of dead producers turned into padding after the claim timeout.
    pub abandoned: AtomicU64,
    pub empty_stalls: AtomicU64,
    pub wakeups: AtomicU64,
}

/// Where the consumer gave claims up: every claim starting below `below` that its
/// producer had not marked in its claim line by then is given up (its producer, looking
/// here after its mark, writes nothing). Written only by give-ups; producers read it once
/// per claim.
#[repr(C, align(128))]
pub(crate) struct GiveUpLine {
    pub below: AtomicU64,
}

/// A producer endpoint's claim line (P2 marks a claim here, in a line only its producer
/// writes, not in the claim's header, which the consumer polls: the mark then never
/// waits for the consumer's cache): the claim it is writing, if any.
#[repr(C, align(128))]
pub(crate) struct ClaimLine {
    /// `NO_CLAIM`, or the claim's first byte position (its padding's, if it wraps) `| 1`.
    pub at: AtomicU64,
    /// [`claim_word`]: the claim's span, padding included, and its attachment's mark.
    pub span: AtomicU64,
}

/// A claim line's `at` when it names no claim.
pub(crate) const NO_CLAIM: u64 = 0;

impl ClaimLine {
    fn new() -> ClaimLine {
        ClaimLine {
            at: AtomicU64::new(NO_CLAIM),
            span: AtomicU64::new(0),
        }
    }
}

/// A claim named by a claim line, checked against the log's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owned {
    pub at: u64,
    pub span: u64,
    pub mark: Mark,
}

impl Owned {
    /// The claim a line names, if it names one that could exist: `at` on a record start,
    /// a span of whole records no longer than two records of `max_len` (the padding
    /// before a record is shorter than the record). `at`, `span`, `at` again, as a
    /// seqlock: the producer clears `at` after each commit or abort and stores `span`
    /// before the next `at`, so a `span` newer than the first `at` shows as a changed `at`
    /// (then `None`: the claim is not seen, and the Dekker pair makes its producer see the
    /// horizon instead).
    pub fn of(line: &ClaimLine, s: &Settings) -> Option<Owned> {
        // Acquire: pairs with the producer's Release store of `at` in `mark_words`, so the
        // `span` stored before it is visible.
        let w = line.at.load(Ordering::Acquire);
        let at = w & !1;
        if w & 1 == 0 || at % s.align != 0 {
            return None;
        }
        // Acquire: pairs with the producer's Release store of `span` in `mark_words`: a
        // newer span than `w`'s comes after the clear of `w` (in `commit` / drop), which
        // the re-read below then sees.
        let sw = line.span.load(Ordering::Acquire);
        // Relaxed: ordered by the Acquire load of `span` above.
        if line.at.load(Ordering::Relaxed) != w {
            return None;
        }
        let span = sw & LEN;
        if span == 0 || span % s.align != 0 || span > 2 * record_span(s.max_len, s.align) {
            return None;
        }
        Some(Owned {
            at,
            span,
            mark: mark_of(sw),
        })
    }

    /// Whether the claim covers byte position `p`.
    pub fn covers(&self, p: u64) -> bool {
        p.wrapping_sub(self.at) < self.span
    }
}

/// Turns what is still `FREE` of a dead producer's claim `o`, from `from` on, into
/// padding: one record per piece (the padding to the end of the buffer, the record), one
/// compare-exchange from that position's `FREE` each, so that a piece its producer wrote
/// (its padding) or that was already settled (by the consumer or the endpoint's next
/// owner, who both do this) is left alone. Returns whether any piece was padded.
pub(crate) fn pad_claim(mem: &Mem<Control, Word>, s: &Settings, from: u64, o: Owned) -> bool {
    let cap = s.capacity;
    let end = o.at.wrapping_add(o.span);
    let mut q = from;
    let mut any = false;
    while q != end && o.covers(q) {
        // The piece ends at the claim's end or the buffer's, whichever comes first.
        let to_wrap = cap - (q & (cap - 1));
        let piece = end.wrapping_sub(q).min(to_wrap);
        // Relaxed: its producer is dead and never resumes; the padding publishes nothing.
        any |= mem
            .slot(q >> 3)
            .compare_exchange(
                free_word(q),
                pad_word(piece),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        q = q.wrapping_add(piece);
    }
    any
}

/// The control block of a log segment:
///
/// | line(s) | offset | written by          | holds                                        |
/// | ------- | ------ | ------------------- | -------------------------------------------- |
/// | 0       | 0      | creator, consumer   | capacity (words), initial, max_len, claim timeout, consumer end |
/// | 1       | 128    | producers           | `tail`, full stalls, wake-ups, aborted claims |
/// | 2       | 256    | consumer            | `head`, `consumed`, counters                 |
/// | 3       | 384    | a sleeping consumer | consumer waiting                             |
/// | 4       | 512    | sleeping producers  | producers waiting                            |
/// | 5..9    | 640    | attach / detach     | the producer endpoint table                  |
/// | 10      | 1280   | the consumer        | the give-up horizon                          |
/// | 11..    | 1408   | each its producer   | the producers' claim lines, one each         |
#[repr(C)]
pub(crate) struct Control {
    pub config: ConfigLine,
    pub tail: TailLine,
    pub head: HeadLine,
    pub consumer_waiting: FlagLine,
    pub producers_waiting: FlagLine,
    pub producers: Side,
    pub given_up: GiveUpLine,
    pub claims: [ClaimLine; MAX_PRODUCERS],
}

#[cfg(not(shm_loom))]
mod layout_checks {
    use super::*;
    use static_assertions::const_assert_eq;
    const_assert_eq!(std::mem::offset_of!(Control, tail), 128);
    const_assert_eq!(std::mem::offset_of!(Control, head), 256);
    const_assert_eq!(std::mem::offset_of!(Control, consumer_waiting), 384);
    const_assert_eq!(std::mem::offset_of!(Control, producers_waiting), 512);
    const_assert_eq!(std::mem::offset_of!(Control, producers), 640);
    const_assert_eq!(std::mem::offset_of!(Control, given_up), 1280);
    const_assert_eq!(std::mem::offset_of!(Control, claims), 1408);
    const_assert_eq!(std::mem::size_of::<Control>(), 1408 + 32 * 128);
}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of `u32`/`u64` atomics only: any bytes are valid (impossible values
// are reported as `Corrupted`), zero is an empty log with no ends, no Drop glue.
unsafe impl shm_core::ShmSafe for Control {}

impl Control {
    fn new(capacity: u64, max_len: u64, align: u64, claim_timeout: Duration) -> Control {
        let initial = 0;
        Control {
            config: ConfigLine {
                capacity: AtomicU64::new(capacity),
                initial: AtomicU64::new(initial),
                max_len: AtomicU64::new(max_len),
                claim_timeout_ns: AtomicU64::new(claim_timeout.as_nanos() as u64),
                align: AtomicU64::new(align),
                consumer: End::new(),
                consumer_since: AtomicU64::new(initial),
            },
            tail: TailLine {
                pos: AtomicU64::new(initial),
                full_stalls: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                aborted: AtomicU64::new(0),
            },
            head: HeadLine {
                pos: AtomicU64::new(initial),
                consumed: AtomicU64::new(initial),
                received: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                empty_stalls: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
            },
            consumer_waiting: FlagLine::new(),
            producers_waiting: FlagLine::new(),
            producers: Side::new(),
            given_up: GiveUpLine {
                below: AtomicU64::new(initial),
            },
            claims: std::array::from_fn(|_| ClaimLine::new()),
        }
    }
}

/// One 8-byte word of the buffer.
pub(crate) type Word = AtomicU64;

/// Adds one (or `n`) to a counter only one side writes: a load and a store.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The checked, immutable settings of a log, read once when it is created or opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Bytes.
    pub capacity: u64,
    pub max_len: u64,
    /// Records start at multiples of this.
    pub align: u64,
    pub claim_timeout: Duration,
}

impl Settings {
    /// Checks what the control block records (a hostile creator may have written
    /// anything): `max_len` must leave a record room in half the buffer.
    fn of(name: &str, mem: &Mem<Control, Word>) -> Result<Settings, RingError> {
        let c = mem.ctrl();
        let capacity = mem.cap() * 8;
        let max_len = c.config.max_len.load(Ordering::Relaxed);
        let align = c.config.align.load(Ordering::Relaxed);
        if !align.is_power_of_two() || !(8..=4096).contains(&align) || align > capacity / 4 {
            return Err(RingError::Corrupted {
                name: name.to_owned(),
                what: format!("its record alignment {align} is impossible"),
            });
        }
        if !max_len_fits(max_len, align) || record_span(max_len, align) > capacity / 2 {
            return Err(RingError::Corrupted {
                name: name.to_owned(),
                what: format!(
                    "its largest message of {max_len} bytes does not fit in half of its \
                     {capacity} bytes"
                ),
            });
        }
        let ns = c.config.claim_timeout_ns.load(Ordering::Relaxed);
        Ok(Settings {
            capacity,
            max_len,
            align,
            claim_timeout: Duration::from_nanos(ns)
                .clamp(Duration::from_millis(1), Duration::from_secs(60)),
        })
    }
}

/// A log in memory, not yet joined: take its [`consumer`](Ring::consumer) end, or join as
/// one of its [`producer`](Ring::producer)s. Cloning it is cheap.
#[derive(Clone)]
pub struct Ring {
    mem: Mem<Control, Word>,
    name: String,
    created: bool,
    settings: Settings,
}

/// A snapshot of a log's counters, readable from any process ([`Ring::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// The buffer's bytes.
    pub capacity: u64,
    /// The largest message.
    pub max_len: u64,
    /// Records start at multiples of this.
    pub record_align: u64,
    /// The byte position freed up to: everything before it is the producers' again.
    pub head: u64,
    /// The byte position the consumer has read up to (frames dropped); it frees up to
    /// there in batches.
    pub consumed: u64,
    /// The byte position claimed next.
    pub tail: u64,
    /// Messages the consumer received, and their bytes.
    pub received: u64,
    /// Bytes of the messages received.
    pub bytes: u64,
    /// Claims given up unmarked after the claim timeout.
    pub skipped: u64,
    /// Claims of dead producers turned into padding.
    pub abandoned: u64,
    /// Claims dropped uncommitted by their producers.
    pub aborted: u64,
    /// Times a producer found the log full.
    pub full_stalls: u64,
    /// Times the consumer found it empty.
    pub empty_stalls: u64,
    /// `FUTEX_WAKE`s issued by either side.
    pub wakeups: u64,
    /// The consumer's end.
    pub consumer: EndStatus,
    /// The producer endpoints holding an owner word now.
    pub producers: Vec<EndStatus>,
}

pub(crate) fn stats_of(c: &Control) -> LogStats {
    // Acquire, and first: pairs with the consumer's Release store of `head`, so the
    // counters it wrote before are at least this far.
    let head = c.head.pos.load(Ordering::Acquire);
    LogStats {
        capacity: c.config.capacity.load(Ordering::Relaxed).wrapping_mul(8),
        max_len: c.config.max_len.load(Ordering::Relaxed),
        record_align: c.config.align.load(Ordering::Relaxed),
        head,
        consumed: c.head.consumed.load(Ordering::Relaxed),
        tail: c.tail.pos.load(Ordering::Relaxed),
        received: c.head.received.load(Ordering::Relaxed),
        bytes: c.head.bytes.load(Ordering::Relaxed),
        skipped: c.head.skipped.load(Ordering::Relaxed),
        abandoned: c.head.abandoned.load(Ordering::Relaxed),
        aborted: c.tail.aborted.load(Ordering::Relaxed),
        full_stalls: c.tail.full_stalls.load(Ordering::Relaxed),
        empty_stalls: c.head.empty_stalls.load(Ordering::Relaxed),
        wakeups: c
            .tail
            .wakeups
            .load(Ordering::Relaxed)
            .wrapping_add(c.head.wakeups.load(Ordering::Relaxed)),
        consumer: c.config.consumer.status(),
        producers: c.producers.attached_ends(),
    }
}

impl Ring {
    /// A log on the heap for threads of this process: `capacity` bytes (rounded up to a
    /// power of two), messages of up to `max_len` bytes.
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `MaxLenTooLarge`.
    pub fn in_process(capacity: u64, max_len: u64) -> Result<Ring, RingError> {
        Self::in_process_with(capacity, max_len, 8, DEFAULT_CLAIM_TIMEOUT)
    }

    /// [`in_process`](Self::in_process) with records aligned to `record_align` bytes
    /// (made a power of two in 8 ..= 4096; see [`Builder::record_align`]) and its own
    /// claim timeout (clamped to 1 ms ..= 60 s).
    ///
    /// # Errors
    ///
    /// As [`in_process`](Self::in_process).
    pub fn in_process_with(
        capacity: u64,
        max_len: u64,
        record_align: u64,
        claim_timeout: Duration,
    ) -> Result<Ring, RingError> {
        let words = capacity.div_ceil(8);
        let align = round_align(record_align);
        check_max_len(mem::IN_PROCESS, words, max_len, align)?;
        let timeout = claim_timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
        let mem = mem::in_process_mem::<u64, _, _>(
            words,
            |cap| Control::new(cap, max_len, align, timeout),
            |i, _| AtomicU64::new(free_word(i * 8)),
        )?;
        Ring::from_mem(mem, mem::IN_PROCESS.to_owned(), true)
    }

    /// A log over `mem`, just created or opened (`created` says which), once the settings
    /// it records are checked.
    pub(crate) fn from_mem(
        mem: Mem<Control, Word>,
        name: String,
        created: bool,
    ) -> Result<Ring, RingError> {
        let settings = Settings::of(&name, &mem)?;
        Ok(Ring {
            mem,
            name,
            created,
            settings,
        })
    }

    /// The buffer's bytes (a power of two).
    pub fn capacity(&self) -> u64 {
        self.settings.capacity
    }

    /// The largest message, in bytes.
    pub fn max_len(&self) -> u64 {
        self.settings.max_len
    }

    /// Records start at multiples of this many bytes.
    pub fn record_align(&self) -> u64 {
        self.settings.align
    }

    /// How long a claim may stay unmarked, or marked by a dead producer, before the
    /// consumer gives it up.
    pub fn claim_timeout(&self) -> Duration {
        self.settings.claim_timeout
    }

    crate::handles::ring_identity!();

    /// The counters, read without joining (a third process may call this). Allocates
    /// (the producer list) and looks each end up in `/proc`.
    pub fn stats(&self) -> LogStats {
        stats_of(self.mem.ctrl())
    }

    /// Test hook: where word 0 of the buffer lies in this process, and the word count, for
    /// tests that play a hostile peer. Touching that memory other than with atomics is a
    /// data race with the log.
    #[doc(hidden)]
    #[cfg(not(shm_loom))]
    pub fn raw_words(&self) -> (*mut u64, u64) {
        (self.mem.slot_ptr(0).cast::<u64>(), self.mem.cap())
    }

    /// Joins as one more producer.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints` if [`MAX_PRODUCERS`] live producers are attached.
    pub fn producer(&self) -> Result<Producer, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (index, attachment) = c.producers.attach(me).ok_or(RingError::TooManyEndpoints {
            name: self.name.clone(),
            role: Role::Producer,
            max: MAX_PRODUCERS,
        })?;
        // A consumer asleep re-arms its watches to include this process.
        if !cfg!(shm_loom) {
            wait::wake(&c.consumer_waiting, u32::MAX);
        }
        Ok(Producer::new(self.clone(), me, index, attachment))
    }

    /// Joins as the consumer, taking the end over from a dead one. What its predecessor
    /// had read (each frame it dropped, and the padding it skipped) is freed first and not
    /// delivered again; a frame it held when it died is.
    ///
    /// # Errors
    ///
    /// `RoleTaken` if a live process holds the consumer end, `Corrupted` if the shared
    /// positions are impossible.
    pub fn consumer(&self) -> Result<Consumer, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (generation, was) = c
            .config
            .consumer
            .claim_role(me, &self.name, Role::Consumer)?;
        let corrupted = |what: String| {
            c.config.consumer.release(me);
            RingError::Corrupted {
                name: self.name.clone(),
                what,
            }
        };
        let cap = self.settings.capacity;
        // Acquire, and first: pairs with the previous consumer's Release store of `head`
        // (a clean predecessor's last free); the `tail` read after it is at least as new.
        let head = c.head.pos.load(Ordering::Acquire);
        // Relaxed: nothing is read through `tail` (claims are read from their words).
        let tail = c.tail.pos.load(Ordering::Relaxed);
        let align = self.settings.align;
        if tail.wrapping_sub(head) > cap || head % align != 0 || tail % align != 0 {
            return Err(corrupted(format!(
                "tail {tail} and head {head} are more than the log apart or misaligned"
            )));
        }
        let consumed = c.head.consumed.load(Ordering::Relaxed);
        let mut head = head;
        if consumed != head {
            let ahead = consumed.wrapping_sub(head);
            if ahead > tail.wrapping_sub(head) || ahead % align != 0 {
                // Behind `head`: freed already (a hostile value aside, harmless here).
                if (ahead as i64) > 0 {
                    return Err(corrupted(format!(
                        "the consumed position {consumed} runs past tail {tail} (head {head})"
                    )));
                }
            } else {
                // What the predecessor read and did not free yet: freed now, not
                // delivered again.
                release_words(&self.mem, head, consumed, align);
                // Release: as every release's store of `head`.
                c.head.pos.store(consumed, Ordering::Release);
                head = consumed;
            }
        }
        // Relaxed: a report.
        c.config.consumer_since.store(head, Ordering::Relaxed);
        let attachment = end::Attachment::claimed(generation, was, head, tail.wrapping_sub(head));
        // Producers asleep on a full log re-arm their watch on the new consumer.
        if !cfg!(shm_loom) {
            wait::wake(&c.producers_waiting, u32::MAX);
        }
        Ok(Consumer::new(self.clone(), me, head, attachment))
    }
}

/// Rewrites the record starts of `from..to` (every `align` bytes: the only words ever read
/// as headers) to `FREE` of their next lap (their contents were delivered or skipped).
pub(crate) fn release_words(mem: &Mem<Control, Word>, from: u64, to: u64, align: u64) {
    let lap = mem.cap() * 8;
    let mut p = from;
    while p != to {
        // Relaxed: published by the Release store of `head` that follows.
        mem.slot(p >> 3)
            .store(free_word(p.wrapping_add(lap)), Ordering::Relaxed);
        p = p.wrapping_add(align);
    }
}

/// Whether every span a claim of up to `max_len` bytes can take fits a 32-bit length
/// field: a claim line's span (its padding included: under two records) and a padding
/// word's.
fn max_len_fits(max_len: u64, align: u64) -> bool {
    max_len <= LEN && 2 * record_span(max_len, align) <= LEN
}

/// Checks a log's largest message and record alignment against its capacity in words.
pub(crate) fn check_max_len(
    name: &str,
    words: u64,
    max_len: u64,
    align: u64,
) -> Result<(), RingError> {
    let cap = crate::spsc::round_capacity(name, words)? * 8;
    if !max_len_fits(max_len, align) || align > cap / 4 || record_span(max_len, align) > cap / 2 {
        return Err(RingError::MaxLenTooLarge {
            name: name.to_owned(),
            max_len,
            capacity: cap,
        });
    }
    Ok(())
}

/// What a blocked log end checks on its peers with: the wait settings of a handle.
pub(crate) struct Waits {
    pub strategy: WaitStrategy,
    pub registered: bool,
    pub liveness: LivenessTimer,
    pub waiter: Waiter,
    pub deaths: Deaths,
}

impl Waits {
    fn new() -> Waits {
        Waits {
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            waiter: Waiter::new(),
            deaths: Deaths::default(),
        }
    }
}

/// One `PeerWatch` per producer endpoint (the consumer's view of them).
pub(crate) type Watches = Box<[PeerWatch; MAX_ENDPOINTS]>;
