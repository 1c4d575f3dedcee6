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
    self, sleep_on_peer, Attachment, Deaths, End, EndStatus, FlagTarget, LivenessTimer,
    PeerAttachment, PeerWatch, Sleeper, CLOSED,
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
#[derive(Clone)]
pub struct Ring<T> {
    mem: Mem<Control, Slot<T>>,
    name: String,
    created: bool,
    _t: PhantomData<fn() -> T>,
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
        let mem = crate::mem::in_process_mem::<T, _, _>(
            capacity,
            |cap| Control::new(cap, 0),
            |_, _| UnsafeCell::new(T::zeroed()),
        )?;
        Self::from_mem(mem, crate::mem::IN_PROCESS.to_owned(), true)
    }

    /// A ring over `mem`, just created or opened (`created` says which).
    pub(crate) fn from_mem(
        mem: Mem<Control, Slot<T>>,
        name: String,
        created: bool,
    ) -> Result<Ring<T>, RingError> {
        Ok(Ring {
            mem,
            name,
            created,
            _t: PhantomData,
        })
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
        let (generation, was) = c
            .config
            .producer
            .claim_role(me, &self.name, Role::Producer)?;
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
        let attachment = Attachment::claimed(generation, was, tail, tail.wrapping_sub(head));
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
        let (generation, was) = c
            .config
            .consumer
            .claim_role(me, &self.name, Role::Consumer)?;
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
            skipped,
            ..Attachment::claimed(generation, was, head, tail.wrapping_sub(head))
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

    crate::handles::ring_accessors!(RingStats);
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

mod consumer;
mod producer;
#[cfg(not(shm_loom))]
mod shared;

pub use consumer::ReadChunk;
pub use producer::WriteChunk;
#[cfg(not(shm_loom))]
pub use shared::{create, open, open_or_create, Builder};
