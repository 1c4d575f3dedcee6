//! Named broadcast ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, NewSlots, Options};
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

    crate::named::builder_options!(Kind::Broadcast, BROADCAST_LAYOUT_VERSION);

    /// A new segment's control block, and each slot's sequence word for the first lap.
    fn init(&self) -> impl Fn(&Control, NewSlots<Slot<T>>, u64) {
        let (initial, policy) = (self.opts.initial_position, self.policy);
        let untether_ns = self.untether.map_or(0, |d| d.as_nanos() as u64);
        move |c, slots, cap| {
            c.config.capacity.store(cap, Ordering::Relaxed);
            c.config.initial.store(initial, Ordering::Relaxed);
            c.config.policy.store(policy.as_raw(), Ordering::Relaxed);
            c.config.untether_ns.store(untether_ns, Ordering::Relaxed);
            c.config.publisher_since.store(initial, Ordering::Relaxed);
            c.publisher.tail.store(initial, Ordering::Relaxed);
            slots.each_from(initial, |slot: &Slot<T>, pos| {
                slot.seq.store(fresh(pos, cap), Ordering::Relaxed)
            });
        }
    }
}

crate::named::ring_functions!("broadcast");
