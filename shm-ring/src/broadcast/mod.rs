//! Broadcast: one publisher, up to [`MAX_SUBSCRIBERS`] subscribers in any processes, and
//! every subscriber receives every message, in order, from its own position.
//!
//! ```
//! use shm_ring::broadcast::{self, Policy, RecvError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-ring-doc-bcast-{}", std::process::id());
//! // The feed process creates the ring and publishes; the publisher never waits.
//! let ring = broadcast::Builder::<u64>::new(&name)
//!     .capacity(4)
//!     .policy(Policy::Overwrite)
//!     .create()?;
//! let mut feed = ring.publisher()?;
//! // Two strategy processes subscribe by name; each gets every message.
//! let mut fast = broadcast::open::<u64>(&name)?.subscribe()?;
//! let mut slow = broadcast::open::<u64>(&name)?.subscribe()?;
//! for tick in 0..6 {
//!     feed.publish(tick)?;
//!     assert_eq!(fast.try_recv(), Ok(tick));
//! }
//! // `slow` read nothing and the ring holds 4: it learns exactly how many it missed,
//! // then goes on from the oldest message still held.
//! assert_eq!(slow.try_recv(), Err(RecvError::Lagged(3)));
//! assert_eq!(slow.try_recv(), Ok(3));
//! // A late subscriber may ask for history.
//! let mut late = ring.subscribe_with_history(2)?;
//! assert_eq!(late.try_recv(), Ok(4));
//! # Ok(()) }
//! ```
//!
//! [`create`] and [`open_or_create`] make an overwrite ring; [`Builder`] sets the policy,
//! the untether timeout and the rest.
//!
//! # The protocol
//!
//! Each slot carries a sequence word: `2p + 1` while the publisher writes position `p`
//! into it, `2p + 2` once `p` is published. The publisher stores the odd word, a Release
//! fence, the value's words (relaxed atomic stores), the even word
//! (Release), then `tail`. A subscriber at position `r` loads the slot's word (Acquire):
//! `2r + 2` means the value is there, and it copies it (relaxed atomic loads), an Acquire
//! fence, and loads the word again: unchanged means the copy is the value published at
//! `r`, never a torn mix; a word past `2r + 2` means the publisher lapped it, and the word
//! says by how much ([`RecvError::Lagged`] with the exact count); a word before it means
//! `r` is not published yet. The subscriber's fast path reads only the slot line: never
//! `tail`, never a line another subscriber writes; the publisher's (under
//! [`Policy::Overwrite`]) reads no line any subscriber writes, except the sleepers' flag
//! line, which a subscriber writes only when it goes to sleep.
//!
//! Under [`Policy::BackPressure`] the publisher does not write position `p` until every
//! attached subscriber's position is past `p - capacity`: it caches the lowest position it
//! saw and scans the [`MAX_SUBSCRIBERS`] records again only when that runs out. A dead
//! subscriber stops holding it back once a liveness check sees it dead; a live one that
//! does not move for the ring's untether timeout (if it has one) is evicted and learns it
//! on its next read ([`RecvError::Evicted`]).
//!
//! Sequence words are 64-bit: positions are told apart for 2^63 messages (292 years at a
//! billion a second).

use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use shm_sync::primitive::{fence, AtomicU64, Ordering};

use crate::end::{self, Attachment, End, EndStatus};
use crate::error::{RingError, Role};
use crate::mem::{self, Mem};
use crate::wait::FlagLine;

pub use crate::error::{PublishError, RecvError};

/// Version of the broadcast control-block layout; part of the segment's fingerprint.
pub const BROADCAST_LAYOUT_VERSION: u64 = 1;

/// Subscriber records in a broadcast ring: at most this many subscribers are attached at
/// once.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Subscriber records in the control block (loom models use 2, to stay small).
pub(crate) const RECORDS: usize = if cfg!(shm_loom) { 2 } else { MAX_SUBSCRIBERS };

/// What the publisher does when the slowest subscriber is a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Never wait: overwrite the oldest message. A subscriber that was lapped gets
    /// [`RecvError::Lagged`] with the exact number it missed, then goes on from the oldest
    /// message still held.
    #[default]
    Overwrite,
    /// Wait for the slowest attached subscriber (a dead one stops holding the publisher
    /// back within the liveness interval; a stalled one after the untether timeout, if the
    /// ring has one).
    BackPressure,
}

impl Policy {
    fn as_raw(self) -> u64 {
        match self {
            Policy::Overwrite => 1,
            Policy::BackPressure => 2,
        }
    }

    fn from_raw(raw: u64) -> Option<Policy> {
        match raw {
            1 => Some(Policy::Overwrite),
            2 => Some(Policy::BackPressure),
            _ => None,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Overwrite => "overwrite",
            Policy::BackPressure => "back-pressure",
        })
    }
}

/// Written by the creator only (and the publisher's end by publishers).
#[repr(C, align(128))]
pub(crate) struct ConfigLine {
    pub capacity: AtomicU64,
    /// The position `tail` started at (0, or a test hook's value).
    pub initial: AtomicU64,
    /// [`Policy::as_raw`].
    pub policy: AtomicU64,
    /// Back-pressure: how long a live subscriber may hold the publisher back before it is
    /// evicted, in nanoseconds; 0 = never.
    pub untether_ns: AtomicU64,
    pub publisher: End,
    /// The position the current publisher attached at.
    pub publisher_since: AtomicU64,
}

/// Written by the publisher only.
#[repr(C, align(128))]
pub(crate) struct PublisherLine {
    /// The next position to publish.
    pub tail: AtomicU64,
    /// `FUTEX_WAKE`s the publisher issued.
    pub wakeups: AtomicU64,
    /// Times a publish found the ring full (back-pressure).
    pub stalls: AtomicU64,
    /// Subscribers evicted (dead, or stalled past the untether timeout).
    pub evictions: AtomicU64,
}

/// One subscriber's record, on a line of its own: written by that subscriber, except
/// `evicted` (the publisher's).
#[repr(C, align(128))]
pub(crate) struct SubscriberLine {
    pub end: End,
    /// The next position this subscriber reads.
    pub pos: AtomicU64,
    /// The position it attached at.
    pub since: AtomicU64,
    /// Messages it missed (lapped), in total.
    pub lagged: AtomicU64,
    /// `EVICTED | generation` once the publisher cut this attachment loose.
    pub evicted: AtomicU64,
    /// `FUTEX_WAKE`s it issued (to a publisher waiting for space).
    pub wakeups: AtomicU64,
}

/// The mark in `SubscriberLine::evicted` (with the attachment's generation below it).
pub(crate) const EVICTED: u64 = 1 << 32;

/// The control block at the start of a broadcast segment's data area:
///
/// | line   | offset | written by           | holds                                     |
/// | ------ | ------ | -------------------- | ----------------------------------------- |
/// | 0      | 0      | creator, publishers  | capacity, initial, policy, untether, publisher end |
/// | 1      | 128    | publisher            | `tail` (next position), wake-ups, stalls, evictions |
/// | 2      | 256    | sleeping subscribers | subscribers waiting                        |
/// | 3      | 384    | a sleeping publisher | publisher waiting (back-pressure)          |
/// | 4..68  | 512    | each subscriber      | its end, position, counters                |
#[repr(C)]
pub(crate) struct Control {
    pub config: ConfigLine,
    pub publisher: PublisherLine,
    pub subscribers_waiting: FlagLine,
    pub publisher_waiting: FlagLine,
    pub subs: [SubscriberLine; RECORDS],
}

#[cfg(not(shm_loom))]
mod layout_checks {
    use super::*;
    use static_assertions::const_assert_eq;
    const_assert_eq!(std::mem::size_of::<Control>(), 128 * (4 + MAX_SUBSCRIBERS));
    const_assert_eq!(std::mem::offset_of!(Control, publisher), 128);
    const_assert_eq!(std::mem::offset_of!(Control, subscribers_waiting), 256);
    const_assert_eq!(std::mem::offset_of!(Control, publisher_waiting), 384);
    const_assert_eq!(std::mem::offset_of!(Control, subs), 512);
    const_assert_eq!(std::mem::size_of::<SubscriberLine>(), 128);
    const_assert_eq!(std::mem::offset_of!(ConfigLine, publisher), 32);
    const_assert_eq!(std::mem::offset_of!(SubscriberLine, pos), 16);
    const_assert_eq!(std::mem::offset_of!(Slot<u8>, value), 8);
}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of `u32`/`u64` atomics only: every bit pattern is valid (impossible
// values are caught as `Corrupted` or ignored), zero is a ring nobody joined, no Drop glue.
unsafe impl shm_core::ShmSafe for Control {}

impl Control {
    fn new(capacity: u64, initial: u64, policy: Policy, untether_ns: u64) -> Control {
        let sub = || SubscriberLine {
            end: End::new(),
            pos: AtomicU64::new(0),
            since: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        };
        Control {
            config: ConfigLine {
                capacity: AtomicU64::new(capacity),
                initial: AtomicU64::new(initial),
                policy: AtomicU64::new(policy.as_raw()),
                untether_ns: AtomicU64::new(untether_ns),
                publisher: End::new(),
                publisher_since: AtomicU64::new(initial),
            },
            publisher: PublisherLine {
                tail: AtomicU64::new(initial),
                wakeups: AtomicU64::new(0),
                stalls: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            },
            subscribers_waiting: FlagLine::new(),
            publisher_waiting: FlagLine::new(),
            subs: std::array::from_fn(|_| sub()),
        }
    }
}

/// The sequence word of a slot while position `p` is written into it.
#[inline]
pub(crate) fn writing(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(1)
}

/// The sequence word of a slot holding position `p`, published.
#[inline]
pub(crate) fn published(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(2)
}

/// The sequence word a fresh slot starts with: position `p - capacity` published, a lap
/// before the first position that lands in it (so it reads as "not yet" for `p`).
#[inline]
pub(crate) fn fresh(p: u64, cap: u64) -> u64 {
    published(p.wrapping_sub(cap))
}

/// One slot: its sequence word and the value, copied in and out only with atomic word
/// accesses (readers copy while the publisher may overwrite).
#[repr(C)]
pub(crate) struct Slot<T> {
    pub seq: AtomicU64,
    value: Value<T>,
}

#[cfg(not(shm_loom))]
#[repr(C, align(8))]
struct Value<T>(std::cell::UnsafeCell<T>);

/// Under loom the value lives in (at most 2) loom atomics, so loom sees every access and a
/// torn copy shows as a mix of two writes.
#[cfg(shm_loom)]
struct Value<T>([AtomicU64; 2], PhantomData<T>);

#[cfg(not(shm_loom))]
// SAFETY: a sequence atomic and a `Pod` value that is only accessed through atomic word
// loads and stores (`mem::atomic_load`/`atomic_store`): any bytes are valid, no Drop glue.
unsafe impl<T: Pod + Send> shm_core::ShmSafe for Slot<T> {}

// SAFETY: the value is only ever accessed through atomic loads and stores of its words, and
// `T: Send` lets it move between threads.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T: Pod> Slot<T> {
    pub(crate) fn new(seq: u64) -> Slot<T> {
        Slot {
            seq: AtomicU64::new(seq),
            #[cfg(not(shm_loom))]
            value: Value(std::cell::UnsafeCell::new(T::zeroed())),
            #[cfg(shm_loom)]
            value: {
                assert!(
                    std::mem::size_of::<T>() <= 16,
                    "loom models of broadcast take values of at most 16 bytes"
                );
                Value(Default::default(), PhantomData)
            },
        }
    }

    /// Stores `v` (the publisher, between the odd and the even sequence word).
    #[inline]
    fn store(&self, v: &T) {
        #[cfg(not(shm_loom))]
        // SAFETY: the value is a live, aligned `T` inside the ring's memory, and every party
        // accesses it only with `atomic_load`/`atomic_store` words.
        unsafe {
            mem::atomic_store(self.value.0.get(), v)
        };
        #[cfg(shm_loom)]
        for (i, chunk) in bytemuck::bytes_of(v).chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.value.0[i].store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }

    /// Copies the value out (a subscriber, between its two loads of the sequence word).
    #[inline]
    fn load(&self) -> T {
        #[cfg(not(shm_loom))]
        // SAFETY: as in `store`.
        return unsafe { mem::atomic_load(self.value.0.get()) };
        #[cfg(shm_loom)]
        {
            let mut out = T::zeroed();
            for (i, chunk) in bytemuck::bytes_of_mut(&mut out).chunks_mut(8).enumerate() {
                let w = self.value.0[i].load(Ordering::Relaxed).to_ne_bytes();
                chunk.copy_from_slice(&w[..chunk.len()]);
            }
            out
        }
    }
}

/// Adds one (or `n`) to a counter only one side writes: a load and a store.
#[inline]
fn bump_by(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// A broadcast ring in memory, not yet joined: take its [`publisher`](Ring::publisher)
/// end, or [`subscribe`](Ring::subscribe). Cloning it is cheap.
#[derive(Clone)]
pub struct Ring<T> {
    mem: Mem<Control, Slot<T>>,
    name: String,
    created: bool,
    policy: Policy,
    untether: Option<Duration>,
    initial: u64,
}

/// One subscriber as a third process sees it ([`BroadcastStats::subscribers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Its record (0 ..= [`MAX_SUBSCRIBERS`] - 1).
    pub index: usize,
    /// Its end: who holds the record, alive or not.
    pub end: EndStatus,
    /// The next position it reads.
    pub position: u64,
    /// Messages published that it has not read (`tail - position`, saturating).
    pub lag: u64,
    /// Messages it received since it attached.
    pub received: u64,
    /// Messages it missed (lapped) since it attached.
    pub lagged: u64,
    /// Whether the publisher cut it loose (back-pressure, untether timeout or death).
    pub evicted: bool,
}

/// A snapshot of a broadcast ring's counters, readable from any process
/// ([`Ring::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastStats {
    /// Slots in the ring.
    pub capacity: u64,
    /// The policy it was created with (`None` if the recorded one is impossible).
    pub policy: Option<Policy>,
    /// Next position to publish.
    pub tail: u64,
    /// Messages published since creation.
    pub published: u64,
    /// Times a publish found the ring full (back-pressure).
    pub full_stalls: u64,
    /// Subscribers the publisher evicted.
    pub evictions: u64,
    /// `FUTEX_WAKE` calls issued by the publisher and the subscribers.
    pub wakeups: u64,
    /// The publisher end.
    pub publisher: EndStatus,
    /// The attached subscribers (records whose end is attached), by record.
    pub subscribers: Vec<SubscriberStats>,
}

pub(crate) fn stats_of(c: &Control) -> BroadcastStats {
    // Acquire: pairs with the publisher's Release stores of `tail`.
    let tail = c.publisher.tail.load(Ordering::Acquire);
    let initial = c.config.initial.load(Ordering::Relaxed);
    let mut wakeups = c.publisher.wakeups.load(Ordering::Relaxed);
    let mut subscribers = Vec::new();
    for (index, s) in c.subs.iter().enumerate() {
        let status = s.end.status();
        wakeups = wakeups.wrapping_add(s.wakeups.load(Ordering::Relaxed));
        if !matches!(status, EndStatus::Attached { .. }) {
            continue;
        }
        let position = s.pos.load(Ordering::Relaxed);
        // Not counted on the hot path: a subscriber's position moves by one per message
        // received and by `n` per `Lagged(n)`, so received = position - since - lagged
        // (0 while a joining subscriber's words are not all stored yet).
        let lagged = s.lagged.load(Ordering::Relaxed);
        let received = position
            .wrapping_sub(s.since.load(Ordering::Relaxed))
            .wrapping_sub(lagged);
        let received = if received > 1 << 62 { 0 } else { received };
        let gen = s.end.gen.load(Ordering::Relaxed);
        subscribers.push(SubscriberStats {
            index,
            end: status,
            position,
            lag: (tail.wrapping_sub(position) as i64).max(0) as u64,
            received,
            lagged,
            evicted: s.evicted.load(Ordering::Relaxed) == EVICTED | u64::from(gen),
        });
    }
    BroadcastStats {
        capacity: c.config.capacity.load(Ordering::Relaxed),
        policy: Policy::from_raw(c.config.policy.load(Ordering::Relaxed)),
        tail,
        published: tail.wrapping_sub(initial),
        full_stalls: c.publisher.stalls.load(Ordering::Relaxed),
        evictions: c.publisher.evictions.load(Ordering::Relaxed),
        wakeups,
        publisher: c.config.publisher.status(),
        subscribers,
    }
}

/// The policy and untether timeout a control block records, checked.
fn config_of(name: &str, c: &Control) -> Result<(Policy, Option<Duration>, u64), RingError> {
    let raw = c.config.policy.load(Ordering::Relaxed);
    let policy = Policy::from_raw(raw).ok_or_else(|| RingError::Corrupted {
        name: name.to_owned(),
        what: format!("policy {raw} is neither overwrite (1) nor back-pressure (2)"),
    })?;
    let ns = c.config.untether_ns.load(Ordering::Relaxed);
    let untether = (ns != 0).then(|| Duration::from_nanos(ns));
    Ok((policy, untether, c.config.initial.load(Ordering::Relaxed)))
}

/// The untether timeout's range: 1 ms ..= 1 hour.
pub(crate) fn clamp_untether(d: Duration) -> Duration {
    d.clamp(Duration::from_millis(1), Duration::from_secs(3600))
}

impl<T: Pod> Ring<T> {
    /// A ring on the heap, for threads of one process (and for Miri and loom): the same
    /// algorithm without a segment. `capacity` is rounded up to a power of two.
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`.
    pub fn in_process(
        capacity: u64,
        policy: Policy,
        untether: Option<Duration>,
    ) -> Result<Ring<T>, RingError> {
        let untether_ns = untether.map_or(0, |d| clamp_untether(d).as_nanos() as u64);
        let mem = mem::in_process_mem::<T, _, _>(
            capacity,
            |cap| Control::new(cap, 0, policy, untether_ns),
            |i, cap| Slot::new(fresh(i, cap)),
        )?;
        Ring::from_mem(mem, mem::IN_PROCESS.to_owned(), true)
    }

    crate::handles::ring_accessors!(BroadcastStats);

    /// A ring over `mem`, just created or opened (`created` says which), once the policy
    /// and untether timeout it records are checked.
    pub(crate) fn from_mem(
        mem: Mem<Control, Slot<T>>,
        name: String,
        created: bool,
    ) -> Result<Ring<T>, RingError> {
        let (policy, untether, initial) = config_of(&name, mem.ctrl())?;
        Ok(Ring {
            mem,
            name,
            created,
            policy,
            untether,
            initial,
        })
    }

    /// The policy the ring was created with.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The untether timeout the ring was created with (back-pressure only).
    pub fn untether_timeout(&self) -> Option<Duration> {
        self.untether
    }

    /// Test hook: the control block's address in this process (its layout is the one
    /// documented on the type), for tests that play a hostile peer.
    #[doc(hidden)]
    #[cfg(not(shm_loom))]
    pub fn raw_control(&self) -> *mut u8 {
        (self.mem.ctrl() as *const Control).cast_mut().cast::<u8>()
    }
}

/// The attachment of a subscriber: its record and generation, where it starts, and the
/// history it asked for and got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Its record (0 ..= [`MAX_SUBSCRIBERS`] - 1).
    pub index: usize,
    /// The generation of this attachment of the record.
    pub generation: u32,
    /// The position of its first message.
    pub position: u64,
    /// Messages of history it receives first (published before it attached).
    pub history: u64,
    /// The pid of the dead subscriber whose record it took over, if any.
    pub took_over_from: Option<u32>,
}

mod publisher;
#[cfg(not(shm_loom))]
mod shared;
mod subscriber;

pub use publisher::Publisher;
#[cfg(not(shm_loom))]
pub use shared::{create, open, open_declared, open_or_create, Builder};
pub use subscriber::Subscriber;
