//! Named segments: create, open, open-or-create, inspect, list and remove.

use std::error::Error;
use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::{
    CreateError, CreateErrorKind, HugePagesError, MlockError, OpenError, OpenErrorKind,
    OpenOrCreateError, RemoveError, RemoveErrorKind,
};
use crate::header::{Fingerprint, Header, HeaderInfo, Kind, SegmentState, FORMAT_VERSION};
use crate::header::{HEADER_SIZE, MAGIC};
use crate::name::SegmentName;
use crate::region::{self, Region, RegionError, ShmSafe};
use crate::{sys, Layout, ProcessId};

/// Default time an opener waits for a segment's creator to publish `READY`.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(1);
/// Default file mode of a new segment (owner read/write only), applied whatever the umask.
pub const DEFAULT_MODE: u32 = 0o600;
const HUGE_PAGE: u64 = 2 << 20;

/// A mapping that is unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn header(&self) -> &Header {
        // SAFETY: every `Mapping` is at least HEADER_SIZE bytes (checked before mapping),
        // page-aligned (so 128-aligned), and `Header` is all atomics, valid for any bytes and
        // safe to share with other processes that write it.
        unsafe { self.ptr.cast::<Header>().as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `mmap_shared` and no reference into the mapping
        // outlives `self` (every borrow handed out is tied to the owning `Segment`).
        unsafe { sys::munmap(self.ptr, self.len) };
    }
}

/// A mapped shmring segment.
///
/// Drop unmaps it. The creator also removes the *name* on drop unless told not to
/// ([`SegmentBuilder::unlink_on_drop`], [`Segment::set_unlink_on_drop`]); openers never do
/// unless told to. Removing the name does not disturb processes that have it mapped: they
/// keep using the memory, which the kernel frees when the last one unmaps it; only new
/// opens fail with `NotFound`. A name is only removed if it still refers to this very
/// segment (same inode), so a creator never removes a successor created under its name.
pub struct Segment {
    name: SegmentName,
    map: Mapping,
    creator: bool,
    unlink_on_drop: bool,
    ino: u64,
    dev: u64,
    /// The segment's file, held open with a shared `flock` for as long as this handle maps
    /// it: how [`remove_stale`] knows, for any process of any user, that a live handle uses
    /// the segment (the kernel drops the lock when the holder dies).
    _in_use: std::os::fd::OwnedFd,
    /// The process that made this handle: a child's copy, inherited through `fork`, never
    /// removes the name.
    origin: crate::ThisProcess,
}

// SAFETY: a `Segment` is an owned mapping; all access to its bytes goes through `ShmSafe`
// references (atomics, which are `Sync`) or raw pointers whose use is `unsafe` for the
// caller, so sharing or moving it between threads adds nothing processes don't already do.
unsafe impl Send for Segment {}
// SAFETY: see `Send`; `&Segment` only exposes `Sync` views.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.map.len)
            .field("creator", &self.creator)
            .field("unlink_on_drop", &self.unlink_on_drop)
            .finish()
    }
}

impl Segment {
    /// The segment's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Total mapped length in bytes, header included.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Always false: a segment holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Offset of the data area (right after the header).
    pub fn data_offset(&self) -> u64 {
        HEADER_SIZE as u64
    }

    /// Bytes available after the header (at least what was asked for; the total is rounded
    /// up to the page size).
    pub fn data_len(&self) -> u64 {
        (self.map.len - HEADER_SIZE) as u64
    }

    /// Base address of the mapping in this process. Valid while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Whether this handle created the segment.
    pub fn is_creator(&self) -> bool {
        self.creator
    }

    /// A fresh copy of the header.
    pub fn header(&self) -> HeaderInfo {
        self.map.header().snapshot()
    }

    /// Whether dropping this handle removes the segment's name.
    pub fn unlink_on_drop(&self) -> bool {
        self.unlink_on_drop
    }

    /// Keep the name past this handle (`false`), or remove it on drop (`true`).
    pub fn set_unlink_on_drop(&mut self, unlink: bool) {
        self.unlink_on_drop = unlink;
    }

    /// Whether the segment's name still leads to this very segment (same device and inode):
    /// `false` once the name was removed (`shmring rm`, the creator's drop) or given to a
    /// segment created anew, which a handle of the old one otherwise cannot tell (its peers
    /// simply stop). One `lstat`; not for hot paths. A name that cannot be looked up at all
    /// reads as `false`: it does not lead here as far as this process can tell.
    pub fn is_current(&self) -> bool {
        let path = std::ffi::CString::new(self.name.path().into_os_string().into_encoded_bytes())
            .expect("validated names hold no NUL");
        matches!(sys::lstat_path(&path), Ok(st) if st.ino == self.ino && st.dev == self.dev)
    }

    /// Removes the name now (if it still names this segment). The mapping stays valid.
    ///
    /// # Errors
    ///
    /// The OS error of `shm_unlink`.
    pub fn unlink(&self) -> Result<(), RemoveError> {
        unlink_if_same(&self.name, self.ino, self.dev)
    }

    /// A shared view of `region`, checked against the mapping (bounds, alignment, header).
    ///
    /// # Errors
    ///
    /// A [`RegionError`] if the region does not lie inside the data area.
    pub fn region<T: ShmSafe>(&self, region: Region<T>) -> Result<&[T], RegionError> {
        let off = region::check(&region, self.map.ptr.as_ptr() as usize, self.map.len)?;
        // Fits: the region's byte length fitted inside the mapping.
        let count = region.count() as usize;
        let first = self.map.ptr.as_ptr().wrapping_add(off).cast::<T>();
        // SAFETY: `check` proved `off..off + count * size_of::<T>()` lies inside the mapping
        // and that its address is aligned for `T`; `T: ShmSafe` is valid for any bytes and
        // only accessed atomically where others may write, so a shared slice may alias other
        // processes' writes. The borrow is tied to `self`, which keeps the mapping alive.
        let slice = unsafe { std::slice::from_raw_parts(first, count) };
        Ok(slice)
    }

    /// A shared view of the first value of `region` (its count must be at least 1).
    ///
    /// # Errors
    ///
    /// A [`RegionError`] if the region does not lie inside the data area or is empty.
    pub fn get<T: ShmSafe>(&self, region: Region<T>) -> Result<&T, RegionError> {
        let one = Region::<T>::from_raw(region.offset(), 1);
        if region.count() == 0 {
            return Err(RegionError::OutOfBounds {
                offset: region.offset(),
                len: Some(0),
                segment_len: self.map.len as u64,
            });
        }
        Ok(&self.region(one)?[0])
    }

    /// A raw pointer to the first `T` of `region`, checked like [`region`](Self::region).
    /// For payload arrays whose access protocol the caller runs itself (e.g. ring slots);
    /// dereferencing it is the caller's `unsafe`.
    ///
    /// # Errors
    ///
    /// A [`RegionError`] if the region does not lie inside the data area.
    pub fn region_ptr<T>(&self, region: Region<T>) -> Result<NonNull<T>, RegionError> {
        let off = region::check(&region, self.map.ptr.as_ptr() as usize, self.map.len)?;
        // SAFETY: `check` proved `off` is inside the mapping, so the addition stays in bounds
        // of the same allocation and the result is non-null.
        Ok(unsafe { NonNull::new_unchecked(self.map.ptr.as_ptr().add(off).cast::<T>()) })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.unlink_on_drop && self.origin.is_current() {
            // Best effort: the name may already be gone (`shmring rm`), which is fine.
            let _ = unlink_if_same(&self.name, self.ino, self.dev);
        }
    }
}

fn unlink_if_same(name: &SegmentName, ino: u64, dev: u64) -> Result<(), RemoveError> {
    let path = std::ffi::CString::new(name.path().into_os_string().into_encoded_bytes())
        .expect("validated names hold no NUL");
    match sys::lstat_path(&path) {
        Ok(st) if st.ino == ino && st.dev == dev => remove_name(name),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RemoveError::new(
            name.as_str(),
            RemoveErrorKind::Os {
                op: "stat",
                source: e,
            },
        )),
    }
}

fn remove_name(name: &SegmentName) -> Result<(), RemoveError> {
    sys::shm_unlink(name.as_c()).map_err(|e| {
        let kind = match e.raw_os_error() {
            Some(libc::ENOENT) => RemoveErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => RemoveErrorKind::PermissionDenied(e),
            _ => RemoveErrorKind::Os {
                op: "shm_unlink",
                source: e,
            },
        };
        RemoveError::new(name.as_str(), kind)
    })
}

/// How to create or open a segment. Every option has a default; see each method.
///
/// ```
/// use shm_core::{Kind, SegmentBuilder, Layout};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let name = format!("/shm-core-doc-builder-{}", std::process::id());
/// let mut layout = Layout::new();
/// let counter = layout.push::<AtomicU64>(1).unwrap();
///
/// // The creator initialises the contents before openers can see them.
/// let seg = SegmentBuilder::new(&name)
///     .layout(&layout)
///     .create_with(|seg| {
///         seg.get(counter)?.store(41, Ordering::Relaxed);
///         Ok::<_, shm_core::RegionError>(())
///     })
///     .unwrap();
///
/// // Any process can now open it by name (here: the same one).
/// let other = SegmentBuilder::new(&name).open().unwrap();
/// other.get(counter).unwrap().fetch_add(1, Ordering::Relaxed);
/// assert_eq!(seg.get(counter).unwrap().load(Ordering::Relaxed), 42);
/// assert_eq!(other.header().kind(), Some(Kind::Raw));
/// // Dropping `seg`, the creator, removes the name.
/// ```
#[derive(Debug, Clone)]
pub struct SegmentBuilder {
    name: String,
    kind: Kind,
    fingerprint: Fingerprint,
    size: u64,
    mode: u32,
    open_timeout: Duration,
    name_wait: Duration,
    prefault: bool,
    mlock: bool,
    huge_pages: bool,
    unlink_on_drop: Option<bool>,
    allow_foreign_owner: bool,
}

impl SegmentBuilder {
    /// Options for the segment `name` (`/` then up to 255 bytes with no `/`): kind
    /// [`Kind::Raw`], an untyped fingerprint with schema 0, no data bytes, mode 0600, a 1 s
    /// open timeout, prefault on, mlock and huge pages off, unlink on drop for the creator
    /// only, foreign owners refused.
    pub fn new(name: &str) -> SegmentBuilder {
        SegmentBuilder {
            name: name.to_owned(),
            kind: Kind::Raw,
            fingerprint: Fingerprint::untyped(0),
            size: 0,
            mode: DEFAULT_MODE,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            name_wait: Duration::ZERO,
            prefault: true,
            mlock: false,
            huge_pages: false,
            unlink_on_drop: None,
            allow_foreign_owner: false,
        }
    }

    /// The segment name these options are for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the segment holds; `open` fails with `KindMismatch` on another kind.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The layout fingerprint; `open` fails with `FingerprintMismatch` on another.
    pub fn fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Bytes wanted after the header: `create` rounds the segment up to whole pages; `open`
    /// refuses a file too short for them, or longer than they make rounded up to a huge page
    /// ([`OpenErrorKind::UnexpectedLength`]), before touching its pages.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// Sizes the segment for `layout` (see [`size`](Self::size): `open` checks it too).
    pub fn layout(self, layout: &Layout) -> Self {
        self.size(layout.data_len())
    }

    /// File mode of a new segment, applied with `fchmod` so the umask does not weaken or
    /// strengthen it. Only the permission bits (0o777) are used.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// How long `open` waits for a creator that is still initialising. A timeout too large
    /// to add to the monotonic clock (`Duration::MAX`) waits without limit.
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// How long `open` waits for the name to appear (default: not at all, a missing name is
    /// `NotFound` at once). The name is looked up again with a back-off from 50 µs to 5 ms,
    /// so a creator that comes later is seen within about 5 ms; when the wait ends the open
    /// fails with `NotFound`. It counts from the start of `open`, before and apart from the
    /// [`open_timeout`](Self::open_timeout), which then bounds the wait for the creator to
    /// finish. A wait too large for the monotonic clock waits without limit.
    /// `open_or_create` never waits for a name: it creates it.
    pub fn wait_for_name(mut self, wait: Duration) -> Self {
        self.name_wait = wait;
        self
    }

    /// Fault every page in at create/open, so the hot path takes no page fault.
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// `mlock` the whole mapping (needs `RLIMIT_MEMLOCK` headroom or `CAP_IPC_LOCK`).
    pub fn mlock(mut self, mlock: bool) -> Self {
        self.mlock = mlock;
        self
    }

    /// Back the mapping with transparent huge pages. Needs `/dev/shm` mounted with `huge=`
    /// (or `shmem_enabled=force`); otherwise create/open fail with a `HugePages` error
    /// that says why. Sizes are rounded up to 2 MiB.
    pub fn huge_pages(mut self, huge: bool) -> Self {
        self.huge_pages = huge;
        self
    }

    /// Whether dropping the handle removes the name. Default: yes for the creator, no for
    /// openers. Set `false` on the creator to keep a segment alive past it.
    pub fn unlink_on_drop(mut self, unlink: bool) -> Self {
        self.unlink_on_drop = Some(unlink);
        self
    }

    /// Let `open` attach to a segment owned by another uid (refused by default).
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// Creates the segment with zeroed contents and publishes it at once.
    ///
    /// # Errors
    ///
    /// A [`CreateError`]: bad name, `AlreadyExists`, permission, size, mlock, huge pages,
    /// or the OS error of a failed call. On error nothing is left behind.
    pub fn create(&self) -> Result<Segment, CreateError> {
        self.create_with(|_| Ok::<(), std::convert::Infallible>(()))
    }

    /// Creates the segment and runs `init` on it before publishing `READY`, so no opener
    /// sees the contents half-built. If `init` fails, the segment is marked poisoned and
    /// removed, and the error is returned as [`CreateErrorKind::Init`].
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create), plus `Init`.
    pub fn create_with<E, F>(&self, init: F) -> Result<Segment, CreateError>
    where
        F: FnOnce(&Segment) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let err = |kind| CreateError::new(&self.name, kind);
        let name =
            SegmentName::new(&self.name).map_err(|e| err(CreateErrorKind::InvalidName(e)))?;
        let round = if self.huge_pages {
            HUGE_PAGE
        } else {
            sys::page_size() as u64
        };
        let total = created_len(self.size, round).ok_or_else(|| {
            err(CreateErrorKind::TooLarge {
                requested: self.size,
            })
        })?;
        if self.huge_pages {
            huge_pages_available().map_err(|e| err(CreateErrorKind::HugePages(e)))?;
        }

        let fd = sys::shm_open(
            name.as_c(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            self.mode,
        )
        .map_err(|e| {
            err(match e.raw_os_error() {
                Some(libc::EEXIST) => CreateErrorKind::AlreadyExists,
                Some(libc::EACCES) | Some(libc::EPERM) => CreateErrorKind::PermissionDenied(e),
                _ => CreateErrorKind::Os {
                    op: "shm_open",
                    source: e,
                },
            })
        })?;
        let os =
            |op: &'static str| move |source: io::Error| err(CreateErrorKind::Os { op, source });
        // From here on, a failure must remove the name we just created.
        let mut guard = UnlinkGuard {
            name: &name,
            armed: true,
            id: None,
        };
        let st = sys::fstat(&fd).map_err(os("fstat"))?;
        guard.id = Some((st.ino, st.dev));
        // The in-use lock (see `Segment`). A checker (`users`, `remove_unused`,
        // `remove_stale`) may hold it exclusively for the moment of its look: wait that out,
        // within the open timeout. None of them removes a file still being created
        // (`remove_unused` refuses one, `remove_stale` never judges a file younger than the
        // open timeout stale).
        let locking = Instant::now();
        let mut pause = Backoff::new();
        while !sys::flock_nb(&fd, false).map_err(os("flock"))? {
            if locking.elapsed() >= self.open_timeout {
                return Err(os("flock")(io::Error::from_raw_os_error(libc::EWOULDBLOCK)));
            }
            pause.sleep();
        }
        sys::fchmod(&fd, self.mode).map_err(os("fchmod"))?;
        sys::ftruncate(&fd, total).map_err(os("ftruncate"))?;
        let len = total as usize;
        let ptr = sys::mmap_shared(&fd, len, true).map_err(os("mmap"))?;
        let map = Mapping { ptr, len };
        // Write the header first, so an opener can tell who is initialising it.
        map.header()
            .begin_init(self.kind, ProcessId::current(), total, &self.fingerprint);
        if self.huge_pages {
            sys::madvise_hugepage(map.ptr, len).map_err(|e| {
                err(CreateErrorKind::HugePages(HugePagesError {
                    reason: format!("madvise(MADV_HUGEPAGE) failed: {e}"),
                }))
            })?;
        }
        if self.prefault {
            sys::prefault(map.ptr, len, true).map_err(os("madvise(MADV_POPULATE_WRITE)"))?;
        }
        if self.mlock {
            sys::mlock(map.ptr, len)
                .map_err(|e| err(CreateErrorKind::Mlock(mlock_error(len, e))))?;
        }
        let mut seg = Segment {
            name: name.clone(),
            map,
            creator: true,
            unlink_on_drop: false,
            ino: st.ino,
            dev: st.dev,
            _in_use: fd,
            origin: crate::ThisProcess::now(),
        };
        if let Err(e) = init(&seg) {
            seg.map.header().publish_poisoned();
            return Err(err(CreateErrorKind::Init(e.into())));
        }
        seg.map.header().publish_ready();
        guard.armed = false;
        seg.unlink_on_drop = self.unlink_on_drop.unwrap_or(true);
        Ok(seg)
    }

    /// Opens an existing segment, waiting up to the open timeout for its creator to
    /// publish it, and validates it before any typed access: magic, format version, data
    /// offset, that the file length equals the header's, kind, and fingerprint. If the
    /// builder was given a size ([`size`](Self::size) or [`layout`](Self::layout)), the file
    /// must also hold at least that many data bytes and be no longer than `create` makes
    /// such a segment with huge pages (that size rounded up to 2 MiB), checked before any
    /// page is prefaulted or locked; without one (a raw segment whose layout the opener does
    /// not declare), open maps, prefaults and locks whatever length the file has.
    ///
    /// # Errors
    ///
    /// An [`OpenError`] whose kind says which check failed, with expected vs found.
    pub fn open(&self) -> Result<Segment, OpenError> {
        let size = self.size;
        self.open_inner(|_| match size {
            0 => Bound::Any,
            n => Bound::AtLeast(n),
        })
    }

    /// [`open`](Self::open) for a segment whose needed size only its contents tell (a ring
    /// records its capacity in its control block): after the header checks, `need` reads
    /// what it must (the mapping is in place, but no page has been prefaulted or locked)
    /// and returns the data bytes the segment should hold, as passed to
    /// [`size`](Self::size) when it was created. The file must then be as long as `create`
    /// makes such a segment (rounded up to pages, or at most to huge pages), or the open fails
    /// with `UnexpectedLength`, so a planted file far larger than its contents need is never
    /// faulted in. `need` returns `None` when it cannot tell (its
    /// own checks will fail the open); nothing is then prefaulted or locked.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_bounded(
        &self,
        need: impl FnOnce(&Segment) -> Option<u64>,
    ) -> Result<Segment, OpenError> {
        self.open_inner(|seg| need(seg).map_or(Bound::Unknown, Bound::AtLeast))
    }

    fn open_inner(&self, need: impl FnOnce(&Segment) -> Bound) -> Result<Segment, OpenError> {
        let err = |kind| OpenError::new(&self.name, kind);
        let name = SegmentName::new(&self.name).map_err(|e| err(OpenErrorKind::InvalidName(e)))?;
        if self.huge_pages {
            huge_pages_available().map_err(|e| err(OpenErrorKind::HugePages(e)))?;
        }
        // A timeout too large for an `Instant` (`Duration::MAX`, say) means no deadline.
        let name_deadline = Instant::now().checked_add(self.name_wait);
        let mut pause = Backoff::new();
        let (map, st, fd, deadline) = loop {
            let deadline = Instant::now().checked_add(self.open_timeout);
            match attach(&name, self.allow_foreign_owner, deadline) {
                Err(e)
                    if matches!(e.kind, OpenErrorKind::NotFound)
                        && !self.name_wait.is_zero()
                        && name_deadline.is_none_or(|d| Instant::now() < d) =>
                {
                    pause.sleep();
                }
                Err(e) => return Err(e),
                Ok((map, st, fd)) => break (map, st, fd, deadline),
            }
        };
        let info = wait_ready(&name, &map, self.open_timeout, deadline)?;
        validate(&info, map.len as u64).map_err(err)?;
        if info.kind != self.kind.as_raw() {
            return Err(err(OpenErrorKind::KindMismatch {
                expected: self.kind,
                found: info.kind,
            }));
        }
        if !self.fingerprint.matches(&info.fingerprint) {
            return Err(err(OpenErrorKind::FingerprintMismatch {
                expected: Box::new(self.fingerprint),
                found: Box::new(info.fingerprint),
            }));
        }
        // Not unlinking on drop until every check below passed: an open that fails must
        // never remove a name that others use.
        let mut seg = Segment {
            name,
            map,
            creator: false,
            unlink_on_drop: false,
            ino: st.ino,
            dev: st.dev,
            _in_use: fd,
            origin: crate::ThisProcess::now(),
        };
        match need(&seg) {
            Bound::Any => {}
            Bound::Unknown => {
                seg.unlink_on_drop = self.unlink_on_drop.unwrap_or(false);
                return Ok(seg);
            }
            Bound::AtLeast(data_len) => {
                // At least what `create` makes of `data_len`, and at most that rounded up to
                // a huge page (a creator may have used huge pages).
                let len = seg.map.len as u64;
                let [least, most] = [sys::page_size() as u64, HUGE_PAGE]
                    .map(|round| created_len(data_len, round).unwrap_or(u64::MAX));
                if len < least || len > most {
                    return Err(err(OpenErrorKind::UnexpectedLength {
                        len,
                        expected: least,
                    }));
                }
            }
        }
        let map = &seg.map;
        if self.huge_pages {
            sys::madvise_hugepage(map.ptr, map.len).map_err(|e| {
                err(OpenErrorKind::HugePages(HugePagesError {
                    reason: format!("madvise(MADV_HUGEPAGE) failed: {e}"),
                }))
            })?;
        }
        if self.prefault {
            sys::prefault(map.ptr, map.len, true).map_err(|source| {
                err(OpenErrorKind::Os {
                    op: "madvise(MADV_POPULATE_WRITE)",
                    source,
                })
            })?;
        }
        if self.mlock {
            sys::mlock(map.ptr, map.len)
                .map_err(|e| err(OpenErrorKind::Mlock(mlock_error(map.len, e))))?;
        }
        seg.unlink_on_drop = self.unlink_on_drop.unwrap_or(false);
        Ok(seg)
    }

    /// Opens the segment if it exists, else creates it with zeroed contents.
    /// [`Segment::is_creator`] tells which happened.
    ///
    /// # Errors
    ///
    /// See [`open_or_create_with`](Self::open_or_create_with).
    pub fn open_or_create(&self) -> Result<Segment, OpenOrCreateError> {
        self.open_or_create_with(|_| Ok::<(), std::convert::Infallible>(()))
    }

    /// Opens the segment if it exists, else creates it and runs `init` before publishing.
    /// When many processes race, exactly one creates and initialises; the others open
    /// what it published. A creator that fails and removes the segment makes the others
    /// retry, within the open timeout.
    ///
    /// # Errors
    ///
    /// `Create` for a failure while creating, `Open` for a failure while opening the
    /// segment another process created (including a stale one: it is not replaced).
    pub fn open_or_create_with<E, F>(&self, init: F) -> Result<Segment, OpenOrCreateError>
    where
        F: FnOnce(&Segment) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.open_or_create_by(init, |b| b.open())
    }

    /// [`open_or_create_with`](Self::open_or_create_with) whose open of an existing segment
    /// is [`open_bounded`](Self::open_bounded) with `need` (a ring, whose length only its
    /// control block tells).
    ///
    /// # Errors
    ///
    /// As [`open_or_create_with`](Self::open_or_create_with).
    pub fn open_or_create_bounded<E, F>(
        &self,
        init: F,
        need: impl Fn(&Segment) -> Option<u64>,
    ) -> Result<Segment, OpenOrCreateError>
    where
        F: FnOnce(&Segment) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.open_or_create_by(init, |b| b.open_bounded(&need))
    }

    fn open_or_create_by<E, F>(
        &self,
        init: F,
        open: impl Fn(&SegmentBuilder) -> Result<Segment, OpenError>,
    ) -> Result<Segment, OpenOrCreateError>
    where
        F: FnOnce(&Segment) -> Result<(), E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let start = Instant::now();
        let mut init = Some(init);
        let mut pause = Backoff::new();
        // A missing name is ours to create, never to wait for.
        let this = self.clone().wait_for_name(Duration::ZERO);
        loop {
            // `init` is only taken by a create that got the name, so it survives retries.
            let created = this.create_with(|seg| match init.take() {
                Some(f) => f(seg),
                None => unreachable!("a successful exclusive create happens once"),
            });
            match created {
                Ok(seg) => return Ok(seg),
                Err(e) if matches!(e.kind, CreateErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e.into()),
            }
            match open(&this) {
                Ok(seg) => return Ok(seg),
                Err(e)
                    if matches!(
                        e.kind,
                        OpenErrorKind::NotFound | OpenErrorKind::Poisoned { .. }
                    ) =>
                {
                    // Its creator failed (and removes it): try to create it ourselves.
                    if start.elapsed() >= self.open_timeout {
                        return Err(e.into());
                    }
                    pause.sleep();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What an opener knows of the length a segment must have.
enum Bound {
    /// Nothing (a raw segment opened without a declared layout): the whole file is used.
    Any,
    /// Its contents are impossible: the caller's own checks fail the open, so nothing more
    /// is touched.
    Unknown,
    /// This many data bytes, which `create` rounds up to whole (perhaps huge) pages.
    AtLeast(u64),
}

/// The length `create` gives a segment of `data_len` bytes after the header, rounded up to
/// `round` (a power of two: the page or huge-page size); `None` if that is too large.
fn created_len(data_len: u64, round: u64) -> Option<u64> {
    data_len
        .checked_add(HEADER_SIZE as u64 + round - 1)
        .map(|t| t & !(round - 1))
        .filter(|&t| usize::try_from(t).is_ok() && t <= i64::MAX as u64)
}

/// Removes the name when dropped, if armed: only if it still refers to our file when we
/// know which file that is (`id`), unconditionally if `fstat` of our own new file failed
/// (we created it exclusively an instant before).
struct UnlinkGuard<'a> {
    name: &'a SegmentName,
    armed: bool,
    id: Option<(u64, u64)>,
}

impl Drop for UnlinkGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = match self.id {
            Some((ino, dev)) => unlink_if_same(self.name, ino, dev),
            None => remove_name(self.name),
        };
    }
}

fn mlock_error(len: usize, source: io::Error) -> MlockError {
    let (soft_limit, hard_limit) = sys::memlock_limit();
    MlockError {
        len: len as u64,
        soft_limit,
        hard_limit,
        source,
    }
}

/// Sleeps 50 µs, doubling to 5 ms: for waits off the hot path (open, create races).
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_micros(50))
    }
    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(5));
    }
}

/// Opens the name, takes the in-use lock (see [`Segment`]), checks the owner, waits
/// (bounded) until the file holds at least a header, and maps all of it.
fn attach(
    name: &SegmentName,
    allow_foreign_owner: bool,
    deadline: Option<Instant>,
) -> Result<(Mapping, sys::FileStat, std::os::fd::OwnedFd), OpenError> {
    let err = |kind| OpenError::new(name.as_str(), kind);
    let mut pause = Backoff::new();
    let (fd, mut st) = loop {
        let (fd, st) = open_regular(name, libc::O_RDWR)?;
        let locked = sys::flock_nb(&fd, false).map_err(|source| {
            err(OpenErrorKind::Os {
                op: "flock",
                source,
            })
        })?;
        if locked {
            break (fd, st);
        }
        // `remove_stale` holds it exclusively: it judged the segment unused and is about to
        // remove the name (or will find it in use after all and let go). Open anew.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(err(OpenErrorKind::Os {
                op: "flock",
                source: io::Error::from_raw_os_error(libc::EWOULDBLOCK),
            }));
        }
        pause.sleep();
    };
    let me = sys::geteuid();
    if st.uid != me && !allow_foreign_owner {
        return Err(err(OpenErrorKind::ForeignOwner {
            owner_uid: st.uid,
            our_uid: me,
        }));
    }
    // A creator makes the file (O_EXCL) and sizes it in two steps: wait out the gap.
    let mut pause = Backoff::new();
    while st.size < HEADER_SIZE as u64 {
        if st.size > 0 {
            // Creators size the file in one ftruncate: a short, non-empty file is damaged.
            return Err(err(OpenErrorKind::TooShort { len: st.size }));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(err(OpenErrorKind::Stale {
                creator: None,
                len: st.size,
            }));
        }
        pause.sleep();
        st = sys::fstat(&fd).map_err(|source| {
            err(OpenErrorKind::Os {
                op: "fstat",
                source,
            })
        })?;
    }
    let len = usize::try_from(st.size).map_err(|_| {
        err(OpenErrorKind::Os {
            op: "mmap",
            source: io::Error::from_raw_os_error(libc::EFBIG),
        })
    })?;
    let ptr = sys::mmap_shared(&fd, len, true)
        .map_err(|source| err(OpenErrorKind::Os { op: "mmap", source }))?;
    Ok((Mapping { ptr, len }, st, fd))
}

/// Opens an existing name without blocking (a FIFO planted under `/dev/shm` would block a
/// plain open forever) and checks that it is a regular file.
fn open_regular(
    name: &SegmentName,
    flags: libc::c_int,
) -> Result<(std::os::fd::OwnedFd, sys::FileStat), OpenError> {
    let err = |kind| OpenError::new(name.as_str(), kind);
    let fd = sys::shm_open(name.as_c(), flags | libc::O_NONBLOCK, 0).map_err(|e| {
        err(match e.raw_os_error() {
            Some(libc::ENOENT) => OpenErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => OpenErrorKind::PermissionDenied(e),
            Some(libc::ELOOP) => OpenErrorKind::Symlink,
            Some(libc::ENXIO) => OpenErrorKind::NotRegularFile { mode: 0 },
            _ => OpenErrorKind::Os {
                op: "shm_open",
                source: e,
            },
        })
    })?;
    let st = sys::fstat(&fd).map_err(|source| {
        err(OpenErrorKind::Os {
            op: "fstat",
            source,
        })
    })?;
    if !st.is_regular() {
        return Err(err(OpenErrorKind::NotRegularFile { mode: st.mode }));
    }
    Ok((fd, st))
}

/// Waits (until `deadline`, if any) for `state == READY`, failing early on a dead creator or bad
/// bytes.
fn wait_ready(
    name: &SegmentName,
    map: &Mapping,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<HeaderInfo, OpenError> {
    let err = |kind| OpenError::new(name.as_str(), kind);
    let mut pause = Backoff::new();
    loop {
        let info = map.header().snapshot();
        if info.magic != 0 && info.magic != MAGIC {
            return Err(err(OpenErrorKind::BadMagic { found: info.magic }));
        }
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        match info.state {
            SegmentState::Ready => return Ok(info),
            SegmentState::Poisoned => {
                return Err(err(OpenErrorKind::Poisoned {
                    creator: info.creator,
                }))
            }
            SegmentState::Invalid(found) => return Err(err(OpenErrorKind::InvalidState { found })),
            SegmentState::Initializing => {
                if info.creator.is_dead() {
                    return Err(err(OpenErrorKind::Stale {
                        creator: Some(info.creator),
                        len: map.len as u64,
                    }));
                }
                if timed_out {
                    return Err(err(OpenErrorKind::InitTimeout {
                        creator: Some(info.creator),
                        waited: timeout,
                    }));
                }
            }
            SegmentState::Unwritten => {
                if timed_out {
                    return Err(err(OpenErrorKind::Stale {
                        creator: None,
                        len: map.len as u64,
                    }));
                }
            }
        }
        pause.sleep();
    }
}

/// Format checks common to every kind, on a header read after `READY`.
fn validate(info: &HeaderInfo, actual_len: u64) -> Result<(), OpenErrorKind> {
    if info.magic != MAGIC {
        return Err(OpenErrorKind::BadMagic { found: info.magic });
    }
    if info.version != FORMAT_VERSION {
        return Err(OpenErrorKind::VersionMismatch {
            expected: FORMAT_VERSION,
            found: info.version,
        });
    }
    if info.data_offset != HEADER_SIZE as u64 {
        return Err(OpenErrorKind::BadDataOffset {
            found: info.data_offset,
        });
    }
    if info.total_len != actual_len {
        return Err(OpenErrorKind::LengthMismatch {
            header: info.total_len,
            actual: actual_len,
        });
    }
    Ok(())
}

/// Whether `/dev/shm` can be backed by transparent huge pages.
fn huge_pages_available() -> Result<(), HugePagesError> {
    let knob = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    let setting = std::fs::read_to_string(knob).map_err(|e| HugePagesError {
        reason: format!("cannot read {knob} ({e}): this kernel has no transparent huge pages"),
    })?;
    let selected = setting
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
        .unwrap_or_default();
    match selected.as_str() {
        "force" => return Ok(()),
        "deny" => {
            return Err(HugePagesError {
                reason: format!("{knob} is \"deny\", which disables them for every tmpfs"),
            })
        }
        _ => {}
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let opts = mounts
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, _, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (dir == "/dev/shm").then(|| opts.to_owned())
        })
        .unwrap_or_default();
    let huge = opts
        .split(',')
        .find_map(|o| o.strip_prefix("huge="))
        .unwrap_or("never");
    match huge {
        "always" | "within_size" | "advise" => Ok(()),
        other => Err(HugePagesError {
            reason: format!(
                "/dev/shm is mounted with huge={other} ({knob} is \"{selected}\"); remount it \
                 with `mount -o remount,huge=advise /dev/shm` or set the knob to \"force\""
            ),
        }),
    }
}

/// What [`inspect`] and [`list`] report about a segment, read without joining it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// The segment's name.
    pub name: String,
    /// Length of the file (`fstat`).
    pub file_len: u64,
    /// Owner uid.
    pub owner_uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Inode number (with `device`, identifies the file behind the name).
    pub inode: u64,
    /// Device number of `/dev/shm`.
    pub device: u64,
    /// The header, if the file is long enough to hold one.
    pub header: Option<HeaderInfo>,
    /// How long ago the file was last changed (for telling a creation in progress from
    /// a stale one when no creator is recorded).
    pub age: Option<Duration>,
}

/// Who keeps a segment in use, as far as this process can tell.
#[derive(Debug)]
enum Usage {
    /// No shm-core handle holds its lock, and no process we could inspect maps it.
    Unused,
    /// A live shm-core handle (in some process, of some user) holds its in-use lock.
    Locked,
    /// Process `pid` maps it (found in `/proc/<pid>/maps` by device and inode).
    Mapped(u32),
    /// `/proc/<pid>/maps` could not be read (another user's process, say), so a mapping made
    /// without shm-core (which takes no lock) cannot be ruled out.
    Undecided { pid: u32, error: io::Error },
}

/// What a scan of `/proc/*/maps` for one file found.
#[derive(Debug, Default)]
struct MapsScan {
    /// Processes that map it (all of them, or the first, as asked).
    pids: Vec<u32>,
    /// The first process whose maps could not be read (0: `/proc` itself), and why.
    undecided: Option<(u32, io::Error)>,
}

/// Which live processes map the file `dev`/`ino` (`all`: every one, else stop at the first),
/// scanning `/proc/*/maps` and matching each mapping's device and inode (never its path,
/// which may hold spaces or `(deleted)`).
fn proc_maps_scan(dev: u64, ino: u64, all: bool) -> MapsScan {
    let mut scan = MapsScan::default();
    let procs = match std::fs::read_dir("/proc") {
        Ok(p) => p,
        Err(error) => {
            scan.undecided = Some((0, error));
            return scan;
        }
    };
    let (major, minor) = sys::dev_major_minor(dev);
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // As bytes: a mapped path need not be UTF-8.
        let maps = match std::fs::read(format!("/proc/{pid}/maps")) {
            Ok(m) => m,
            // Gone meanwhile (or a zombie without an address space).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                continue
            }
            Err(error) => {
                scan.undecided.get_or_insert((pid, error));
                continue;
            }
        };
        // address perms offset dev inode [path]
        let hit = maps.split(|&b| b == b'\n').any(|l| {
            let mut f = l
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .skip(3);
            let (Some(d), Some(i)) = (f.next(), f.next()) else {
                return false;
            };
            let (Ok(d), Ok(i)) = (std::str::from_utf8(d), std::str::from_utf8(i)) else {
                return false;
            };
            let Some((maj, min)) = d.split_once(':') else {
                return false;
            };
            i.parse::<u64>().ok() == Some(ino)
                && u32::from_str_radix(maj, 16).ok() == Some(major)
                && u32::from_str_radix(min, 16).ok() == Some(minor)
        });
        if hit {
            scan.pids.push(pid);
            if !all {
                break;
            }
        }
    }
    scan.pids.sort_unstable();
    scan
}

/// Which live process maps the file `dev`/`ino`; a process that cannot be inspected leaves
/// the answer undecided unless another maps it.
fn proc_maps_usage(dev: u64, ino: u64) -> Usage {
    let scan = proc_maps_scan(dev, ino, false);
    match (scan.pids.first(), scan.undecided) {
        (Some(&pid), _) => Usage::Mapped(pid),
        (None, Some((pid, error))) => Usage::Undecided { pid, error },
        (None, None) => Usage::Unused,
    }
}

/// A failure to look at the segment `name`, as the error of a removal that needed the look.
fn inspect_to_remove_error(name: &str, e: OpenError) -> RemoveError {
    let kind = match e.kind {
        OpenErrorKind::NotFound => RemoveErrorKind::NotFound,
        _ => RemoveErrorKind::Inspect(e),
    };
    RemoveError::new(name, kind)
}

/// Who uses a segment now, as [`users`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    /// The processes that map it, by pid, ascending (found in `/proc/*/maps`).
    pub pids: Vec<u32>,
    /// Whether a shm-core handle holds its in-use lock (every [`Segment`] does while it
    /// maps the segment, in any process of any user).
    pub locked: bool,
    /// A process whose maps this user cannot read (0: `/proc` itself), which might map the
    /// segment unseen; `None` when every process was inspected.
    pub uninspectable: Option<u32>,
}

impl Users {
    /// Whether anything uses it, as far as this process can tell.
    pub fn any(&self) -> bool {
        self.locked || !self.pids.is_empty()
    }
}

/// Which processes use the segment `name` now: every process that maps it, and whether a
/// shm-core handle holds its in-use lock. A snapshot: processes may map or unmap it just
/// after. Reads `/proc/*/maps` of every process; not for hot paths.
///
/// # Errors
///
/// `NotFound`, an invalid name, or the OS error of opening or locking the file.
pub fn users(name: &str) -> Result<Users, OpenError> {
    let sname =
        SegmentName::new(name).map_err(|e| OpenError::new(name, OpenErrorKind::InvalidName(e)))?;
    let (fd, st) = open_regular(&sname, libc::O_RDONLY)?;
    let free = sys::flock_nb(&fd, true).map_err(|source| {
        OpenError::new(
            name,
            OpenErrorKind::Os {
                op: "flock",
                source,
            },
        )
    })?;
    // An exclusive lock taken only to test: drop it at once (an opener that met it opens
    // anew, as it does during `remove_stale`).
    drop(fd);
    let scan = proc_maps_scan(st.dev, st.ino, true);
    Ok(Users {
        pids: scan.pids,
        locked: !free,
        uninspectable: scan.undecided.map(|(pid, _)| pid),
    })
}

/// Removes the segment `name` only if nothing uses it: no shm-core handle holds its in-use
/// lock and no process maps it. The in-use lock is held exclusively from the check to the
/// unlink, so no shm-core handle attaches in between. [`remove`] removes the name whatever
/// uses it.
///
/// What it cannot see: a program that maps the file without shm-core (so takes no lock) in
/// a process whose `/proc/<pid>/maps` this user cannot read. Unlike [`remove_stale`], which
/// removes segments nobody named, it removes the segment then (the caller named it).
///
/// # Errors
///
/// `InUseBy` naming the processes that map it (or, with none named, saying a shm-core
/// handle in a process this user cannot inspect holds the lock); `BeingCreated` for a
/// segment whose creator is still making it; `NotFound`, or the OS error.
pub fn remove_unused(name: &str) -> Result<(), RemoveError> {
    let sname = SegmentName::new(name)
        .map_err(|e| RemoveError::new(name, RemoveErrorKind::InvalidName(e)))?;
    let inspect_error = |e: OpenError| inspect_to_remove_error(name, e);
    let (fd, st) = open_regular(&sname, libc::O_RDONLY).map_err(inspect_error)?;
    let free = sys::flock_nb(&fd, true).map_err(|source| {
        RemoveError::new(
            name,
            RemoveErrorKind::Os {
                op: "flock",
                source,
            },
        )
    })?;
    let scan = proc_maps_scan(st.dev, st.ino, true);
    if !free || !scan.pids.is_empty() {
        return Err(RemoveError::new(
            name,
            RemoveErrorKind::InUseBy {
                pids: scan.pids,
                locked: !free,
            },
        ));
    }
    // A segment still being created (its creator, alive, has not taken the lock yet, or is
    // initialising) is in use too, though nothing maps or locks it yet.
    let info = inspect(name).map_err(inspect_error)?;
    let creating = match info.header {
        Some(h) if h.magic == MAGIC || h.magic == 0 => match h.state {
            SegmentState::Unwritten | SegmentState::Initializing => !info.looks_stale(),
            _ => false,
        },
        Some(_) => false,
        None => !info.looks_stale(),
    };
    if creating {
        let creator = info
            .header
            .filter(|h| h.state != SegmentState::Unwritten)
            .map(|h| h.creator);
        return Err(RemoveError::new(
            name,
            RemoveErrorKind::BeingCreated { creator },
        ));
    }
    // A process whose maps cannot be read (`scan.undecided`) is not held against the
    // removal: any shm-core handle in it would hold the lock, and the caller named this
    // segment to remove.
    unlink_if_same(&sname, st.ino, st.dev)?;
    drop(fd);
    Ok(())
}

/// Opens the segment's file anew and asks who uses it. Returns the descriptor, still holding
/// the in-use lock exclusively when the answer is not `Locked` (so no shm-core opener can
/// attach until it is dropped), or `None` if the name no longer names the file `dev`/`ino`.
fn probe_usage(
    name: &SegmentName,
    dev: u64,
    ino: u64,
) -> Result<Option<(std::os::fd::OwnedFd, Usage)>, OpenError> {
    let (fd, st) = open_regular(name, libc::O_RDONLY)?;
    if st.ino != ino || st.dev != dev {
        return Ok(None);
    }
    let free = sys::flock_nb(&fd, true).map_err(|source| {
        OpenError::new(
            name.as_str(),
            OpenErrorKind::Os {
                op: "flock",
                source,
            },
        )
    })?;
    if !free {
        return Ok(Some((fd, Usage::Locked)));
    }
    Ok(Some((fd, proc_maps_usage(dev, ino))))
}

impl SegmentInfo {
    /// Whether the file carries the shmring magic.
    pub fn is_shmring(&self) -> bool {
        self.header.is_some_and(|h| h.magic == MAGIC)
    }

    /// Whether the recorded creator is still running (`None` if none is recorded or
    /// `/proc` cannot tell).
    pub fn creator_alive(&self) -> Option<bool> {
        let h = self.header?;
        if h.magic != MAGIC || h.state == SegmentState::Unwritten {
            return None;
        }
        match h.creator.liveness() {
            crate::Liveness::Alive => Some(true),
            crate::Liveness::Dead => Some(false),
            crate::Liveness::Unknown => None,
        }
    }

    /// Stale, i.e. garbage that nobody can use:
    /// - a segment stuck in `INITIALIZING` whose creator died;
    /// - a `POISONED` one (its creator's initialiser failed);
    /// - a `READY` one whose creator died and that nobody uses any more (a ring whose both
    ///   ends died); a complete segment still in use is never stale, even after its creator
    ///   exits;
    /// - a file with no header yet that has not changed for longer than
    ///   [`DEFAULT_OPEN_TIMEOUT`];
    ///
    /// and in each case, in use by nobody: no shm-core handle holds its in-use lock (every
    /// handle, in any process of any user, holds one while it maps the segment, and the
    /// kernel drops it when the process dies), and no process maps it (`/proc/*/maps`,
    /// matched by device and inode). A process whose maps this user cannot read (another
    /// user's) might map it without shm-core, so the answer is then `false`;
    /// [`remove_stale`] says which process it could not inspect. Processes that `/proc`
    /// does not list at all (hidden by `hidepid`, or in another pid namespace) are seen only
    /// through the in-use lock, that is, only if they map it through shm-core.
    ///
    /// Files that are not shmring segments are never stale.
    pub fn is_stale(&self) -> bool {
        self.is_stale_by(StaleCheck::Strict)
    }

    /// [`is_stale`](Self::is_stale) by the rule `check`.
    pub fn is_stale_by(&self, check: StaleCheck) -> bool {
        match self.staleness() {
            Staleness::Stale => true,
            Staleness::Undecided { .. } => check == StaleCheck::TrustLocks,
            _ => false,
        }
    }

    /// The verdict behind [`is_stale`](Self::is_stale), with its reason.
    pub fn staleness(&self) -> Staleness {
        if !self.looks_stale() {
            return Staleness::NotStale;
        }
        let Ok(name) = SegmentName::new(&self.name) else {
            return Staleness::NotStale;
        };
        match probe_usage(&name, self.device, self.inode) {
            Ok(Some((_, Usage::Unused))) => Staleness::Stale,
            Ok(Some((_, Usage::Locked))) => Staleness::InUse { pid: None },
            Ok(Some((_, Usage::Mapped(pid)))) => Staleness::InUse { pid: Some(pid) },
            Ok(Some((_, Usage::Undecided { pid, .. }))) => Staleness::Undecided { pid },
            // Gone, replaced, or unreadable meanwhile: nothing to call stale.
            Ok(None) | Err(_) => Staleness::NotStale,
        }
    }

    /// [`is_stale`](Self::is_stale) from the header and the file's age alone, before asking
    /// who uses it.
    fn looks_stale(&self) -> bool {
        let old = self.age.is_some_and(|a| a > DEFAULT_OPEN_TIMEOUT);
        let Some(h) = self.header else {
            return old;
        };
        if h.magic == 0 && h.state == SegmentState::Unwritten {
            return old;
        }
        if h.magic != MAGIC {
            return false;
        }
        match h.state {
            SegmentState::Unwritten => old,
            SegmentState::Initializing => h.creator.is_dead(),
            SegmentState::Poisoned => true,
            SegmentState::Ready => h.creator.is_dead(),
            SegmentState::Invalid(_) => false,
        }
    }
}

/// Reads a segment's header without joining it or checking its kind: for tools such as
/// `shmring inspect`. Needs only read permission. The header is read with `pread`, not
/// mapped, so a file truncated meanwhile cannot raise SIGBUS here.
///
/// # Errors
///
/// `InvalidName`, `NotFound`, `PermissionDenied`, `Symlink`, `NotRegularFile` or an OS
/// error.
pub fn inspect(name: &str) -> Result<SegmentInfo, OpenError> {
    let err = |kind| OpenError::new(name, kind);
    let sname = SegmentName::new(name).map_err(|e| err(OpenErrorKind::InvalidName(e)))?;
    let (fd, st) = open_regular(&sname, libc::O_RDONLY)?;
    let mut bytes = [0u8; HEADER_SIZE];
    let header = sys::pread_exact(&fd, &mut bytes, 0)
        .map_err(|source| {
            err(OpenErrorKind::Os {
                op: "pread",
                source,
            })
        })?
        .then(|| HeaderInfo::from_bytes(&bytes));
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_sub(st.mtime?));
    Ok(SegmentInfo {
        name: sname.as_str().to_owned(),
        file_len: st.size,
        owner_uid: st.uid,
        mode: st.mode & 0o7777,
        inode: st.ino,
        device: st.dev,
        header,
        age,
    })
}

/// Every shmring segment on this machine (regular files under `/dev/shm` that carry the
/// shmring magic), sorted by name. Files this user cannot read are skipped.
///
/// # Errors
///
/// The OS error of reading `/dev/shm`.
pub fn list() -> io::Result<Vec<SegmentInfo>> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("cannot list /dev/shm: {e}"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/dev/shm").map_err(ctx)? {
        let entry = entry.map_err(ctx)?;
        let Some(file) = entry.file_name().to_str().map(|s| format!("/{s}")) else {
            continue;
        };
        // `inspect` opens without blocking and refuses anything but a regular file.
        if let Ok(info) = inspect(&file) {
            if info.is_shmring() {
                out.push(info);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the segment's name. Processes that have it mapped keep their mapping.
///
/// # Errors
///
/// `InvalidName`, `NotFound`, `PermissionDenied`, or the OS error.
pub fn remove(name: &str) -> Result<(), RemoveError> {
    let sname = SegmentName::new(name)
        .map_err(|e| RemoveError::new(name, RemoveErrorKind::InvalidName(e)))?;
    remove_name(&sname)
}

/// Removes the segment only if it is stale (see [`SegmentInfo::is_stale`]). Returns what
/// was found.
///
/// # Errors
///
/// `NotStale` if its creator is alive (or it is being created), `InUse` if a live process
/// uses it, `Undecided` if a process this user cannot inspect might map it, `Replaced` if
/// the name was given to another file meanwhile, `NotShmring` for foreign files, or why it
/// could not be inspected or removed.
pub fn remove_stale(name: &str) -> Result<SegmentInfo, RemoveError> {
    remove_stale_by(name, StaleCheck::Strict)
}

/// [`SegmentInfo::staleness`]: whether a segment is garbage, and if not quite, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Not stale by its header: its creator lives, or it is being created, or it is not a
    /// shmring segment.
    NotStale,
    /// Its header says stale, but a live process uses it: `pid` maps it, or (`None`) a
    /// shm-core handle holds its in-use lock.
    InUse {
        /// The process found mapping it, if the lock did not answer first.
        pid: Option<u32>,
    },
    /// Its header says stale and no shm-core handle uses it, but process `pid` could not be
    /// inspected (0: `/proc` could not be read), and might map it without shm-core.
    Undecided {
        /// The process.
        pid: u32,
    },
    /// Garbage: nobody uses it.
    Stale,
}

/// How [`remove_stale_by`] (and [`SegmentInfo::is_stale_by`]) treat a process whose
/// `/proc/<pid>/maps` this user cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleCheck {
    /// It might map the segment without shm-core (no shm-core handle would show it), so the
    /// segment is not removed: [`RemoveErrorKind::Undecided`] names the process.
    Strict,
    /// Trust the in-use locks: every shm-core handle, in any process of any user, holds one
    /// while it maps the segment, so only a program mapping the file without shm-core could
    /// be missed, and only in a process this user cannot inspect. For users who cannot read
    /// every process's maps (anyone but a root with `CAP_SYS_PTRACE`; in some sandboxes, not
    /// even root) and know that no such program maps shmring's segments.
    TrustLocks,
}

/// [`remove_stale`] by the rule `check`.
///
/// # Errors
///
/// As [`remove_stale`]; with [`StaleCheck::TrustLocks`], never `Undecided`.
pub fn remove_stale_by(name: &str, check: StaleCheck) -> Result<SegmentInfo, RemoveError> {
    let sname = SegmentName::new(name)
        .map_err(|e| RemoveError::new(name, RemoveErrorKind::InvalidName(e)))?;
    let inspect_error = |e: OpenError| inspect_to_remove_error(name, e);
    let info = inspect(name).map_err(inspect_error)?;
    if !info.looks_stale() {
        let kind = match info.header {
            Some(h) if h.magic != MAGIC && h.magic != 0 => {
                RemoveErrorKind::NotShmring { found: h.magic }
            }
            Some(h) => RemoveErrorKind::NotStale {
                state: h.state,
                creator: (h.state != SegmentState::Unwritten).then_some(h.creator),
            },
            None => RemoveErrorKind::NotStale {
                state: SegmentState::Unwritten,
                creator: None,
            },
        };
        return Err(RemoveError::new(name, kind));
    }
    let Some((lock, usage)) =
        probe_usage(&sname, info.device, info.inode).map_err(inspect_error)?
    else {
        return Err(RemoveError::new(name, RemoveErrorKind::Replaced));
    };
    let kind = match usage {
        Usage::Unused => None,
        Usage::Locked => Some(RemoveErrorKind::InUse { pid: None }),
        Usage::Mapped(pid) => Some(RemoveErrorKind::InUse { pid: Some(pid) }),
        Usage::Undecided { .. } if check == StaleCheck::TrustLocks => None,
        Usage::Undecided { pid, error } => Some(RemoveErrorKind::Undecided { pid, source: error }),
    };
    if let Some(kind) = kind {
        return Err(RemoveError::new(name, kind));
    }
    // Still holding the in-use lock exclusively, so no shm-core handle attaches between the
    // verdict and the unlink (an opener that finds it held opens the name anew, and finds it
    // gone); and only if the name still names the file we judged.
    unlink_if_same(&sname, info.inode, info.device)?;
    drop(lock);
    Ok(info)
}
