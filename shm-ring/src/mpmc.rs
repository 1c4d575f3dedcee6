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
use crate::spsc::{check_payload, round_capacity, FlagLine};
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

const CLOSED_CLEANLY: u32 = 1;
const DIED: u32 = 2;

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

/// Slot states (the low two bits of `seq`).
const FREE: u64 = 0;
const WRITING: u64 = 1;
const PUBLISHED: u64 = 2;
const READING: u64 = 3;
const STATE: u64 = 0b11;
/// How far the lap tag is shifted.
const TAG_SHIFT: u32 = 16;
/// The lap tag's bits, unshifted.
const TAG: u64 = (1 << (64 - TAG_SHIFT)) - 1;
/// Generation bits kept in a mark.
const GEN_BITS: u32 = 9;

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
struct Mark {
    index: u32,
    gen: u32,
}

impl Mark {
    fn new(index: usize, gen: u32) -> Mark {
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
    fn new() -> Side {
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
    fn attach(&self, me: u64) -> Option<(usize, Attachment)> {
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

    fn detach(&self, index: usize, me: u64) {
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
    fn reap(&self, watches: &mut [PeerWatch; MAX_ENDPOINTS]) {
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
    fn marker_dead(&self, mark: Mark, watches: &mut [PeerWatch; MAX_ENDPOINTS]) -> bool {
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
    fn wake_on_deaths(
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
    fn sleep_slice(
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

    /// A digest of the owner words: it changes when any endpoint is taken, released or
    /// reaped (a sleeper compares it to re-arm its watches on a new peer).
    fn owners_digest(&self) -> u64 {
        self.ends.iter().enumerate().fold(0u64, |d, (i, e)| {
            d.wrapping_add(
                e.owner
                    .load(Ordering::Relaxed)
                    .rotate_left(i as u32 * 2 + 1),
            )
        })
    }

    /// The status of each endpoint holding an owner word now.
    fn attached_ends(&self) -> Vec<EndStatus> {
        self.ends
            .iter()
            .map(End::status)
            .filter(|s| matches!(s, EndStatus::Attached { .. }))
            .collect()
    }

    /// Endpoints holding an owner word now (alive, or dead and not yet reaped).
    fn attached(&self) -> u32 {
        self.ends
            .iter()
            .filter(|e| e.owner.load(Ordering::Relaxed) != 0)
            .count() as u32
    }

    /// `None` while someone is attached (or nobody ever was); else how the last one left.
    /// Computed from the endpoint table itself, so a process killed in the middle of
    /// attaching or detaching cannot leave a count that disagrees with it.
    fn gone(&self) -> Option<u32> {
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
pub struct Ring<T> {
    mem: Mem<Control, Slot<T>>,
    name: String,
    created: bool,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            mem: self.mem.clone(),
            name: self.name.clone(),
            created: self.created,
        }
    }
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
        let name = "(in-process)";
        check_payload::<T>(name)?;
        let cap = round_capacity(name, capacity)?;
        let timeout = claim_timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
        let ctrl = Control::new(cap, 0, timeout);
        let mem = mem::Heap::new_mem(ctrl, cap, |i| Slot {
            seq: AtomicU64::new(seq_of(i, FREE)),
            value: UnsafeCell::new(T::zeroed()),
        })
        .ok_or(RingError::CapacityTooLarge {
            name: name.to_owned(),
            requested: capacity,
        })?;
        Ok(Ring {
            mem,
            name: name.to_owned(),
            created: true,
        })
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

    /// Slots in the ring (a power of two).
    pub fn capacity(&self) -> u64 {
        self.mem.cap()
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle created the ring (`create`, the winner of an `open_or_create`
    /// race, or `in_process`) rather than opening one that existed.
    pub fn is_creator(&self) -> bool {
        self.created
    }

    /// Whether the ring's name still leads to this ring. `false` once the name was removed
    /// or re-created by another process: a handle of the old ring then sees its peers stop
    /// (`Disconnected`, `PeerDied`, or nothing at all) while new processes meet on the new
    /// ring, and should reopen by name. One `lstat`; not for hot paths. An in-process ring
    /// has no name and always is current.
    #[cfg(not(shm_loom))]
    pub fn is_current(&self) -> bool {
        self.mem.is_current()
    }

    /// The counters, read without joining. Neither allocates nor makes a syscall.
    pub fn stats(&self) -> MpmcStats {
        stats_of(self.mem.ctrl())
    }

    /// Who holds the endpoints now, by pid, and whether each runs: for monitoring (it
    /// allocates, and looks each holder up in `/proc`).
    pub fn ends(&self) -> MpmcEnds {
        ends_of(self.mem.ctrl())
    }

    /// Test hook: where slot 0's value lies in this process, the stride between slots, and
    /// the slot count, for tests that play a peer writing into the slots. Touching that
    /// memory other than with atomics is a data race with the ring.
    #[doc(hidden)]
    #[cfg(not(shm_loom))]
    pub fn raw_values(&self) -> (*mut u8, usize, u64) {
        let slot = self.mem.slot_ptr(0);
        // SAFETY: `slot` points to slot 0, a live `Slot<T>`; only the field's address is
        // taken, nothing is read.
        let value = unsafe { std::ptr::addr_of_mut!((*slot).value) };
        (
            value.cast::<u8>(),
            std::mem::size_of::<Slot<T>>(),
            self.mem.cap(),
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

/// Whether the claim of `pos` is older than `timeout`, tracking the position we are stuck
/// on (`stuck`). `horizon` is the other side's claim position, read before this call. A
/// position after one whose wait timed out (`expired`) and before that wait's horizon was
/// claimed before that wait began: it inherits that start, so a batch of claims left by a
/// dead process costs one timeout, not one per claim.
///
/// Under loom, whether the model's clock has passed, as this thread sees it
/// (`shm_sync::primitive::world`): the timeout may fire at the first sighting or never.
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

    /// Sets how blocking pushes wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets how often a push on a full ring checks that the consumers still run, when
    /// their deaths cannot wake it (default [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); see there). Any
    /// duration.
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

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
        let mem = &self.ring.mem;
        let c = mem.ctrl();
        let cap = mem.cap();
        let mut pos = c.tail.pos.load(Ordering::Relaxed);
        let mut retries = 0;
        loop {
            retries += 1;
            if retries > MAX_RETRIES {
                return Attempt::Failed(Failure::Corrupted);
            }
            let slot = mem.slot(pos);
            // Acquire: pairs with the consumer's Release release of the previous lap (its
            // read of that value happens before we overwrite it), with the Release of a skip
            // or of a dead reader's reclaim, and (through the release sequence a reclaim's
            // read-modify-write continues) with the publish of a value reclaimed unread.
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == seq_of(pos, FREE) {
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
                    pos = c.tail.pos.load(Ordering::Relaxed);
                    continue;
                }
                return self.fill(pos, value);
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
    fn consumers_left(&mut self) -> Option<Failure> {
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
        if self
            .peers
            .iter_mut()
            .fold(false, |any, p| p.take_exited() | any)
        {
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

    /// Sets how blocking pops wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets how often a pop on an empty ring checks that the producers still run, when
    /// their deaths cannot wake it (default [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); see there). Any
    /// duration.
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

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
        let mem = &self.ring.mem;
        let c = mem.ctrl();
        let cap = mem.cap();
        let mut pos = c.head.pos.load(Ordering::Relaxed);
        let mut retries = 0;
        loop {
            retries += 1;
            if retries > MAX_RETRIES {
                return Attempt::Failed(Failure::Corrupted);
            }
            let slot = mem.slot(pos);
            // Acquire: pairs with the producer's Release publish (and marks) of `seq`.
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == seq_of(pos, PUBLISHED) {
                match c.head.pos.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return self.take(pos),
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
        if self
            .peers
            .iter_mut()
            .fold(false, |any, p| p.take_exited() | any)
        {
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

#[cfg(not(shm_loom))]
pub use shared::{create, open, open_or_create, Builder};

#[cfg(not(shm_loom))]
mod shared {
    use super::*;
    use shm_core::{Fingerprint, Kind, SegmentBuilder, TypeIdentity};
    use std::marker::PhantomData;

    /// Options for creating or opening an MPMC ring segment.
    pub struct Builder<T> {
        name: String,
        capacity: u64,
        schema_id: u64,
        claim_timeout: Duration,
        segment: Option<SegmentBuilder>,
        name_wait: Option<Duration>,
        initial_position: u64,
        _t: PhantomData<fn() -> T>,
    }

    impl<T: Pod + TypeIdentity> Builder<T> {
        /// Options for the ring `name` (capacity 1024, schema id 0, claim timeout
        /// [`DEFAULT_CLAIM_TIMEOUT`]).
        pub fn new(name: &str) -> Builder<T> {
            Builder {
                name: name.to_owned(),
                capacity: 1024,
                schema_id: 0,
                claim_timeout: DEFAULT_CLAIM_TIMEOUT,
                segment: None,
                name_wait: None,
                initial_position: 0,
                _t: PhantomData,
            }
        }

        /// Slots wanted; rounded up to a power of two.
        pub fn capacity(mut self, capacity: u64) -> Self {
            self.capacity = capacity;
            self
        }

        /// A number telling payload types of equal size and alignment apart.
        pub fn schema_id(mut self, id: u64) -> Self {
            self.schema_id = id;
            self
        }

        /// How long a claimed but unfinished slot may stall the others (clamped to
        /// 1 ms ..= 60 s). Stored in the ring, so every process uses the creator's.
        pub fn claim_timeout(mut self, timeout: Duration) -> Self {
            self.claim_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
            self
        }

        /// Segment options (mode, mlock, ...). Kind, fingerprint and size are the ring's.
        ///
        /// The options name the ring's own name or another: one with another name makes
        /// `create`, `open` and `open_or_create` fail with [`RingError::NameConflict`].
        pub fn segment(mut self, options: SegmentBuilder) -> Self {
            self.segment = Some(options);
            self
        }

        /// How long [`open`](Self::open) waits for the name to appear, for a consumer
        /// started before its producer (default: no wait, a missing ring is `NotFound` at
        /// once). See [`SegmentBuilder::wait_for_name`].
        pub fn wait_for_name(mut self, wait: Duration) -> Self {
            self.name_wait = Some(wait);
            self
        }

        /// Test hook: start both positions at `pos` to exercise wrap-around.
        #[doc(hidden)]
        pub fn initial_position(mut self, pos: u64) -> Self {
            self.initial_position = pos;
            self
        }

        fn seg_builder(&self) -> Result<SegmentBuilder, RingError> {
            let b = crate::segment_options(&self.name, self.segment.as_ref(), self.name_wait)?;
            Ok(b.kind(Kind::Mpmc)
                .fingerprint(Fingerprint::of::<T>(self.schema_id, MPMC_LAYOUT_VERSION)))
        }

        /// Creates the ring segment.
        ///
        /// # Errors
        ///
        /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`, or the segment's
        /// `Create` error.
        pub fn create(&self) -> Result<Ring<T>, RingError> {
            self.create_or_open(false)
        }

        /// `create`, or (`open_existing`) `open_or_create`: one path, so that a ring made
        /// by either is the same ring.
        fn create_or_open(&self, open_existing: bool) -> Result<Ring<T>, RingError> {
            check_payload::<T>(&self.name)?;
            let cap_of = |c: &Control| c.config.capacity.load(Ordering::Relaxed);
            let cap = round_capacity(&self.name, self.capacity)?;
            let (l, ctrl_r, slots_r) = mem::ring_layout::<Control, Slot<T>>(cap).map_err(|_| {
                RingError::CapacityTooLarge {
                    name: self.name.clone(),
                    requested: self.capacity,
                }
            })?;
            let (initial, timeout) = (self.initial_position, self.claim_timeout);
            let init = |seg: &shm_core::Segment| {
                let c = seg.get(ctrl_r)?;
                c.config.capacity.store(cap, Ordering::Relaxed);
                c.config.initial.store(initial, Ordering::Relaxed);
                c.config
                    .claim_timeout_ns
                    .store(timeout.as_nanos() as u64, Ordering::Relaxed);
                c.tail.pos.store(initial, Ordering::Relaxed);
                c.head.pos.store(initial, Ordering::Relaxed);
                let slots = seg.region_ptr(slots_r)?;
                for i in 0..cap {
                    let pos = initial.wrapping_add(i);
                    let index = (pos & (cap - 1)) as usize;
                    // SAFETY: `index < cap`, inside the checked slot region; inside
                    // `create_with` nobody else can see the segment.
                    let slot = unsafe { &*slots.as_ptr().add(index) };
                    slot.seq.store(seq_of(pos, FREE), Ordering::Relaxed);
                }
                Ok::<_, shm_core::RegionError>(())
            };
            let builder = self.seg_builder()?.layout(&l);
            let seg = if open_existing {
                builder.open_or_create_bounded(init, |seg| {
                    mem::needed_data_len::<Control, Slot<T>>(seg, 1, cap_of)
                })?
            } else {
                builder.create_with(init)?
            };
            if !seg.is_creator() {
                return self.ring(Mem::open_segment(seg, &self.name, 1, cap_of)?, false);
            }
            let mem =
                Mem::over_segment(seg, cap, ctrl_r, slots_r).map_err(|e| RingError::Corrupted {
                    name: self.name.clone(),
                    what: format!("the new segment lacks its regions: {e}"),
                })?;
            self.ring(mem, true)
        }

        fn ring(&self, mem: Mem<Control, Slot<T>>, created: bool) -> Result<Ring<T>, RingError> {
            Ok(Ring {
                mem,
                name: self.name.clone(),
                created,
            })
        }

        /// Opens an existing ring segment, checking kind, payload type and layout.
        ///
        /// # Errors
        ///
        /// The segment's `Open` error, or `Corrupted`.
        pub fn open(&self) -> Result<Ring<T>, RingError> {
            check_payload::<T>(&self.name)?;
            let cap_of = |c: &Control| c.config.capacity.load(Ordering::Relaxed);
            // Only the header and the control block are read before the file's length is
            // checked against what the recorded capacity needs (a planted file far larger
            // than that is refused, never faulted in).
            let seg = self
                .seg_builder()?
                .open_bounded(|seg| mem::needed_data_len::<Control, Slot<T>>(seg, 1, cap_of))?;
            self.ring(Mem::open_segment(seg, &self.name, 1, cap_of)?, false)
        }

        /// Opens the ring if it exists, else creates it. When many processes race, exactly
        /// one creates and initialises it ([`Ring::is_creator`] says which) and the others
        /// open what it published. A ring that existed keeps its creator's options (capacity
        /// included: [`Ring::capacity`] tells); kind, payload type and layout are checked as
        /// by `open`. Never waits for the name (see [`wait_for_name`](Self::wait_for_name)):
        /// a missing ring is created.
        ///
        /// # Errors
        ///
        /// As [`create`](Self::create) and [`open`](Self::open). A creator that fails
        /// removes its half-made segment and the others try again, for up to the open
        /// timeout of the segment options.
        pub fn open_or_create(&self) -> Result<Ring<T>, RingError> {
            self.create_or_open(true)
        }
    }

    /// Creates the MPMC ring `name` for `T` with at least `capacity` slots.
    ///
    /// # Errors
    ///
    /// See [`Builder::create`].
    pub fn create<T: Pod + TypeIdentity>(name: &str, capacity: u64) -> Result<Ring<T>, RingError> {
        Builder::new(name).capacity(capacity).create()
    }

    /// Opens the MPMC ring `name` for `T` if it exists, else creates it with at least
    /// `capacity` slots; exactly one of many racing processes creates it.
    ///
    /// # Errors
    ///
    /// See [`Builder::open_or_create`].
    pub fn open_or_create<T: Pod + TypeIdentity>(
        name: &str,
        capacity: u64,
    ) -> Result<Ring<T>, RingError> {
        Builder::new(name).capacity(capacity).open_or_create()
    }

    /// Opens the MPMC ring `name` for `T`.
    ///
    /// # Errors
    ///
    /// See [`Builder::open`].
    pub fn open<T: Pod + TypeIdentity>(name: &str) -> Result<Ring<T>, RingError> {
        Builder::new(name).open()
    }
}

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
