//! What a lock attempt can end in, besides getting the lock.

use std::fmt;

/// Robust state of a lock's data (the `state` word of [`Mutex`](crate::Mutex) and
/// [`SpinLock`](crate::SpinLock)):
///
/// | value | name              | meaning                                                  |
/// | ----- | ----------------- | -------------------------------------------------------- |
/// | 0     | `CONSISTENT`      | normal                                                   |
/// | 1     | `INCONSISTENT`    | a holder died; the next holder got `OwnerDied` and has not yet called `mark_consistent` |
/// | 2     | `NOT_RECOVERABLE` | an `OwnerDied` guard was dropped unrepaired: every lock fails |
/// | other | (corrupted)       | treated as `NOT_RECOVERABLE`                             |
pub(crate) mod robust {
    pub const CONSISTENT: u32 = 0;
    pub const INCONSISTENT: u32 = 1;
    pub const NOT_RECOVERABLE: u32 = 2;
}

/// Why a lock attempt did not return a plain guard.
pub enum LockError<G> {
    /// The previous holder died holding the lock. You hold it now (the guard is inside):
    /// repair the data, then call `mark_consistent` on the guard. Dropping the guard
    /// without doing so makes the lock permanently [`NotRecoverable`](Self::NotRecoverable).
    OwnerDied(G),
    /// A holder died and nobody repaired the data; the lock can never be taken again.
    /// Remove the segment and create it anew.
    NotRecoverable,
    /// The timeout passed first (`lock_timeout`).
    Timeout,
    /// The lock is held (`try_lock`).
    WouldBlock,
    /// The calling thread already holds this lock; waiting would never end.
    WouldDeadlock,
}

impl<G> LockError<G> {
    /// The guard of an `OwnerDied`, if that is what this is.
    pub fn into_owner_died(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// Whether this is `OwnerDied`.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    fn describe(&self) -> &'static str {
        match self {
            LockError::OwnerDied(_) => {
                "the previous holder died holding the lock; you hold it now: repair the data and call mark_consistent"
            }
            LockError::NotRecoverable => {
                "a holder died and the data was never repaired; the lock is not recoverable"
            }
            LockError::Timeout => "timed out waiting for the lock",
            LockError::WouldBlock => "the lock is held by another thread",
            LockError::WouldDeadlock => "the calling thread already holds this lock",
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LockError::OwnerDied(_) => "OwnerDied(..)",
            LockError::NotRecoverable => "NotRecoverable",
            LockError::Timeout => "Timeout",
            LockError::WouldBlock => "WouldBlock",
            LockError::WouldDeadlock => "WouldDeadlock",
        };
        f.write_str(name)
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl<G> std::error::Error for LockError<G> {}

/// Why a wait on a [`Semaphore`](crate::Semaphore) or [`Event`](crate::Event) ended
/// without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The timeout passed first.
    Timeout,
    /// Nothing available right now (`try_` forms).
    WouldBlock,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout => f.write_str("timed out"),
            WaitError::WouldBlock => f.write_str("nothing available without waiting"),
        }
    }
}

impl std::error::Error for WaitError {}
