//! Typed regions: `#[repr(C)]` control blocks and arrays placed at aligned offsets inside
//! a segment. Offsets, never pointers, are what gets stored or passed between processes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8};

use crate::header::HEADER_SIZE;

/// Types that may be viewed as `&T` inside shared memory that other processes write.
///
/// # Safety
///
/// Implementors promise that:
/// - the type is `#[repr(C)]` (or a primitive) of fixed-width fields, with the same layout
///   in a 32-bit and a 64-bit process: no `usize`, pointers or references;
/// - every bit pattern, including all zeroes, is a valid value (a crashed or hostile peer
///   may leave any bytes behind);
/// - all access through `&T` to bytes that another process may write at the same time is
///   atomic. Non-atomic access (through an `UnsafeCell`) is allowed only to bytes that the
///   type's own protocol gives one party exclusively, such as a lock's payload while the
///   lock is held. (A hostile peer that ignores the protocol can still race on those
///   bytes; that is why such payloads must be `Pod`: a race can garble them, not make them
///   invalid values);
/// - it has no `Drop` glue (nothing runs when a process unmaps the segment);
/// - its alignment is at most the page size (a mapping is only page-aligned).
pub unsafe trait ShmSafe: Sync {}

macro_rules! shm_safe {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive atomic: fixed width, any bit pattern valid, all access atomic.
        unsafe impl ShmSafe for $t {}
    )*};
}
shm_safe!(AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicI32, AtomicI64);

// SAFETY: an array of `ShmSafe` elements has no padding between elements and inherits each
// element's guarantees.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// `count` values of `T` at `offset` bytes from the segment base.
///
/// A `Region` is only a description; [`Segment::region`](crate::Segment::region) checks it
/// against the mapping (bounds and alignment) every time it turns one into a reference, so a
/// `Region` built from numbers read out of shared memory is safe to use.
pub struct Region<T> {
    offset: u64,
    count: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Region<T> {
    /// A region from raw numbers (e.g. read from a control block); validated on use.
    pub const fn from_raw(offset: u64, count: u64) -> Region<T> {
        Region {
            offset,
            count,
            _t: PhantomData,
        }
    }

    /// Byte offset from the segment base.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of `T`s.
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Size in bytes, if it fits in a `u64`.
    pub fn byte_len(&self) -> Option<u64> {
        self.count.checked_mul(std::mem::size_of::<T>() as u64)
    }
}

impl<T> Clone for Region<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Region<T> {}
impl<T> PartialEq for Region<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset && self.count == other.count
    }
}
impl<T> Eq for Region<T> {}
impl<T> fmt::Debug for Region<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Region<{}> {{ offset: {}, count: {} }}",
            std::any::type_name::<T>(),
            self.offset,
            self.count
        )
    }
}

/// Why a region could not be placed or accessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionError {
    /// The region does not lie inside the segment.
    OutOfBounds {
        /// Region start.
        offset: u64,
        /// Region length in bytes (`None` if it overflowed `u64`).
        len: Option<u64>,
        /// The segment's length.
        segment_len: u64,
    },
    /// The offset is not a multiple of `T`'s alignment.
    Misaligned {
        /// Region start.
        offset: u64,
        /// Required alignment.
        align: u64,
    },
    /// The region overlaps the segment header.
    OverlapsHeader {
        /// Region start.
        offset: u64,
    },
    /// A layout grew past `u64` (or `usize`) arithmetic.
    Overflow,
    /// An alignment that is not a power of two was requested.
    BadAlignment {
        /// The alignment asked for.
        align: u64,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::OutOfBounds {
                offset,
                len: Some(len),
                segment_len,
            } => write!(
                f,
                "region at offset {offset} of {len} bytes does not fit in the {segment_len}-byte segment"
            ),
            RegionError::OutOfBounds {
                offset,
                len: None,
                segment_len,
            } => write!(
                f,
                "region at offset {offset} is larger than any segment (its length overflows; segment is {segment_len} bytes)"
            ),
            RegionError::Misaligned { offset, align } => {
                write!(f, "region offset {offset} is not a multiple of the type's alignment {align}")
            }
            RegionError::OverlapsHeader { offset } => write!(
                f,
                "region offset {offset} lies inside the {HEADER_SIZE}-byte segment header"
            ),
            RegionError::Overflow => f.write_str("segment layout overflows 64-bit arithmetic"),
            RegionError::BadAlignment { align } => {
                write!(f, "alignment {align} is not a power of two")
            }
        }
    }
}

impl std::error::Error for RegionError {}

/// Lays regions out one after another, after the header, each at its type's alignment
/// (or more). The final [`data_len`](Layout::data_len) is the size to create the segment
/// with.
///
/// ```
/// use shm_core::Layout;
/// use std::sync::atomic::AtomicU64;
///
/// let mut layout = Layout::new();
/// let counters = layout.push::<AtomicU64>(4).unwrap();
/// let slots = layout.push_aligned::<AtomicU64>(1024, 128).unwrap();
/// assert_eq!(counters.offset(), 128);
/// assert_eq!(slots.offset() % 128, 0);
/// assert!(layout.data_len() >= 8 * (4 + 1024));
/// ```
#[derive(Debug, Clone)]
pub struct Layout {
    end: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new()
    }
}

impl Layout {
    /// An empty layout whose first region starts right after the header.
    pub const fn new() -> Layout {
        Layout {
            end: HEADER_SIZE as u64,
        }
    }

    /// Appends `count` values of `T` at `T`'s alignment.
    ///
    /// # Errors
    ///
    /// [`RegionError::Overflow`] if the layout outgrows 64-bit or `usize` arithmetic.
    pub fn push<T>(&mut self, count: u64) -> Result<Region<T>, RegionError> {
        self.push_aligned(count, std::mem::align_of::<T>() as u64)
    }

    /// Appends `count` values of `T` at an alignment of at least `align` bytes (use 128 to
    /// keep a region off the cache lines of the one before).
    ///
    /// # Errors
    ///
    /// [`RegionError::BadAlignment`] if `align` is not a power of two,
    /// [`RegionError::Overflow`] if the layout outgrows 64-bit or `usize` arithmetic.
    pub fn push_aligned<T>(&mut self, count: u64, align: u64) -> Result<Region<T>, RegionError> {
        if !align.is_power_of_two() {
            return Err(RegionError::BadAlignment { align });
        }
        let align = align.max(std::mem::align_of::<T>() as u64);
        let offset = self
            .end
            .checked_add(align - 1)
            .ok_or(RegionError::Overflow)?
            & !(align - 1);
        let len = count
            .checked_mul(std::mem::size_of::<T>() as u64)
            .ok_or(RegionError::Overflow)?;
        let end = offset.checked_add(len).ok_or(RegionError::Overflow)?;
        usize::try_from(end).map_err(|_| RegionError::Overflow)?;
        self.end = end;
        Ok(Region::from_raw(offset, count))
    }

    /// Bytes needed after the header to hold every region pushed so far.
    pub fn data_len(&self) -> u64 {
        self.end - HEADER_SIZE as u64
    }

    /// Total bytes from the segment base, header included.
    pub fn total_len(&self) -> u64 {
        self.end
    }
}

/// Checks `region` against a mapping of `segment_len` bytes at address `base` and returns
/// its byte offset. Alignment is checked on the absolute address, so a type aligned more
/// strictly than the mapping (more than a page) is refused rather than misaligned.
pub(crate) fn check<T>(
    region: &Region<T>,
    base: usize,
    segment_len: usize,
) -> Result<usize, RegionError> {
    let offset = region.offset;
    let segment_len = segment_len as u64;
    if offset < HEADER_SIZE as u64 {
        return Err(RegionError::OverlapsHeader { offset });
    }
    let align = std::mem::align_of::<T>() as u64;
    if (base as u64).wrapping_add(offset) % align != 0 {
        return Err(RegionError::Misaligned { offset, align });
    }
    let len = region.byte_len();
    match len.and_then(|l| offset.checked_add(l)) {
        Some(end) if end <= segment_len => {
            // `end <= segment_len`, which came from a `usize`, so both fit.
            Ok(offset as usize)
        }
        _ => Err(RegionError::OutOfBounds {
            offset,
            len,
            segment_len,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_and_checks() {
        let mut l = Layout::new();
        let a = l.push::<u8>(3).unwrap();
        let b = l.push::<u64>(2).unwrap();
        let c = l.push_aligned::<u32>(1, 128).unwrap();
        assert_eq!(a.offset(), 128);
        assert_eq!(b.offset(), 136);
        assert_eq!(c.offset(), 256);
        assert_eq!(l.total_len(), 260);
        assert_eq!(l.data_len(), 132);
        assert!(matches!(
            l.push_aligned::<u8>(1, 3),
            Err(RegionError::BadAlignment { align: 3 })
        ));
        assert!(matches!(
            l.push::<u64>(u64::MAX),
            Err(RegionError::Overflow)
        ));
    }

    #[test]
    fn check_rejects_bad_regions() {
        assert_eq!(check(&Region::<u64>::from_raw(128, 2), 4096, 144), Ok(128));
        assert!(matches!(
            check(&Region::<u64>::from_raw(128, 3), 4096, 144),
            Err(RegionError::OutOfBounds { .. })
        ));
        assert!(matches!(
            check(&Region::<u64>::from_raw(132, 1), 4096, 4096),
            Err(RegionError::Misaligned { .. })
        ));
        assert!(matches!(
            check(&Region::<u64>::from_raw(64, 1), 4096, 4096),
            Err(RegionError::OverlapsHeader { .. })
        ));
        assert!(matches!(
            check(&Region::<u64>::from_raw(u64::MAX - 7, 1), 4096, 4096),
            Err(RegionError::Misaligned { .. }) | Err(RegionError::OutOfBounds { .. })
        ));
        assert!(matches!(
            check(&Region::<u64>::from_raw(128, u64::MAX), 4096, 4096),
            Err(RegionError::OutOfBounds { len: None, .. })
        ));
    }
}
