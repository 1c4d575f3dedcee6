//! A typed single-producer single-consumer ring between two processes.
//!
//! ```
//! use shm_ring::spsc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-ring-doc-spsc-{}", std::process::id());
//! // Process A creates the ring (capacity rounds up to a power of two) and produces.
//! let ring = spsc::create::<u64>(&name, 1000)?;
//! let mut tx = ring.producer()?;
//! // Process B opens it by name and consumes.
//! let mut rx = spsc::open::<u64>(&name)?.consumer()?;
//! tx.try_push(7)?;
//! tx.push_slice(&[8, 9]);
//! assert_eq!(rx.try_pop(), Ok(7));
//! let mut out = [0; 4];
//! assert_eq!(rx.pop_slice(&mut out), 2);
//! assert_eq!(&out[..2], &[8, 9]);
//! assert_eq!(ring.capacity(), 1024);
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use shm_sync::primitive::{AtomicU64, Ordering};

use crate::end::{
    self, Attachment, Deaths, End, EndStatus, FlagTarget, LivenessTimer, PeerAttachment, PeerWatch,
    CLOSED,
};
use crate::error::{Batch, ChunkError, PopError, PushError, RingError, Role};
use crate::mem::{self, Mem, UnsafeCell};
use crate::wait::{self, Deadline, WaitStrategy, Waiter};

/// Version of the SPSC control-block layout; part of the segment's fingerprint.
pub const SPSC_LAYOUT_VERSION: u64 = 2;

/// Immutable configuration and the two endpoint slots.
#[repr(C, align(128))]
pub(crate) struct ConfigLine {
    pub capacity: AtomicU64,
    /// The position both counters started at (0, or a test hook's value).
    pub initial: AtomicU64,
    pub producer: End,
    pub consumer: End,
    /// The position the current producer attached at (its first push's).
    pub producer_since: AtomicU64,
    /// The position the current consumer attached at (after any skip).
    pub consumer_since: AtomicU64,
}

/// A line written by one side only: its position and its counters.
#[repr(C, align(128))]
pub(crate) struct SideLine {
    pub pos: AtomicU64,
    /// Times this side found the ring full (producer) or empty (consumer).
    pub stalls: AtomicU64,
    /// `FUTEX_WAKE`s this side issued.
    pub wakeups: AtomicU64,
}

pub(crate) use crate::wait::FlagLine;

/// The control block at the start of an SPSC segment's data area:
///
/// | line | offset | written by          | holds                                   |
/// | ---- | ------ | ------------------- | --------------------------------------- |
/// | 0    | 0      | creator, attachers  | capacity, initial position, both ends   |
/// | 1    | 128    | producer            | `tail` (next position to write), stalls, wake-ups |
/// | 2    | 256    | consumer            | `head` (next position to read), stalls, wake-ups  |
/// | 3    | 384    | a sleeping consumer | consumers waiting                       |
/// | 4    | 512    | a sleeping producer | producers waiting                       |
///
/// Positions are `u64` counters that only grow (wrapping); slot = `pos & (capacity - 1)`.
/// The ring holds `tail - head` items, at most `capacity`.
#[repr(C)]
pub(crate) struct Control {
    pub config: ConfigLine,
    pub tail: SideLine,
    pub head: SideLine,
    pub consumer_waiting: FlagLine,
    pub producer_waiting: FlagLine,
}

#[cfg(not(shm_loom))]
mod layout_checks {
    use super::*;
    use static_assertions::const_assert_eq;
    const_assert_eq!(std::mem::size_of::<Control>(), 640);
    const_assert_eq!(std::mem::offset_of!(Control, tail), 128);
    const_assert_eq!(std::mem::offset_of!(Control, head), 256);
    const_assert_eq!(std::mem::offset_of!(Control, consumer_waiting), 384);
    const_assert_eq!(std::mem::offset_of!(Control, producer_waiting), 512);
    const_assert_eq!(std::mem::offset_of!(ConfigLine, producer), 16);
    const_assert_eq!(std::mem::offset_of!(ConfigLine, consumer), 32);
    const_assert_eq!(std::mem::offset_of!(ConfigLine, producer_since), 48);
    const_assert_eq!(std::mem::offset_of!(ConfigLine, consumer_since), 56);
}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of `u32`/`u64` atomics only: every bit pattern is valid (garbage
// positions are caught as `Corrupted`), zero is an empty ring with no ends, no Drop glue.
unsafe impl shm_core::ShmSafe for Control {}

impl Control {
    fn new(capacity: u64, initial: u64) -> Control {
        let side = |pos| SideLine {
            pos: AtomicU64::new(pos),
            stalls: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        };
        let end = End::new;
        Control {
            config: ConfigLine {
                capacity: AtomicU64::new(capacity),
                initial: AtomicU64::new(initial),
                producer: end(),
                consumer: end(),
                producer_since: AtomicU64::new(initial),
                consumer_since: AtomicU64::new(initial),
            },
            tail: side(initial),
            head: side(initial),
            consumer_waiting: FlagLine::new(),
            producer_waiting: FlagLine::new(),
        }
    }
}

type Slot<T> = UnsafeCell<T>;

/// Adds one to a counter only this side writes: a load and a store, no locked
/// read-modify-write (the counters are statistics; a racing reader may see either value).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Rounds a requested capacity up to a power of two.
pub(crate) fn round_capacity(name: &str, requested: u64) -> Result<u64, RingError> {
    if requested == 0 {
        return Err(RingError::ZeroCapacity {
            name: name.to_owned(),
        });
    }
    requested
        .checked_next_power_of_two()
        .filter(|&c| c <= 1 << 40)
        .ok_or(RingError::CapacityTooLarge {
            name: name.to_owned(),
            requested,
        })
}

pub(crate) fn check_payload<T>(name: &str) -> Result<(), RingError> {
    if std::mem::size_of::<T>() == 0 {
        return Err(RingError::ZeroSizedPayload {
            name: name.to_owned(),
        });
    }
    if std::mem::align_of::<T>() > 4096 {
        return Err(RingError::PayloadAlignment {
            name: name.to_owned(),
            align: std::mem::align_of::<T>(),
        });
    }
    Ok(())
}

/// A ring in memory, not yet joined: take its [`producer`](Ring::producer) or
/// [`consumer`](Ring::consumer) end. Cloning it is cheap.
pub struct Ring<T> {
    mem: Mem<Control, Slot<T>>,
    name: String,
    created: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            mem: self.mem.clone(),
            name: self.name.clone(),
            created: self.created,
            _t: PhantomData,
        }
    }
}

/// A snapshot of a ring's counters, readable from any process (see [`Ring::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Slots in the ring.
    pub capacity: u64,
    /// Next position to read.
    pub head: u64,
    /// Next position to write.
    pub tail: u64,
    /// Items pushed since creation.
    pub pushes: u64,
    /// Items popped since creation.
    pub pops: u64,
    /// Times a push found the ring full.
    pub full_stalls: u64,
    /// Times a pop found the ring empty.
    pub empty_stalls: u64,
    /// `FUTEX_WAKE` calls issued by both sides.
    pub wakeups: u64,
    /// The producer end.
    pub producer: EndStatus,
    /// The consumer end.
    pub consumer: EndStatus,
}

impl RingStats {
    /// Items in the ring (`tail - head`), as read; 0 if the snapshot has `tail` behind
    /// `head` (only a corrupted or re-created ring, since `head` is read first).
    pub fn len(&self) -> u64 {
        self.tail.saturating_sub(self.head)
    }

    /// Whether the ring was empty when read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn stats_of(c: &Control) -> RingStats {
    let initial = c.config.initial.load(Ordering::Relaxed);
    // Acquire, and first: pairs with the consumer's Release store of `head`, which came
    // after its load of a `tail` at least this far, so the `tail` read next is too.
    let head = c.head.pos.load(Ordering::Acquire);
    let tail = c.tail.pos.load(Ordering::Relaxed);
    RingStats {
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
        producer: c.config.producer.status(),
        consumer: c.config.consumer.status(),
    }
}

impl<T: Pod> Ring<T> {
    /// A ring on the heap, for threads of one process (and for Miri and loom): the same
    /// algorithm without a segment. `capacity` is rounded up to a power of two, as for
    /// every ring (`in_process(1000)` holds 1024; [`capacity`](Self::capacity) says).
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`.
    pub fn in_process(capacity: u64) -> Result<Ring<T>, RingError> {
        let name = "(in-process)";
        check_payload::<T>(name)?;
        let cap = round_capacity(name, capacity)?;
        let mem = mem::Heap::new_mem(Control::new(cap, 0), cap, |_| UnsafeCell::new(T::zeroed()))
            .ok_or(RingError::CapacityTooLarge {
            name: name.to_owned(),
            requested: capacity,
        })?;
        Ok(Ring {
            mem,
            name: name.to_owned(),
            created: true,
            _t: PhantomData,
        })
    }

    #[cfg_attr(shm_loom, allow(dead_code))]
    pub(crate) fn from_mem(mem: Mem<Control, Slot<T>>, name: String, created: bool) -> Ring<T> {
        Ring {
            mem,
            name,
            created,
            _t: PhantomData,
        }
    }

    /// Joins as the producer (with the default [`WaitStrategy`]).
    ///
    /// # Errors
    ///
    /// [`RingError::RoleTaken`] if a live process holds the producer end (a dead one's is
    /// taken over), `Corrupted` if the shared positions are impossible.
    pub fn producer(&self) -> Result<Producer<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (generation, was) =
            c.config
                .producer
                .claim_from(me)
                .map_err(|pid| RingError::RoleTaken {
                    name: self.name.clone(),
                    role: Role::Producer,
                    pid,
                })?;
        // Acquire: pairs with the consumer's Release stores of `head`.
        let head = c.head.pos.load(Ordering::Acquire);
        let tail = c.tail.pos.load(Ordering::Relaxed);
        if tail.wrapping_sub(head) > self.mem.cap() {
            c.config.producer.release(me);
            return Err(RingError::Corrupted {
                name: self.name.clone(),
                what: format!("tail {tail} and head {head} are more than a ring apart"),
            });
        }
        // Relaxed: a report for the consumer (`producer_attachment`), read with the end's
        // generation; nothing is ordered by it (so loom models, which read no report, skip
        // it).
        if !cfg!(shm_loom) {
            c.config.producer_since.store(tail, Ordering::Relaxed);
        }
        let attachment = Attachment {
            generation,
            position: tail,
            backlog: tail.wrapping_sub(head),
            skipped: 0,
            took_over_from: (was != 0).then_some((was >> 32) as u32),
        };
        // A consumer asleep on the empty ring re-arms its watch on the new producer, so
        // that this process's death wakes it.
        if !cfg!(shm_loom) {
            wait::wake(&c.consumer_waiting, u32::MAX);
        }
        let mut p = Producer {
            mem: self.mem.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            tail,
            head_cache: head,
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peer: PeerWatch::new(),
            waiter: Waiter::new(),
            stalled_at: tail.wrapping_sub(1),
            deaths: Deaths::default(),
            watched: u64::MAX,
            deaths_at: 0,
            attachment,
            buffer: false,
        };
        // Arm the exit watch on the consumer attached now (its pidfd, an epoll
        // registration, perhaps the watcher thread): here, not in the first push.
        let _ = p.consumer_exited();
        Ok(p)
    }

    /// Joins as the consumer, receiving whatever the ring holds ([`Resume::Backlog`]):
    /// `consumer_resuming(Resume::Backlog)`.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, RingError> {
        self.consumer_resuming(Resume::Backlog)
    }

    /// Joins as the consumer, taking over the end of a dead one if need be, and choosing
    /// what to do with the items already in the ring: receive them ([`Resume::Backlog`],
    /// for a consumer that must see everything, and may see again what its dead
    /// predecessor had taken but not finished), or skip them ([`Resume::Live`], for one
    /// that wants only what comes from now on, such as a restarted strategy or a gateway
    /// whose old replies answer nothing it asked). [`Consumer::attachment`] says which
    /// positions were which.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer_resuming(&self, resume: Resume) -> Result<Consumer<T>, RingError> {
        let c = self.mem.ctrl();
        let me = end::me();
        let (generation, was) =
            c.config
                .consumer
                .claim_from(me)
                .map_err(|pid| RingError::RoleTaken {
                    name: self.name.clone(),
                    role: Role::Consumer,
                    pid,
                })?;
        let mut head = c.head.pos.load(Ordering::Relaxed);
        // Acquire: pairs with the producer's Release stores of `tail`.
        let tail = c.tail.pos.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.mem.cap() {
            c.config.consumer.release(me);
            return Err(RingError::Corrupted {
                name: self.name.clone(),
                what: format!("tail {tail} and head {head} are more than a ring apart"),
            });
        }
        let mut skipped = 0;
        if resume == Resume::Live && tail != head {
            skipped = tail.wrapping_sub(head);
            head = tail;
            // Release: frees the skipped slots for the producer; pairs with its Acquire
            // loads of `head` (as every pop's store does).
            c.head.pos.store(head, Ordering::Release);
        }
        // Relaxed: a report for the producer (`consumer_attachment`); skipped under loom.
        if !cfg!(shm_loom) {
            c.config.consumer_since.store(head, Ordering::Relaxed);
        }
        let attachment = Attachment {
            generation,
            position: head,
            backlog: tail.wrapping_sub(head),
            skipped,
            took_over_from: (was != 0).then_some((was >> 32) as u32),
        };
        // A producer asleep on the full ring re-arms its watch on the new consumer.
        if !cfg!(shm_loom) {
            wait::wake(&c.producer_waiting, u32::MAX);
        }
        Ok(Consumer {
            mem: self.mem.clone(),
            me,
            origin: shm_core::ThisProcess::now(),
            head,
            tail_cache: tail,
            strategy: WaitStrategy::default(),
            registered: shm_sync::barrier::register(),
            liveness: LivenessTimer::new(),
            peer: PeerWatch::new(),
            waiter: Waiter::new(),
            stalled_at: head.wrapping_sub(1),
            deaths: Deaths::default(),
            attachment,
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

    /// The counters, read without joining (a third process may call this).
    pub fn stats(&self) -> RingStats {
        stats_of(self.mem.ctrl())
    }

    /// Test hook: where slot 0's value lies in this process, the stride between slots, and
    /// the slot count, for tests that play a peer writing into the slots. Touching that
    /// memory other than with atomics is a data race with the ring.
    #[doc(hidden)]
    #[cfg(not(shm_loom))]
    pub fn raw_values(&self) -> (*mut u8, usize, u64) {
        (
            self.mem.slot_ptr(0).cast::<u8>(),
            std::mem::size_of::<Slot<T>>(),
            self.mem.cap(),
        )
    }
}

/// The pushing end of an SPSC ring. `&mut self` methods: one thread at a time.
pub struct Producer<T> {
    mem: Mem<Control, Slot<T>>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    /// Our truth of `tail` (only we write it).
    tail: u64,
    /// The last `head` we read.
    head_cache: u64,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Cheap repeated liveness checks of the other end's process.
    peer: PeerWatch,
    /// The adaptive spin budget and the wait in progress.
    waiter: Waiter,
    /// Our position when we last counted a stall: one stall per wait, not per poll, so a
    /// `try_` loop on a full (empty) ring writes no counter while it spins.
    stalled_at: u64,
    /// Exits of the watched peer, counted by its exit notice.
    deaths: Deaths,
    /// The consumer's owner word when we last looked closer (see `consumer_exited`).
    watched: u64,
    /// `deaths` when we last looked closer; `u64::MAX` once that consumer is known dead.
    deaths_at: u64,
    attachment: Attachment,
    /// Whether pushes go on landing while the consumer is gone (`buffer_while_unattended`).
    buffer: bool,
}

/// The popping end of an SPSC ring. `&mut self` methods: one thread at a time.
pub struct Consumer<T> {
    mem: Mem<Control, Slot<T>>,
    me: u64,
    /// The process that attached; a forked child's copy of the handle acts on nothing.
    origin: shm_core::ThisProcess,
    /// Our truth of `head` (only we write it).
    head: u64,
    /// The last `tail` we read.
    tail_cache: u64,
    strategy: WaitStrategy,
    registered: bool,
    liveness: LivenessTimer,
    /// Cheap repeated liveness checks of the other end's process.
    peer: PeerWatch,
    /// The adaptive spin budget and the wait in progress.
    waiter: Waiter,
    /// Our position when we last counted a stall: one stall per wait, not per poll, so a
    /// `try_` loop on a full (empty) ring writes no counter while it spins.
    stalled_at: u64,
    /// Exits of the watched peer, counted by its exit notice.
    deaths: Deaths,
    attachment: Attachment,
}

/// What a consumer that joins a ring does with the items already in it
/// ([`Ring::consumer_resuming`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Receive them, in order (what [`Ring::consumer`] does).
    #[default]
    Backlog,
    /// Skip them: the first item received is the first pushed after the attach. The
    /// skipped items are counted in [`Attachment::skipped`].
    Live,
}

/// The other end's attachment as `config` records it; `None` if it never attached.
fn peer_attachment(end: &End, since: &AtomicU64) -> Option<PeerAttachment> {
    // Relaxed: reports (the generation is bumped by each claim, `since` stored after it).
    let generation = end.gen.load(Ordering::Relaxed);
    (generation != 0).then(|| PeerAttachment {
        generation,
        since: since.load(Ordering::Relaxed),
    })
}

/// Why a wait for space/items ended without any.
/// Whether the consumer left, as `Producer::consumer_exited` sees it.
enum Left {
    No,
    Died,
    Closed,
}

enum Stop {
    Timeout,
    Disconnected,
    PeerDied,
    Corrupted,
    Interrupted,
}

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

    /// Whether the ring's name still leads to this ring: see `Ring::is_current`.
    #[cfg(not(shm_loom))]
    pub fn is_current(&self) -> bool {
        self.mem.is_current()
    }

    /// Sets how blocking pushes wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets how often a push on a full ring checks that the consumer still runs, when its
    /// death cannot wake it (default [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); see there). Any duration.
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.mem.cap()
    }

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
        if self.liveness.due() && self.consumer_dead() {
            return PushError::PeerDied(value);
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
    fn consumer_exited(&mut self) -> Left {
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
        let word = self
            .mem
            .ctrl()
            .config
            .consumer
            .owner
            .load(Ordering::Relaxed);
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

/// What a waiting SPSC end sleeps with: itself, its peer's end slot, the flag it sleeps on
/// (with what keeps it mapped), and its own liveness state.
struct Sleeper<'a> {
    me: u64,
    peer_end: &'a End,
    flag: FlagTarget<'a>,
    peer: &'a mut PeerWatch,
    deaths: &'a Deaths,
    liveness: &'a mut LivenessTimer,
    waiter: &'a mut Waiter,
}

/// Sleeps on `s.flag` until `moved` (the peer moved its position), the peer closes its end
/// or dies, or the deadline. The peer's death wakes us if a pidfd watches it (its exit
/// notice bumps `deaths` past `seen`, the snapshot taken before the caller's last checks);
/// else we re-check it every liveness interval.
fn sleep_on_peer(s: Sleeper<'_>, deadline: Deadline, seen: u64, moved: impl Fn() -> bool) {
    if s.peer.take_exited() {
        // The peer died while we were not asleep (its notice woke nobody): check it now.
        s.liveness.expire();
        return;
    }
    let word = s.peer_end.owner.load(Ordering::Relaxed);
    let interval = s.liveness.interval();
    let slice = if s.peer.wake_on_exit(word, s.me, &s.flag, s.deaths) {
        interval.max(end::WATCHED_SLICE)
    } else {
        interval
    };
    let (peer_end, deaths, peer) = (s.peer_end, s.deaths, s.peer);
    s.waiter.sleeping();
    wait::park(
        &s.flag,
        deadline.slice(slice),
        || {
            // Relaxed: hints to skip the sleep; the caller re-reads with Acquire. The
            // peer's exit: SeqCst, pairs with the increment in its exit notice.
            // A new owner (an attach whose wake-up came before our read of the epoch)
            // must be watched before we sleep on its death: re-arm.
            moved()
                || peer_end.state.load(Ordering::Relaxed) == CLOSED
                || peer_end.owner.load(Ordering::Relaxed) != word
                || end::deaths_seen(deaths) != seen
        },
        // Between slices: go on sleeping while the deadline is ahead and the peer lives
        // (one pidfd poll per slice; `/proc` where there are no pidfds).
        || {
            let dead = matches!(
                peer_end.status_watched(peer),
                EndStatus::Attached { alive: false, .. }
            );
            (!deadline.passed() && !dead).then(|| deadline.slice(slice))
        },
    );
    s.liveness.expire();
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

    /// Whether the ring's name still leads to this ring: see `Ring::is_current`.
    #[cfg(not(shm_loom))]
    pub fn is_current(&self) -> bool {
        self.mem.is_current()
    }

    /// Sets how blocking pops wait.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sets how often a pop on an empty ring checks that the producer still runs, when its
    /// death cannot wake it (default [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); see there). Any duration.
    pub fn set_liveness_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.mem.cap()
    }

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

#[cfg(not(shm_loom))]
pub use shared::{create, open, open_or_create, Builder};

#[cfg(not(shm_loom))]
mod shared {
    use super::*;
    use shm_core::{Fingerprint, Kind, SegmentBuilder, TypeIdentity};

    /// Options for creating or opening an SPSC ring segment.
    pub struct Builder<T> {
        name: String,
        capacity: u64,
        schema_id: u64,
        segment: Option<SegmentBuilder>,
        name_wait: Option<Duration>,
        initial_position: u64,
        _t: PhantomData<fn() -> T>,
    }

    impl<T: Pod + TypeIdentity> Builder<T> {
        /// Options for the ring `name` (capacity 1024, schema id 0).
        pub fn new(name: &str) -> Builder<T> {
            Builder {
                name: name.to_owned(),
                capacity: 1024,
                schema_id: 0,
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

        /// A number telling payload types of equal size and alignment apart; opening with
        /// another is a fingerprint error.
        pub fn schema_id(mut self, id: u64) -> Self {
            self.schema_id = id;
            self
        }

        /// Segment options (mode, mlock, huge pages, open timeout, unlink on drop). Kind,
        /// fingerprint and size are set by the ring.
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

        /// Test hook: start both positions at `pos` (e.g. near `u64::MAX`) to exercise
        /// wrap-around.
        #[doc(hidden)]
        pub fn initial_position(mut self, pos: u64) -> Self {
            self.initial_position = pos;
            self
        }

        fn fingerprint(&self) -> Fingerprint {
            Fingerprint::of::<T>(self.schema_id, SPSC_LAYOUT_VERSION)
        }

        fn seg_builder(&self) -> Result<SegmentBuilder, RingError> {
            let b = crate::segment_options(&self.name, self.segment.as_ref(), self.name_wait)?;
            Ok(b.kind(Kind::Spsc).fingerprint(self.fingerprint()))
        }

        /// Creates the ring segment.
        ///
        /// # Errors
        ///
        /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`, or the segment's
        /// `Create` error (e.g. `AlreadyExists`).
        pub fn create(&self) -> Result<Ring<T>, RingError> {
            self.create_or_open(false)
        }

        /// `create`, or (`open_existing`) `open_or_create`: one path, so that a ring made
        /// by either is the same ring.
        fn create_or_open(&self, open_existing: bool) -> Result<Ring<T>, RingError> {
            check_payload::<T>(&self.name)?;
            let cap_of = |c: &Control| c.config.capacity.load(Ordering::Relaxed);
            let cap = round_capacity(&self.name, self.capacity)?;
            let too_large = || RingError::CapacityTooLarge {
                name: self.name.clone(),
                requested: self.capacity,
            };
            let (l, ctrl_r, slots_r) =
                mem::ring_layout::<Control, Slot<T>>(cap).map_err(|_| too_large())?;
            let initial = self.initial_position;
            let init = |seg: &shm_core::Segment| {
                let c = seg.get(ctrl_r)?;
                c.config.capacity.store(cap, Ordering::Relaxed);
                c.config.initial.store(initial, Ordering::Relaxed);
                c.tail.pos.store(initial, Ordering::Relaxed);
                c.head.pos.store(initial, Ordering::Relaxed);
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
            Ok(Ring::from_mem(mem, self.name.clone(), created))
        }

        /// Opens an existing ring segment, checking its kind, payload type and layout.
        ///
        /// # Errors
        ///
        /// The segment's `Open` error (wrong kind or type is a mismatch error that says
        /// expected vs found), or `Corrupted` if its control block is impossible.
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

    /// Creates the SPSC ring `name` for `T` with at least `capacity` slots.
    ///
    /// # Errors
    ///
    /// See [`Builder::create`].
    pub fn create<T: Pod + TypeIdentity>(name: &str, capacity: u64) -> Result<Ring<T>, RingError> {
        Builder::new(name).capacity(capacity).create()
    }

    /// Opens the SPSC ring `name` for `T` if it exists, else creates it with at least
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

    /// Opens the SPSC ring `name` for `T`.
    ///
    /// # Errors
    ///
    /// See [`Builder::open`].
    pub fn open<T: Pod + TypeIdentity>(name: &str) -> Result<Ring<T>, RingError> {
        Builder::new(name).open()
    }
}
