//! The header at offset 0 of every shmring segment.
//!
//! | offset | field            | written                                   |
//! | ------ | ---------------- | ----------------------------------------- |
//! | 0      | `magic`          | by the creator, before `state = INITIALIZING` |
//! | 8      | `version`        | idem                                      |
//! | 12     | `kind`           | idem                                      |
//! | 16     | `state`          | creator: INITIALIZING, then READY / POISONED |
//! | 20     | `creator_pid`    | before INITIALIZING                       |
//! | 24     | `creator_start`  | idem                                      |
//! | 32     | `total_len`      | idem                                      |
//! | 40     | `data_offset`    | idem                                      |
//! | 48..80 | fingerprint      | idem                                      |
//! | 80     | `type_identity`  | idem (fingerprint, continued)             |
//! | 88     | `type_detail`    | idem                                      |
//! | 96..128| `type_name`      | idem (UTF-8, NUL-padded; messages only)   |
//!
//! Every field is an atomic so that reading bytes a peer may be writing is never a data
//! race; readers copy the fields into a [`HeaderInfo`] once and validate the copy.
//!
//! State machine of `state` (a `u32`):
//!
//! | value | name           | meaning                                                    |
//! | ----- | -------------- | ---------------------------------------------------------- |
//! | 0     | (unwritten)    | fresh zero pages: the creator has not written the header   |
//! | 1     | `INITIALIZING` | header written, creator building the contents              |
//! | 2     | `READY`        | contents published (Release); openers may attach            |
//! | 3     | `POISONED`     | the creator's initialiser failed; nobody may attach        |

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use static_assertions::{assert_eq_size, const_assert_eq};

use crate::identity::{TypeIdentity, TypeName, TYPE_NAME_MAX};

/// `b"SHMRING\x01"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMRING\x01");
/// Version of the header format described above.
///
/// Version 2 added the payload's type identity, detail and name (bytes 80..128, zero in
/// version 1).
pub const FORMAT_VERSION: u32 = 2;
/// Size of the header; the data area starts at this offset.
pub const HEADER_SIZE: usize = 128;

/// Raw values of the `state` word.
pub(crate) mod state {
    pub const UNWRITTEN: u32 = 0;
    pub const INITIALIZING: u32 = 1;
    pub const READY: u32 = 2;
    pub const POISONED: u32 = 3;
}

/// Lifecycle state of a segment, as read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// The creator has not yet written the header.
    Unwritten,
    /// The creator is building the contents.
    Initializing,
    /// Ready to use.
    Ready,
    /// The creator's initialiser failed; the segment must not be used.
    Poisoned,
    /// A value no shmring writes: the header is corrupted.
    Invalid(u32),
}

impl SegmentState {
    pub(crate) fn from_raw(v: u32) -> SegmentState {
        match v {
            state::UNWRITTEN => SegmentState::Unwritten,
            state::INITIALIZING => SegmentState::Initializing,
            state::READY => SegmentState::Ready,
            state::POISONED => SegmentState::Poisoned,
            other => SegmentState::Invalid(other),
        }
    }
}

impl fmt::Display for SegmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentState::Unwritten => f.write_str("unwritten"),
            SegmentState::Initializing => f.write_str("initializing"),
            SegmentState::Ready => f.write_str("ready"),
            SegmentState::Poisoned => f.write_str("poisoned"),
            SegmentState::Invalid(v) => write!(f, "invalid ({v})"),
        }
    }
}

/// What a segment holds. Stored as a `u32` in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// Bytes and regions laid out by the user.
    Raw = 1,
    /// shm-sync primitives (locks, condvars, semaphores, seqlocks).
    Sync = 2,
    /// A shm-ring single-producer single-consumer ring.
    Spsc = 3,
    /// A shm-ring multi-producer multi-consumer ring.
    Mpmc = 4,
    /// A shm-ring broadcast ring (one publisher, many subscribers).
    Broadcast = 5,
    /// A shm-ring byte log (variable-length messages, many producers, one consumer).
    Log = 6,
}

impl Kind {
    /// The kind stored as `raw`, if it is one shmring knows.
    pub fn from_raw(raw: u32) -> Option<Kind> {
        Some(match raw {
            1 => Kind::Raw,
            2 => Kind::Sync,
            3 => Kind::Spsc,
            4 => Kind::Mpmc,
            5 => Kind::Broadcast,
            6 => Kind::Log,
            _ => return None,
        })
    }

    /// Its value in the header.
    pub fn as_raw(self) -> u32 {
        self as u32
    }

    /// Lower-case name, as `shmring ls` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Sync => "sync",
            Kind::Spsc => "spsc",
            Kind::Mpmc => "mpmc",
            Kind::Broadcast => "broadcast",
            Kind::Log => "log",
        }
    }
}

impl Kind {
    /// The kind in a sentence, with its article: "a raw", "a sync", "an SPSC", "an MPMC".
    pub fn with_article(self) -> &'static str {
        match self {
            Kind::Raw => "a raw",
            Kind::Sync => "a sync",
            Kind::Spsc => "an SPSC",
            Kind::Mpmc => "an MPMC",
            Kind::Broadcast => "a broadcast",
            Kind::Log => "a log",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The layout fingerprint: what the creator put in the segment, compared field by field
/// with what an opener expects before any typed access ([`Fingerprint::matches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    /// `size_of` of the payload type (0 for untyped segments).
    pub payload_size: u64,
    /// `align_of` of the payload type (1 for untyped segments).
    pub payload_align: u64,
    /// A number the user picks to tell apart payload types of equal size and alignment.
    pub schema_id: u64,
    /// The layout version of the library component that laid the segment out
    /// (e.g. shm-ring's SPSC control block).
    pub layout_version: u64,
    /// The payload type's structural identity ([`crate::Identity::value`]; 0 for untyped
    /// segments).
    pub type_identity: u64,
    /// [`crate::Identity::detail`]: what a mismatch uses to say whether field names or field
    /// types and offsets differ. Not compared.
    pub type_detail: u64,
    /// The payload type's short name, for messages. Not compared: a type renamed with the
    /// same fields still matches.
    pub type_name: TypeName,
}

impl Fingerprint {
    /// The fingerprint of payload type `T`: its size, alignment, structural identity and
    /// name, with the user's `schema_id` and the library's `layout_version`.
    pub fn of<T: TypeIdentity>(schema_id: u64, layout_version: u64) -> Fingerprint {
        Fingerprint {
            payload_size: std::mem::size_of::<T>() as u64,
            payload_align: std::mem::align_of::<T>() as u64,
            schema_id,
            layout_version,
            type_identity: T::IDENTITY.value(),
            type_detail: T::IDENTITY.detail(),
            type_name: TypeName::of::<T>(),
        }
    }

    /// Whether a segment with fingerprint `found` may be opened by a caller expecting
    /// `self`: everything but the type's name and detail words is equal.
    pub fn matches(&self, found: &Fingerprint) -> bool {
        self.payload_size == found.payload_size
            && self.payload_align == found.payload_align
            && self.schema_id == found.schema_id
            && self.layout_version == found.layout_version
            && self.type_identity == found.type_identity
    }

    /// The fingerprint of an untyped segment.
    pub fn untyped(schema_id: u64) -> Fingerprint {
        Fingerprint {
            payload_size: 0,
            payload_align: 1,
            schema_id,
            layout_version: 0,
            type_identity: 0,
            type_detail: 0,
            type_name: TypeName::default(),
        }
    }

    /// The fields that differ from `other`, as `"name expected X, found Y"` phrases. When
    /// the payload types differ, the first phrase names both and says what differs.
    pub fn differences(&self, found: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.type_identity != found.type_identity
            || self.payload_size != found.payload_size
            || self.payload_align != found.payload_align
        {
            out.push(self.type_difference(found));
        }
        let mut cmp = |what: &str, e: u64, f: u64, hex: bool| {
            if e != f && hex {
                out.push(format!("{what} expected {e:#x}, found {f:#x}"));
            } else if e != f {
                out.push(format!("{what} expected {e}, found {f}"));
            }
        };
        cmp("schema id", self.schema_id, found.schema_id, true);
        cmp(
            "layout version",
            self.layout_version,
            found.layout_version,
            false,
        );
        out
    }

    /// `payload type expected `A` (size, align), found `B` (size, align): <what differs>`.
    fn type_difference(&self, found: &Fingerprint) -> String {
        let side = |f: &Fingerprint| {
            format!(
                "`{}` (size {}, align {})",
                f.type_name, f.payload_size, f.payload_align
            )
        };
        let what = if self.payload_size != found.payload_size
            && self.payload_align != found.payload_align
        {
            "the sizes and alignments differ".to_owned()
        } else if self.payload_size != found.payload_size {
            "the sizes differ".to_owned()
        } else if self.payload_align != found.payload_align {
            "the alignments differ".to_owned()
        } else if self.type_identity == 0 || found.type_identity == 0 {
            "one side is untyped".to_owned()
        } else if self.type_detail == 0 || found.type_detail == 0 {
            "the same size and alignment, but an identity set by an explicit schema on one \
             side differs from the other's"
                .to_owned()
        } else {
            let names =
                (self.type_detail >> 32) & 0x7fff_ffff == (found.type_detail >> 32) & 0x7fff_ffff;
            let shape = self.type_detail & 0xffff_ffff == found.type_detail & 0xffff_ffff;
            match (names, shape) {
                (true, false) => "the same size, alignment and field names, but field types \
                                  or offsets differ"
                    .to_owned(),
                (false, true) => "the same size, alignment, field types and offsets, but \
                                  field names differ (renamed or reordered)"
                    .to_owned(),
                _ => "the same size and alignment, but field names and field types or \
                      offsets differ"
                    .to_owned(),
            }
        };
        format!(
            "payload type expected {}, found {}: {what}",
            side(self),
            side(found)
        )
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` size {} align {} identity {:#x} schema {:#x} layout v{}",
            self.type_name,
            self.payload_size,
            self.payload_align,
            self.type_identity,
            self.schema_id,
            self.layout_version
        )
    }
}

/// The header as it lies in shared memory. See the module docs for the layout.
#[repr(C, align(128))]
pub(crate) struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub kind: AtomicU32,
    pub state: AtomicU32,
    pub creator_pid: AtomicU32,
    pub creator_start: AtomicU64,
    pub total_len: AtomicU64,
    pub data_offset: AtomicU64,
    pub payload_size: AtomicU64,
    pub payload_align: AtomicU64,
    pub schema_id: AtomicU64,
    pub layout_version: AtomicU64,
    pub type_identity: AtomicU64,
    pub type_detail: AtomicU64,
    pub type_name: [AtomicU64; 4],
}

assert_eq_size!(Header, [u8; HEADER_SIZE]);
const_assert_eq!(std::mem::align_of::<Header>(), 128);
const_assert_eq!(std::mem::offset_of!(Header, magic), 0);
const_assert_eq!(std::mem::offset_of!(Header, version), 8);
const_assert_eq!(std::mem::offset_of!(Header, kind), 12);
const_assert_eq!(std::mem::offset_of!(Header, state), 16);
const_assert_eq!(std::mem::offset_of!(Header, creator_pid), 20);
const_assert_eq!(std::mem::offset_of!(Header, creator_start), 24);
const_assert_eq!(std::mem::offset_of!(Header, total_len), 32);
const_assert_eq!(std::mem::offset_of!(Header, data_offset), 40);
const_assert_eq!(std::mem::offset_of!(Header, payload_size), 48);
const_assert_eq!(std::mem::offset_of!(Header, layout_version), 72);
const_assert_eq!(std::mem::offset_of!(Header, type_identity), 80);
const_assert_eq!(std::mem::offset_of!(Header, type_detail), 88);
const_assert_eq!(std::mem::offset_of!(Header, type_name), 96);

/// A copy of a segment's header, taken once; nothing in it is trusted until validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The magic number (`MAGIC` for a shmring segment).
    pub magic: u64,
    /// Header format version.
    pub version: u32,
    /// Raw kind value; see [`Kind::from_raw`].
    pub kind: u32,
    /// Lifecycle state.
    pub state: SegmentState,
    /// Who created the segment.
    pub creator: crate::ProcessId,
    /// Length the creator gave the segment, header included.
    pub total_len: u64,
    /// Offset of the data area from the segment base.
    pub data_offset: u64,
    /// Layout fingerprint.
    pub fingerprint: Fingerprint,
}

impl HeaderInfo {
    /// Decodes a header from its bytes (as read with `pread`, without mapping).
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> HeaderInfo {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        HeaderInfo {
            magic: u64_at(0),
            version: u32_at(8),
            kind: u32_at(12),
            state: SegmentState::from_raw(u32_at(16)),
            creator: crate::ProcessId {
                pid: u32_at(20),
                start_time: u64_at(24),
            },
            total_len: u64_at(32),
            data_offset: u64_at(40),
            fingerprint: Fingerprint {
                payload_size: u64_at(48),
                payload_align: u64_at(56),
                schema_id: u64_at(64),
                layout_version: u64_at(72),
                type_identity: u64_at(80),
                type_detail: u64_at(88),
                type_name: TypeName::from_bytes(b[96..128].try_into().expect("32 bytes")),
            },
        }
    }

    /// The kind, if shmring knows its value.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_raw(self.kind)
    }
}

impl Header {
    /// Copies every field. `state` is read first with Acquire, so that when it reads
    /// INITIALIZING or READY the fields written before it are seen.
    pub fn snapshot(&self) -> HeaderInfo {
        // Acquire: pairs with the Release stores of `state` in `Header::publish_*`, so the
        // fields written before them are visible to the Relaxed loads below.
        let st = self.state.load(Ordering::Acquire);
        HeaderInfo {
            magic: self.magic.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            state: SegmentState::from_raw(st),
            creator: crate::ProcessId {
                pid: self.creator_pid.load(Ordering::Relaxed),
                start_time: self.creator_start.load(Ordering::Relaxed),
            },
            total_len: self.total_len.load(Ordering::Relaxed),
            data_offset: self.data_offset.load(Ordering::Relaxed),
            fingerprint: Fingerprint {
                payload_size: self.payload_size.load(Ordering::Relaxed),
                payload_align: self.payload_align.load(Ordering::Relaxed),
                schema_id: self.schema_id.load(Ordering::Relaxed),
                layout_version: self.layout_version.load(Ordering::Relaxed),
                type_identity: self.type_identity.load(Ordering::Relaxed),
                type_detail: self.type_detail.load(Ordering::Relaxed),
                type_name: {
                    let mut b = [0u8; TYPE_NAME_MAX];
                    for (i, w) in self.type_name.iter().enumerate() {
                        b[i * 8..i * 8 + 8]
                            .copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                    }
                    TypeName::from_bytes(b)
                },
            },
        }
    }

    /// Writes every field of a fresh header and moves `state` to INITIALIZING.
    pub fn begin_init(
        &self,
        kind: Kind,
        creator: crate::ProcessId,
        total_len: u64,
        fingerprint: &Fingerprint,
    ) {
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.version.store(FORMAT_VERSION, Ordering::Relaxed);
        self.kind.store(kind.as_raw(), Ordering::Relaxed);
        self.creator_pid.store(creator.pid, Ordering::Relaxed);
        self.creator_start
            .store(creator.start_time, Ordering::Relaxed);
        self.total_len.store(total_len, Ordering::Relaxed);
        self.data_offset
            .store(HEADER_SIZE as u64, Ordering::Relaxed);
        self.payload_size
            .store(fingerprint.payload_size, Ordering::Relaxed);
        self.payload_align
            .store(fingerprint.payload_align, Ordering::Relaxed);
        self.schema_id
            .store(fingerprint.schema_id, Ordering::Relaxed);
        self.layout_version
            .store(fingerprint.layout_version, Ordering::Relaxed);
        self.type_identity
            .store(fingerprint.type_identity, Ordering::Relaxed);
        self.type_detail
            .store(fingerprint.type_detail, Ordering::Relaxed);
        let name = fingerprint.type_name.to_bytes();
        for (i, w) in self.type_name.iter().enumerate() {
            let word = u64::from_ne_bytes(name[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            w.store(word, Ordering::Relaxed);
        }
        // Release: publishes the fields above; pairs with the Acquire load in `snapshot`.
        self.state.store(state::INITIALIZING, Ordering::Release);
    }

    /// Publishes the initialised contents.
    pub fn publish_ready(&self) {
        // Release: publishes everything the initialiser wrote into the segment; pairs with
        // the Acquire load of `state` in `snapshot` (and so in every open).
        self.state.store(state::READY, Ordering::Release);
    }

    /// Marks the segment unusable after a failed initialiser.
    pub fn publish_poisoned(&self) {
        // Release: pairs with the Acquire load in `snapshot`; nothing is published, but it
        // keeps the state word's history ordered after the header fields.
        self.state.store(state::POISONED, Ordering::Release);
    }
}
