//! Named MPMC ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, Options};
use shm_core::{Kind, TypeIdentity};
use std::marker::PhantomData;

/// Options for creating or opening an MPMC ring segment.
pub struct Builder<T> {
    opts: Options,
    claim_timeout: Duration,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod + TypeIdentity> Builder<T> {
    /// Options for the ring `name` (capacity 1024, schema id 0, claim timeout
    /// [`DEFAULT_CLAIM_TIMEOUT`]).
    pub fn new(name: &str) -> Builder<T> {
        Builder {
            opts: Options::new(name),
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
            _t: PhantomData,
        }
    }

    /// How long a claimed but unfinished slot may stall the others (clamped to
    /// 1 ms ..= 60 s). Stored in the ring, so every process uses the creator's.
    pub fn claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
        self
    }

    crate::named::builder_options!();

    fn named(&self) -> Named<'_> {
        self.opts.named::<T>(Kind::Mpmc, MPMC_LAYOUT_VERSION)
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
        check_payload::<T>(&self.opts.name)?;
        let (initial, timeout) = (self.opts.initial_position, self.claim_timeout);
        let (mem, created) = self.named().create_or_open(
            open_existing,
            |c: &Control| c.config.capacity.load(Ordering::Relaxed),
            |c: &Control, slots: std::ptr::NonNull<Slot<T>>, cap| {
                c.config.capacity.store(cap, Ordering::Relaxed);
                c.config.initial.store(initial, Ordering::Relaxed);
                c.config
                    .claim_timeout_ns
                    .store(timeout.as_nanos() as u64, Ordering::Relaxed);
                c.tail.pos.store(initial, Ordering::Relaxed);
                c.head.pos.store(initial, Ordering::Relaxed);
                for i in 0..cap {
                    let pos = initial.wrapping_add(i);
                    let index = (pos & (cap - 1)) as usize;
                    // SAFETY: `index < cap`, inside the checked slot region; inside
                    // `create_with` nobody else can see the segment.
                    let slot = unsafe { &*slots.as_ptr().add(index) };
                    slot.seq.store(seq_of(pos, FREE), Ordering::Relaxed);
                }
            },
        )?;
        Ok(Ring {
            mem,
            name: self.opts.name.clone(),
            created,
        })
    }

    /// Opens an existing ring segment, checking kind, payload type and layout.
    ///
    /// # Errors
    ///
    /// The segment's `Open` error, or `Corrupted`.
    pub fn open(&self) -> Result<Ring<T>, RingError> {
        check_payload::<T>(&self.opts.name)?;
        let mem = self
            .named()
            .open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
        Ok(Ring {
            mem,
            name: self.opts.name.clone(),
            created: false,
        })
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

crate::named::ring_functions!("MPMC");
