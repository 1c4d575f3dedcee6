//! Waiting on many ring ends at once.
//!
//! [`select`] waits until any of a set of ends is ready and says which: then a `try_`
//! call on that end takes the item (or reports what ended it). It polls the ends for a
//! short, adaptive budget (as a `SpinThenPark` wait does), then sleeps: it counts itself in as a sleeper on each end's futex epoch (the word the end's
//! own blocking calls sleep on, which every publish that sees a sleeper bumps), passes
//! one heavy barrier, checks again, and sleeps on all the epochs at once with
//! `futex_waitv(2)` (Linux >= 5.16). Where the kernel refuses `futex_waitv`, it sleeps on
//! the first end's epoch in slices of 1 ms and checks them all after each (a documented
//! fallback: a wake of another end then costs up to 1 ms).
//!
//! An end whose peer closes is woken by the close (it bumps the epoch); one whose peer
//! dies is woken by the peer's exit watcher (a pidfd; where none can be had, by the
//! end's liveness check, once per [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL)). A
//! shutdown ([`Shutdown`](crate::Shutdown)) ends the wait with `Interrupted`.
//!
//! Ends that can be selected (ready: what their `try_` call waits for is there, or the end
//! has something to report: its peer gone, corruption, a fork):
//! - the SPSC and MPMC rings' consumers (an item) and producers (room for one);
//! - the byte log's consumer (a message) and producers (room for a message of `max_len`,
//!   or of any length with [`Producer::room_for`](crate::log::Producer::room_for));
//! - a broadcast subscriber (a message, or a lap to report as `Lagged`) and the publisher
//!   (room under back-pressure; under overwrite it is always ready).
//!
//! The same ends have `async` forms (feature `async`, [`aio`](crate::aio)), and an event
//! loop can wait on them through a file descriptor ([`aio::ReadyFd`](crate::aio::ReadyFd)).
//!
//! ```
//! use std::time::Duration;
//! use shm_ring::{log, select::select, spsc};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let feed = spsc::Ring::<u64>::in_process(64)?;
//! let orders = log::Ring::in_process(4096, 256)?;
//! let (mut feed_rx, mut orders_rx) = (feed.consumer()?, orders.consumer()?);
//! orders.producer()?.try_send(b"BUY 7")?;
//! // Whichever is ready first: here the log (index 1).
//! let i = select(&mut [&mut feed_rx, &mut orders_rx], Some(Duration::from_secs(1)))?;
//! assert_eq!(i, 1);
//! assert_eq!(&orders_rx.try_recv()?[..], b"BUY 7");
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::time::Duration;

use shm_sync::futex::{self, WaitAnyOutcome, WAIT_ANY_MAX};
use shm_sync::primitive::{AtomicU32, Ordering};

use crate::wait::{Deadline, FlagLine};

/// Why [`select`] returned no end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectError {
    /// No end was ready within the timeout.
    Timeout,
    /// A shutdown was requested ([`Shutdown`](crate::Shutdown)).
    Interrupted,
    /// The set was empty.
    NoEnds,
    /// More ends than one wait takes.
    TooMany {
        /// The ends given.
        len: usize,
        /// [`MAX_ENDS`].
        max: usize,
    },
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectError::Timeout => write!(f, "no end was ready within the timeout"),
            SelectError::Interrupted => write!(f, "a shutdown was requested"),
            SelectError::NoEnds => write!(f, "select over no ends"),
            SelectError::TooMany { len, max } => {
                write!(f, "select over {len} ends (at most {max})")
            }
        }
    }
}

impl std::error::Error for SelectError {}

/// The most ends one [`select`] waits on.
pub const MAX_ENDS: usize = WAIT_ANY_MAX;

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// What an end gives [`select`] to sleep on: its flag line (inside its mapping, which the
/// end, borrowed for the whole call, keeps alive), whether its peers' deaths will wake
/// it, and its registration with this process's shutdown.
#[doc(hidden)]
pub struct Armed {
    pub(crate) flag: *const FlagLine,
    /// The flag again, with its mapping kept alive (for this process's async waiters).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) keep: crate::end::FlagRef,
    pub(crate) watched: bool,
    pub(crate) _shutdown: crate::shutdown::Registration,
}

/// How an end with one peer (the SPSC ends, a broadcast subscriber) arms: its peer's
/// death wakes `target`'s flag (where a pidfd can watch it), and its first look after the
/// sleep checks the peer's liveness (a sleeping select looks once per slice, too rarely
/// for the liveness timer's count of polls).
pub(crate) fn arm_one(
    target: crate::end::FlagTarget<'_>,
    (peer_end, me): (&crate::end::End, u64),
    peer: &mut crate::end::PeerWatch,
    deaths: &crate::end::Deaths,
    liveness: &mut crate::end::LivenessTimer,
) -> Armed {
    // Relaxed: which process to watch; a change of owner (an attach, a take-over) wakes
    // the flag.
    let word = peer_end.owner.load(Ordering::Relaxed);
    let watched = peer.wake_on_exit(word, me, &target, deaths);
    liveness.expire();
    Armed {
        flag: target.line(),
        keep: target.to_ref(),
        watched,
        _shutdown: crate::shutdown::register(&target),
    }
}

/// A ring end [`select`] can wait on (sealed: implemented by this crate's ends).
pub trait Selectable: Sealed {
    /// Whether a `try_` call would return now (an item, or an error to report). May
    /// check the peer's liveness (at most once per liveness interval).
    #[doc(hidden)]
    fn select_ready(&mut self) -> bool;

    /// Arranges that this end's peers' deaths wake its flag, and gives the flag.
    #[doc(hidden)]
    fn select_arm(&mut self) -> Armed;
}

thread_local! {
    /// Where this thread's next select starts looking (rotated, so that one busy end
    /// does not starve the others).
    static START: Cell<usize> = const { Cell::new(0) };
    /// This thread's spin budget before a select sleeps (adaptive, as `SpinThenPark`'s).
    static WAITER: std::cell::RefCell<crate::wait::Waiter> =
        std::cell::RefCell::new(crate::wait::Waiter::new());
}

/// Waits up to `timeout` (`None`: no limit) until any of `ends` is ready; returns its
/// index. Then a `try_` call on that end returns at once (another thread or process
/// sharing the ring may take the item first: call `select` again on `Empty`). Ends that
/// are ready at once are taken in turn across calls, not always the first.
///
/// # Errors
///
/// `Timeout`; `Interrupted` (a shutdown); `NoEnds` for an empty set; `TooMany` past
/// [`MAX_ENDS`].
pub fn select(
    ends: &mut [&mut dyn Selectable],
    timeout: Option<Duration>,
) -> Result<usize, SelectError> {
    let n = ends.len();
    if n == 0 {
        return Err(SelectError::NoEnds);
    }
    if n > MAX_ENDS {
        return Err(SelectError::TooMany {
            len: n,
            max: MAX_ENDS,
        });
    }
    // (Under loom every execution must make the same choices: no rotation there.)
    let start = if cfg!(shm_loom) {
        0
    } else {
        START.with(|s| {
            let v = s.get();
            s.set(v.wrapping_add(1));
            v % n
        })
    };
    let ready = |ends: &mut [&mut dyn Selectable]| {
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| ends[i].select_ready())
    };
    if let Some(i) = ready(ends) {
        return Ok(i);
    }
    let deadline = Deadline::after(timeout);
    // Spin first, as a `SpinThenPark` wait does (its adaptive budget, this thread's): an
    // end that becomes ready within it costs no barrier and no syscall.
    let spun = WAITER.with(|w| {
        crate::wait::spin(
            crate::WaitStrategy::SpinThenPark,
            &mut w.borrow_mut(),
            crate::wait::MPMC_POLL_PAUSES,
            (&deadline, crate::LIVENESS_INTERVAL),
            || ready(ends),
        )
    });
    if let Some(i) = spun {
        return Ok(i);
    }
    // Only a select that sleeps allocates (its futex list), once per call.
    let mut armed: Vec<Armed> = Vec::with_capacity(n);
    let mut epochs: Vec<u32> = Vec::with_capacity(n);
    loop {
        if deadline.passed() {
            return Err(SelectError::Timeout);
        }
        if crate::shutdown::requested() {
            return Err(SelectError::Interrupted);
        }
        armed.clear();
        epochs.clear();
        for e in ends.iter_mut() {
            let a = e.select_arm();
            // SAFETY: the flag lies in the end's mapping, which the end (borrowed for this
            // whole call) keeps mapped.
            let flag = unsafe { &*a.flag };
            // Acquire: pairs with the Release bump in `wait::wake`, as in `wait::park`.
            epochs.push(flag.epoch.load(Ordering::Acquire));
            // Release: as in `sleepers::announce` (pairs with the Acquire in
            // `sleepers::first_wake`).
            shm_sync::sleepers::count_in(&flag.waiting);
            armed.push(a);
        }
        // One heavy barrier for all the announcements, before the re-check (as
        // `sleepers::announce` does for one): a publish after it sees us counted in, or
        // the re-check sees it.
        let ordered = shm_sync::barrier::heavy();
        let found = ready(ends);
        if found.is_none() {
            let all_watched = armed.iter().all(|a| a.watched);
            let mut slice = if all_watched {
                crate::WATCHED_SLICE
            } else {
                crate::LIVENESS_INTERVAL
            };
            if !ordered {
                // A waker that skipped its fence may miss our count: short slices.
                slice = slice.min(Duration::from_millis(1));
            }
            let slice = deadline.slice(slice);
            let words: Vec<(&AtomicU32, u32)> = armed
                .iter()
                .zip(&epochs)
                // SAFETY: as above.
                .map(|(a, &e)| (unsafe { &(*a.flag).epoch }, e))
                .collect();
            if futex::wait_any(&words, slice) == WaitAnyOutcome::Unsupported {
                futex::wait(
                    words[0].0,
                    words[0].1,
                    Some(slice.map_or(Duration::from_millis(1), |s| {
                        s.min(Duration::from_millis(1))
                    })),
                );
            }
        }
        for a in &armed {
            // SAFETY: as above.
            shm_sync::sleepers::retire(unsafe { &(*a.flag).waiting });
        }
        if let Some(i) = found {
            return Ok(i);
        }
        if let Some(i) = ready(ends) {
            return Ok(i);
        }
    }
}
