//! Named broadcast ring segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, NewSlots, Options};
use shm_core::{Fingerprint, Kind, TypeIdentity};

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

/// Opens the broadcast ring `name` as the payload type its creator declared in
/// `fingerprint` (for example the one its header holds, from [`shm_core::inspect`]), each
/// payload viewed as a `T` whose slot has the same size and alignment: for tools that move
/// payloads they do not know as bytes, such as `shmring record` and `replay`.
///
/// The fingerprint is checked against the segment's header as [`open`] checks `T`'s, so
/// a ring of another payload type is refused with both named. `T` is any plain type
/// (`[u64; W]` for a payload of up to `8 * W` bytes aligned to at most 8): received
/// values hold the payload's bytes first, then the slot's padding; publish values whose
/// bytes past the payload's size are zero.
///
/// # Errors
///
/// [`RingError::PayloadView`] if a slot of `T` is not shaped like one of the declared
/// payload (another size class, or an alignment above 8); otherwise as [`Builder::open`].
pub fn open_declared<T: Pod>(name: &str, fingerprint: Fingerprint) -> Result<Ring<T>, RingError> {
    crate::spsc::check_payload::<T>(name)?;
    let view = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    let (size, align) = (fingerprint.payload_size, fingerprint.payload_align);
    // A slot is a sequence word and the payload in an 8-aligned cell; for payloads aligned
    // to at most 8 its size is 8 + the payload's size rounded up to 8.
    let shaped = align.is_power_of_two()
        && align <= 8
        && view.1 <= 8
        && size > 0
        && size.div_ceil(8) == (view.0 as u64).div_ceil(8);
    if !shaped {
        return Err(RingError::PayloadView {
            name: name.to_owned(),
            declared: (size, align),
            view,
        });
    }
    let opts = Options::new(name);
    let named = Named {
        name,
        requested: opts.capacity,
        kind: Kind::Broadcast,
        fingerprint: Fingerprint {
            layout_version: BROADCAST_LAYOUT_VERSION,
            ..fingerprint
        },
        segment: None,
        name_wait: None,
    };
    let mem = named.open(|c: &Control| c.config.capacity.load(Ordering::Relaxed))?;
    Ring::from_mem(mem, name.to_owned(), false)
}
