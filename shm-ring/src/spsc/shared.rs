//! Named SPSC ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::Named;
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

    fn named(&self) -> Named<'_> {
        Named {
            name: &self.name,
            requested: self.capacity,
            kind: Kind::Spsc,
            fingerprint: Fingerprint::of::<T>(self.schema_id, SPSC_LAYOUT_VERSION),
            segment: self.segment.as_ref(),
            name_wait: self.name_wait,
        }
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
        let initial = self.initial_position;
        let (mem, created) = self.named().create_or_open(
            open_existing,
            |c: &Control| c.config.capacity.load(Ordering::Relaxed),
            |c: &Control, _slots: std::ptr::NonNull<Slot<T>>, cap| {
                c.config.capacity.store(cap, Ordering::Relaxed);
                c.config.initial.store(initial, Ordering::Relaxed);
                c.tail.pos.store(initial, Ordering::Relaxed);
                c.head.pos.store(initial, Ordering::Relaxed);
            },
        )?;
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
        let mem = self
            .named()
            .open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
        Ok(Ring::from_mem(mem, self.name.clone(), false))
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
