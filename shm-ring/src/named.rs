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
        init: impl Fn(&C, NonNull<S>, u64),
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
            init(c, slots, cap);
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
