//! Named MPMC ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, NewSlots, Options};
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

    crate::named::builder_options!(Kind::Mpmc, MPMC_LAYOUT_VERSION);

    /// A new segment's control block, and each slot free for the first lap.
    fn init(&self) -> impl Fn(&Control, NewSlots<Slot<T>>, u64) {
        let (initial, timeout) = (self.opts.initial_position, self.claim_timeout);
        move |c, slots, cap| {
            c.config.capacity.store(cap, Ordering::Relaxed);
            c.config.initial.store(initial, Ordering::Relaxed);
            c.config
                .claim_timeout_ns
                .store(timeout.as_nanos() as u64, Ordering::Relaxed);
            c.tail.pos.store(initial, Ordering::Relaxed);
            c.head.pos.store(initial, Ordering::Relaxed);
            slots.each_from(initial, |slot: &Slot<T>, pos| {
                slot.seq.store(seq_of(pos, FREE), Ordering::Relaxed)
            });
        }
    }
}

crate::named::ring_functions!("MPMC");
