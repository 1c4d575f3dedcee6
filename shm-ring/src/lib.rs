//! Typed SPSC and MPMC ring buffers between processes, over shm-core segments.
//!
//! - [`spsc`]: one producer process, one consumer process. Cache-padded positions, each
//!   handle caching the other side's, `try_`/blocking/`_timeout` forms, zero-copy chunks.
//! - [`mpmc`]: work distribution: any number of producers and consumers, in any processes,
//!   and each message goes to exactly one consumer (whichever claims it first), not to
//!   every consumer. Per-slot sequence numbers, Vyukov style, with a claim timeout so a
//!   producer killed mid-push cannot wedge the consumers.
//!
//! Blocking waits spin, then yield, then sleep on a futex. The futex word is not the
//! position itself but an eventcount on a line of its own (a count of sleepers and an epoch
//! that wakers bump), so a close, which moves no position, wakes sleepers too; the other
//! side makes a `FUTEX_WAKE` only when someone sleeps (see [`WaitStrategy`]). A parked
//! handle is not free: it wakes about once a second ([`WATCHED_SLICE`]) to re-check its
//! peer, or once per liveness interval when no exit watcher covers it. A side learns that
//! its peer closed ([`PopError::Disconnected`]) or died ([`PopError::PeerDied`]) after
//! draining what was published.
//!
//! ```
//! use shm_ring::spsc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `TypeIdentity`: the ring records Tick's fields (names, types, offsets), and an open
//! // with a type that differs in any of them fails, naming both types.
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, shm_ring::TypeIdentity)]
//! #[repr(C)]
//! struct Tick { price: f64, qty: u32, venue: u32 }
//!
//! let name = format!("/shm-ring-doc-{}", std::process::id());
//! let ring = spsc::create::<Tick>(&name, 4096)?;     // feed process
//! let mut tx = ring.producer()?;
//! let mut rx = spsc::open::<Tick>(&name)?.consumer()?; // strategy process
//! tx.push(Tick { price: 101.5, qty: 10, venue: 3 })?;
//! assert_eq!(rx.pop()?.qty, 10);
//!
//! // Four plain words are as big as a Tick, but they are not a Tick.
//! let err = spsc::open::<[u32; 4]>(&name).err().expect("refused").to_string();
//! assert!(err.contains("payload type expected `[u32; 4]` (size 16, align 4), found `Tick`"), "{err}");
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]

/// The README's usage examples (segments, locks, rings), run as doctests so they never go
/// stale. This crate depends on all three layers, so every example compiles here.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Ring handles and rings cross threads only when their payload may (`T: Send`): each of
/// these doctests must fail to compile (issue 12, defect 7). The positive case (`T: Send`
/// gives `Send + Sync` handles) is asserted in `tests/threads.rs`.
#[cfg(doctest)]
mod not_send_doctests {
    macro_rules! must_not_compile {
        ($($name:ident: $ty:literal $tr:literal;)*) => {$(
            #[doc = concat!(
                "```compile_fail\n",
                "#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]\n",
                "#[repr(C)]\n",
                "struct NotSend { v: u64, _p: std::marker::PhantomData<*const u8> }\n",
                "fn check<X: ", $tr, ">() {}\n",
                "check::<shm_ring::", $ty, "<NotSend>>();\n",
                "```"
            )]
            pub struct $name;
        )*};
    }
    must_not_compile! {
        SpscRingSend: "spsc::Ring" "Send";
        SpscRingSync: "spsc::Ring" "Sync";
        SpscProducerSend: "spsc::Producer" "Send";
        SpscProducerSync: "spsc::Producer" "Sync";
        SpscConsumerSend: "spsc::Consumer" "Send";
        SpscConsumerSync: "spsc::Consumer" "Sync";
        MpmcRingSend: "mpmc::Ring" "Send";
        MpmcRingSync: "mpmc::Ring" "Sync";
        MpmcProducerSend: "mpmc::Producer" "Send";
        MpmcProducerSync: "mpmc::Producer" "Sync";
        MpmcConsumerSend: "mpmc::Consumer" "Send";
        MpmcConsumerSync: "mpmc::Consumer" "Sync";
    }
}

#[cfg(feature = "async")]
pub mod aio;
pub mod broadcast;
mod end;
mod error;
mod handles;
#[cfg(not(shm_loom))]
mod inspect;
pub mod log;
mod mem;
pub mod mpmc;
#[cfg(not(shm_loom))]
mod named;
pub mod select;
#[cfg(not(shm_loom))]
pub mod service;
#[cfg(not(shm_loom))]
pub mod shutdown;
pub mod spsc;
mod wait;

/// Loom runs no signal handlers: nothing is ever requested.
#[cfg(shm_loom)]
mod shutdown {
    pub(crate) struct Registration;
    pub(crate) fn register(_: &crate::end::FlagTarget<'_>) -> Registration {
        Registration
    }
    pub(crate) fn requested() -> bool {
        false
    }
}

pub use end::{Attachment, EndStatus, PeerAttachment, LIVENESS_INTERVAL, WATCHED_SLICE};
pub use error::{
    Batch, ChunkError, PopError, PublishError, PushError, RecvError, RingError, Role, SendError,
};
#[cfg(not(shm_loom))]
pub use inspect::{inspect, RingInfo};
/// shm-core, for `#[type_identity(crate = "shm_ring::core")]` when a crate derives
/// [`TypeIdentity`] without depending on shm-core itself.
pub use shm_core as core;
/// The payload identity checked when a ring is opened; see [`shm_core::identity`].
pub use shm_core::{Identity, TypeIdentity};
#[cfg(not(shm_loom))]
pub use shutdown::Shutdown;
pub use wait::{SpinBudget, WaitStrategy};

/// The segment options of the ring `name`: the user's (which must name the same segment) or
/// the defaults, with the ring's wait for its name when it set one.
#[cfg(not(shm_loom))]
pub(crate) fn segment_options(
    name: &str,
    options: Option<&shm_core::SegmentBuilder>,
    name_wait: Option<std::time::Duration>,
) -> Result<shm_core::SegmentBuilder, RingError> {
    let b = match options {
        Some(o) if o.name() != name => {
            return Err(RingError::NameConflict {
                name: name.to_owned(),
                segment: o.name().to_owned(),
            })
        }
        Some(o) => o.clone(),
        None => shm_core::SegmentBuilder::new(name),
    };
    Ok(match name_wait {
        Some(w) => b.wait_for_name(w),
        None => b,
    })
}

/// Marks a step of a protocol where a test may kill the process (feature `fault-injection`).
macro_rules! fault_point {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        shm_sync::fault::point($name);
    };
}
pub(crate) use fault_point;

/// Marks a step of the MPMC slot protocol where a loom model may kill the handle `$h`
/// (`doom_at`): the handle's "process" is marked dead and the call unwinds with
/// [`LoomDied`] from this very step, leaving shared memory as a SIGKILL there would.
macro_rules! loom_death_point {
    ($h:expr, $name:literal) => {
        #[cfg(shm_loom)]
        if $h.doom == Some($name) {
            shm_sync::primitive::world::die($h.me >> 32);
            std::panic::resume_unwind(Box::new($crate::LoomDied));
        }
    };
}
pub(crate) use loom_death_point;

/// Loom only: the unwind payload of a handle killed at a `doom_at` point. Catch it with
/// `std::panic::catch_unwind` around the call, then `std::mem::forget` the handle (a dead
/// process runs no destructor).
#[cfg(shm_loom)]
#[derive(Debug)]
pub struct LoomDied;
