//! Async waits on ring ends (feature `async`): runtime-agnostic, on `std::task::Waker`.
//!
//! Each end that [`select`](crate::select) can wait on has `async` forms of its blocking
//! calls (`pop_async`, `push_async`, `recv_async`), and [`ready`] waits on any such end.
//! They work under any executor (tokio, async-std, smol, a hand-written `block_on`): the
//! library depends on no runtime.
//!
//! How a wait goes: the future tries the call; if it would block, it counts itself in as
//! a sleeper on the end's futex epoch (the word the end's own blocking calls sleep on),
//! passes one heavy barrier, tries again, and hands the epoch with its `Waker` to this
//! process's **waiter**: one thread per 127 distinct words waited on (one thread for
//! every task of a process that waits on up to 127 rings; subscribers of one ring share
//! its word), started on first use, which sleeps on all of them with `futex_waitv(2)` and
//! wakes a task's `Waker` when its word moves. So there is no thread per ring, and a
//! publisher pays nothing when nobody waits (it sees no sleeper, as with blocking calls);
//! when a task waits, a publish costs the publisher one `futex` wake, as for a parked
//! handle.
//!
//! - **Peer death and close** wake a waiting task as they wake a parked handle: a close
//!   bumps the epoch, a peer's exit is heard through its pidfd, or (where none can be
//!   had) by the end's liveness check, for which the waiter wakes the task once per
//!   [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); a watched wait wakes once per
//!   [`WATCHED_SLICE`](crate::WATCHED_SLICE) to re-check, as a parked handle does. The
//!   call then returns what its blocking form returns (`PeerDied`, `Disconnected`).
//! - **Shutdown** ([`Shutdown`](crate::Shutdown)) wakes every waiting task; its call
//!   returns `Interrupted` as a blocking one does.
//! - **Cancellation-safe**: the item is taken only inside a `poll` that returns it, so a
//!   future dropped while it waits loses no message, and its drop removes its registration
//!   (the sleeper count goes back down: publishers stop waking). A `push_async` future
//!   dropped before it completed has not pushed its value.
//! - **No timeout forms**: wrap the future in the runtime's timeout (dropping it on expiry is
//!   safe, as above).
//! - **Fallback**: where the kernel refuses `futex_waitv` (Linux < 5.16, or a seccomp filter),
//!   the waiter checks its words once per millisecond instead (a wake-up then costs up to
//!   1 ms). The waiter threads do not survive a `fork`: a forked child starts its own.
//!
//! ```
//! use shm_ring::spsc;
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Wake, Waker};
//! #     struct T(std::thread::Thread);
//! #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
//! #     let w = Waker::from(std::sync::Arc::new(T(std::thread::current())));
//! #     let mut f = std::pin::pin!(f);
//! #     loop {
//! #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&w)) { return v; }
//! #         std::thread::park();
//! #     }
//! # }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = spsc::Ring::<u64>::in_process(64)?;
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! let t = std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_millis(20));
//!     tx.push(7)
//! });
//! // `block_on`: any executor's (tokio's `#[tokio::main]`, or a hand-written one).
//! assert_eq!(block_on(rx.pop_async())?, 7);
//! t.join().unwrap()?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use shm_sync::futex::{self, WaitAnyOutcome, WAIT_ANY_MAX};
use shm_sync::primitive::{AtomicU32, Ordering};

use crate::end::FlagRef;
use crate::select::{Armed, SelectError, Selectable};

/// Distinct words one waiter thread sleeps on (its own wake-up word is the last of
/// `futex_waitv`'s 128).
const WORDS_PER_WAITER: usize = WAIT_ANY_MAX - 1;

/// Waits until `end` is ready, as [`select`](crate::select::select) does for one end:
/// then its `try_` call returns at once (another thread or process sharing the ring may
/// take the item first: wait again on `Empty`).
///
/// # Errors
///
/// `Interrupted` once a shutdown was requested ([`Shutdown`](crate::Shutdown)).
pub fn ready<E: Selectable + ?Sized>(end: &mut E) -> Ready<'_, E> {
    Ready {
        end,
        ticket: None,
        armed: None,
    }
}

/// The future of [`ready`]. Dropping it removes its registration.
#[must_use = "futures do nothing unless awaited"]
pub struct Ready<'a, E: ?Sized> {
    end: &'a mut E,
    ticket: Option<Ticket>,
    armed: Option<Armed>,
}

// SAFETY: `Armed`'s flag pointer points into the mapping its `keep` (an `Arc`) keeps
// mapped, and the flag is atomics only; its shutdown registration is an index into a
// process-wide table. So the future may move to another thread whenever the end may.
unsafe impl<E: ?Sized + Send> Send for Ready<'_, E> {}

impl<E: ?Sized> Unpin for Ready<'_, E> {}

impl<E: Selectable + ?Sized> Future for Ready<'_, E> {
    type Output = Result<(), SelectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(t) = &this.ticket {
            if t.still_waiting(cx.waker()) {
                return Poll::Pending;
            }
            this.ticket = None;
            this.armed = None;
        }
        if this.end.select_ready() {
            return Poll::Ready(Ok(()));
        }
        if crate::shutdown::requested() {
            return Poll::Ready(Err(SelectError::Interrupted));
        }
        let armed = this.end.select_arm();
        let flag = armed.keep.clone();
        // Acquire: pairs with the Release bump in `wait::wake`, as in `wait::park`.
        let epoch = flag.line().epoch.load(Ordering::Acquire);
        // Release: as in `sleepers::announce` (pairs with the Acquire in
        // `sleepers::first_wake`).
        shm_sync::sleepers::count_in(&flag.line().waiting);
        // The heavy barrier between the count and the re-check (as `sleepers::announce`
        // has): a publish after it sees us counted in (and bumps the epoch), or the
        // re-check sees the publish.
        let ordered = shm_sync::barrier::heavy();
        if this.end.select_ready() {
            shm_sync::sleepers::retire(&flag.line().waiting);
            return Poll::Ready(Ok(()));
        }
        let mut slice = if armed.watched {
            crate::WATCHED_SLICE
        } else {
            crate::LIVENESS_INTERVAL
        };
        if !ordered {
            // A waker that skipped its fence may miss our count: short slices.
            slice = slice.min(Duration::from_millis(1));
        }
        this.ticket = Some(register(flag, epoch, slice, cx.waker().clone()));
        this.armed = Some(armed);
        Poll::Pending
    }
}

impl<E: ?Sized> Drop for Ready<'_, E> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            t.cancel();
        }
    }
}

/// One task's wait, as the waiter holds it.
struct Reg {
    flag: FlagRef,
    epoch: u32,
    deadline: Instant,
    waker: Waker,
}

/// A waiter thread's share: its registrations and its wake-up word.
struct Shard {
    regs: Vec<Option<(u64, Reg)>>,
    kick: Arc<AtomicU32>,
}

impl Shard {
    /// The distinct words (address and expected epoch) its live registrations wait on.
    fn words(&self) -> usize {
        let mut seen: Vec<(usize, u32)> = Vec::new();
        for (_, r) in self.regs.iter().flatten() {
            let k = (r.flag.addr(), r.epoch);
            if !seen.contains(&k) {
                seen.push(k);
            }
        }
        seen.len()
    }

    fn has_word(&self, addr: usize, epoch: u32) -> bool {
        self.regs
            .iter()
            .flatten()
            .any(|(_, r)| r.flag.addr() == addr && r.epoch == epoch)
    }
}

/// This process's waiters (rebuilt in a forked child, whose threads did not come along).
struct Waiters {
    pid: u32,
    shards: Vec<Shard>,
    next_id: u64,
}

static WAITERS: Mutex<Option<Waiters>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Waiters>> {
    // A panic while the lock is held leaves the table consistent (every update is one
    // assignment): go on with it.
    WAITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registration: which shard, which slot, and its id (slots are reused).
struct Ticket {
    shard: usize,
    slot: usize,
    id: u64,
    pid: u32,
}

impl Ticket {
    /// Whether the registration still waits (then with `waker` as its waker); `false`
    /// once the waiter fired it (the word moved, or its slice passed).
    fn still_waiting(&self, waker: &Waker) -> bool {
        let mut g = lock();
        match slot_of(&mut g, self) {
            Some(r) => {
                if !r.waker.will_wake(waker) {
                    r.waker = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    /// Removes the registration if it still waits, counting the sleeper out.
    fn cancel(self) {
        let mut g = lock();
        let Some(w) = g.as_mut().filter(|w| w.pid == self.pid) else {
            return;
        };
        let Some(entry) = w
            .shards
            .get_mut(self.shard)
            .and_then(|s| s.regs.get_mut(self.slot))
        else {
            return;
        };
        if matches!(entry, Some((id, _)) if *id == self.id) {
            if let Some((_, r)) = entry.take() {
                shm_sync::sleepers::retire(&r.flag.line().waiting);
            }
        }
        // No kick: the waiter's next look drops the word (until then it may wake once for
        // nothing).
    }
}

fn slot_of<'g>(g: &'g mut Option<Waiters>, t: &Ticket) -> Option<&'g mut Reg> {
    let w = g.as_mut().filter(|w| w.pid == t.pid)?;
    match w.shards.get_mut(t.shard)?.regs.get_mut(t.slot)? {
        Some((id, r)) if *id == t.id => Some(r),
        _ => None,
    }
}

/// Hands a counted-in wait on `flag`'s epoch (`epoch` seen before the count) to a waiter.
fn register(flag: FlagRef, epoch: u32, slice: Duration, waker: Waker) -> Ticket {
    let pid = std::process::id();
    let addr = flag.addr();
    // A slice too long for the clock saturates to an hour (the task then re-checks once
    // an hour).
    let now = Instant::now();
    let deadline = now
        .checked_add(slice)
        .unwrap_or_else(|| now + Duration::from_secs(3600));
    let mut g = lock();
    if g.as_ref().is_none_or(|w| w.pid != pid) {
        // First use in this process (or in this forked child: the parent's table, and the
        // registrations in it, belong to threads that are not here).
        *g = Some(Waiters {
            pid,
            shards: Vec::new(),
            next_id: 0,
        });
    }
    let Some(w) = g.as_mut() else {
        unreachable!("just set")
    };
    let shard = match w
        .shards
        .iter()
        .position(|s| s.has_word(addr, epoch) || s.words() < WORDS_PER_WAITER)
    {
        Some(i) => i,
        None => {
            let kick = Arc::new(AtomicU32::new(0));
            w.shards.push(Shard {
                regs: Vec::new(),
                kick: kick.clone(),
            });
            let i = w.shards.len() - 1;
            // A waiter that cannot be started leaves its shard unserved: its tasks then
            // wake only by polling again (documented as the fallback's cost).
            let _ = std::thread::Builder::new()
                .name(format!("shm-ring-waiter-{i}"))
                .spawn(move || serve(i, pid, kick));
            i
        }
    };
    w.next_id += 1;
    let id = w.next_id;
    let s = &mut w.shards[shard];
    let reg = Reg {
        flag,
        epoch,
        deadline,
        waker,
    };
    let slot = match s.regs.iter().position(Option::is_none) {
        Some(k) => {
            s.regs[k] = Some((id, reg));
            k
        }
        None => {
            s.regs.push(Some((id, reg)));
            s.regs.len() - 1
        }
    };
    let kick = s.kick.clone();
    drop(g);
    // Release: pairs with the waiter's Acquire load of its kick word under the lock; the
    // wake makes a waiter asleep on the old set look again.
    kick.fetch_add(1, Ordering::Release);
    futex::wake(&kick, 1);
    Ticket {
        shard,
        slot,
        id,
        pid,
    }
}

/// A waiter thread: sleeps on its shard's words and wakes the tasks whose word moved or
/// whose slice passed.
fn serve(shard: usize, pid: u32, kick: Arc<AtomicU32>) {
    let mut fired: Vec<Waker> = Vec::new();
    let mut held: Vec<(FlagRef, u32)> = Vec::new();
    loop {
        held.clear();
        let kicked;
        let mut next: Option<Instant> = None;
        {
            let mut g = lock();
            let Some(s) = g
                .as_mut()
                .filter(|w| w.pid == pid)
                .and_then(|w| w.shards.get_mut(shard))
            else {
                return;
            };
            // Acquire: pairs with the Release bump in `register`, so the registrations
            // made before it are seen.
            kicked = s.kick.load(Ordering::Acquire);
            let now = Instant::now();
            for entry in s.regs.iter_mut() {
                let due = match entry {
                    Some((_, r)) => {
                        // Acquire: pairs with the Release bump in `wait::wake`: the task,
                        // woken, sees what the publisher published.
                        r.flag.line().epoch.load(Ordering::Acquire) != r.epoch || now >= r.deadline
                    }
                    None => false,
                };
                if due {
                    if let Some((_, r)) = entry.take() {
                        shm_sync::sleepers::retire(&r.flag.line().waiting);
                        fired.push(r.waker);
                    }
                } else if let Some((_, r)) = entry {
                    next = Some(next.map_or(r.deadline, |n| n.min(r.deadline)));
                    let k = (r.flag.addr(), r.epoch);
                    if !held.iter().any(|(f, e)| (f.addr(), *e) == k) {
                        held.push((r.flag.clone(), r.epoch));
                    }
                }
            }
        }
        for waker in fired.drain(..) {
            waker.wake();
        }
        let timeout = next.map(|n| n.saturating_duration_since(Instant::now()));
        let kick_word: &AtomicU32 = &kick;
        if held.is_empty() {
            futex::wait(kick_word, kicked, timeout);
            continue;
        }
        let mut words: Vec<(&AtomicU32, u32)> =
            held.iter().map(|(f, e)| (&f.line().epoch, *e)).collect();
        words.push((kick_word, kicked));
        if futex::wait_any(&words, timeout) == WaitAnyOutcome::Unsupported {
            let slice = Duration::from_millis(1);
            futex::wait(
                kick_word,
                kicked,
                Some(timeout.map_or(slice, |t| t.min(slice))),
            );
        }
    }
}

/// The waiter threads this process runs now, and the registrations they hold (tests).
#[doc(hidden)]
pub fn waiters() -> (usize, usize) {
    let g = lock();
    match g.as_ref().filter(|w| w.pid == std::process::id()) {
        Some(w) => (
            w.shards.len(),
            w.shards
                .iter()
                .map(|s| s.regs.iter().flatten().count())
                .sum(),
        ),
        None => (0, 0),
    }
}
