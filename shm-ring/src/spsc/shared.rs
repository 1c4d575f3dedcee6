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

    crate::named::builder_options!(Kind::Spsc, SPSC_LAYOUT_VERSION);

    /// A new segment's control block; the slots need no first value.
    fn init(&self) -> impl Fn(&Control, crate::named::NewSlots<Slot<T>>, u64) {
        let initial = self.opts.initial_position;
        move |c, _slots, cap| {
            c.config.capacity.store(cap, Ordering::Relaxed);
            c.config.initial.store(initial, Ordering::Relaxed);
            c.tail.pos.store(initial, Ordering::Relaxed);
            c.head.pos.store(initial, Ordering::Relaxed);
        }
    }
}

crate::named::ring_functions!("SPSC");
