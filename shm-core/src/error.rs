//! One error type per operation. Each names the segment, says what failed and, where there
//! is one, keeps the OS error (`std::error::Error::source`, [`raw_os_error`]).
//!
//! [`raw_os_error`]: OpenError::raw_os_error

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::header::{Fingerprint, Kind, SegmentState};
use crate::name::NameError;
use crate::ProcessId;

/// `mlock` failed.
#[derive(Debug)]
pub struct MlockError {
    /// Bytes we tried to lock.
    pub len: u64,
    /// The soft `RLIMIT_MEMLOCK` (`None` = unlimited).
    pub soft_limit: Option<u64>,
    /// The hard `RLIMIT_MEMLOCK` (`None` = unlimited).
    pub hard_limit: Option<u64>,
    /// The errno.
    pub source: io::Error,
}

impl fmt::Display for MlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lim = |l: Option<u64>| l.map_or("unlimited".to_owned(), |v| format!("{v} bytes"));
        write!(
            f,
            "mlock of {} bytes failed ({}); RLIMIT_MEMLOCK is {} (hard {}): raise it \
             (`ulimit -l`, LimitMEMLOCK= in systemd, or CAP_IPC_LOCK) or turn mlock off",
            self.len,
            self.source,
            lim(self.soft_limit),
            lim(self.hard_limit)
        )
    }
}

/// Huge pages were asked for but the system cannot give them for shared memory.
#[derive(Debug, Clone)]
pub struct HugePagesError {
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for HugePagesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "huge pages are not available for shared memory: {}",
            self.reason
        )
    }
}

/// Why [`SegmentBuilder::create`](crate::SegmentBuilder::create) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateErrorKind {
    /// The name broke a naming rule.
    InvalidName(NameError),
    /// A segment of that name exists already.
    AlreadyExists,
    /// The OS refused (`EACCES`/`EPERM`).
    PermissionDenied(io::Error),
    /// The requested size does not fit in the address space.
    TooLarge {
        /// Bytes requested after the header.
        requested: u64,
    },
    /// A system call failed.
    Os {
        /// Which call.
        op: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// `mlock` failed.
    Mlock(MlockError),
    /// Huge pages are not available.
    HugePages(HugePagesError),
    /// The caller's initialiser returned an error; the segment was removed.
    Init(Box<dyn Error + Send + Sync>),
    /// What the segment would hold cannot work on this machine (a layer above shm-core
    /// says why, e.g. a priority-inheritance mutex on a kernel without `FUTEX_LOCK_PI2`);
    /// nothing was created.
    Unsupported {
        /// Why, as a sentence.
        reason: String,
    },
}

/// Creating a segment failed.
#[derive(Debug)]
pub struct CreateError {
    pub(crate) name: String,
    pub(crate) kind: CreateErrorKind,
}

impl CreateError {
    pub(crate) fn new(name: &str, kind: CreateErrorKind) -> CreateError {
        CreateError {
            name: name.to_owned(),
            kind,
        }
    }

    /// `Unsupported`, for layers above shm-core that refuse before creating `name`.
    pub fn unsupported(name: &str, reason: impl Into<String>) -> CreateError {
        CreateError::new(
            name,
            CreateErrorKind::Unsupported {
                reason: reason.into(),
            },
        )
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What went wrong.
    pub fn kind(&self) -> &CreateErrorKind {
        &self.kind
    }

    /// The errno, where the failure came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.kind {
            CreateErrorKind::PermissionDenied(e) | CreateErrorKind::Os { source: e, .. } => {
                e.raw_os_error()
            }
            CreateErrorKind::Mlock(m) => m.source.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.name;
        write!(f, "cannot create shared-memory segment {n:?}: ")?;
        match &self.kind {
            CreateErrorKind::InvalidName(e) => write!(f, "{e}"),
            CreateErrorKind::AlreadyExists => write!(
                f,
                "a segment of that name already exists (open it, or remove it with `shmring rm {n}`)"
            ),
            CreateErrorKind::PermissionDenied(e) => {
                write!(f, "permission denied ({e}); check the owner and mode of /dev/shm{n}")
            }
            CreateErrorKind::TooLarge { requested } => {
                write!(f, "{requested} bytes do not fit in this process's address space")
            }
            CreateErrorKind::Os { op, source } => write!(f, "{op} failed: {source}"),
            CreateErrorKind::Mlock(e) => write!(f, "{e}"),
            CreateErrorKind::HugePages(e) => write!(f, "{e}"),
            CreateErrorKind::Init(e) => {
                write!(f, "the initialiser failed, so the segment was removed: {e}")
            }
            CreateErrorKind::Unsupported { reason } => {
                write!(f, "{reason}; nothing was created")
            }
        }
    }
}

impl Error for CreateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            CreateErrorKind::InvalidName(e) => Some(e),
            CreateErrorKind::PermissionDenied(e) | CreateErrorKind::Os { source: e, .. } => Some(e),
            CreateErrorKind::Mlock(e) => Some(&e.source),
            CreateErrorKind::Init(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why opening (or inspecting) a segment failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The name broke a naming rule.
    InvalidName(NameError),
    /// No segment has that name.
    NotFound,
    /// The OS refused (`EACCES`/`EPERM`).
    PermissionDenied(io::Error),
    /// The name is a symbolic link (refused: `O_NOFOLLOW`).
    Symlink,
    /// The name is not a regular file (a FIFO, socket or device planted under `/dev/shm`).
    NotRegularFile {
        /// The file's `st_mode`.
        mode: u32,
    },
    /// The segment belongs to another user and foreign owners were not allowed.
    ForeignOwner {
        /// The segment's owner.
        owner_uid: u32,
        /// Our effective uid.
        our_uid: u32,
    },
    /// A system call failed.
    Os {
        /// Which call.
        op: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// Its creator died before finishing initialisation; remove it and create it again.
    Stale {
        /// The creator, if it had written its identity.
        creator: Option<ProcessId>,
        /// The segment's length on disk.
        len: u64,
    },
    /// Its creator is alive but did not finish initialising within the open timeout.
    InitTimeout {
        /// The creator, if it had written its identity.
        creator: Option<ProcessId>,
        /// How long we waited.
        waited: Duration,
    },
    /// Its creator's initialiser failed; it must not be used.
    Poisoned {
        /// The creator.
        creator: ProcessId,
    },
    /// The state word holds a value shmring never writes.
    InvalidState {
        /// The value found.
        found: u32,
    },
    /// It is not a shmring segment (or its header was overwritten).
    BadMagic {
        /// The magic found.
        found: u64,
    },
    /// It was written by an incompatible shmring header format.
    VersionMismatch {
        /// Our format.
        expected: u32,
        /// The segment's.
        found: u32,
    },
    /// It holds another kind of object.
    KindMismatch {
        /// What the caller asked for.
        expected: Kind,
        /// The raw kind found.
        found: u32,
    },
    /// Its layout fingerprint differs from the caller's (boxed: a fingerprint carries the
    /// payload type's name, and errors stay small).
    FingerprintMismatch {
        /// The caller's.
        expected: Box<Fingerprint>,
        /// The segment's.
        found: Box<Fingerprint>,
    },
    /// The file's length differs from the length in the header (truncated, or lying).
    LengthMismatch {
        /// Length recorded in the header.
        header: u64,
        /// Length of the file (`fstat`).
        actual: u64,
    },
    /// The file is shorter than a header (but not empty, as it is while being created).
    TooShort {
        /// Length of the file.
        len: u64,
    },
    /// The file is too short for what the caller opens, or far longer (more than a huge
    /// page) than that needs; its header agrees with the file, so it was made that way:
    /// planted, or by another layout.
    UnexpectedLength {
        /// Length of the file.
        len: u64,
        /// The length `create` gives a segment of the caller's layout (page-rounded).
        expected: u64,
    },
    /// The header's data offset is not the one this format uses.
    BadDataOffset {
        /// The offset found.
        found: u64,
    },
    /// A region the opener needs does not lie inside the segment.
    Region(crate::RegionError),
    /// What the segment holds cannot work on this machine (a layer above shm-core says why,
    /// e.g. a priority-inheritance mutex on a kernel without `FUTEX_LOCK_PI2`).
    Unsupported {
        /// Why, as a sentence.
        reason: String,
    },
    /// `mlock` failed.
    Mlock(MlockError),
    /// Huge pages are not available.
    HugePages(HugePagesError),
}

/// Opening a segment failed.
#[derive(Debug)]
pub struct OpenError {
    pub(crate) name: String,
    pub(crate) kind: OpenErrorKind,
}

impl OpenError {
    pub(crate) fn new(name: &str, kind: OpenErrorKind) -> OpenError {
        OpenError {
            name: name.to_owned(),
            kind,
        }
    }

    /// A segment `name` that opened but lacks a region its opener needs: for layers above
    /// shm-core that form typed regions from what they opened.
    pub fn region(name: &str, error: crate::RegionError) -> OpenError {
        OpenError::new(name, OpenErrorKind::Region(error))
    }

    /// `Unsupported`, for layers above shm-core that refuse what they opened.
    pub fn unsupported(name: &str, reason: impl Into<String>) -> OpenError {
        OpenError::new(
            name,
            OpenErrorKind::Unsupported {
                reason: reason.into(),
            },
        )
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What went wrong.
    pub fn kind(&self) -> &OpenErrorKind {
        &self.kind
    }

    /// The errno, where the failure came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.kind {
            OpenErrorKind::PermissionDenied(e) | OpenErrorKind::Os { source: e, .. } => {
                e.raw_os_error()
            }
            OpenErrorKind::Mlock(m) => m.source.raw_os_error(),
            OpenErrorKind::NotFound => Some(libc::ENOENT),
            _ => None,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.name;
        write!(f, "cannot open shared-memory segment {n:?}: ")?;
        match &self.kind {
            OpenErrorKind::InvalidName(e) => write!(f, "{e}"),
            OpenErrorKind::NotFound => f.write_str("no segment of that name exists (`shmring ls` lists them)"),
            OpenErrorKind::PermissionDenied(e) => write!(
                f,
                "permission denied ({e}); the segment's mode or owner does not let this user open it"
            ),
            OpenErrorKind::Symlink => write!(
                f,
                "/dev/shm{n} is a symbolic link, which shmring refuses to follow"
            ),
            OpenErrorKind::NotRegularFile { mode } => write!(
                f,
                "/dev/shm{n} is not a regular file (mode {mode:#o}), so it is not a segment"
            ),
            OpenErrorKind::ForeignOwner { owner_uid, our_uid } => write!(
                f,
                "it is owned by uid {owner_uid}, not by us (uid {our_uid}); \
                 allow it explicitly with `allow_foreign_owner(true)` if that is intended"
            ),
            OpenErrorKind::Os { op, source } => write!(f, "{op} failed: {source}"),
            OpenErrorKind::Stale { creator: Some(c), .. } => write!(
                f,
                "it is stale: its creator ({c}) died before finishing initialisation; \
                 remove it with `shmring rm --stale` or `shm_core::remove_stale`"
            ),
            OpenErrorKind::Stale { creator: None, len } => write!(
                f,
                "it is stale: its creator never wrote a header (the file is {len} bytes); \
                 remove it with `shmring rm {n}`"
            ),
            OpenErrorKind::InitTimeout { creator, waited } => {
                write!(f, "its creator")?;
                if let Some(c) = creator {
                    write!(f, " ({c})")?;
                }
                write!(
                    f,
                    " is alive but did not finish initialising it within {waited:?}; \
                     retry, or raise the open timeout"
                )
            }
            OpenErrorKind::Poisoned { creator } => write!(
                f,
                "its creator ({creator}) failed to initialise it; remove it and create it again"
            ),
            OpenErrorKind::InvalidState { found } => write!(
                f,
                "its header is corrupted: state word is {found}, which shmring never writes"
            ),
            OpenErrorKind::BadMagic { found } => write!(
                f,
                "it is not a shmring segment (magic expected {:#018x}, found {found:#018x})",
                crate::header::MAGIC
            ),
            OpenErrorKind::VersionMismatch { expected, found } => write!(
                f,
                "it uses header format version {found}, but this library reads version {expected}"
            ),
            OpenErrorKind::KindMismatch { expected, found } => {
                let found_name = Kind::from_raw(*found).map_or_else(
                    || format!("unknown kind {found}"),
                    |k| format!("{} segment", k.with_article()),
                );
                write!(
                    f,
                    "expected {} segment, found {found_name}",
                    expected.with_article()
                )
            }
            OpenErrorKind::FingerprintMismatch { expected, found } => write!(
                f,
                "its layout differs from the caller's: {}",
                expected.differences(found).join(", ")
            ),
            OpenErrorKind::LengthMismatch { header, actual } => write!(
                f,
                "its header says {header} bytes but the file is {actual} bytes \
                 (truncated or overwritten); refusing to map it"
            ),
            OpenErrorKind::TooShort { len } => write!(
                f,
                "the file is only {len} bytes, shorter than the {}-byte header: it was \
                 truncated, or is not a shmring segment",
                crate::header::HEADER_SIZE
            ),
            OpenErrorKind::UnexpectedLength { len, expected } => write!(
                f,
                "the file is {len} bytes, but a segment of the layout being opened is {expected} \
                 bytes (planted, or made with another layout); refusing it before touching \
                 its pages"
            ),
            OpenErrorKind::BadDataOffset { found } => write!(
                f,
                "its header is corrupted: data offset is {found}, expected {}",
                crate::header::HEADER_SIZE
            ),
            OpenErrorKind::Region(e) => write!(
                f,
                "it lacks a region its contents need ({e}); it was truncated or forged"
            ),
            OpenErrorKind::Unsupported { reason } => f.write_str(reason),
            OpenErrorKind::Mlock(e) => write!(f, "{e}"),
            OpenErrorKind::HugePages(e) => write!(f, "{e}"),
        }
    }
}

impl Error for OpenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            OpenErrorKind::InvalidName(e) => Some(e),
            OpenErrorKind::PermissionDenied(e) | OpenErrorKind::Os { source: e, .. } => Some(e),
            OpenErrorKind::Mlock(e) => Some(&e.source),
            OpenErrorKind::Region(e) => Some(e),
            _ => None,
        }
    }
}

/// [`SegmentBuilder::open_or_create`](crate::SegmentBuilder::open_or_create) failed: either
/// while creating (no segment existed) or while opening the one another process created.
#[derive(Debug)]
pub enum OpenOrCreateError {
    /// Creating failed.
    Create(CreateError),
    /// Opening the existing segment failed.
    Open(OpenError),
}

impl fmt::Display for OpenOrCreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenOrCreateError::Create(e) => e.fmt(f),
            OpenOrCreateError::Open(e) => e.fmt(f),
        }
    }
}

impl Error for OpenOrCreateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            OpenOrCreateError::Create(e) => Some(e),
            OpenOrCreateError::Open(e) => Some(e),
        }
    }
}

impl From<CreateError> for OpenOrCreateError {
    fn from(e: CreateError) -> Self {
        OpenOrCreateError::Create(e)
    }
}

impl From<OpenError> for OpenOrCreateError {
    fn from(e: OpenError) -> Self {
        OpenOrCreateError::Open(e)
    }
}

/// Why removing a segment failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoveErrorKind {
    /// The name broke a naming rule.
    InvalidName(NameError),
    /// No segment has that name.
    NotFound,
    /// The OS refused (`EACCES`/`EPERM`).
    PermissionDenied(io::Error),
    /// `remove_stale` found a segment that is not stale: its creator is alive, or some
    /// process still maps it, or (with no header yet) it is younger than the open timeout.
    NotStale {
        /// Its state.
        state: SegmentState,
        /// Its creator, if it wrote its identity.
        creator: Option<ProcessId>,
    },
    /// `remove_stale` found a segment whose creator died but that a live process still uses.
    InUse {
        /// The process found mapping it, or `None` when a shm-core handle's in-use lock
        /// showed it (which does not say whose).
        pid: Option<u32>,
    },
    /// `remove_unused` found the segment still being created by a live creator.
    BeingCreated {
        /// Its creator, once it wrote its identity.
        creator: Option<ProcessId>,
    },
    /// `remove_unused` found the segment in use.
    InUseBy {
        /// The processes that map it, ascending (empty when only the lock showed it).
        pids: Vec<u32>,
        /// Whether a shm-core handle holds its in-use lock (possibly in a process this user
        /// cannot inspect, when `pids` is empty).
        locked: bool,
    },
    /// `remove_stale` (or `remove_unused`) could not rule out a process mapping the segment: it cannot read that
    /// process's `/proc/<pid>/maps` (another user's, say), and a program that maps the file
    /// without shm-core takes no in-use lock.
    Undecided {
        /// The process that could not be inspected (0: `/proc` itself could not be read).
        pid: u32,
        /// Why.
        source: io::Error,
    },
    /// `remove_stale` found the name given to another file while it decided.
    Replaced,
    /// `remove_stale` found a file that is not a shmring segment; it is left alone.
    NotShmring {
        /// The magic found.
        found: u64,
    },
    /// `remove_stale` could not read the segment to decide.
    Inspect(OpenError),
    /// A system call failed.
    Os {
        /// Which call.
        op: &'static str,
        /// The errno.
        source: io::Error,
    },
}

/// Removing a segment failed.
#[derive(Debug)]
pub struct RemoveError {
    pub(crate) name: String,
    pub(crate) kind: RemoveErrorKind,
}

impl RemoveError {
    pub(crate) fn new(name: &str, kind: RemoveErrorKind) -> RemoveError {
        RemoveError {
            name: name.to_owned(),
            kind,
        }
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What went wrong.
    pub fn kind(&self) -> &RemoveErrorKind {
        &self.kind
    }

    /// The errno, where the failure came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.kind {
            RemoveErrorKind::PermissionDenied(e) | RemoveErrorKind::Os { source: e, .. } => {
                e.raw_os_error()
            }
            RemoveErrorKind::NotFound => Some(libc::ENOENT),
            RemoveErrorKind::Inspect(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot remove shared-memory segment {:?}: ", self.name)?;
        match &self.kind {
            RemoveErrorKind::InvalidName(e) => write!(f, "{e}"),
            RemoveErrorKind::NotFound => f.write_str("no segment of that name exists"),
            RemoveErrorKind::PermissionDenied(e) => write!(f, "permission denied ({e})"),
            RemoveErrorKind::NotStale {
                state,
                creator: Some(c),
            } => write!(
                f,
                "it is not stale (state {state}; its creator, {c}, is alive); use a plain \
                 remove if you mean it"
            ),
            RemoveErrorKind::NotStale {
                state,
                creator: None,
            } => write!(
                f,
                "it is not stale (state {state}; it is being created right now)"
            ),
            RemoveErrorKind::InUse { pid: Some(pid) } => write!(
                f,
                "it is not stale: its creator is dead, but it is in use (process {pid} maps it)"
            ),
            RemoveErrorKind::InUse { pid: None } => write!(
                f,
                "it is not stale: its creator is dead, but it is in use (a live shmring handle \
                 holds its in-use lock)"
            ),
            RemoveErrorKind::BeingCreated { creator: Some(c) } => {
                write!(f, "it is being created, by {c}, which is alive")
            }
            RemoveErrorKind::BeingCreated { creator: None } => {
                write!(f, "it is being created right now")
            }
            RemoveErrorKind::InUseBy { pids, .. } if !pids.is_empty() => {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "it is in use: {} {} map{} it",
                    if pids.len() == 1 {
                        "process"
                    } else {
                        "processes"
                    },
                    list.join(", "),
                    if pids.len() == 1 { "s" } else { "" }
                )
            }
            RemoveErrorKind::InUseBy { .. } => write!(
                f,
                "it is in use: a live shmring handle holds its in-use lock (in a process this \
                 user cannot inspect)"
            ),
            RemoveErrorKind::Undecided { pid: 0, source } => write!(
                f,
                "cannot tell whether it is in use: /proc cannot be read ({source})"
            ),
            RemoveErrorKind::Undecided { pid, source } => write!(
                f,
                "cannot tell whether it is in use: /proc/{pid}/maps cannot be read ({source}), \
                 and that process might map it without shmring (no shmring handle holds it); \
                 run this as a user who can inspect every process, or trust shmring's in-use \
                 locks (`shmring rm --stale --trust-locks`, `StaleCheck::TrustLocks`) if no \
                 program maps shmring segments without shmring"
            ),
            RemoveErrorKind::Replaced => f.write_str(
                "the name was given to another segment while deciding; nothing was removed",
            ),
            RemoveErrorKind::NotShmring { found } => write!(
                f,
                "it is not a shmring segment (magic {found:#018x}), so --stale leaves it alone"
            ),
            RemoveErrorKind::Inspect(e) => write!(f, "could not inspect it: {e}"),
            RemoveErrorKind::Os { op, source } => write!(f, "{op} failed: {source}"),
        }
    }
}

impl Error for RemoveError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            RemoveErrorKind::InvalidName(e) => Some(e),
            RemoveErrorKind::PermissionDenied(e) | RemoveErrorKind::Os { source: e, .. } => Some(e),
            RemoveErrorKind::Inspect(e) => Some(e),
            RemoveErrorKind::Undecided { source, .. } => Some(source),
            _ => None,
        }
    }
}
