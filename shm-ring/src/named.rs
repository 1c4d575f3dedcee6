//! What every named ring kind shares: creating, opening and open-or-creating its segment
//! (each kind's `shared.rs` holds only its builder's options and its control block's
//! initial values).

use std::ptr::NonNull;
use std::time::Duration;

use shm_core::{Fingerprint, Kind, SegmentBuilder, ShmSafe};

use crate::error::RingError;
use crate::mem::{self, Mem};

/// One ring's segment, as its builder describes it.
pub(crate) struct Named<'a> {
    pub name: &'a str,
    /// Slots asked for (rounded up to a power of two).
    pub requested: u64,
    pub kind: Kind,
    pub fingerprint: Fingerprint,
    pub segment: Option<&'a SegmentBuilder>,
    pub name_wait: Option<Duration>,
}

impl Named<'_> {
    fn builder(&self) -> Result<SegmentBuilder, RingError> {
        let b = crate::segment_options(self.name, self.segment, self.name_wait)?;
        Ok(b.kind(self.kind).fingerprint(self.fingerprint))
    }

    /// Creates the segment (or, `open_existing`, opens it if it exists), with `init`
    /// filling a new one's control block and slots (`init(ctrl, slots, capacity)`, called
    /// while nobody else can see the segment). Returns the memory and whether we created
    /// it; an opened segment's recorded capacity (`cap_of`) is checked before any slot is
    /// touched.
    pub fn create_or_open<C: ShmSafe, S>(
        &self,
        open_existing: bool,
        cap_of: fn(&C) -> u64,
        init: impl Fn(&C, NewSlots<S>, u64),
    ) -> Result<(Mem<C, S>, bool), RingError> {
        let cap = crate::spsc::round_capacity(self.name, self.requested)?;
        let (l, ctrl_r, slots_r) =
            mem::ring_layout::<C, S>(cap).map_err(|_| RingError::CapacityTooLarge {
                name: self.name.to_owned(),
                requested: self.requested,
            })?;
        let fill = |seg: &shm_core::Segment| {
            let c = seg.get(ctrl_r)?;
            let slots = seg.region_ptr(slots_r)?;
            init(c, NewSlots { first: slots, cap }, cap);
            Ok::<_, shm_core::RegionError>(())
        };
        let builder = self.builder()?.layout(&l);
        let seg = if open_existing {
            builder
                .open_or_create_bounded(fill, |seg| mem::needed_data_len::<C, S>(seg, 1, cap_of))?
        } else {
            builder.create_with(fill)?
        };
        if !seg.is_creator() {
            return Ok((Mem::open_segment(seg, self.name, 1, cap_of)?, false));
        }
        let mem =
            Mem::over_segment(seg, cap, ctrl_r, slots_r).map_err(|e| RingError::Corrupted {
                name: self.name.to_owned(),
                what: format!("the new segment lacks its regions: {e}"),
            })?;
        Ok((mem, true))
    }

    /// Opens the segment, checking its kind, payload type and layout. Only the header and
    /// the control block are read before the file's length is checked against what the
    /// recorded capacity needs (a planted file far larger than that is refused, never
    /// faulted in).
    pub fn open<C: ShmSafe, S>(&self, cap_of: fn(&C) -> u64) -> Result<Mem<C, S>, RingError> {
        let seg = self
            .builder()?
            .open_bounded(|seg| mem::needed_data_len::<C, S>(seg, 1, cap_of))?;
        Mem::open_segment(seg, self.name, 1, cap_of)
    }
}

/// A new segment's slots, lent to its kind's `init` while nobody else can see them.
pub(crate) struct NewSlots<S> {
    /// Slot 0 of `cap` (a power of two) slots inside the segment's checked slot region.
    first: NonNull<S>,
    cap: u64,
}

impl<S> NewSlots<S> {
    /// Calls `f(slot, pos)` for each slot and the position `pos` that first uses it, from
    /// `initial` on: to store each slot's first sequence word.
    pub fn each_from(&self, initial: u64, f: impl Fn(&S, u64)) {
        let cap = self.cap;
        for i in 0..cap {
            let pos = initial.wrapping_add(i);
            let index = (pos & (cap - 1)) as usize;
            // SAFETY: `index < cap`, inside the slot region `create_or_open` lent us; slots
            // hold only atomics and cells, so a shared reference to one is sound.
            f(unsafe { &*self.first.as_ptr().add(index) }, pos);
        }
    }
}

/// The options every ring kind's builder has, and the setters for them
/// ([`builder_options!`]).
pub(crate) struct Options {
    pub name: String,
    pub capacity: u64,
    pub schema_id: u64,
    pub segment: Option<SegmentBuilder>,
    pub name_wait: Option<Duration>,
    pub initial_position: u64,
}

impl Options {
    /// The defaults: capacity 1024, schema id 0, the default segment options, no wait.
    pub fn new(name: &str) -> Options {
        Options {
            name: name.to_owned(),
            capacity: 1024,
            schema_id: 0,
            segment: None,
            name_wait: None,
            initial_position: 0,
        }
    }

    /// The segment these options describe, for payload `T` of kind `kind` and layout
    /// `version`.
    pub fn named<T: shm_core::TypeIdentity>(&self, kind: Kind, version: u64) -> Named<'_> {
        Named {
            name: &self.name,
            requested: self.capacity,
            kind,
            fingerprint: Fingerprint::of::<T>(self.schema_id, version),
            segment: self.segment.as_ref(),
            name_wait: self.name_wait,
        }
    }
}

/// The setters of [`Options`] and the `create`, `open` and `open_or_create` of a builder
/// whose field `opts` holds them, for segments of kind `$kind`, layout `$version`. The
/// kind supplies `init` (a new segment's first values), `Control` (whose
/// `config.capacity` records the capacity) and `Ring::from_mem`.
macro_rules! builder_options {
    (@common $kind:expr, $version:expr, $ring:ty, $check:expr) => {
        fn named(&self) -> Named<'_> {
            self.opts.named::<T>($kind, $version)
        }

        /// Creates the ring segment.
        ///
        /// # Errors
        ///
        /// `ZeroCapacity`, `CapacityTooLarge`, `ZeroSizedPayload`, or the segment's
        /// `Create` error (e.g. `AlreadyExists`).
        pub fn create(&self) -> Result<$ring, RingError> {
            self.create_or_open(false)
        }

        /// Opens an existing ring segment, checking its kind, payload type and layout.
        ///
        /// # Errors
        ///
        /// The segment's `Open` error (a wrong kind or payload type is a mismatch error
        /// that says expected vs found), or `Corrupted` if its control block is
        /// impossible.
        pub fn open(&self) -> Result<$ring, RingError> {
            crate::spsc::check_payload::<T>(&self.opts.name)?;
            let mem = self.named().open(Self::recorded_capacity)?;
            Ring::from_mem(mem, self.opts.name.clone(), false)
        }

        /// Opens the ring if it exists, else creates it. When many processes race,
        /// exactly one creates and initialises it ([`Ring::is_creator`] says which) and
        /// the others open what it published. A ring that existed keeps its creator's
        /// options (capacity included: [`Ring::capacity`] tells); kind, payload type and
        /// layout are checked as by `open`. Never waits for the name (see
        /// [`wait_for_name`](Self::wait_for_name)): a missing ring is created.
        ///
        /// # Errors
        ///
        /// As [`create`](Self::create) and [`open`](Self::open). A creator that fails
        /// removes its half-made segment and the others try again, for up to the open
        /// timeout of the segment options.
        pub fn open_or_create(&self) -> Result<$ring, RingError> {
            self.create_or_open(true)
        }

        /// `create`, or (`open_existing`) `open_or_create`: one path, so that a ring made
        /// by either is the same ring.
        fn create_or_open(&self, open_existing: bool) -> Result<$ring, RingError> {
            crate::spsc::check_payload::<T>(&self.opts.name)?;
            let check: fn(&Self) -> Result<(), RingError> = $check;
            if let Err(e) = check(self) {
                // Our options could not make the ring; one that exists is opened as it is.
                return match open_existing {
                    true => self.open().map_err(|_| e),
                    false => Err(e),
                };
            }
            let (mem, created) =
                self.named()
                    .create_or_open(open_existing, Self::recorded_capacity, self.init())?;
            Ring::from_mem(mem, self.opts.name.clone(), created)
        }

        /// The capacity a segment's control block records (checked against the file's
        /// length on open).
        fn recorded_capacity(c: &Control) -> u64 {
            c.config.capacity.load(std::sync::atomic::Ordering::Relaxed)
        }

        /// A number telling payload types of equal size and alignment apart; opening with
        /// another is a fingerprint error.
        pub fn schema_id(mut self, id: u64) -> Self {
            self.opts.schema_id = id;
            self
        }

        /// Segment options (mode, mlock, huge pages, open timeout, unlink on drop). Kind,
        /// fingerprint and size are set by the ring.
        ///
        /// The options name the ring's own name or another: one with another name makes
        /// `create`, `open` and `open_or_create` fail with
        /// [`RingError::NameConflict`](crate::RingError::NameConflict).
        pub fn segment(mut self, options: shm_core::SegmentBuilder) -> Self {
            self.opts.segment = Some(options);
            self
        }

        /// How long [`open`](Self::open) waits for the name to appear, for a reader
        /// started before its writer (default: no wait, a missing ring is `NotFound` at
        /// once). See [`SegmentBuilder::wait_for_name`](shm_core::SegmentBuilder::wait_for_name).
        pub fn wait_for_name(mut self, wait: std::time::Duration) -> Self {
            self.opts.name_wait = Some(wait);
            self
        }

        /// Test hook: start the positions at `pos` (e.g. near `u64::MAX`) to exercise
        /// wrap-around.
        #[doc(hidden)]
        pub fn initial_position(mut self, pos: u64) -> Self {
            self.opts.initial_position = pos;
            self
        }
    };
    ($kind:expr, $version:expr) => {
        /// Slots wanted; rounded up to a power of two.
        pub fn capacity(mut self, capacity: u64) -> Self {
            self.opts.capacity = capacity;
            self
        }

        crate::named::builder_options!(@common $kind, $version, Ring<T>, |_: &Self| Ok(()));
    };
    ($kind:expr, $version:expr, bytes, $check:expr) => {
        /// Bytes wanted; rounded up to a power of two.
        pub fn capacity(mut self, bytes: u64) -> Self {
            self.opts.capacity = bytes.div_ceil(8);
            self
        }

        crate::named::builder_options!(@common $kind, $version, Ring, $check);
    };
}
pub(crate) use builder_options;

/// A kind's `create`, `open_or_create` and `open` functions, over its `Builder`.
macro_rules! ring_functions {
    ($kind:literal) => {
        #[doc = concat!("Creates the ", $kind, " ring `name` for `T` with at least `capacity` slots")]
        /// (the builder's other defaults).
        ///
        /// # Errors
        ///
        /// See [`Builder::create`].
        pub fn create<T: bytemuck::Pod + shm_core::TypeIdentity>(
            name: &str,
            capacity: u64,
        ) -> Result<Ring<T>, crate::RingError> {
            Builder::new(name).capacity(capacity).create()
        }

        #[doc = concat!("Opens the ", $kind, " ring `name` for `T` if it exists, else creates it with")]
        /// at least `capacity` slots; exactly one of many racing processes creates it.
        ///
        /// # Errors
        ///
        /// See [`Builder::open_or_create`].
        pub fn open_or_create<T: bytemuck::Pod + shm_core::TypeIdentity>(
            name: &str,
            capacity: u64,
        ) -> Result<Ring<T>, crate::RingError> {
            Builder::new(name).capacity(capacity).open_or_create()
        }

        #[doc = concat!("Opens the ", $kind, " ring `name` for `T`.")]
        ///
        /// # Errors
        ///
        /// See [`Builder::open`].
        pub fn open<T: bytemuck::Pod + shm_core::TypeIdentity>(
            name: &str,
        ) -> Result<Ring<T>, crate::RingError> {
            Builder::new(name).open()
        }
    };
}
pub(crate) use ring_functions;
