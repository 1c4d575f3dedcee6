//! The sleepers word of a futex wait that wakes only while someone sleeps (the waiting
//! half of an eventcount), shared by [`Changes`](crate::Changes) and the rings' waits.
//!
//! The word counts the announced sleepers in its low 31 bits ([`COUNT`]) and keeps a bit,
//! [`WOKEN`], that a waker waking "once per round" sets when it wakes; every announcement
//! clears it. The word lives in shared memory: any value may be found in it, and none
//! makes a sleeper go unseen for good (the count saturates both ways).
//!
//! The protocol, with the epoch word the sleepers wait on:
//! 1. sleeper: read the epoch (Acquire), [`announce`], re-check its condition, futex-wait
//!    on the epoch it read, [`retire`];
//! 2. waker: make the change, `barrier::light`, read the word: if [`anyone`] sleeps (for a
//!    once-per-round waker: [`first_wake`]), bump the epoch (Release) and futex-wake.

use crate::primitive::{AtomicU32, Ordering};

/// The sleepers' count.
pub const COUNT: u32 = !WOKEN;
/// Set by the first once-per-round waker after an announcement.
pub const WOKEN: u32 = 1 << 31;

/// Counts a sleeper in and clears [`WOKEN`] in one step, then runs the heavy barrier
/// ([`barrier::heavy`](crate::barrier::heavy)) that orders the announcement before the
/// sleeper's re-check of its condition, for this process and every registered waker.
/// Returns the barrier's verdict: `false` means a waker that skipped its fence may miss
/// this sleeper, which should then sleep in short slices.
///
/// A waker that sees `WOKEN` set woke after this announcement. Release: pairs with the
/// Acquire `fetch_or` in [`first_wake`], so the sleeper's read of the epoch (before this
/// call) happens before that waker's bump, which its futex wait then sees as a change.
pub fn announce(waiting: &AtomicU32) -> bool {
    count_in(waiting);
    crate::barrier::heavy()
}

/// [`announce`] without its barrier: for a sleeper on several words at once, which counts
/// itself in on each and then runs [`barrier::heavy`](crate::barrier::heavy) once, before
/// its re-check of them all.
pub fn count_in(waiting: &AtomicU32) {
    // Release: as in `announce`.
    let _ = waiting.fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
        // Saturating: a garbage count at its top must not wrap to 0 (no sleeper seen, so
        // no waker would wake us).
        Some(((v & COUNT) + 1).min(COUNT))
    });
}

/// Counts a sleeper out, leaving [`WOKEN`] as it is. Saturating: a count a peer zeroed
/// stays 0 rather than wrap to `COUNT`, from which the next announcement would wrap back
/// to 0 and go unseen by every waker, on every wait after.
pub fn retire(waiting: &AtomicU32) {
    let _ = waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some((v & WOKEN) | (v & COUNT).saturating_sub(1))
    });
}

/// Whether the word (read after the waker's barrier) counts a sleeper.
#[inline]
pub fn anyone(word: u32) -> bool {
    word & COUNT != 0
}

/// For a waker that wakes once per round of sleepers, after its barrier: whether it is
/// the first since the last announcement (then it must wake; later ones skip until a
/// sleeper announces itself again). Sound for many sleepers as for one: a sleeper that
/// announced after the last wake is woken by the next change, and one that announced
/// before it was woken by it (its futex wait sees the epoch that wake bumped).
#[inline]
pub fn first_wake(waiting: &AtomicU32) -> bool {
    // Relaxed: ordered by the waker's barrier.
    let v = waiting.load(Ordering::Relaxed);
    // Acquire: pairs with the sleeper's Release announcement (see `announce`).
    v & COUNT != 0 && v & WOKEN == 0 && waiting.fetch_or(WOKEN, Ordering::Acquire) & WOKEN == 0
}
