//! Reading a ring's counters from outside it (for `shmring inspect` and monitoring), without
//! knowing its payload type and without joining either end.

use shm_core::{Kind, Region, SegmentBuilder, HEADER_SIZE};

use crate::{broadcast, log, mpmc, spsc, RingError};

/// The counters of a ring segment, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingInfo {
    /// An SPSC ring.
    Spsc(spsc::RingStats),
    /// An MPMC ring, and who holds its endpoints.
    Mpmc(mpmc::MpmcStats, mpmc::MpmcEnds),
    /// A broadcast ring, with each attached subscriber's position and lag.
    Broadcast(broadcast::BroadcastStats),
    /// A byte log, with its consumer and producers.
    Log(log::LogStats),
}

/// Reads the counters of the ring segment `name` without joining it: the segment is opened
/// with the kind and fingerprint its own header declares, only the control block is read
/// (never a slot), and nothing is written. `Ok(None)` for a segment that is not a ring
/// (raw or sync).
///
/// The counters are a snapshot of words other processes keep changing; each is read once.
///
/// # Errors
///
/// The segment's open errors (missing, stale, truncated, not a shmring segment, ...), or
/// `Corrupted` if it was written by another version of the ring layout.
pub fn inspect(name: &str) -> Result<Option<RingInfo>, RingError> {
    let info = shm_core::inspect(name)?;
    let corrupted = |what: String| RingError::Corrupted {
        name: name.to_owned(),
        what,
    };
    let Some(header) = info.header else {
        return Err(corrupted(format!(
            "the file is {} bytes, too short for a header",
            info.file_len
        )));
    };
    let (kind, version) = match header.kind() {
        Some(k @ Kind::Spsc) => (k, spsc::SPSC_LAYOUT_VERSION),
        Some(k @ Kind::Mpmc) => (k, mpmc::MPMC_LAYOUT_VERSION),
        Some(k @ Kind::Broadcast) => (k, broadcast::BROADCAST_LAYOUT_VERSION),
        Some(k @ Kind::Log) => (k, log::LOG_LAYOUT_VERSION),
        _ => return Ok(None),
    };
    let found = header.fingerprint.layout_version;
    if found != version {
        return Err(corrupted(format!(
            "its {} layout version is {found}, this library reads {version}",
            kind.name()
        )));
    }
    // Opening runs every header check (magic, version, READY, length == file length); the
    // fingerprint is the one the header declares, so any payload type is accepted.
    let seg = SegmentBuilder::new(name)
        .kind(kind)
        .fingerprint(header.fingerprint)
        .allow_foreign_owner(true)
        .open()?;
    let control = |e| corrupted(format!("no room for the control block: {e}"));
    Ok(Some(match kind {
        Kind::Spsc => RingInfo::Spsc(spsc::stats_of(control_block(&seg).map_err(&control)?)),
        Kind::Log => RingInfo::Log(log::stats_of(control_block(&seg).map_err(&control)?)),
        Kind::Broadcast => {
            RingInfo::Broadcast(broadcast::stats_of(control_block(&seg).map_err(&control)?))
        }
        _ => {
            let c = control_block::<mpmc::Control>(&seg).map_err(&control)?;
            RingInfo::Mpmc(mpmc::stats_of(c), mpmc::ends_of(c))
        }
    }))
}

/// The control block right after the header, of the kind's own type.
fn control_block<C: shm_core::ShmSafe>(
    seg: &shm_core::Segment,
) -> Result<&C, shm_core::RegionError> {
    seg.get(Region::<C>::from_raw(HEADER_SIZE as u64, 1))
}
