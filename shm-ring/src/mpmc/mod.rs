//! A bounded multi-producer multi-consumer ring between any number of processes: work
//! distribution. Each message goes to exactly one consumer, whichever claims its slot
//! first; consumers share the stream, they do not each see all of it. Per producer, the
//! messages one consumer gets keep that producer's order.
//!
//! Each slot carries one 64-bit word, `seq` (after Vyukov's bounded MPMC queue), that says
//! whose the slot is. For a slot at position `pos` (index `pos & (capacity - 1)`):
//!
//! | bits   | field                                                                   |
//! | ------ | ----------------------------------------------------------------------- |
//! | 63..16 | the position's low 48 bits (its *lap tag*)                              |
//! | 15..7  | generation of the endpoint that marked it (low 9 bits), or 0           |
//! | 6..2   | index of that endpoint in its side's table, or 0                        |
//! | 1..0   | state: FREE 0, WRITING 1, PUBLISHED 2, READING 3                        |
//!
//! | `seq`                       | state                                                     |
//! | --------------------------- | --------------------------------------------------------- |
//! | `pos`, FREE                 | free; once `tail > pos`, claimed by a producer, not marked |
//! | `pos`, WRITING, endpoint    | that producer endpoint is writing the value               |
//! | `pos`, PUBLISHED            | published; once `head > pos`, claimed, not marked          |
//! | `pos`, READING, endpoint    | that consumer endpoint is reading the value               |
//! | `pos + capacity`, FREE      | released: free for the producer of the next lap           |
//!
//! A producer claims `pos` by moving `tail`, marks the slot WRITING with a compare-exchange
//! from (`pos`, FREE), writes, and publishes with a compare-exchange from its own mark. A
//! consumer claims `pos` by moving `head`, marks it READING with a compare-exchange from
//! (`pos`, PUBLISHED), reads, and releases with a compare-exchange from its own mark.
//!
//! **The mark names its marker in the same atomic step.** A claimant can stop at any
//! instruction for any time and come back: every write it makes to the slot after its claim
//! is a compare-exchange against the exact state it expects, so once others gave its claim
//! up it can change nothing. There is no separate identity word a stale claimant could
//! overwrite after its claim was given up (the fault a separate `writer`/`reader` word had).
//! The endpoint's generation (bumped by each attachment, see `end.rs`) tells a mark left by
//! a dead attachment from one made by the live process that took the endpoint over.
//!
//! **A peer killed (or stalled) mid-operation.** The marks make every give-up safe:
//! - A claim that was never marked (the claimant stopped between its claim and its mark)
//!   is given up after the ring's *claim timeout*: consumers skip an unmarked producer
//!   claim (`seq` to (`pos + capacity`, FREE), then `head` past it; [`MpmcStats::skipped`]),
//!   producers reclaim an unmarked consumer claim ([`MpmcStats::reclaimed`]). The claimant,
//!   if it was only stalled, then fails its mark and gets [`PushError::Expired`] (with its
//!   value: nothing was written) or [`PopError::Expired`] (nothing was read; that message is
//!   lost, and counted).
//! - A marked slot is given up only when the endpoint it names is dead: its owner process is
//!   gone (pid + start time), or the endpoint was reaped or taken over since (its generation
//!   moved on); checked after the claim timeout. A live writer or reader is waited for,
//!   however slow, so no value is ever overwritten while read or read while written.
//! - A consumer killed between its skip's two steps leaves `seq` released with `head` on
//!   the slot; the next consumer finishes the skip for it.
//!
//! Lap tags are 48 bits: a claimant stalled while the ring moves on by exactly a multiple of
//! 2^48 positions (days at a billion messages a second) could take a later lap's slot for
//! its own. The claim timeout (default [`DEFAULT_CLAIM_TIMEOUT`]) bounds how long a dead
//! peer can stall the others.
//!
//! **What `Empty`, `Full` and `Disconnected` mean.** `try_pop` says `Empty` only when
//! nothing is claimed or published (`head == tail`); when a push has claimed the next slot
//! and not published it, `try_pop` waits for it a moment ([`IN_FLIGHT_POLLS`]) and then says
//! [`PopError::InFlight`], never `Empty`, even if later items are published behind it.
//! Likewise `try_push` says `Full` only when `capacity` positions are claimed, and
//! [`PushError::InFlight`] when the next slot's previous item is still being read.
//! `Disconnected` (and `is_abandoned`) describe the other side's endpoints now: every one
//! of them closed (or died) and what they published was taken. A new producer (consumer)
//! may attach later, and items flow again; each handle's [`Attachment`] has its generation.

use std::time::{Duration, Instant};

use bytemuck::Pod;
use shm_sync::primitive::{AtomicU32, AtomicU64, Ordering};

use crate::end::{self, Deaths, End, EndStatus, FlagTarget, LivenessTimer, PeerWatch};
use crate::error::{Batch, ChunkError, PopError, PushError, RingError, Role};
use crate::mem::{self, Mem, UnsafeCell};
use crate::spsc::FlagLine;
use crate::wait::{self, Deadline, WaitStrategy, Waiter};

/// Version of the MPMC control-block layout; part of the segment's fingerprint.
pub const MPMC_LAYOUT_VERSION: u64 = 4;
/// How long a claimed but unfinished slot may stall the others before they move on.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_millis(100);
/// How many times `try_pop` (`try_push`) polls again, with a spin hint between polls,
/// when the ring is not empty (full) but the next slot is in flight: a push between its
/// claim and its publish (a consumer still reading the previous lap). It covers a peer
/// that is running, as crossbeam's `ArrayQueue` waits for one; a peer that stalls longer
/// gets `InFlight` reported instead of a wrong `Empty` (`Full`).
/// (Loom models skip the polls and the `InFlight` verdict, a report that takes no slot:
/// each extra load would multiply the interleavings of every model.)
pub const IN_FLIGHT_POLLS: u32 = 256;

/// Most producers (and, separately, consumers) attached at once. (4 under loom, whose
/// models never attach more, so that scanning the endpoint table does not swamp them.)
pub const MAX_ENDPOINTS: usize = if cfg!(shm_loom) { 4 } else { 32 };

pub(crate) const CLOSED_CLEANLY: u32 = 1;
pub(crate) const DIED: u32 = 2;

/// A slot: its sequence word (see the module docs) and the value, packed: 16 bytes for a
/// `u64`, four to a 64-byte line. Padding each slot to a line of its own was measured
/// slower: 1 producer and 1 consumer thread, blocking `push`/`pop` of `u64` on a ring of
/// 16384 (`benches/examples/loops.rs`, row `mpmc-block`), 2-core VM, 2026-12-01, runs
/// interleaved: packed 37.9-65.3 M msg/s (10 runs), 64-byte slots 25.2-33.8 (10 runs).
/// Neighbours on one line let a consumer that follows its producer closely find several
/// published slots per line it pulls over.
#[repr(C)]
pub(crate) struct Slot<T> {
    seq: AtomicU64,
    value: UnsafeCell<T>,
}

/// Slot states (the low two bits of `seq`): free for the push of its lap,
const FREE: u64 = 0;
/// claimed by a push that is writing it,
const WRITING: u64 = 1;
/// published, for the pop of its lap,
const PUBLISHED: u64 = 2;
/// claimed by a pop that is reading it.
const READING: u64 = 3;
/// The state bits.
const STATE: u64 = 0b11;
/// How far the lap tag is shifted.
const TAG_SHIFT: u32 = 16;
/// The lap tag's bits, unshifted.
const TAG: u64 = (1 << (64 - TAG_SHIFT)) - 1;
/// Generation bits kept in a mark.
pub(crate) const GEN_BITS: u32 = 9;

/// `seq` for position `pos` in an unmarked state.
#[inline]
fn seq_of(pos: u64, state: u64) -> u64 {
    (pos << TAG_SHIFT) | state
}

/// `seq` for position `pos` marked `state` (WRITING or READING) by `mark`.
#[inline]
fn marked(pos: u64, state: u64, mark: Mark) -> u64 {
    (pos << TAG_SHIFT) | mark.bits() | state
}

/// The lap distance from position `pos` to the tag in `seq`, mod 2^48: 0 for `pos`'s own
/// lap, `cap` for the next, `2^48 - cap` for the previous.
#[inline]
fn laps(seq: u64, pos: u64) -> u64 {
    (seq >> TAG_SHIFT).wrapping_sub(pos) & TAG
}

/// Who marked a slot: an endpoint index and the low bits of its generation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Mark {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

impl Mark {
    pub(crate) fn new(index: usize, gen: u32) -> Mark {
        Mark {
            index: index as u32 & (MAX_ENDPOINTS as u32 - 1),
            gen: gen & ((1 << GEN_BITS) - 1),
        }
    }

    fn bits(self) -> u64 {
        (u64::from(self.gen) << 7) | (u64::from(self.index) << 2)
    }

    /// The mark in a marked `seq` (any bits: an index is always in range).
    fn of(seq: u64) -> Mark {
        Mark {
            index: ((seq >> 2) & (MAX_ENDPOINTS as u64 - 1)) as u32,
            gen: ((seq >> 7) & ((1 << GEN_BITS) - 1)) as u32,
        }
    }
}

#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(MAX_ENDPOINTS, 32); // five index bits in a mark

/// Per-side bookkeeping, on its own line.
#[repr(C, align(128))]
pub(crate) struct SideLine {
    pos: AtomicU64,
    stalls: AtomicU64,
    wakeups: AtomicU64,
    /// Claims of the *other* side that this side gave up on (consumers: skipped producer
    /// claims; producers: reclaimed consumer claims).
    expired: AtomicU64,
}

#[repr(C, align(128))]
pub(crate) struct ConfigLine {
    capacity: AtomicU64,
    initial: AtomicU64,
    claim_timeout_ns: AtomicU64,
}

/// Who is attached on one side.
#[repr(C, align(128))]
pub(crate) struct Side {
    /// Bumped by every attach and detach (the live count is computed from `ends`): lets
    /// the other side notice, with one load per call, that it should look at the table.
    changes: AtomicU32,
    /// Non-zero once anyone attached.
    ever: AtomicU32,
    /// How the last one to leave left (`CLOSED_CLEANLY` / `DIED`).
    last_departure: AtomicU32,
    _reserved: AtomicU32,
    ends: [End; MAX_ENDPOINTS],
}

/// The control block of an MPMC segment:
///
/// | line(s) | written by          | holds                                        |
/// | ------- | ------------------- | -------------------------------------------- |
/// | 0       | creator             | capacity, initial position, claim timeout    |
/// | 1       | producers           | `tail`, full stalls, wake-ups, reclaims      |
/// | 2       | consumers           | `head`, empty stalls, wake-ups, skips        |
/// | 3, 4    | sleepers            | consumers / producers waiting                |
/// | 5..     | attach / detach     | producer endpoint table                      |
/// | ..      | attach / detach     | consumer endpoint table                      |
#[repr(C)]
pub(crate) struct Control {
    config: ConfigLine,
    tail: SideLine,
    head: SideLine,
    consumers_waiting: FlagLine,
    producers_waiting: FlagLine,
    producers: Side,
    consumers: Side,
}

#[cfg(not(shm_loom))]
mod layout_checks {
    use super::*;
    use static_assertions::const_assert_eq;
    const_assert_eq!(std::mem::offset_of!(Control, tail), 128);
    const_assert_eq!(std::mem::offset_of!(Control, head), 256);
    const_assert_eq!(std::mem::offset_of!(Control, producers), 640);
    const_assert_eq!(std::mem::size_of::<Side>(), 640);
    const_assert_eq!(std::mem::size_of::<Control>(), 1920);
    const_assert_eq!(std::mem::size_of::<Slot<u64>>(), 16);
}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of `u32`/`u64` atomics only: any bytes are valid (impossible values
// are reported as `Corrupted`), zero is an empty table, no Drop glue.
unsafe impl shm_core::ShmSafe for Control {}

impl Side {
    pub(crate) fn new() -> Side {
        Side {
            changes: AtomicU32::new(0),
            ever: AtomicU32::new(0),
            last_departure: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            ends: std::array::from_fn(|_| End::new()),
        }
    }

    /// Claims a free (or dead) endpoint slot; returns its index and the generation of this
    /// attachment.
    pub(crate) fn attach(&self, me: u64) -> Option<(usize, Attachment)> {
        for (i, e) in self.ends.iter().enumerate() {
            let w = e.owner.load(Ordering::Relaxed);
            if w != 0 && !end::is_dead(w) {
                continue;
            }
            let took_over_from = (w != 0).then_some((w >> 32) as u32);
            if w != 0 {
                // A dead holder we reap on the way.
                // AcqRel, as in `reap`.
                if e.owner
                    .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.last_departure.store(DIED, Ordering::Relaxed);
                } else {
                    continue;
                }
            }
            if let Ok(gen) = e.claim(me) {
                // Release, after the claim: pairs with the Acquire load of `ever` in `gone`,
                // so whoever sees `ever` set also sees this endpoint's owner word (loom found
                // a false "disconnected" when `ever` was set first).
                self.ever.store(1, Ordering::Release);
                // Relaxed: a hint to look at the table, which the looker reads itself. (Not
                // under loom, where nobody looks: `consumers_left` is off.)
                if !cfg!(shm_loom) {
                    self.changes.fetch_add(1, Ordering::Relaxed);
                }
                return Some((
                    i,
                    Attachment {
                        endpoint: i,
                        generation: gen,
                        took_over_from,
                    },
                ));
            }
        }
        None
    }

    pub(crate) fn detach(&self, index: usize, me: u64) {
        let e = &self.ends[index];
        // Only if the slot is still ours (a peer may have reaped us as dead).
        if e.owner.load(Ordering::Relaxed) == me {
            self.last_departure.store(CLOSED_CLEANLY, Ordering::Relaxed);
            e.release(me);
            // Relaxed: a hint, as in `attach`.
            if !cfg!(shm_loom) {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reaps endpoints whose process died, whatever state word they left (a process killed
    /// inside `detach` leaves `CLOSED` with its owner still set). `watches` holds one
    /// [`PeerWatch`] per slot, so that checking the same live peer again is a `poll(2)` on
    /// its pidfd, not a `/proc` read: this runs once per liveness interval in every parked
    /// handle of the other side.
    pub(crate) fn reap(&self, watches: &mut [PeerWatch; MAX_ENDPOINTS]) {
        for (e, watch) in self.ends.iter().zip(watches.iter_mut()) {
            let w = e.owner.load(Ordering::Relaxed);
            if w == 0 {
                // A free slot: let go of any pidfd held on its departed owner.
                watch.forget();
                continue;
            }
            // AcqRel: Acquire orders the verdict's view of the dead owner's last writes
            // (under loom the death itself is a Release/Acquire pair) before the zero;
            // Release passes them on to whoever then sees the slot free with the Acquire
            // load in `gone`, so a consumer that did not reap the dead producer itself
            // still finds what it published before reporting `PeerDied`.
            if watch.is_dead(w)
                && e.owner
                    .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.last_departure.store(DIED, Ordering::Relaxed);
            }
        }
    }

    /// Whether the attachment that made `mark` is certainly over: its endpoint was taken
    /// over or reaped since (the generation moved on, or the owner word is 0), or its owner
    /// process is dead (checked through `watches`, a pidfd poll once seen before). `false`
    /// when in doubt, or while a new owner is between its claim and its generation bump.
    pub(crate) fn marker_dead(&self, mark: Mark, watches: &mut [PeerWatch; MAX_ENDPOINTS]) -> bool {
        let i = mark.index as usize; // < MAX_ENDPOINTS by construction
        let e = &self.ends[i];
        // Relaxed: the marker bumped the generation (and claimed the owner word) before its
        // Release mark, which the caller loaded with Acquire; a later generation or owner
        // can only come from a take-over or reap, which needed the marker dead.
        if e.gen.load(Ordering::Relaxed) & ((1 << GEN_BITS) - 1) != mark.gen {
            return true;
        }
        let w = e.owner.load(Ordering::Relaxed);
        w == 0 || watches[i].is_dead(w)
    }

    /// Arranges that the death of any process attached here now wakes a sleeper on `flag`
    /// (see [`PeerWatch::wake_on_exit`]); `true` if every one will.
    pub(crate) fn wake_on_deaths(
        &self,
        watches: &mut [PeerWatch; MAX_ENDPOINTS],
        me: u64,
        target: &FlagTarget<'_>,
        deaths: &Deaths,
    ) -> bool {
        let mut all = true;
        for (e, watch) in self.ends.iter().zip(watches.iter_mut()) {
            let w = e.owner.load(Ordering::Relaxed);
            if w != 0 {
                all &= watch.wake_on_exit(w, me, target, deaths);
            }
        }
        all
    }

    /// How long a handle of the other side sleeps on `flag` before it re-checks on its
    /// own: 1 ms while a claim it waits on is pending (`stuck`: to re-check its timeout);
    /// else [`end::WATCHED_SLICE`] (or `interval`, if longer) when every endpoint attached
    /// here will wake it by dying (`wake_on_deaths`), and `interval` when one cannot.
    pub(crate) fn sleep_slice(
        &self,
        watches: &mut [PeerWatch; MAX_ENDPOINTS],
        (me, deaths): (u64, &Deaths),
        target: &FlagTarget<'_>,
        interval: Duration,
        stuck: bool,
    ) -> Duration {
        let watched = self.wake_on_deaths(watches, me, target, deaths);
        if stuck {
            Duration::from_millis(1)
        } else if watched {
            interval.max(end::WATCHED_SLICE)
        } else {
            interval
        }
    }

    /// How a handle of the other side arms for `select` and `aio` on `target`: as its own
    /// sleep does (every endpoint here that a pidfd can watch wakes `target` by dying),
    /// with the handle's next look a full one (`liveness` expired).
    pub(crate) fn arm(
        &self,
        watches: &mut [PeerWatch; MAX_ENDPOINTS],
        (me, deaths): (u64, &Deaths),
        target: FlagTarget<'_>,
        liveness: &mut LivenessTimer,
        stuck: bool,
    ) -> crate::select::Armed {
        let slice = self.sleep_slice(watches, (me, deaths), &target, liveness.interval(), stuck);
        liveness.expire();
        crate::select::Armed {
            flag: target.line(),
            keep: target.to_ref(),
            watched: slice >= end::WATCHED_SLICE,
            _shutdown: crate::shutdown::register(&target),
        }
    }

    /// A digest of the owner words: it changes when any endpoint is taken, released or
    /// reaped (a sleeper compares it to re-arm its watches on a new peer).
    pub(crate) fn owners_digest(&self) -> u64 {
        self.ends.iter().enumerate().fold(0u64, |d, (i, e)| {
            d.wrapping_add(
                e.owner
                    .load(Ordering::Relaxed)
                    .rotate_left(i as u32 * 2 + 1),
            )
        })
    }

    /// The status of each endpoint holding an owner word now.
    pub(crate) fn attached_ends(&self) -> Vec<EndStatus> {
        self.ends
            .iter()
            .map(End::status)
            .filter(|s| matches!(s, EndStatus::Attached { .. }))
            .collect()
    }

    /// Endpoints holding an owner word now (alive, or dead and not yet reaped).
    pub(crate) fn attached(&self) -> u32 {
        self.ends
            .iter()
            .filter(|e| e.owner.load(Ordering::Relaxed) != 0)
            .count() as u32
    }

    /// `None` while someone is attached (or nobody ever was); else how the last one left.
    /// Computed from the endpoint table itself, so a process killed in the middle of
    /// attaching or detaching cannot leave a count that disagrees with it.
    pub(crate) fn gone(&self) -> Option<u32> {
        // Acquire: pairs with the Release store of `ever` in `attach`; read first, so the
        // owner words below include that attach.
        if self.ever.load(Ordering::Acquire) == 0 {
            return None;
        }
        // Acquire (on each owner word): pairs with the Release CAS in `End::release`, so
        // what an endpoint that detached published is visible once we see it gone, and
        // with the AcqRel CAS of a reap (`reap`, `attach`), which passes on what its death
        // verdict saw of a dead owner (`after_empty` drains before it reports the
        // departure).
        if self
            .ends
            .iter()
            .any(|e| e.owner.load(Ordering::Acquire) != 0)
        {
            return None;
        }
        Some(self.last_departure.load(Ordering::Relaxed))
    }
}

impl Control {
    fn new(capacity: u64, initial: u64, claim_timeout: Duration) -> Control {
        let side = |pos| SideLine {
            pos: AtomicU64::new(pos),
            stalls: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        };
        Control {
            config: ConfigLine {
                capacity: AtomicU64::new(capacity),
                initial: AtomicU64::new(initial),
                claim_timeout_ns: AtomicU64::new(claim_timeout.as_nanos() as u64),
            },
            tail: side(initial),
            head: side(initial),
            consumers_waiting: FlagLine::new(),
            producers_waiting: FlagLine::new(),
            producers: Side::new(),
            consumers: Side::new(),
        }
    }
}

/// A snapshot of an MPMC ring's counters (see [`Ring::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpmcStats {
    /// Slots in the ring.
    pub capacity: u64,
    /// Next position to claim for reading.
    pub head: u64,
    /// Next position to claim for writing.
    pub tail: u64,
    /// Positions claimed by producers since creation.
    pub pushes: u64,
    /// Positions claimed by consumers since creation.
    pub pops: u64,
    /// Times a push found the ring full.
    pub full_stalls: u64,
    /// Times a pop found the ring empty.
    pub empty_stalls: u64,
    /// `FUTEX_WAKE` calls issued.
    pub wakeups: u64,
    /// Producer claims that consumers skipped after the claim timeout.
    pub skipped: u64,
    /// Consumer claims that producers reclaimed after the claim timeout.
    pub reclaimed: u64,
    /// Producers attached now.
    pub producers: u32,
    /// Consumers attached now.
    pub consumers: u32,
    /// The claim timeout.
    pub claim_timeout: Duration,
}

/// How an MPMC handle attached: which endpoint slot it holds, that slot's attachment
/// number, and whose dead endpoint it took over. Messages are not per consumer in an MPMC
/// ring (each goes to whichever consumer claims it), so a new consumer has no backlog of
/// its own: it shares the ring's; what a dead consumer had claimed and not finished is
/// reclaimed (lost, counted in [`MpmcStats::reclaimed`]) after the claim timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The endpoint slot (0..[`MAX_ENDPOINTS`]) this handle holds.
    pub endpoint: usize,
    /// The slot's attachment number: one more for each handle that held it.
    pub generation: u32,
    /// The pid of the dead holder whose slot this handle took over, if it took one over.
    pub took_over_from: Option<u32>,
}

/// Who holds an MPMC ring's endpoints now (see [`Ring::ends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpmcEnds {
    /// The producer endpoints attached now (alive, or dead and not yet taken over).
    pub producers: Vec<EndStatus>,
    /// The consumer endpoints attached now.
    pub consumers: Vec<EndStatus>,
}

pub(crate) fn ends_of(c: &Control) -> MpmcEnds {
    MpmcEnds {
        producers: c.producers.attached_ends(),
        consumers: c.consumers.attached_ends(),
    }
}

pub(crate) fn stats_of(c: &Control) -> MpmcStats {
    let initial = c.config.initial.load(Ordering::Relaxed);
    let head = c.head.pos.load(Ordering::Relaxed);
    let tail = c.tail.pos.load(Ordering::Relaxed);
    MpmcStats {
        capacity: c.config.capacity.load(Ordering::Relaxed),
        head,
        tail,
        pushes: tail.wrapping_sub(initial),
        pops: head.wrapping_sub(initial),
        full_stalls: c.tail.stalls.load(Ordering::Relaxed),
        empty_stalls: c.head.stalls.load(Ordering::Relaxed),
        wakeups: c
            .tail
            .wakeups
            .load(Ordering::Relaxed)
            .wrapping_add(c.head.wakeups.load(Ordering::Relaxed)),
        skipped: c.head.expired.load(Ordering::Relaxed),
        reclaimed: c.tail.expired.load(Ordering::Relaxed),
        producers: c.producers.attached(),
        consumers: c.consumers.attached(),
        claim_timeout: Duration::from_nanos(c.config.claim_timeout_ns.load(Ordering::Relaxed)),
    }
}

/// An MPMC ring in memory: join it with [`producer`](Ring::producer) /
/// [`consumer`](Ring::consumer), as many times as you like (up to [`MAX_ENDPOINTS`] each).
#[derive(Clone)]
pub struct Ring<T> {
    mem: Mem<Control, Slot<T>>,
    name: String,
    created: bool,
}

/// Checks the ring's claim timeout (read once at join; garbage is clamped, not trusted).
fn claim_timeout(c: &Control) -> Duration {
    let ns = c.config.claim_timeout_ns.load(Ordering::Relaxed);
    Duration::from_nanos(ns).clamp(Duration::from_millis(1), Duration::from_secs(60))
}

impl<T: Pod> Ring<T> {
    /// A ring on the heap for threads of one process (and Miri, and loom). `capacity` is
    /// rounded up to a power of two, as for every ring (`in_process(3)` holds 4;
    /// [`capacity`](Self::capacity) says).
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`.
    pub fn in_process(capacity: u64) -> Result<Ring<T>, RingError> {
        Self::in_process_with_claim_timeout(capacity, DEFAULT_CLAIM_TIMEOUT)
    }

    /// [`in_process`](Self::in_process) with its own claim timeout: how long a claimed but
    /// unfinished slot may stall the others (clamped to 1 ms ..= 60 s, as
    /// [`Builder::claim_timeout`]). Threads that may be descheduled for longer than the
    /// default without having died (an interpreter such as Miri, an overloaded host) want
    /// more, or their stalls are treated as deaths: counted losses and `Expired`.
    ///
    /// # Errors
    ///
    /// As [`in_process`](Self::in_process).
    pub fn in_process_with_claim_timeout(
        capacity: u64,
        claim_timeout: Duration,
    ) -> Result<Ring<T>, RingError> {
        let timeout = claim_timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
        let mem = crate::mem::in_process_mem::<T, _, _>(
            capacity,
            |cap| Control::new(cap, 0, timeout),
            |i, _| Slot {
                seq: AtomicU64::new(seq_of(i, FREE)),
                value: UnsafeCell::new(T::zeroed()),
            },
        )?;
        Self::from_mem(mem, crate::mem::IN_PROCESS.to_owned(), true)
    }

    /// A ring over `mem`, just created or opened (`created` says which).
    pub(crate) fn from_mem(
        mem: Mem<Control, Slot<T>>,
        name: String,
        created: bool,
    ) -> Result<Ring<T>, RingError> {
        Ok(Ring { mem, name, created })
    }

    /// Joins as one more producer.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints` if [`MAX_ENDPOINTS`] live producers are attached.
    pub fn producer(&self) -> Result<Producer<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (index, attachment) = c.producers.attach(me).ok_or(RingError::TooManyEndpoints {
            name: self.name.clone(),
            role: Role::Producer,
            max: MAX_ENDPOINTS,
        })?;
        // Consumers asleep re-arm their watches to include this process (loom runs no
        // watcher).
        if !cfg!(shm_loom) {
            wait::wake(&c.consumers_waiting, u32::MAX);
        }
        let mut p = Producer {
            ring: self.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            mark: Mark::new(index, attachment.generation),
            attachment,
            last_loss: None,
            #[cfg(shm_loom)]
            doom: None,
            claim_timeout: claim_timeout(c),
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peers: Box::new(std::array::from_fn(|_| PeerWatch::new())),
            stuck: None,
            expired: None,
            waiter: Waiter::new(),
            stalled: false,
            deaths: Deaths::default(),
            seen: (u32::MAX, u64::MAX),
            buffer: false,
        };
        // Arm the exit watches on the consumers attached now: here, not in the first push.
        let _ = p.consumers_left();
        Ok(p)
    }

    /// Joins as one more consumer.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints` if [`MAX_ENDPOINTS`] live consumers are attached.
    pub fn consumer(&self) -> Result<Consumer<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (index, attachment) = c.consumers.attach(me).ok_or(RingError::TooManyEndpoints {
            name: self.name.clone(),
            role: Role::Consumer,
            max: MAX_ENDPOINTS,
        })?;
        // Producers asleep re-arm their watches to include this process.
        if !cfg!(shm_loom) {
            wait::wake(&c.producers_waiting, u32::MAX);
        }
        Ok(Consumer {
            ring: self.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            mark: Mark::new(index, attachment.generation),
            attachment,
            last_loss: None,
            #[cfg(shm_loom)]
            doom: None,
            claim_timeout: claim_timeout(c),
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peers: Box::new(std::array::from_fn(|_| PeerWatch::new())),
            stuck: None,
            expired: None,
            waiter: Waiter::new(),
            stalled: false,
            deaths: Deaths::default(),
        })
    }

    crate::handles::ring_accessors!(MpmcStats);

    /// Who holds the endpoints now, by pid, and whether each runs: for monitoring (it
    /// allocates, and looks each holder up in `/proc`).
    pub fn ends(&self) -> MpmcEnds {
        ends_of(self.mem.ctrl())
    }

    /// Test hook: as `raw_slots`, but the address of slot 0's value (after its sequence
    /// word).
    #[doc(hidden)]
    #[cfg(not(shm_loom))]
    pub fn raw_values(&self) -> (*mut u8, usize, u64) {
        let (slot0, stride, cap) = self.raw_slots();
        (
            slot0.wrapping_add(std::mem::offset_of!(Slot<T>, value)),
            stride,
            cap,
        )
    }
}

/// One of an MPMC ring's producers.
pub struct Producer<T> {
    ring: Ring<T>,
    me: u64,
    attachment: Attachment,
    /// The position behind the latest `Expired` (see `last_loss`).
    last_loss: Option<u64>,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    /// What this handle's slot marks say: its endpoint and that attachment's generation.
    mark: Mark,
    /// Loom only: the protocol step at which this handle "dies" (`doom_at`).
    #[cfg(shm_loom)]
    doom: Option<&'static str>,
    claim_timeout: Duration,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Liveness watches on the consumers' endpoint slots (boxed: 32 of them).
    peers: Box<[PeerWatch; MAX_ENDPOINTS]>,
    /// A position whose slot a consumer claimed but has not released, and since when.
    stuck: Option<Stuck>,
    /// The last wait on a claim that timed out: every position between it and its
    /// horizon was claimed at least as long ago, so may be given up at once.
    expired: Option<Stuck>,
    /// The adaptive spin budget and the wait in progress.
    waiter: Waiter,
    /// Whether this handle counted a stall since its last success: one stall per wait,
    /// so a `try_push` loop on a full ring writes no shared counter while it spins.
    stalled: bool,
    /// Exits of the watched consumers, counted by their exit notices.
    deaths: Deaths,
    /// The consumers' `changes` and our `deaths` when we last looked at the consumer table
    /// (`consumers_left`).
    seen: (u32, u64),
    /// Whether pushes go on landing while no consumer is attached (`buffer_while_unattended`).
    buffer: bool,
}

/// One of an MPMC ring's consumers.
pub struct Consumer<T> {
    ring: Ring<T>,
    me: u64,
    attachment: Attachment,
    /// The position behind the latest `Expired` (see `last_loss`).
    last_loss: Option<u64>,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    /// What this handle's slot marks say: its endpoint and that attachment's generation.
    mark: Mark,
    /// Loom only: the protocol step at which this handle "dies" (`doom_at`).
    #[cfg(shm_loom)]
    doom: Option<&'static str>,
    claim_timeout: Duration,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Liveness watches on the producers' endpoint slots (boxed: 32 of them).
    peers: Box<[PeerWatch; MAX_ENDPOINTS]>,
    /// A position a producer claimed but has not published, and since when.
    stuck: Option<Stuck>,
    /// The last wait on a claim that timed out: every position between it and its
    /// horizon was claimed at least as long ago, so may be given up at once.
    expired: Option<Stuck>,
    /// The adaptive spin budget and the wait in progress.
    waiter: Waiter,
    /// Whether this handle counted a stall since its last success (see `Producer`).
    stalled: bool,
    /// Exits of the watched producers, counted by their exit notices.
    deaths: Deaths,
}

/// After this many retries without progress, a loop reports corruption rather than spin.
const MAX_RETRIES: u32 = 1 << 20;

/// What one attempt found.
enum Attempt<T> {
    Done(T),
    /// Nothing to do now (full / empty / waiting on a claim).
    Blocked,
    Failed(Failure),
}

#[derive(Clone, Copy)]
enum Failure {
    Disconnected,
    PeerDied,
    Expired,
    Corrupted,
}

/// A claim this handle waits on: its position, since when, and the other side's claim
/// position read just before `since` (its horizon: every position before it had been
/// claimed by then).
#[derive(Clone, Copy, Debug)]
struct Stuck {
    pos: u64,
    since: Instant,
    horizon: u64,
}

/// Whether a slot whose tag is `lap` (a multiple of `cap`, more than one lap) past `pos`
/// was really reused by a later lap: its producer claimed `pos + lap - cap`, so `tail`
/// must be past that. `tail` is loaded after `pos` (which came from `head`) with Relaxed,
/// so on a weakly ordered machine (and under Miri) it may be older than `pos`: then
/// `tail - pos` wraps to a huge distance, and the slot of a previous lap still being read
/// (`lap` is `-cap` mod 2^48, a multiple of `cap` too) would pass for a later lap, and a
/// consumer would move `head` past a position nobody published yet: the item pushed there
/// later would never be claimed, and after the claim timeout a producer reclaims it (a
/// loss Miri found). Only a forward distance counts.
fn is_later_lap(lap: u64, cap: u64, tail: u64, pos: u64) -> bool {
    let ahead = tail.wrapping_sub(pos);
    lap > cap && lap % cap == 0 && ahead <= TAG / 2 && lap - cap < ahead
}

/// Whether the claim of `pos` is older than `timeout`, tracking the position we are stuck
/// on (`stuck`). `horizon` is the other side's claim position, read before this call. A
/// position after one whose wait timed out (`expired`) and before that wait's horizon was
/// claimed before that wait began: it inherits that start, so a batch of claims left by a
/// dead process costs one timeout, not one per claim.
///
/// Under loom, whether the model's clock has passed, as this thread sees it
/// (`shm_sync::primitive::world`): the timeout may fire at the first sighting or never.
fn stuck_too_long(
    stuck: &mut Option<Stuck>,
    expired: &mut Option<Stuck>,
    pos: u64,
    horizon: u64,
    timeout: Duration,
) -> bool {
    #[cfg(shm_loom)]
    {
        let _ = (stuck, expired, pos, horizon, timeout);
        shm_sync::primitive::world::timed_out()
    }
    #[cfg(not(shm_loom))]
    {
        stuck_since(stuck, expired, pos, horizon, timeout, Instant::now())
    }
}

#[cfg_attr(shm_loom, allow(dead_code))]
fn stuck_since(
    stuck: &mut Option<Stuck>,
    expired: &mut Option<Stuck>,
    pos: u64,
    horizon: u64,
    timeout: Duration,
    now: Instant,
) -> bool {
    let s = match *stuck {
        Some(s) if s.pos == pos => s,
        _ => {
            let inherited = expired.filter(|e| {
                let d = pos.wrapping_sub(e.pos);
                d != 0 && d < e.horizon.wrapping_sub(e.pos)
            });
            let s = match inherited {
                Some(e) => Stuck {
                    pos,
                    since: e.since,
                    horizon: e.horizon,
                },
                None => Stuck {
                    pos,
                    since: now,
                    horizon,
                },
            };
            *stuck = Some(s);
            s
        }
    };
    let out = now.saturating_duration_since(s.since) >= timeout;
    if out {
        *expired = Some(s);
    }
    out
}

/// Claims, with one compare-exchange of `counter` (`tail` for producers, `head` for
/// consumers), the run of slots from the position it holds whose `seq` reads `state` for
/// their own lap (FREE to write, PUBLISHED to read), at most `want` (and one ring) long.
/// `Err(n)`: the run is only `n` long, fewer than `min`, and nothing was claimed;
/// `Err(u64::MAX)`: the counter kept moving for `MAX_RETRIES` tries (corruption).
///
/// Positions nobody claimed keep their state until claimed: only a claimant marks a slot,
/// and the other side gives up only claimed positions. So every slot of the run, checked
/// while `counter` held `pos`, is still in `state` once the exchange from `pos` succeeds.
fn claim_run<T>(
    mem: &Mem<Control, Slot<T>>,
    counter: &AtomicU64,
    state: u64,
    want: u64,
    min: u64,
) -> Result<(u64, u64), u64> {
    let want = want.min(mem.cap());
    let mut pos = counter.load(Ordering::Relaxed);
    // Slots from `pos` checked so far. After a failed exchange the part of the run beyond
    // the counter's new value stays checked: those positions are still unclaimed, so (see
    // above) still in `state`; a retry scans only what lies past them.
    let mut n = 0;
    for _ in 0..MAX_RETRIES {
        // Acquire (each), as in `attempt`: for FREE, pairs with the consumer's Release of
        // the previous lap (our writes come after its reads); for PUBLISHED, with the
        // producer's Release publish.
        while n < want
            && mem.slot(pos.wrapping_add(n)).seq.load(Ordering::Acquire)
                == seq_of(pos.wrapping_add(n), state)
        {
            n += 1;
        }
        if n < min.max(1) {
            return Err(n);
        }
        // Relaxed: as in `attempt`; the slots' own `seq` words carry the ordering.
        match counter.compare_exchange_weak(
            pos,
            pos.wrapping_add(n),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok((pos, n)),
            Err(now) => {
                let moved = now.wrapping_sub(pos);
                n = n.saturating_sub(moved);
                pos = now;
            }
        }
    }
    Err(u64::MAX)
}

fn fail_push<T>(f: Failure, value: T) -> PushError<T> {
    match f {
        Failure::Disconnected => PushError::Disconnected(value),
        Failure::PeerDied => PushError::PeerDied(value),
        Failure::Expired => PushError::Expired(value),
        Failure::Corrupted => PushError::Corrupted(value),
    }
}

fn fail_pop(f: Failure) -> PopError {
    match f {
        Failure::Disconnected => PopError::Disconnected,
        Failure::PeerDied => PopError::PeerDied,
        Failure::Expired => PopError::Expired,
        Failure::Corrupted => PopError::Corrupted,
    }
}

/// Loom only: deaths of handles, for the models of the slot protocol's dead-peer paths.
#[cfg(shm_loom)]
macro_rules! loom_deaths {
    ($t:ident) => {
        impl<T> $t<T> {
            /// Loom only: this handle dies when it next reaches protocol step `point` (one
            /// of the `mpmc-*` fault points): it is marked dead and the call unwinds with
            /// [`LoomDied`](crate::LoomDied).
            pub fn doom_at(&mut self, point: &'static str) {
                self.doom = Some(point);
            }

            /// Loom only: this handle's process dies now, between operations: marked dead,
            /// its endpoint left attached, no destructor run.
            pub fn die(self) {
                shm_sync::primitive::world::die(self.me >> 32);
                std::mem::forget(self);
            }
        }
    };
}
#[cfg(shm_loom)]
loom_deaths!(Producer);
#[cfg(shm_loom)]
loom_deaths!(Consumer);

mod consumer;
mod producer;
#[cfg(not(shm_loom))]
mod shared;

pub use producer::WriteChunk;
#[cfg(not(shm_loom))]
pub use shared::{create, open, open_or_create, Builder};

#[cfg(all(test, not(shm_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_stale_tail_does_not_make_the_previous_lap_a_later_one() {
        let cap: u64 = 8;
        let pos = 79;
        // The slot still holds position 71 (a consumer reading it): the tag is one lap
        // behind, `-cap` mod 2^48.
        let lap = laps(marked(71, READING, Mark::new(1, 3)), pos);
        assert_eq!(lap, cap.wrapping_neg() & TAG);
        // `tail` as a weakly ordered load may give it: older than `pos` (which came from
        // `head`), or equal.
        for tail in [78, 79, 0, pos - 8] {
            assert!(!is_later_lap(lap, cap, tail, pos), "tail {tail}");
        }
        // A real later lap: tag `pos + 2 cap`, whose producer claimed `pos + cap`, so `tail`
        // is past it.
        let lap = laps(seq_of(pos + 2 * cap, FREE), pos);
        assert_eq!(lap, 2 * cap);
        assert!(is_later_lap(lap, cap, pos + cap + 1, pos));
        assert!(!is_later_lap(lap, cap, pos + cap, pos), "not claimed yet");
        assert!(!is_later_lap(lap, cap, pos - 1, pos), "stale tail");
        // Garbage tags that are no multiple of `cap`, or the next lap itself.
        assert!(!is_later_lap(2 * cap + 1, cap, u64::MAX / 4, pos));
        assert!(!is_later_lap(cap, cap, pos + 100, pos));
    }
}

/// Whether any of `peers` has exited since last asked (each notice is taken, not only the
/// first).
fn take_any_exited(peers: &mut [PeerWatch]) -> bool {
    peers.iter_mut().fold(false, |any, p| p.take_exited() | any)
}
