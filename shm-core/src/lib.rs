//! Named POSIX shared-memory segments for cross-process IPC on Linux.
//!
//! A segment is a file under `/dev/shm` that several processes map. shm-core gives it:
//!
//! - a validated name ([`SegmentName`]),
//! - a header at offset 0 ([`HeaderInfo`]): magic, format version, [`Kind`], layout
//!   [`Fingerprint`], length, state, and the creator's identity ([`ProcessId`]: pid + start
//!   time, so pid reuse never fools a liveness check),
//! - a creation handshake: exclusive create, mode 0600 whatever the umask, initialise in
//!   place, publish `READY` with Release; openers wait (bounded) for it and report a
//!   creator that died mid-way as stale,
//! - checks at open, before any typed access: magic, version, kind, fingerprint, and that
//!   the file's length equals the header's (a segment truncated before the open is an
//!   error, not a SIGBUS),
//! - typed regions at offsets ([`Layout`], [`Region`], [`ShmSafe`]),
//! - prefault, `mlock` and huge-page options, and written-down drop semantics
//!   (see [`Segment`]).
//!
//! **Trust boundary.** Bytes in the mapping are never trusted: every header field, index
//! and length is validated before use. The *file's length* is another matter: a process
//! that may write the file (the same uid, with the default mode 0600) can `ftruncate` it
//! after you opened it, and touching the mapping past the new end then raises SIGBUS.
//! POSIX shared memory cannot be sealed against shrinking, so shmring treats processes
//! with write access to the file as trusted not to truncate it, and refuses segments
//! owned by other uids unless told otherwise.
//!
//! ```
//! use shm_core::{Fingerprint, Kind, Layout, SegmentBuilder};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-core-doc-{}", std::process::id());
//! let mut layout = Layout::new();
//! let hits = layout.push::<AtomicU64>(1)?;
//! let fingerprint = Fingerprint::untyped(0x7469636b);
//!
//! // Process A creates the segment (removed again when `a` drops).
//! let a = SegmentBuilder::new(&name)
//!     .fingerprint(fingerprint)
//!     .layout(&layout)
//!     .create()?;
//! a.get(hits)?.store(1, Ordering::Release);
//!
//! // Process B opens it by name; a wrong kind or fingerprint would be an error here.
//! let b = SegmentBuilder::new(&name).kind(Kind::Raw).fingerprint(fingerprint).open()?;
//! assert_eq!(b.get(hits)?.load(Ordering::Acquire), 1);
//!
//! let wrong = SegmentBuilder::new(&name).fingerprint(Fingerprint::untyped(1)).open();
//! assert!(wrong.unwrap_err().to_string().contains("schema id expected 0x1, found 0x7469636b"));
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]

// Lets the derive's `::shm_core::` paths resolve inside this crate's own tests.
extern crate self as shm_core;

mod error;
mod exit_watcher;
mod header;
pub mod identity;
mod name;
mod process;
mod region;
mod segment;
mod sys;

pub use error::{
    CreateError, CreateErrorKind, HugePagesError, MlockError, OpenError, OpenErrorKind,
    OpenOrCreateError, RemoveError, RemoveErrorKind,
};
pub use header::{Fingerprint, HeaderInfo, Kind, SegmentState, FORMAT_VERSION, HEADER_SIZE, MAGIC};
pub use identity::{Identity, TypeIdentity, TypeName};
pub use name::{NameError, SegmentName, NAME_MAX};
pub use process::{ExitNotice, ExitWatch, Liveness, Lookup, ProcessId, ThisProcess};
pub use region::{Layout, Region, RegionError, ShmSafe};
pub use segment::{
    inspect, list, remove, remove_stale, remove_stale_by, remove_unused, users, Segment,
    SegmentBuilder, SegmentInfo, StaleCheck, Staleness, Users, DEFAULT_MODE, DEFAULT_OPEN_TIMEOUT,
};
/// `#[derive(TypeIdentity)]`: see [`identity`].
pub use shm_derive::TypeIdentity;
