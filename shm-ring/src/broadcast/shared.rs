//! Named broadcast ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::Named;
use shm_core::{Fingerprint, Kind, SegmentBuilder, TypeIdentity};

/// Options for creating or opening a broadcast ring segment.
pub struct Builder<T> {
    name: String,
    capacity: u64,
    policy: Policy,
    untether: Option<Duration>,
    schema_id: u64,
    segment: Option<SegmentBuilder>,
    name_wait: Option<Duration>,
    initial_position: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod + TypeIdentity> Builder<T> {
    /// Options for the ring `name` (capacity 1024, [`Policy::Overwrite`], no untether
    /// timeout, schema id 0).
    pub fn new(name: &str) -> Builder<T> {
        Builder {
            name: name.to_owned(),
            capacity: 1024,
            policy: Policy::Overwrite,
            untether: None,
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

    /// What the publisher does when the slowest subscriber is a ring behind. Recorded in
    /// the segment: every process uses the creator's.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Back-pressure: how long a live subscriber that does not move may hold the
    /// publisher back before it is evicted (clamped to 1 ms ..= 1 hour; default: never).
    /// Recorded in the segment.
    pub fn untether_timeout(mut self, timeout: Duration) -> Self {
        self.untether = Some(clamp_untether(timeout));
        self
    }

    /// A number telling payload types of equal size and alignment apart.
    pub fn schema_id(mut self, id: u64) -> Self {
        self.schema_id = id;
        self
    }

    /// Segment options (mode, mlock, ...). Kind, fingerprint and size are the ring's.
    pub fn segment(mut self, options: SegmentBuilder) -> Self {
        self.segment = Some(options);
        self
    }

    /// How long [`open`](Self::open) waits for the name to appear (default: no wait).
    pub fn wait_for_name(mut self, wait: Duration) -> Self {
        self.name_wait = Some(wait);
        self
    }

    /// Test hook: start `tail` at `pos` to exercise wrap-around.
    #[doc(hidden)]
    pub fn initial_position(mut self, pos: u64) -> Self {
        self.initial_position = pos;
        self
    }

    fn named(&self) -> Named<'_> {
        Named {
            name: &self.name,
            requested: self.capacity,
            kind: Kind::Broadcast,
            fingerprint: Fingerprint::of::<T>(self.schema_id, BROADCAST_LAYOUT_VERSION),
            segment: self.segment.as_ref(),
            name_wait: self.name_wait,
        }
    }

    /// Creates the ring segment.
    ///
    /// # Errors
    ///
    /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`, or the segment's `Create`
    /// error.
    pub fn create(&self) -> Result<Ring<T>, RingError> {
        self.create_or_open(false)
    }

    fn create_or_open(&self, open_existing: bool) -> Result<Ring<T>, RingError> {
        crate::spsc::check_payload::<T>(&self.name)?;
        let (initial, policy) = (self.initial_position, self.policy);
        let untether_ns = self.untether.map_or(0, |d| d.as_nanos() as u64);
        let (mem, created) = self.named().create_or_open(
            open_existing,
            |c: &Control| c.config.capacity.load(Ordering::Relaxed),
            |c: &Control, slots: std::ptr::NonNull<Slot<T>>, cap| {
                c.config.capacity.store(cap, Ordering::Relaxed);
                c.config.initial.store(initial, Ordering::Relaxed);
                c.config.policy.store(policy.as_raw(), Ordering::Relaxed);
                c.config.untether_ns.store(untether_ns, Ordering::Relaxed);
                c.config.publisher_since.store(initial, Ordering::Relaxed);
                c.publisher.tail.store(initial, Ordering::Relaxed);
                for i in 0..cap {
                    let pos = initial.wrapping_add(i);
                    let index = (pos & (cap - 1)) as usize;
                    // SAFETY: `index < cap`, inside the checked slot region; inside
                    // `create_with` nobody else can see the segment.
                    let slot = unsafe { &*slots.as_ptr().add(index) };
                    slot.seq.store(fresh(pos, cap), Ordering::Relaxed);
                }
            },
        )?;
        Ring::from_mem(mem, self.name.clone(), created)
    }

    /// Opens an existing ring segment, checking kind, payload type and layout.
    ///
    /// # Errors
    ///
    /// The segment's `Open` error, or `Corrupted` (an impossible capacity or policy).
    pub fn open(&self) -> Result<Ring<T>, RingError> {
        crate::spsc::check_payload::<T>(&self.name)?;
        let mem = self
            .named()
            .open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
        Ring::from_mem(mem, self.name.clone(), false)
    }

    /// Opens the ring if it exists, else creates it; exactly one of many racing processes
    /// creates it, and a ring that existed keeps its creator's options (policy included).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self) -> Result<Ring<T>, RingError> {
        self.create_or_open(true)
    }
}

/// Creates the broadcast ring `name` for `T` with at least `capacity` slots, under
/// [`Policy::Overwrite`] (see [`Builder`] for back-pressure).
///
/// # Errors
///
/// See [`Builder::create`].
pub fn create<T: Pod + TypeIdentity>(name: &str, capacity: u64) -> Result<Ring<T>, RingError> {
    Builder::new(name).capacity(capacity).create()
}

/// Opens the broadcast ring `name` for `T` if it exists, else creates it (overwrite).
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

/// Opens the broadcast ring `name` for `T`.
///
/// # Errors
///
/// See [`Builder::open`].
pub fn open<T: Pod + TypeIdentity>(name: &str) -> Result<Ring<T>, RingError> {
    Builder::new(name).open()
}
