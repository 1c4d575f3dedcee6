//! Named SPSC ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, Options};
use shm_core::{Kind, TypeIdentity};

/// Options for creating or opening an SPSC ring segment.
pub struct Builder<T> {
    opts: Options,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod + TypeIdentity> Builder<T> {
    /// Options for the ring `name` (capacity 1024, schema id 0).
    pub fn new(name: &str) -> Builder<T> {
        Builder {
            opts: Options::new(name),
            _t: PhantomData,
        }
    }

    crate::named::builder_options!();

    fn named(&self) -> Named<'_> {
        self.opts.named::<T>(Kind::Spsc, SPSC_LAYOUT_VERSION)
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
        check_payload::<T>(&self.opts.name)?;
        let initial = self.opts.initial_position;
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
        Ok(Ring::from_mem(mem, self.opts.name.clone(), created))
    }

    /// Opens an existing ring segment, checking its kind, payload type and layout.
    ///
    /// # Errors
    ///
    /// The segment's `Open` error (wrong kind or type is a mismatch error that says
    /// expected vs found), or `Corrupted` if its control block is impossible.
    pub fn open(&self) -> Result<Ring<T>, RingError> {
        check_payload::<T>(&self.opts.name)?;
        let mem = self
            .named()
            .open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
        Ok(Ring::from_mem(mem, self.opts.name.clone(), false))
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

crate::named::ring_functions!("SPSC");
