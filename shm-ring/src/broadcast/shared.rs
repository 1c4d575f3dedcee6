//! Named broadcast ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, Options};
use shm_core::{Kind, TypeIdentity};

/// Options for creating or opening a broadcast ring segment.
pub struct Builder<T> {
    opts: Options,
    policy: Policy,
    untether: Option<Duration>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod + TypeIdentity> Builder<T> {
    /// Options for the ring `name` (capacity 1024, [`Policy::Overwrite`], no untether
    /// timeout, schema id 0).
    pub fn new(name: &str) -> Builder<T> {
        Builder {
            opts: Options::new(name),
            policy: Policy::Overwrite,
            untether: None,
            _t: PhantomData,
        }
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

    crate::named::builder_options!();

    fn named(&self) -> Named<'_> {
        self.opts
            .named::<T>(Kind::Broadcast, BROADCAST_LAYOUT_VERSION)
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
        crate::spsc::check_payload::<T>(&self.opts.name)?;
        let (initial, policy) = (self.opts.initial_position, self.policy);
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
        Ring::from_mem(mem, self.opts.name.clone(), created)
    }

    /// Opens an existing ring segment, checking kind, payload type and layout.
    ///
    /// # Errors
    ///
    /// The segment's `Open` error, or `Corrupted` (an impossible capacity or policy).
    pub fn open(&self) -> Result<Ring<T>, RingError> {
        crate::spsc::check_payload::<T>(&self.opts.name)?;
        let mem = self
            .named()
            .open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
        Ring::from_mem(mem, self.opts.name.clone(), false)
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

crate::named::ring_functions!("broadcast");
