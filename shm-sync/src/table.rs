//! A table of [`SeqLock`]s in one segment: the latest value of each of many instruments,
//! each on cache lines of its own.

use shm_core::{
    CreateError, Fingerprint, Identity, Kind, Layout, OpenError, Region, Segment, SegmentBuilder,
    ShmSafe, TypeIdentity,
};

use crate::shared::SYNC_LAYOUT_VERSION;
use crate::SeqLock;

/// `P` alone on 128-byte lines (two cache lines: adjacent-line prefetch pairs them), so
/// that writers of neighbouring entries never share a line.
#[repr(C, align(128))]
pub struct CachePadded<P>(pub P);

// SAFETY: a `#[repr(C)]` wrapper adding only padding to a `ShmSafe` `P`: any bytes that are
// a valid `P` with any padding are valid, and there is no Drop glue beyond `P`'s (none).
unsafe impl<P: ShmSafe> ShmSafe for CachePadded<P> {}

impl<P: TypeIdentity> TypeIdentity for CachePadded<P> {
    const IDENTITY: Identity = Identity::wrapper(
        "CachePadded",
        1,
        std::mem::size_of::<Self>(),
        std::mem::align_of::<Self>(),
        P::IDENTITY,
    );
}

impl<P> std::ops::Deref for CachePadded<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}

/// The table's first line: how many entries follow.
#[repr(C, align(128))]
struct TableHead {
    len: std::sync::atomic::AtomicU64,
}

// SAFETY: one atomic and padding: any bytes are valid (an impossible length is refused at
// open), no Drop glue.
unsafe impl ShmSafe for TableHead {}

/// A table's layout: the whole, its head line, its entries.
type TableLayout<T> = (Layout, Region<TableHead>, Region<CachePadded<SeqLock<T>>>);

/// Schema id of table segments, so that `Shared::<CachePadded<SeqLock<T>>>` never opens one.
const TABLE_SCHEMA: u64 = u64::from_le_bytes(*b"seqtable");

/// Most entries a table may have (a bound on what an opener believes of the header).
pub const TABLE_MAX_LEN: u64 = 1 << 24;

/// `len` [`SeqLock<T>`]s in one [`Kind::Sync`] segment, each [`CachePadded`]: one per
/// instrument of a feed, say. A writer and its readers index it by position; the length is
/// fixed at creation and checked at open against the segment's size.
///
/// ```
/// use shm_sync::SeqLockTable;
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
/// #[repr(C)]
/// struct Quote { bid: f64, ask: f64 }
///
/// let name = format!("/shm-sync-table-doc-{}", std::process::id());
/// let feed = SeqLockTable::<Quote>::create(&name, 500, Quote { bid: 0.0, ask: 0.0 }).unwrap();
/// feed.get(42).unwrap().write(Quote { bid: 99.5, ask: 100.5 }).unwrap();
/// // In the risk process:
/// let book = SeqLockTable::<Quote>::open(&name).unwrap();
/// assert_eq!(book.len(), 500);
/// assert_eq!(book.get(42).unwrap().read().unwrap().ask, 100.5);
/// assert!(book.get(500).is_none());
/// ```
pub struct SeqLockTable<T> {
    segment: Segment,
    /// The first entry, bounds- and alignment-checked for `len` entries at create/open.
    first: std::ptr::NonNull<CachePadded<SeqLock<T>>>,
    len: usize,
}

// SAFETY: as for `Shared`: the pointer points into `segment`'s mapping, which moves with it,
// and the entries are `Sync` when `T: Send`.
unsafe impl<T: Send> Send for SeqLockTable<T> {}
// SAFETY: `&SeqLockTable` gives out only `&SeqLock<T>`, which is `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for SeqLockTable<T> {}

impl<T: bytemuck::Pod + Send + TypeIdentity> SeqLockTable<T> {
    fn layout(len: u64) -> Result<TableLayout<T>, String> {
        let mut l = Layout::new();
        let head = l
            .push_aligned::<TableHead>(1, 128)
            .map_err(|e| e.to_string())?;
        let entries = l
            .push_aligned::<CachePadded<SeqLock<T>>>(len, 128)
            .map_err(|e| e.to_string())?;
        Ok((l, head, entries))
    }

    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<CachePadded<SeqLock<T>>>(TABLE_SCHEMA, SYNC_LAYOUT_VERSION)
    }

    /// Creates the table `name` with `len` entries, each holding `init`, before any other
    /// process can open it.
    ///
    /// # Errors
    ///
    /// `len` of 0 or above [`TABLE_MAX_LEN`], or the segment's create error.
    pub fn create(name: &str, len: usize, init: T) -> Result<SeqLockTable<T>, CreateError> {
        Self::create_with(SegmentBuilder::new(name), len, init)
    }

    /// [`create`](Self::create) with your own segment options (mode, mlock, ...); the
    /// builder's kind, fingerprint and size are set here.
    ///
    /// # Errors
    ///
    /// As `create`.
    pub fn create_with(
        builder: SegmentBuilder,
        len: usize,
        init: T,
    ) -> Result<SeqLockTable<T>, CreateError> {
        if len == 0 || len as u64 > TABLE_MAX_LEN {
            return Err(CreateError::unsupported(
                builder.name(),
                format!("a table needs 1 to {TABLE_MAX_LEN} entries, not {len}"),
            ));
        }
        let (layout, head, entries) =
            Self::layout(len as u64).map_err(|e| CreateError::unsupported(builder.name(), e))?;
        let segment = builder
            .kind(Kind::Sync)
            .fingerprint(Self::fingerprint())
            .layout(&layout)
            .create_with(|seg| {
                seg.get(head)?
                    .len
                    .store(len as u64, std::sync::atomic::Ordering::Relaxed);
                for e in seg.region(entries)? {
                    // SAFETY: inside `create_with` the segment is not yet READY, so no other
                    // process can open it, and this thread is the only one with the mapping.
                    unsafe { e.0.init_in_place(init) };
                }
                Ok::<_, shm_core::RegionError>(())
            })?;
        let first = std::ptr::NonNull::from(
            &segment.region(entries).expect("checked inside create_with")[0],
        );
        Ok(SeqLockTable {
            segment,
            first,
            len,
        })
    }

    /// Opens the table `name`, checking that its entries hold `T`s and that the length its
    /// header records fits the segment.
    ///
    /// # Errors
    ///
    /// The segment's open errors (a table of another payload is a `FingerprintMismatch`
    /// naming both), or `Region` if the recorded length is impossible.
    pub fn open(name: &str) -> Result<SeqLockTable<T>, OpenError> {
        Self::open_with(SegmentBuilder::new(name))
    }

    /// [`open`](Self::open) with your own segment options.
    ///
    /// # Errors
    ///
    /// As `open`.
    pub fn open_with(builder: SegmentBuilder) -> Result<SeqLockTable<T>, OpenError> {
        let segment = builder
            .kind(Kind::Sync)
            .fingerprint(Self::fingerprint())
            .open()?;
        let region_err = |e: shm_core::RegionError| OpenError::region(segment.name(), e);
        let head = Region::<TableHead>::from_raw(shm_core::HEADER_SIZE as u64, 1);
        // Read once, then trusted only as far as the checks below.
        let len = segment
            .get(head)
            .map_err(region_err)?
            .len
            .load(std::sync::atomic::Ordering::Relaxed);
        let impossible = |what: String| {
            OpenError::unsupported(segment.name(), format!("not a valid table: {what}"))
        };
        if len == 0 || len > TABLE_MAX_LEN {
            return Err(impossible(format!("it records {len} entries")));
        }
        let (layout, _, entries) =
            Self::layout(len).map_err(|e| impossible(format!("{len} entries: {e}")))?;
        if layout.total_len() > segment.len() as u64 {
            return Err(impossible(format!(
                "{len} entries need {} bytes, the segment has {}",
                layout.total_len(),
                segment.len()
            )));
        }
        let first = segment.region(entries).map_err(region_err)?;
        let first = std::ptr::NonNull::from(&first[0]);
        Ok(SeqLockTable {
            segment,
            first,
            len: len as usize,
        })
    }
}

impl<T> SeqLockTable<T> {
    /// How many entries the table has.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has none (never: a table has at least one entry).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i`, if `i < len()`.
    pub fn get(&self, i: usize) -> Option<&SeqLock<T>> {
        // SAFETY: `i < len`, and `first` was checked at create/open to start `len` entries
        // inside the mapping, which `self.segment` keeps alive for the borrow.
        (i < self.len).then(|| unsafe { &(*self.first.as_ptr().add(i)).0 })
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = &SeqLock<T>> {
        (0..self.len).filter_map(move |i| self.get(i))
    }

    /// The segment underneath.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The segment underneath, mutably (to keep it past the creator, say).
    pub fn segment_mut(&mut self) -> &mut Segment {
        &mut self.segment
    }
}
