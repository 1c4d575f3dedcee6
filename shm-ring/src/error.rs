//! Errors of the rings: per operation, each handing the value back where there is one.

use std::fmt;

/// Which end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that pushes.
    Producer,
    /// The side that pops.
    Consumer,
    /// A broadcast ring's one publisher.
    Publisher,
    /// A broadcast ring's subscribers.
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

/// For an error enum whose every variant hands the value back: `into_inner`, a `Debug`
/// that names the variant without asking `T: Debug`, and `Display` (each variant's text)
/// and `Error`.
macro_rules! value_error {
    ($name:ident, $done:literal { $($variant:ident => $text:expr),* $(,)? }) => {
        impl<T> $name<T> {
            #[doc = concat!("The value that was not ", $done, ".")]
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(v))|* => v,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant(_) => concat!(stringify!($variant), "(..)")),*
                })
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant(_) => $text),*
                })
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

/// Why a push did not happen. The value comes back in every case.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError<T> {
    /// The ring is full (`try_push`).
    Full(T),
    /// The timeout passed while the ring stayed full (`push_timeout`).
    Timeout(T),
    /// Every consumer dropped its handle: nobody will pop this (until a new consumer
    /// attaches: a close ends a generation, not the ring; see [`PopError::Disconnected`]).
    Disconnected(T),
    /// The consumer side was killed (or died) without dropping its handle.
    PeerDied(T),
    /// MPMC only: the slot this push claimed was given up by consumers after the claim
    /// timeout (this producer stalled between claiming and publishing); nothing was
    /// published and the value is yours again.
    Expired(T),
    /// A position read from shared memory is impossible: a peer corrupted the ring.
    Corrupted(T),
    /// This handle was attached by another process: this one is a child that inherited a
    /// copy of it through `fork`, and the end belongs to the parent. Nothing was touched;
    /// attach anew (`Ring::producer`) in this process.
    Forked(T),
    /// A shutdown of this process was requested (SIGINT or SIGTERM with
    /// [`Shutdown::on_signals`](crate::Shutdown) installed, or `Shutdown::request`) while
    /// this push would have waited; the value is yours again. Drop the handles to close
    /// cleanly.
    Interrupted(T),
    /// MPMC `try_push` only: the ring is not full, but the next slot still holds the
    /// previous lap's item, which a consumer has claimed and not finished reading (after a
    /// short spin, `IN_FLIGHT_POLLS` polls). Retry; a consumer that stalls past the claim
    /// timeout loses its claim and the slot frees.
    InFlight(T),
}

value_error!(PushError, "pushed" {
    Full => "the ring is full",
    Timeout => "timed out waiting for space in the ring",
    Disconnected => "the consumer closed the ring",
    PeerDied => "the consumer process died",
    Expired => "this producer stalled past the claim timeout; consumers skipped its slot",
    Corrupted => "the ring's shared positions are corrupted",
    Forked => FORKED,
    Interrupted => INTERRUPTED,
    InFlight => "the next slot's previous item is still being read by a consumer (the ring \
                 is not full); retry",
});

/// Why a pop returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PopError {
    /// The ring is empty (`try_pop`).
    Empty,
    /// The timeout passed while the ring stayed empty (`pop_timeout`).
    Timeout,
    /// Every producer dropped its handle and everything they pushed has been popped.
    ///
    /// A statement about the producers attached so far, not a promise about the ring: a
    /// close ends that producer's generation, not the ring, and a new producer may attach
    /// later (a new generation: [`crate::spsc::Consumer::producer_attachment`]), after which
    /// pops return items again. A consumer that should stop at the first close stops here;
    /// one that serves restarts keeps waiting (`pop_timeout`) or checks `is_abandoned`.
    Disconnected,
    /// The producer side was killed (or died) and everything it published has been popped.
    PeerDied,
    /// MPMC only: this consumer stalled past the claim timeout between claiming a slot
    /// and releasing it, so producers reclaimed the slot; the message is lost to it.
    Expired,
    /// A position read from shared memory is impossible: a peer corrupted the ring.
    Corrupted,
    /// This handle was attached by another process (see [`PushError::Forked`]).
    Forked,
    /// A shutdown of this process was requested while this pop would have waited (see
    /// [`PushError::Interrupted`]). What is already in the ring can still be popped.
    Interrupted,
    /// MPMC `try_pop` only: the ring is not empty, but the next item's push has claimed its
    /// slot and not published it yet (after a short spin, `IN_FLIGHT_POLLS` polls); items
    /// behind it may be published already, and are taken in order after it. Retry; a
    /// producer that stalls past the claim timeout loses its claim (`skipped`).
    InFlight,
}

/// What an `Interrupted` error says.
const INTERRUPTED: &str = "a shutdown of this process was requested (SIGINT or SIGTERM)";

/// What a `Forked` error says.
const FORKED: &str = "this handle was attached by the parent of a fork; the end is the \
     parent's, so nothing was touched: attach anew in this process";

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PopError::Empty => "the ring is empty",
            PopError::Timeout => "timed out waiting for a message",
            PopError::Disconnected => "the producer closed the ring and it is drained",
            PopError::PeerDied => "the producer process died and the ring is drained",
            PopError::Expired => {
                "this consumer stalled past the claim timeout; producers reclaimed its slot"
            }
            PopError::Corrupted => "the ring's shared positions are corrupted",
            PopError::Forked => FORKED,
            PopError::Interrupted => INTERRUPTED,
            PopError::InFlight => {
                "the next item's push has claimed its slot and not published it yet (the \
                 ring is not empty); retry"
            }
        })
    }
}

impl std::error::Error for PopError {}

/// Why a broadcast publish did not happen. The value comes back in every case.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError<T> {
    /// Back-pressure: the slowest attached subscriber is a whole ring behind
    /// (`try_publish`).
    Full(T),
    /// Back-pressure: the timeout passed while the ring stayed full (`publish_timeout`).
    Timeout(T),
    /// A position read from shared memory is impossible: a peer corrupted the ring.
    Corrupted(T),
    /// This handle was attached by another process (see [`PushError::Forked`]).
    Forked(T),
    /// A shutdown of this process was requested while this publish would have waited
    /// (see [`PushError::Interrupted`]).
    Interrupted(T),
}

value_error!(PublishError, "published" {
    Full => "the slowest subscriber is a whole ring behind",
    Timeout => "timed out waiting for the slowest subscriber",
    Corrupted => "the ring's shared positions are corrupted",
    Forked => FORKED,
    Interrupted => INTERRUPTED,
});

/// Why a broadcast receive returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing new is published yet (`try_recv`).
    Empty,
    /// The publisher overwrote this many messages before this subscriber read them; the
    /// subscriber now stands at the oldest message the ring may still hold, and its next
    /// receive goes on from there. Received plus lagged is exactly what was published.
    Lagged(u64),
    /// Back-pressure: the publisher cut this subscriber loose (it held the publisher back
    /// past the ring's untether timeout). Said once; from then on the subscriber no longer
    /// holds the publisher back, and may be lapped (`Lagged`) like an overwrite
    /// subscriber. Subscribe anew to be held to again.
    Evicted,
    /// The timeout passed with nothing new (`recv_timeout`).
    Timeout,
    /// The publisher dropped its handle and everything it published was read (a new
    /// publisher may attach: receiving goes on then).
    Disconnected,
    /// The publisher's process died and everything it published was read.
    PeerDied,
    /// A sequence word or position read from shared memory is impossible.
    Corrupted,
    /// This handle was attached by another process (see [`PushError::Forked`]).
    Forked,
    /// A shutdown of this process was requested while this receive would have waited.
    Interrupted,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("nothing new is published"),
            RecvError::Lagged(n) => write!(f, "the publisher overwrote {n} messages unread"),
            RecvError::Evicted => f.write_str(
                "the publisher cut this subscriber loose (it stalled past the untether timeout)",
            ),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Disconnected => {
                f.write_str("the publisher closed the ring and everything was read")
            }
            RecvError::PeerDied => {
                f.write_str("the publisher process died and everything was read")
            }
            RecvError::Corrupted => f.write_str("the ring's shared sequence words are corrupted"),
            RecvError::Forked => f.write_str(FORKED),
            RecvError::Interrupted => f.write_str(INTERRUPTED),
        }
    }
}

impl std::error::Error for RecvError {}

/// Why a log producer's claim or send did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The log has no room for the record now (`try_claim`, `try_send`).
    Full,
    /// The timeout passed while the log stayed full (`claim_timeout`, `send_timeout`).
    Timeout,
    /// The message is longer than the log's largest (`max_len`, set at creation), or a
    /// commit gave a length past what was claimed.
    TooLong {
        /// The length asked for.
        len: usize,
        /// The most that was allowed.
        max: usize,
    },
    /// The consumer closed the log (dropped its handle).
    Disconnected,
    /// The consumer's process died.
    PeerDied,
    /// This producer stalled between claiming its space and marking it past the log's
    /// claim timeout, so the consumer gave the space up: nothing of the message is
    /// delivered and none of its bytes were written. Claim again.
    Expired,
    /// A position or record header read from shared memory is impossible.
    Corrupted,
    /// This handle was attached by another process (see [`PushError::Forked`]).
    Forked,
    /// A shutdown of this process was requested while this call would have waited.
    Interrupted,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => f.write_str("the log is full"),
            SendError::Timeout => f.write_str("timed out waiting for room in the log"),
            SendError::TooLong { len, max } => {
                write!(
                    f,
                    "a message of {len} bytes is longer than the {max} allowed"
                )
            }
            SendError::Disconnected => f.write_str("the consumer closed the log"),
            SendError::PeerDied => f.write_str("the consumer process died"),
            SendError::Expired => f.write_str(
                "this producer stalled past the claim timeout before marking its claim; the \
                 consumer gave the space up and nothing was written",
            ),
            SendError::Corrupted => f.write_str("the log's shared positions are corrupted"),
            SendError::Forked => f.write_str(FORKED),
            SendError::Interrupted => f.write_str(INTERRUPTED),
        }
    }
}

impl std::error::Error for SendError {}

/// What a batch call did: how many items it moved, and, if it stopped short of the whole
/// slice, why (`try_push_slice`, `try_pop_slice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<E> {
    /// Items pushed (popped), in order from the start of the slice.
    pub count: usize,
    /// `None` if the whole slice moved; else the reason the next item did not: `Full` or
    /// `Empty` (as `try_push`/`try_pop` would say), `InFlight`, a departed or dead peer,
    /// `Expired`, `Corrupted`, `Forked`. A push's reason carries `()`: the items not pushed
    /// are `&slice[count..]`.
    pub stopped: Option<E>,
}

/// Why a chunk could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// Fewer slots (or items) than asked for are available now.
    TooFewSlots {
        /// How many are.
        available: usize,
    },
    /// A position read from shared memory is impossible: a peer corrupted the ring.
    Corrupted,
    /// This handle was attached by another process (see [`PushError::Forked`]).
    Forked,
    /// MPMC only: this handle stalled past the claim timeout between claiming the chunk's
    /// slots and marking them, and consumers gave them up; nothing was claimed.
    Expired,
    /// SPSC: the other end closed (a write chunk: the consumer; a read chunk: the producer,
    /// and everything it published has been read).
    Disconnected,
    /// SPSC: the other end's process died (a read chunk: and everything it published has
    /// been read).
    PeerDied,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::TooFewSlots { available } => {
                write!(f, "only {available} slots are available for the chunk")
            }
            ChunkError::Corrupted => f.write_str("the ring's shared positions are corrupted"),
            ChunkError::Forked => f.write_str(FORKED),
            ChunkError::Disconnected => f.write_str("the other end closed the ring"),
            ChunkError::PeerDied => f.write_str("the other end's process died"),
            ChunkError::Expired => f.write_str(
                "the chunk's claim expired before it was marked (this handle stalled past the claim timeout)",
            ),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Why creating, opening or joining a ring failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RingError {
    /// Creating the segment failed.
    Create(shm_core::CreateError),
    /// Opening the segment failed (missing, wrong kind, wrong payload type, ...).
    Open(shm_core::OpenError),
    /// A capacity of zero was asked for.
    ZeroCapacity {
        /// The ring's name.
        name: String,
    },
    /// The capacity (rounded up to a power of two) does not fit in memory.
    CapacityTooLarge {
        /// The ring's name.
        name: String,
        /// What was asked for.
        requested: u64,
    },
    /// The payload type has size zero.
    ZeroSizedPayload {
        /// The ring's name.
        name: String,
    },
    /// The payload type is aligned more strictly than a page.
    PayloadAlignment {
        /// The ring's name.
        name: String,
        /// Its alignment.
        align: usize,
    },
    /// Another live process holds this end of the ring.
    RoleTaken {
        /// The ring's name.
        name: String,
        /// Which end.
        role: Role,
        /// The process that holds it.
        pid: u32,
    },
    /// Every endpoint slot of that side is taken (MPMC).
    TooManyEndpoints {
        /// The ring's name.
        name: String,
        /// Which side.
        role: Role,
        /// The limit.
        max: usize,
    },
    /// The ring's builder was given segment options for another name
    /// (`Builder::new("/a").segment(SegmentBuilder::new("/b"))`): a ring has one name.
    NameConflict {
        /// The ring's name.
        name: String,
        /// The name the segment options carry.
        segment: String,
    },
    /// A broadcast subscriber asked for more history than the ring holds.
    HistoryTooLong {
        /// The ring's name.
        name: String,
        /// The history asked for.
        asked: u64,
        /// The ring's capacity.
        capacity: u64,
    },
    /// A log's largest message does not fit: a record (8 bytes of header, the message,
    /// rounded up to the record alignment) must fit in half the log's bytes, so that one
    /// always fits after the padding at the wrap, and the alignment in a quarter.
    MaxLenTooLarge {
        /// The log's name.
        name: String,
        /// The largest message asked for.
        max_len: u64,
        /// The log's capacity in bytes (a power of two).
        capacity: u64,
    },
    /// A ring opened through a byte view (`broadcast::open_declared`) declares a payload
    /// whose slots are not shaped like the view's: another size class or alignment.
    PayloadView {
        /// The ring's name.
        name: String,
        /// The declared payload's size and alignment.
        declared: (u64, u64),
        /// The view's size and alignment.
        view: (usize, usize),
    },
    /// The ring's control block holds impossible values.
    Corrupted {
        /// The ring's name.
        name: String,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Create(e) => e.fmt(f),
            RingError::Open(e) => e.fmt(f),
            RingError::ZeroCapacity { name } => {
                write!(
                    f,
                    "cannot create ring {name:?}: a capacity of 0 holds nothing"
                )
            }
            RingError::CapacityTooLarge { name, requested } => write!(
                f,
                "cannot create ring {name:?}: {requested} slots (rounded up to a power of two) \
                 do not fit in memory"
            ),
            RingError::ZeroSizedPayload { name } => write!(
                f,
                "cannot create ring {name:?}: the payload type has size 0; use a counter"
            ),
            RingError::PayloadView {
                name,
                declared,
                view,
            } => write!(
                f,
                "cannot view ring {name:?} as bytes: its payload (size {}, align {}) is not \
                 stored like a view of size {}, align {} (views hold payloads aligned to at \
                 most 8 bytes, of up to the view's size)",
                declared.0, declared.1, view.0, view.1
            ),
            RingError::PayloadAlignment { name, align } => write!(
                f,
                "cannot create ring {name:?}: the payload's alignment {align} exceeds a page"
            ),
            RingError::RoleTaken { name, role, pid } => write!(
                f,
                "cannot join ring {name:?} as {role}: process {pid} holds that end \
                 (an SPSC ring has one of each, a broadcast ring one publisher)"
            ),
            RingError::HistoryTooLong {
                name,
                asked,
                capacity,
            } => write!(
                f,
                "cannot subscribe to ring {name:?} with {asked} messages of history: it holds \
                 {capacity}"
            ),
            RingError::TooManyEndpoints { name, role, max } => write!(
                f,
                "cannot join ring {name:?} as {role}: all {max} {role} slots are taken"
            ),
            RingError::NameConflict { name, segment } => write!(
                f,
                "ring {name:?} was given segment options for {segment:?}: a ring has one \
                 name; build the options with SegmentBuilder::new({name:?})"
            ),
            RingError::MaxLenTooLarge {
                name,
                max_len,
                capacity,
            } => write!(
                f,
                "cannot create log {name:?}: messages of up to {max_len} bytes need a capacity \
                 of at least {} bytes (it has {capacity}): a record must fit in half the log \
                 (and the record alignment in a quarter)",
                (crate::log::record_span((*max_len).min(1 << 40), 8) * 2).next_power_of_two()
            ),
            RingError::Corrupted { name, what } => {
                write!(f, "ring {name:?} is corrupted: {what}")
            }
        }
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Create(e) => Some(e),
            RingError::Open(e) => Some(e),
            _ => None,
        }
    }
}

impl From<shm_core::CreateError> for RingError {
    fn from(e: shm_core::CreateError) -> Self {
        RingError::Create(e)
    }
}

impl From<shm_core::OpenOrCreateError> for RingError {
    fn from(e: shm_core::OpenOrCreateError) -> Self {
        match e {
            shm_core::OpenOrCreateError::Create(e) => RingError::Create(e),
            shm_core::OpenOrCreateError::Open(e) => RingError::Open(e),
        }
    }
}

impl From<shm_core::OpenError> for RingError {
    fn from(e: shm_core::OpenError) -> Self {
        RingError::Open(e)
    }
}
