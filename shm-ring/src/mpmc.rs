//! A bounded multi-producer multi-consumer ring between any number of processes.
//!
//! Each slot carries a sequence number (after Vyukov's bounded MPMC queue), extended with
//! two *marked* states so that a slot is never given up while a live process may still be
//! writing or reading it. For a slot at position `pos` (index `pos & (capacity - 1)`;
//! capacity >= 4 keeps these values distinct):
//!
//! | `seq`            | state                                                          |
//! | ---------------- | -------------------------------------------------------------- |
//! | `pos`            | free; once `tail > pos`, claimed by a producer, not yet marked |
//! | `pos + 2`        | WRITING: the producer named in `writer` is writing the value   |
//! | `pos + 1`        | published; once `head > pos`, claimed by a consumer, not marked |
//! | `pos + 3`        | READING: the consumer named in `reader` is reading the value   |
//! | `pos + capacity` | released: free for the producer of the next lap                |
//!
//! A producer claims `pos` by moving `tail`, marks the slot WRITING with a compare-exchange
//! from `pos`, writes, and publishes. A consumer claims `pos` by moving `head`, marks it
//! READING with a compare-exchange from `pos + 1`, reads, and releases.
//!
//! **A peer killed (or stalled) mid-operation.** The marks make every give-up safe:
//! - A claim that was never marked (the claimant stopped between its claim and its mark,
//!   one instruction) is given up after the ring's *claim timeout*: consumers skip an
//!   unmarked producer claim (`seq` from `pos` to `pos + capacity`, then `head` past it;
//!   [`MpmcStats::skipped`]), producers reclaim an unmarked consumer claim
//!   ([`MpmcStats::reclaimed`]). The claimant, if it was only stalled, then fails its mark
//!   and gets [`PushError::Expired`] (with its value: nothing was written) or
//!   [`PopError::Expired`] (nothing was read; that message is lost, and counted).
//! - A marked slot is given up only when the process named in `writer`/`reader` is dead
//!   (pid + start time), checked after the claim timeout: a live writer or reader is waited
//!   for, however slow, so no value is ever overwritten while read or read while written.
//! - A consumer killed between its skip's two steps leaves `seq` released with `head` on
//!   the slot; the next consumer finishes the skip for it.
//!
//! The claim timeout (default [`DEFAULT_CLAIM_TIMEOUT`]) bounds how long a dead peer can
//! stall the others.

use std::time::{Duration, Instant};

use bytemuck::Pod;
use shm_sync::primitive::{AtomicU32, AtomicU64, Ordering};

use crate::end::{self, End, LivenessTimer, PeerWatch, LIVENESS_INTERVAL};
use crate::error::{PopError, PushError, RingError, Role};
use crate::mem::{self, Mem, UnsafeCell};
use crate::spsc::{check_payload, round_capacity, FlagLine};
use crate::wait::{self, Deadline, WaitStrategy};

/// Version of the MPMC control-block layout; part of the segment's fingerprint.
pub const MPMC_LAYOUT_VERSION: u64 = 2;
/// How long a claimed but unfinished slot may stall the others before they move on.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_millis(100);
/// Most producers (and, separately, consumers) attached at once.
pub const MAX_ENDPOINTS: usize = 32;

const CLOSED_CLEANLY: u32 = 1;
const DIED: u32 = 2;

/// A slot: its sequence number and the value.
#[repr(C)]
pub(crate) struct Slot<T> {
    seq: AtomicU64,
    /// Identity (pid << 32 | start time) of the producer that marked the slot WRITING.
    writer: AtomicU64,
    /// Identity of the consumer that marked the slot READING.
    reader: AtomicU64,
    value: UnsafeCell<T>,
}

/// Offsets of the marked states from a slot's position.
const PUBLISHED: u64 = 1;
const WRITING: u64 = 2;
const READING: u64 = 3;

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
    /// Reserved (the live count is computed from `ends`).
    _reserved0: AtomicU32,
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
    const_assert_eq!(std::mem::size_of::<Slot<u64>>(), 32);
}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of `u32`/`u64` atomics only: any bytes are valid (impossible values
// are reported as `Corrupted`), zero is an empty table, no Drop glue.
unsafe impl shm_core::ShmSafe for Control {}

impl Side {
    fn new() -> Side {
        Side {
            _reserved0: AtomicU32::new(0),
            ever: AtomicU32::new(0),
            last_departure: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            ends: std::array::from_fn(|_| End::new()),
        }
    }

    /// Claims a free (or dead) endpoint slot; returns its index.
    fn attach(&self, me: u64) -> Option<usize> {
        for (i, e) in self.ends.iter().enumerate() {
            let w = e.owner.load(Ordering::Relaxed);
            if w != 0 && !end::is_dead(w) {
                continue;
            }
            if w != 0 {
                // A dead holder we reap on the way.
                if e.owner
                    .compare_exchange(w, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    self.last_departure.store(DIED, Ordering::Relaxed);
                } else {
                    continue;
                }
            }
            if e.claim(me).is_ok() {
                // Release, after the claim: pairs with the Acquire load of `ever` in `gone`,
                // so whoever sees `ever` set also sees this endpoint's owner word (loom found
                // a false "disconnected" when `ever` was set first).
                self.ever.store(1, Ordering::Release);
                return Some(i);
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
            if watch.is_dead(w)
                && e.owner
                    .compare_exchange(w, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.last_departure.store(DIED, Ordering::Relaxed);
            }
        }
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
        // what an endpoint that detached published is visible once we see it gone. A word
        // zeroed by `reap` (a dead owner) pairs with nothing: what a dead producer published
        // is found through the slots' own Release/Acquire `seq`, which the caller re-reads
        // (`after_empty` drains before it reports the departure).
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
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            mem: self.mem.clone(),
            name: self.name.clone(),
        }
    }
}

/// Checks the ring's claim timeout (read once at join; garbage is clamped, not trusted).
fn claim_timeout(c: &Control) -> Duration {
    let ns = c.config.claim_timeout_ns.load(Ordering::Relaxed);
    Duration::from_nanos(ns).clamp(Duration::from_millis(1), Duration::from_secs(60))
}

impl<T: Pod> Ring<T> {
    /// A ring on the heap for threads of one process (and Miri, and loom).
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`.
    pub fn in_process(capacity: u64) -> Result<Ring<T>, RingError> {
        let name = "(in-process)";
        check_payload::<T>(name)?;
        let cap = round_capacity(name, capacity)?.max(4);
        let ctrl = Control::new(cap, 0, DEFAULT_CLAIM_TIMEOUT);
        let mem = mem::Heap::new_mem(ctrl, cap, |i| Slot {
            seq: AtomicU64::new(i),
            writer: AtomicU64::new(0),
            reader: AtomicU64::new(0),
            value: UnsafeCell::new(T::zeroed()),
        })
        .ok_or(RingError::CapacityTooLarge {
            name: name.to_owned(),
            requested: capacity,
        })?;
        Ok(Ring {
            mem,
            name: name.to_owned(),
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
        let index = c.producers.attach(me).ok_or(RingError::TooManyEndpoints {
            name: self.name.clone(),
            role: Role::Producer,
            max: MAX_ENDPOINTS,
        })?;
        Ok(Producer {
            ring: self.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            claim_timeout: claim_timeout(c),
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peers: Box::new(std::array::from_fn(|_| PeerWatch::new())),
            stuck: None,
        })
    }

    /// Joins as one more consumer.
    ///
    /// # Errors
    ///
    /// `TooManyEndpoints` if [`MAX_ENDPOINTS`] live consumers are attached.
    pub fn consumer(&self) -> Result<Consumer<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let index = c.consumers.attach(me).ok_or(RingError::TooManyEndpoints {
            name: self.name.clone(),
            role: Role::Consumer,
            max: MAX_ENDPOINTS,
        })?;
        Ok(Consumer {
            ring: self.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            index,
            claim_timeout: claim_timeout(c),
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peers: Box::new(std::array::from_fn(|_| PeerWatch::new())),
            stuck: None,
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

    /// The counters, read without joining.
    pub fn stats(&self) -> MpmcStats {
        stats_of(self.mem.ctrl())
    }
}

/// One of an MPMC ring's producers.
pub struct Producer<T> {
    ring: Ring<T>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    claim_timeout: Duration,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Liveness watches on the consumers' endpoint slots (boxed: 32 of them).
    peers: Box<[PeerWatch; MAX_ENDPOINTS]>,
    /// A position whose slot a consumer claimed but has not released, and since when.
    stuck: Option<(u64, Instant)>,
}

/// One of an MPMC ring's consumers.
pub struct Consumer<T> {
    ring: Ring<T>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    index: usize,
    claim_timeout: Duration,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Liveness watches on the producers' endpoint slots (boxed: 32 of them).
    peers: Box<[PeerWatch; MAX_ENDPOINTS]>,
    /// A position a producer claimed but has not published, and since when.
    stuck: Option<(u64, Instant)>,
}

/// Whether the process that marked a slot (its identity word) is certainly gone. A zero
/// (never written: garbage, as every mark is preceded by the identity store) counts as gone.
fn claimant_dead(word: u64) -> bool {
    word == 0 || end::is_dead(word)
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

/// Whether `since` is older than `timeout`, tracking the position we are stuck on.
fn stuck_too_long(stuck: &mut Option<(u64, Instant)>, pos: u64, timeout: Duration) -> bool {
    if cfg!(shm_loom) {
        return false;
    }
    let now = Instant::now();
    match *stuck {
        Some((p, since)) if p == pos => now.duration_since(since) >= timeout,
        _ => {
            *stuck = Some((pos, now));
            false
        }
    }
}

impl<T: Pod> Producer<T> {
    /// Sets how blocking pushes wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
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
            // Acquire: pairs with the consumer's Release of `seq` (its read of the previous
            // lap's value happens before we overwrite it).
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == pos {
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
                crate::fault_point!("mpmc-producer-claimed");
                slot.writer.store(self.me, Ordering::Relaxed);
                // Mark WRITING. Release: the `writer` store above is visible to whoever
                // sees the mark. Fails only if consumers skipped our unmarked claim after
                // the claim timeout: then nothing is written and the value is handed back.
                if slot
                    .seq
                    .compare_exchange(
                        pos,
                        pos.wrapping_add(WRITING),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    return Attempt::Failed(Failure::Expired);
                }
                // SAFETY: the slot is marked WRITING by us: no consumer reads it before we
                // publish, and it is given up only once we are dead.
                unsafe { mem::write(&slot.value, *value) };
                crate::fault_point!("mpmc-producer-written");
                // Release: publishes the value; pairs with the consumer's Acquire load of
                // `seq`. Only the marker moves a slot out of WRITING while it lives.
                slot.seq
                    .store(pos.wrapping_add(PUBLISHED), Ordering::Release);
                crate::fault_point!("mpmc-producer-published");
                self.stuck = None;
                if wait::wake_if_waiting(self.registered, &c.consumers_waiting, 1) {
                    c.tail.wakeups.fetch_add(1, Ordering::Relaxed);
                }
                return Attempt::Done(());
            }
            if seq.wrapping_sub(pos) <= READING {
                // Another producer claimed `pos` this lap; move on (re-reading: persistent
                // impossible values are called corruption after MAX_RETRIES).
                pos = c.tail.pos.load(Ordering::Relaxed);
                shm_sync::primitive::spin_hint();
                continue;
            }
            // The previous lap's slot is still in use.
            let lap = pos.wrapping_sub(cap);
            let state = seq.wrapping_sub(lap);
            if !check_claims && (state == PUBLISHED || state == READING) {
                return Attempt::Blocked;
            }
            if state == PUBLISHED {
                // Relaxed: the Acquire load of `seq` above already keeps this load after
                // it, and `head` is only ever written by Relaxed CASes: nothing to pair with.
                let head = c.head.pos.load(Ordering::Relaxed);
                let claimed = head.wrapping_sub(lap).wrapping_sub(1) < cap;
                if claimed && stuck_too_long(&mut self.stuck, pos, self.claim_timeout) {
                    // A consumer claimed it but never marked it: reclaim (its mark will
                    // fail, so it never reads a slot we rewrite).
                    self.stuck = None;
                    // Acquire: pairs with the Release publish of the previous lap's value
                    // (we are about to overwrite it; its consumer never marked it).
                    if slot
                        .seq
                        .compare_exchange(seq, pos, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        c.tail.expired.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                return Attempt::Blocked;
            }
            if state == READING {
                if stuck_too_long(&mut self.stuck, pos, self.claim_timeout) {
                    self.stuck = None;
                    let reader = slot.reader.load(Ordering::Relaxed);
                    // Acquire (on the CAS below): pairs with the dead reader's Release mark,
                    // so its mark and everything before it happen before our rewrite. Its
                    // reads of the value after the mark are not ordered by this: they cannot
                    // overlap our rewrite only because the reader is dead (a process the
                    // kernel has reaped issues no more loads).
                    if claimant_dead(reader)
                        && slot
                            .seq
                            .compare_exchange(seq, pos, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        // The reader died mid-read: its claim is void.
                        c.tail.expired.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                return Attempt::Blocked;
            }
            if state == 0 || state == WRITING {
                // The previous lap's producer is not done: the ring is full (consumers give
                // up that claim if its producer is gone).
                return Attempt::Blocked;
            }
            pos = c.tail.pos.load(Ordering::Relaxed);
            shm_sync::primitive::spin_hint();
        }
    }

    /// Pushes if there is room. Never blocks.
    ///
    /// # Errors
    ///
    /// `Full`; when full also `Disconnected` / `PeerDied` (all consumers gone); `Expired`
    /// (see the module docs); `Corrupted`. The value comes back.
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if !self.origin.is_current() {
            return Err(PushError::Forked(value));
        }
        match self.attempt(&value, true) {
            Attempt::Done(()) => Ok(()),
            Attempt::Failed(f) => Err(fail_push(f, value)),
            Attempt::Blocked => {
                let c = self.ring.mem.ctrl();
                c.tail.stalls.fetch_add(1, Ordering::Relaxed);
                match self.consumers_gone() {
                    Some(f) => Err(fail_push(f, value)),
                    None => Err(PushError::Full(value)),
                }
            }
        }
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
        // Fast path first: no deadline to build when there is room.
        match self.attempt(&value, false) {
            Attempt::Done(()) => Ok(()),
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
        self.push_until(value, Deadline::after(Some(timeout)))
    }

    fn push_until(&mut self, value: T, deadline: Deadline) -> Result<(), PushError<T>> {
        loop {
            let strategy = self.strategy;
            let mut outcome = None;
            wait::spin(strategy, wait::MPMC_POLL_PAUSES, || {
                match self.attempt(&value, false) {
                    Attempt::Blocked => None,
                    other => {
                        outcome = Some(other);
                        Some(())
                    }
                }
            });
            // Once per spin budget, the full check: full, or a consumer claim stuck past
            // the claim timeout (which this reclaims).
            match outcome.unwrap_or_else(|| self.attempt(&value, true)) {
                Attempt::Done(()) => return Ok(()),
                Attempt::Failed(f) => return Err(fail_push(f, value)),
                Attempt::Blocked => {}
            }
            self.ring
                .mem
                .ctrl()
                .tail
                .stalls
                .fetch_add(1, Ordering::Relaxed);
            if let Some(f) = self.consumers_gone() {
                return Err(fail_push(f, value));
            }
            if deadline.passed() {
                return Err(PushError::Timeout(value));
            }
            if strategy == WaitStrategy::SpinThenPark {
                let c = self.ring.mem.ctrl();
                let head = c.head.pos.load(Ordering::Relaxed);
                // While a claim is pending, sleep in short slices to re-check its timeout.
                let slice = if self.stuck.is_some() {
                    Duration::from_millis(1)
                } else {
                    LIVENESS_INTERVAL
                };
                let tail = c.tail.pos.load(Ordering::Relaxed);
                wait::park(
                    &c.producers_waiting,
                    deadline.slice(slice),
                    || {
                        // Relaxed: a hint to skip the sleep; `attempt` re-reads with Acquire.
                        c.head.pos.load(Ordering::Relaxed) != head
                            || self.ring.mem.slot(tail).seq.load(Ordering::Relaxed) == tail
                            || c.consumers.gone().is_some()
                    },
                    || None,
                );
                self.liveness.expire();
            }
        }
    }

    /// Pushes as many of `values` as fit now, in order; returns how many.
    pub fn push_slice(&mut self, values: &[T]) -> usize {
        for (i, v) in values.iter().enumerate() {
            if self.try_push(*v).is_err() {
                return i;
            }
        }
        values.len()
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
    /// Sets how blocking pops wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
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
            // Acquire: pairs with the producer's Release publish of `seq`.
            let seq = slot.seq.load(Ordering::Acquire);
            let state = seq.wrapping_sub(pos);
            if state == PUBLISHED {
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
            if state == 0 || state == WRITING {
                if !check_claims {
                    return Attempt::Blocked;
                }
                // Relaxed: the Acquire load of `seq` above already keeps this load after
                // it, and `tail` is only ever written by Relaxed CASes: nothing to pair with.
                let tail = c.tail.pos.load(Ordering::Relaxed);
                if state == 0 && tail == pos {
                    return Attempt::Blocked; // empty
                }
                if tail.wrapping_sub(pos).wrapping_sub(1) >= cap {
                    // A stale `pos`, a read that raced, or garbage: re-read (bounded).
                    pos = c.head.pos.load(Ordering::Relaxed);
                    shm_sync::primitive::spin_hint();
                    continue;
                }
                // A producer claimed `pos` and has not published it.
                if !stuck_too_long(&mut self.stuck, pos, self.claim_timeout) {
                    return Attempt::Blocked;
                }
                self.stuck = None;
                // Give it up only if unmarked, or marked by a dead writer.
                if state == WRITING && !claimant_dead(slot.writer.load(Ordering::Relaxed)) {
                    return Attempt::Blocked;
                }
                // Relaxed: the claim is unmarked (nobody touched the value) or its writer is
                // dead (its last stores were complete when the kernel reaped it), so no
                // live process accesses the value; the next lap's producer orders its own
                // writes after its Acquire load of the `seq` we store.
                if slot
                    .seq
                    .compare_exchange(
                        seq,
                        pos.wrapping_add(cap),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    c.head.expired.fetch_add(1, Ordering::Relaxed);
                    crate::fault_point!("mpmc-consumer-skipping");
                    self.finish_skip(pos);
                    self.wake_producers();
                }
                pos = c.head.pos.load(Ordering::Relaxed);
                continue;
            }
            if state.wrapping_sub(cap) <= READING {
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
            let prev = seq.wrapping_sub(pos.wrapping_sub(cap));
            if (prev == PUBLISHED || prev == READING) && c.head.pos.load(Ordering::Relaxed) == pos {
                // The previous lap's item is still claimed (or being read) by a consumer
                // that has not released it: a stalled one, or a dead one whose claim the
                // producers give up after the claim timeout. Nothing is ready at `pos` yet.
                return Attempt::Blocked;
            }
            // READING (another consumer has it), a later lap, or garbage: re-read.
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
        slot.reader.store(self.me, Ordering::Relaxed);
        // Mark READING. Release: the `reader` store is visible with the mark. Fails only
        // if producers reclaimed our unmarked claim after the claim timeout: then we read
        // nothing (the slot may be rewritten) and report it.
        if slot
            .seq
            .compare_exchange(
                pos.wrapping_add(PUBLISHED),
                pos.wrapping_add(READING),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Attempt::Failed(Failure::Expired);
        }
        // SAFETY: the slot is marked READING by us: no producer writes it until we release
        // it, and it is given up only once we are dead.
        let v = unsafe { mem::read(&slot.value) };
        crate::fault_point!("mpmc-consumer-read");
        // Release: our read happens before the next lap's producer writes; pairs with the
        // producer's Acquire load of `seq`.
        slot.seq.store(pos.wrapping_add(cap), Ordering::Release);
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

    /// Pops if an item is ready. Never blocks.
    ///
    /// # Errors
    ///
    /// `Empty`; once drained with every producer gone, `Disconnected` / `PeerDied`;
    /// `Expired` (see the module docs); `Corrupted`.
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        if !self.origin.is_current() {
            return Err(PopError::Forked);
        }
        match self.attempt(true) {
            Attempt::Done(v) => Ok(v),
            Attempt::Failed(f) => Err(fail_pop(f)),
            Attempt::Blocked => self.after_empty(),
        }
    }

    fn after_empty(&mut self) -> Result<T, PopError> {
        self.ring
            .mem
            .ctrl()
            .head
            .stalls
            .fetch_add(1, Ordering::Relaxed);
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
            Attempt::Done(v) => Ok(v),
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
            let strategy = self.strategy;
            let mut outcome = None;
            wait::spin(strategy, wait::MPMC_POLL_PAUSES, || {
                match self.attempt(false) {
                    Attempt::Blocked => None,
                    other => {
                        outcome = Some(other);
                        Some(())
                    }
                }
            });
            // Once per spin budget, the full check: empty, or a claim stuck past the claim
            // timeout (which this gives up).
            match outcome.unwrap_or_else(|| self.attempt(true)) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Failed(f) => return Err(fail_pop(f)),
                Attempt::Blocked => {}
            }
            match self.after_empty() {
                Err(PopError::Empty) => {}
                other => return other,
            }
            if deadline.passed() {
                return Err(PopError::Timeout);
            }
            if strategy == WaitStrategy::SpinThenPark {
                let c = self.ring.mem.ctrl();
                let tail = c.tail.pos.load(Ordering::Relaxed);
                let head = c.head.pos.load(Ordering::Relaxed);
                let slice = if self.stuck.is_some() {
                    Duration::from_millis(1)
                } else {
                    LIVENESS_INTERVAL
                };
                wait::park(
                    &c.consumers_waiting,
                    deadline.slice(slice),
                    || {
                        // Relaxed: a hint to skip the sleep; `attempt` re-reads with Acquire.
                        c.tail.pos.load(Ordering::Relaxed) != tail
                            || self.ring.mem.slot(head).seq.load(Ordering::Relaxed)
                                == head.wrapping_add(1)
                            || c.producers.gone().is_some()
                    },
                    || None,
                );
                self.liveness.expire();
            }
        }
    }

    /// Pops as many items as are ready into `out`, in order; returns how many.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        for (i, o) in out.iter_mut().enumerate() {
            match self.try_pop() {
                Ok(v) => *o = v,
                Err(_) => return i,
            }
        }
        out.len()
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
pub use shared::{create, open, Builder};

#[cfg(not(shm_loom))]
mod shared {
    use super::*;
    use shm_core::{Fingerprint, Kind, SegmentBuilder};
    use std::marker::PhantomData;

    /// Options for creating or opening an MPMC ring segment.
    pub struct Builder<T> {
        name: String,
        capacity: u64,
        schema_id: u64,
        claim_timeout: Duration,
        segment: Option<SegmentBuilder>,
        initial_position: u64,
        _t: PhantomData<fn() -> T>,
    }

    impl<T: Pod> Builder<T> {
        /// Options for the ring `name` (capacity 1024, schema id 0, claim timeout
        /// [`DEFAULT_CLAIM_TIMEOUT`]).
        pub fn new(name: &str) -> Builder<T> {
            Builder {
                name: name.to_owned(),
                capacity: 1024,
                schema_id: 0,
                claim_timeout: DEFAULT_CLAIM_TIMEOUT,
                segment: None,
                initial_position: 0,
                _t: PhantomData,
            }
        }

        /// Slots wanted; rounded up to a power of two, and at least 4.
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
        pub fn segment(mut self, options: SegmentBuilder) -> Self {
            self.segment = Some(options);
            self
        }

        /// Test hook: start both positions at `pos` to exercise wrap-around.
        #[doc(hidden)]
        pub fn initial_position(mut self, pos: u64) -> Self {
            self.initial_position = pos;
            self
        }

        fn seg_builder(&self) -> SegmentBuilder {
            self.segment
                .clone()
                .unwrap_or_else(|| SegmentBuilder::new(&self.name))
                .kind(Kind::Mpmc)
                .fingerprint(Fingerprint::of::<T>(self.schema_id, MPMC_LAYOUT_VERSION))
        }

        /// Creates the ring segment.
        ///
        /// # Errors
        ///
        /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`, or the segment's
        /// `Create` error.
        pub fn create(&self) -> Result<Ring<T>, RingError> {
            check_payload::<T>(&self.name)?;
            // The five slot states (free, writing, published, reading, released) need
            // distinct sequence values: four slots at least.
            let cap = round_capacity(&self.name, self.capacity)?.max(4);
            let (l, ctrl_r, slots_r) = mem::ring_layout::<Control, Slot<T>>(cap).map_err(|_| {
                RingError::CapacityTooLarge {
                    name: self.name.clone(),
                    requested: self.capacity,
                }
            })?;
            let (initial, timeout) = (self.initial_position, self.claim_timeout);
            let seg = self.seg_builder().layout(&l).create_with(|seg| {
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
                    slot.seq.store(pos, Ordering::Relaxed);
                }
                Ok::<_, shm_core::RegionError>(())
            })?;
            Ok(Ring {
                mem: Mem::over_segment(seg, cap, ctrl_r, slots_r).map_err(|e| {
                    RingError::Corrupted {
                        name: self.name.clone(),
                        what: format!("the new segment lacks its regions: {e}"),
                    }
                })?,
                name: self.name.clone(),
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
                .seg_builder()
                .open_bounded(|seg| mem::needed_data_len::<Control, Slot<T>>(seg, 4, cap_of))?;
            let mem = Mem::open_segment(seg, &self.name, 4, cap_of)?;
            Ok(Ring {
                mem,
                name: self.name.clone(),
            })
        }
    }

    /// Creates the MPMC ring `name` for `T` with at least `capacity` slots.
    ///
    /// # Errors
    ///
    /// See [`Builder::create`].
    pub fn create<T: Pod>(name: &str, capacity: u64) -> Result<Ring<T>, RingError> {
        Builder::new(name).capacity(capacity).create()
    }

    /// Opens the MPMC ring `name` for `T`.
    ///
    /// # Errors
    ///
    /// See [`Builder::open`].
    pub fn open<T: Pod>(name: &str) -> Result<Ring<T>, RingError> {
        Builder::new(name).open()
    }
}
