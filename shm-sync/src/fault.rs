//! Test-only fault points (feature `fault-injection`): a process started with
//! `SHMRING_FAULT=<point>:<n>` kills itself with SIGKILL the `n`-th time it reaches
//! `<point>`, i.e. mid-protocol, as `kill -9` at the worst moment would; with
//! `SHMRING_FAULT=<point>:<n>:<ms>` it stalls there for `ms` milliseconds instead (a
//! descheduled, not dead, peer).
//!
//! The module lives in shm-sync so that shm-sync's and shm-ring's points share one switch;
//! shm-ring's `fault-injection` feature turns on shm-sync's.
//!
//! Points in shm-sync:
//! `mutex-locked-unrecorded` (lock word taken, holder's start time not yet recorded),
//! `mutex-unlocking` (record cleared, word not yet released),
//! `mutex-released` (word released, sleepers not yet woken; `Protocol::Normal`),
//! `spin-unlocking` (guard's data dropped, word not yet released),
//! `semaphore-released` (count raised, sleepers not yet woken),
//! `event-set` (state set, sleepers not yet woken),
//! `condvar-notified` (sequence bumped, sleepers not yet woken),
//! `condvar-woken` (a waiter left its sleep, on a notify or its timeout, and has not yet
//! re-locked or uncounted itself),
//! `seqlock-locked`, `seqlock-written`, `seqlock-published` (the steps of a write).
//!
//! Points in shm-ring: `mpmc-producer-claimed` (tail claimed, slot not marked),
//! `mpmc-producer-written` (slot marked WRITING and written, not published),
//! `mpmc-consumer-claimed` (head claimed, slot not marked READING),
//! `mpmc-consumer-read` (slot marked READING and read, not released),
//! `mpmc-consumer-released` (slot released, producers not yet woken, `pop` not returned),
//! `mpmc-consumer-skipping` (a skipped slot released, head not yet moved past it),
//! `mpmc-producer-published` (slot published, sleeping consumers not yet woken),
//! `spsc-producer-written` (slot written, tail not published),
//! `spsc-producer-published` (tail published, a sleeping consumer not yet woken),
//! `spsc-consumer-read` (slot read, head not yet moved past it),
//! `spsc-consumer-published` (head published, a sleeping producer not yet woken),
//! `broadcast-publisher-wrote` (slot marked odd and its value written, not published),
//! `broadcast-publisher-sealed` (slot published, `tail` not yet stored),
//! `broadcast-publisher-published` (`tail` stored, sleeping subscribers not yet woken),
//! `broadcast-publisher-evicted` (a subscriber record marked evicted, not yet rescanned),
//! `broadcast-subscriber-registered` (a joining subscriber's record claimed and its position
//! stored, `tail` not yet re-read), `broadcast-subscriber-copied` (a value copied, its
//! sequence word not yet re-checked), `broadcast-subscriber-advanced` (position stored, a
//! waiting publisher not yet woken),
//! `log-producer-claimed` (`tail` claimed, nothing marked), `log-producer-marked` (the
//! claim's header marked, nothing written), `log-producer-written` (the message written,
//! not committed), `log-producer-committed` (committed, the consumer not yet woken),
//! `log-consumer-gave-up` (unmarked claims turned into holes, not yet read past),
//! `log-consumer-rewritten` (released words rewritten, `head` not yet stored),
//! `end-claimed` (an endpoint's owner word claimed, its state not yet ATTACHED; in MPMC
//! also before the side's `ever` flag), `end-closed` (state CLOSED, owner word still set),
//! `end-released` (owner word cleared, sleepers on the other side not yet woken).

//!
//! `SHMRING_FAULT_NO_LOCK_PI2=1` plays a kernel older than 5.14: `FUTEX_LOCK_PI2` fails with
//! `ENOSYS` (see [`no_lock_pi2`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64, Option<u64>)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Dies here if this is the armed point's `n`-th hit.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("SHMRING_FAULT").ok()?;
        let mut parts = v.split(':');
        let p = parts.next()?.to_owned();
        let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let stall = parts.next().and_then(|ms| ms.parse().ok());
        Some((p, n, stall))
    });
    if let Some((p, n, stall)) = armed {
        if p == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            match stall {
                Some(ms) => std::thread::sleep(std::time::Duration::from_millis(*ms)),
                None => {
                    // SAFETY: plain syscalls. SIGKILL cannot be caught or blocked, so this
                    // process ends here, as a `kill -9` at this instruction would end it
                    // (and, unlike `abort`, with no core dump to delay its death).
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    std::process::abort(); // not reached
                }
            }
        }
    }
}

/// Whether this process plays a kernel without `FUTEX_LOCK_PI2` (env
/// `SHMRING_FAULT_NO_LOCK_PI2` set).
pub fn no_lock_pi2() -> bool {
    static NO: OnceLock<bool> = OnceLock::new();
    *NO.get_or_init(|| std::env::var_os("SHMRING_FAULT_NO_LOCK_PI2").is_some())
}
