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
//!   [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL). The call then returns what its
//!   blocking form returns (`PeerDied`, `Disconnected`).
//! - **Idle cost**: a parked handle whose peers' deaths are watched wakes once per
//!   [`WATCHED_SLICE`](crate::WATCHED_SLICE) to re-check on its own (a safety net). A
//!   waiter spreads that net over its tasks: their re-checks are a `WATCHED_SLICE` apart,
//!   so the idle tasks of one waiter thread (any number, on up to 127 words) wake about
//!   once a second together; 1,000 of them each about once every 1,000 s. A task that must check a peer on a timer (no pidfd for
//!   it) wakes once per `LIVENESS_INTERVAL`, as a parked handle does.
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
use std::sync::Arc;
#[cfg(not(shm_loom))]
use std::sync::{atomic::AtomicPtr, Mutex, MutexGuard};

#[cfg(shm_loom)]
use loom::sync::{Mutex, MutexGuard};
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
        match arm_wait(this.end, cx.waker()) {
            Ok(None) => Poll::Ready(Ok(())),
            Ok(Some((ticket, armed))) => {
                this.ticket = Some(ticket);
                this.armed = Some(armed);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The registration step of a wait: `None` if `end` is ready (at once, or at the re-check
/// after counting in); else the registration with a waiter, which wakes `waker`, and the
/// end's arming (kept for as long as the registration: its shutdown registration).
fn arm_wait<E: Selectable + ?Sized>(
    end: &mut E,
    waker: &Waker,
) -> Result<Option<(Ticket, Armed)>, SelectError> {
    if end.select_ready() {
        return Ok(None);
    }
    if crate::shutdown::requested() {
        return Err(SelectError::Interrupted);
    }
    let armed = end.select_arm();
    let flag = armed.keep.clone();
    // Acquire: pairs with the Release bump in `wait::wake`, as in `wait::park`.
    let epoch = flag.line().epoch.load(Ordering::Acquire);
    // Release: as in `sleepers::announce` (pairs with the Acquire in
    // `sleepers::first_wake`).
    shm_sync::sleepers::count_in(&flag.line().waiting);
    // The heavy barrier between the count and the re-check (as `sleepers::announce` has):
    // a publish after it sees us counted in (and bumps the epoch), or the re-check sees
    // the publish.
    let ordered = shm_sync::barrier::heavy();
    if end.select_ready() {
        shm_sync::sleepers::retire(&flag.line().waiting);
        return Ok(None);
    }
    // A shutdown requested before the end's arming registered with it woke nobody: look
    // again (as `park` does).
    if crate::shutdown::requested() {
        shm_sync::sleepers::retire(&flag.line().waiting);
        return Err(SelectError::Interrupted);
    }
    let slice = if !ordered {
        // A waker that skipped its fence may miss our count: short slices.
        Slice::Short(Duration::from_millis(1))
    } else if armed.watched {
        Slice::SafetyNet
    } else {
        Slice::Short(crate::LIVENESS_INTERVAL)
    };
    let ticket = register(flag, epoch, slice, waker.clone());
    Ok(Some((ticket, armed)))
}

impl<E: ?Sized> Drop for Ready<'_, E> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let fired = !t.cancel();
            if let (true, Some(a)) = (fired, &self.armed) {
                // Woken, and dropped before it looked: the wake may have been the one a
                // waker gave this word (MPMC and SPSC wake one sleeper), so pass it on.
                crate::wait::wake(a.keep.line(), 1);
            }
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
    /// The latest safety-net deadline given (see [`Slice::SafetyNet`]).
    net: Instant,
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

    fn kick(&self) {
        // Release: pairs with the waiter's Acquire load of its kick word under the lock;
        // the wake makes a waiter asleep on the old set look again.
        self.kick.fetch_add(1, Ordering::Release);
        futex::wake(&self.kick, 1);
    }
}

/// This process's waiters: their shards, under one lock.
struct Waiters {
    shards: Vec<Shard>,
    next_id: u64,
}

/// The waiters of the process whose pid it names. A forked child makes its own (the
/// parent's threads did not come along, and the parent's lock may have been held by one
/// of them at the fork): the parent's is left as it is, never locked or freed in the child.
struct Table {
    pid: u32,
    waiters: Mutex<Waiters>,
    /// Loom only: set by [`stop_waiters`] (a model ends only once every thread does).
    #[cfg(shm_loom)]
    stopping: std::sync::atomic::AtomicBool,
    /// Loom only: the waiter threads, for `stop_waiters` to join.
    #[cfg(shm_loom)]
    threads: Mutex<Vec<loom::thread::JoinHandle<()>>>,
}

#[cfg(not(shm_loom))]
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

// Under loom, a table per model execution.
#[cfg(shm_loom)]
loom::lazy_static! {
    static ref TABLE: Table = Table {
        pid: std::process::id(),
        waiters: Mutex::new(Waiters {
            shards: Vec::new(),
            next_id: 0,
        }),
        stopping: std::sync::atomic::AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
    };
}

#[cfg(shm_loom)]
fn table() -> &'static Table {
    &TABLE
}

/// Loom only: ends the waiter threads of this execution (each returns at its next look)
/// and joins them, so that the model ends with every thread.
#[cfg(shm_loom)]
pub fn stop_waiters() {
    let t = table();
    t.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in &lock(t).shards {
        s.kick();
    }
    let threads = std::mem::take(&mut *t.threads.lock().unwrap_or_else(|p| p.into_inner()));
    for h in threads {
        let _ = h.join();
    }
}

/// This process's table.
#[cfg(not(shm_loom))]
fn table() -> &'static Table {
    let pid = std::process::id();
    loop {
        // Acquire: pairs with the AcqRel compare-exchange below, so a table is seen whole.
        let p = TABLE.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: a non-null `TABLE` points at a leaked `Box<Table>`, never freed.
        if let Some(t) = unsafe { p.as_ref() } {
            if t.pid == pid {
                return t;
            }
        }
        let fresh = Box::into_raw(Box::new(Table {
            pid,
            waiters: Mutex::new(Waiters {
                shards: Vec::new(),
                next_id: 0,
            }),
        }));
        // AcqRel: Release publishes the new table; Acquire as for the load above.
        match TABLE.compare_exchange(
            p,
            fresh,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            // SAFETY: just published; leaked for the life of the process.
            Ok(_) => return unsafe { &*fresh },
            // Another thread of this process made one first: use it.
            // SAFETY: `fresh` was never shared.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

fn lock(t: &'static Table) -> MutexGuard<'static, Waiters> {
    // A panic while the lock is held leaves the table consistent (every update is one
    // assignment): go on with it.
    t.waiters.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registration: which process's table, which shard, which slot, and its id (slots
/// are reused).
struct Ticket {
    pid: u32,
    shard: usize,
    slot: usize,
    id: u64,
}

impl Ticket {
    /// This process's table, if the ticket is of this process (a future inherited
    /// across a fork is not: its registration is the parent's).
    fn table(&self) -> Option<&'static Table> {
        let t = table();
        (t.pid == self.pid).then_some(t)
    }

    /// Whether the registration still waits (then with `waker` as its waker); `false`
    /// once the waiter fired it (the word moved, or its slice passed), or in a forked
    /// child.
    fn still_waiting(&self, waker: &Waker) -> bool {
        let Some(t) = self.table() else { return false };
        let mut g = lock(t);
        let Some(r) = slot_of(&mut g, self) else {
            return false;
        };
        let old =
            (!r.waker.will_wake(waker)).then(|| std::mem::replace(&mut r.waker, waker.clone()));
        drop(g);
        // The old waker is dropped outside the lock (its drop may run executor code).
        drop(old);
        true
    }

    /// Whether the registration still waits (the waiter has not fired it).
    #[cfg_attr(shm_loom, allow(dead_code))]
    fn is_pending(&self) -> bool {
        let Some(t) = self.table() else { return false };
        slot_of(&mut lock(t), self).is_some()
    }

    /// Removes the registration if it still waits, counting the sleeper out; `true` if it
    /// did (`false`: the waiter had fired it, or a forked child, which leaves the
    /// parent's count alone).
    fn cancel(self) -> bool {
        let Some(t) = self.table() else { return false };
        let mut g = lock(t);
        let Some(s) = g.shards.get_mut(self.shard) else {
            return false;
        };
        let Some(entry) = s.regs.get_mut(self.slot) else {
            return false;
        };
        if !matches!(entry, Some((id, _)) if *id == self.id) {
            return false;
        }
        let Some((_, r)) = entry.take() else {
            return false;
        };
        shm_sync::sleepers::retire(&r.flag.line().waiting);
        // The waiter stops sleeping on the word (while it sleeps there it could take a
        // wake meant for another sleeper of it).
        s.kick();
        drop(g);
        // Acquire: as in the waiter's look. The word moved while we were counted in: a
        // waker may have meant its one wake for us; pass it on.
        if r.flag.line().epoch.load(Ordering::Acquire) != r.epoch {
            crate::wait::wake(r.flag.line(), 1);
        }
        // `r` (its waker, its mapping) is dropped here, outside the lock.
        true
    }
}

fn slot_of<'g>(w: &'g mut Waiters, t: &Ticket) -> Option<&'g mut Reg> {
    match w.shards.get_mut(t.shard)?.regs.get_mut(t.slot)? {
        Some((id, r)) if *id == t.id => Some(r),
        _ => None,
    }
}

/// When the waiter wakes a task whose word has not moved.
#[derive(Clone, Copy)]
enum Slice {
    /// After this long: the end must check its peers on a timer (no exit watcher covers
    /// one of them), or a barrier failed.
    Short(Duration),
    /// The safety net of a wait whose peers' deaths will bump its word (as a parked
    /// handle's [`WATCHED_SLICE`](crate::WATCHED_SLICE) is), spread over the waiter's
    /// tasks: its deadlines are at least a `WATCHED_SLICE` apart, so the tasks of one
    /// waiter together wake for it about as often as one parked handle (the `n` tasks of
    /// a waiter each re-check about every `n` slices).
    SafetyNet,
}

/// Hands a counted-in wait on `flag`'s epoch (`epoch` seen before the count) to a waiter.
/// Where no waiter thread can be started, the registration is not kept and `waker` is
/// woken at once: the task then polls (each poll tries to start one again) rather than
/// sleeping unserved.
fn register(flag: FlagRef, epoch: u32, slice: Slice, waker: Waker) -> Ticket {
    let t = table();
    let addr = flag.addr();
    let now = Instant::now();
    let mut g = lock(t);
    let w = &mut *g;
    let shard = match w
        .shards
        .iter()
        .position(|s| s.has_word(addr, epoch) || s.words() < WORDS_PER_WAITER)
    {
        Some(i) => i,
        None => {
            let kick = Arc::new(AtomicU32::new(0));
            let i = w.shards.len();
            let pid = t.pid;
            let k = kick.clone();
            #[cfg(not(shm_loom))]
            let started = std::thread::Builder::new()
                .name(format!("shm-ring-waiter-{i}"))
                .spawn(move || serve(i, pid, k))
                .is_ok();
            #[cfg(shm_loom)]
            let started = {
                let h = loom::thread::spawn(move || serve(i, pid, k));
                t.threads.lock().unwrap_or_else(|p| p.into_inner()).push(h);
                true
            };
            if !started {
                drop(g);
                shm_sync::sleepers::retire(&flag.line().waiting);
                waker.wake();
                // A ticket that names no registration: it reads as fired.
                return Ticket {
                    pid: t.pid,
                    shard: usize::MAX,
                    slot: 0,
                    id: 0,
                };
            }
            w.shards.push(Shard {
                regs: Vec::new(),
                kick,
                net: now,
            });
            i
        }
    };
    w.next_id += 1;
    let id = w.next_id;
    let s = &mut w.shards[shard];
    let deadline = match slice {
        Slice::Short(d) => now.checked_add(d),
        Slice::SafetyNet => {
            // One slice after the latest safety net of this waiter, but never more than
            // one slice per task it holds now (so that churn does not push the nets ever
            // later).
            let tasks = s.regs.iter().flatten().count() as u32 + 1;
            let latest = s.net.max(now);
            let spread = crate::WATCHED_SLICE.saturating_mul(tasks);
            let d = latest
                .checked_add(crate::WATCHED_SLICE)
                .zip(now.checked_add(spread))
                .map(|(a, b)| a.min(b));
            if let Some(d) = d {
                s.net = d;
            }
            d
        }
    }
    // Past what the clock can say: re-check in an hour.
    .unwrap_or_else(|| now + Duration::from_secs(3600));
    // Under loom, real time must not steer an execution: no slice ever passes (the model
    // is of the wake-up, not of the timers).
    let deadline = if cfg!(shm_loom) {
        now + Duration::from_secs(3600)
    } else {
        deadline
    };
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
    s.kick();
    Ticket {
        pid: t.pid,
        shard,
        slot,
        id,
    }
}

/// A waiter thread: sleeps on its shard's words and wakes the tasks whose word moved or
/// whose slice passed.
fn serve(shard: usize, pid: u32, kick: Arc<AtomicU32>) {
    let mut fired: Vec<Reg> = Vec::new();
    let mut held: Vec<(FlagRef, u32)> = Vec::new();
    loop {
        held.clear();
        let kicked;
        let mut next: Option<Instant> = None;
        {
            let t = table();
            if t.pid != pid {
                return;
            }
            let mut g = lock(t);
            #[cfg(shm_loom)]
            if t.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let Some(s) = g.shards.get_mut(shard) else {
                return;
            };
            // Acquire: pairs with the Release bump in `Shard::kick`, so the registrations
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
                        fired.push(r);
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
        // Outside the lock: the wakers run executor code (which may poll, and so lock).
        // One that panics must not take this thread (and its tasks) with it.
        for r in fired.drain(..) {
            // (Not under loom, whose own panics end a failing model.)
            #[cfg(not(shm_loom))]
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.waker.wake()));
            #[cfg(shm_loom)]
            r.waker.wake();
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
    let g = lock(table());
    (
        g.shards.len(),
        g.shards
            .iter()
            .map(|s| s.regs.iter().flatten().count())
            .sum(),
    )
}

/// A file descriptor that becomes readable when an armed ring end may be ready: for an
/// epoll / mio / poll event loop that waits on sockets and rings together (feature
/// `async`). An eventfd, signalled by this process's waiter (the one the `async` calls
/// use).
///
/// The loop: [`arm`](Self::arm) each end that is empty (full, for a producer); wait on
/// the fd with the other fds; when it is readable, [`clear`](Self::clear) it, drain each
/// armed end with its `try_` calls, and arm again those that came up empty. Readable is
/// a hint, not a promise: an armed end also signals for its safety-net re-check (see the
/// [module docs](self)), once per [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL) where a
/// peer's death cannot be watched, and for a peer's attach; another handle on a shared
/// ring may take the item first. Peer death and close signal it as they wake a parked
/// handle. See `examples/examples/epoll.rs`.
///
/// ```
/// use std::os::fd::AsRawFd;
/// use shm_ring::{aio::ReadyFd, spsc};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ring = spsc::Ring::<u64>::in_process(64)?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// let mut fd = ReadyFd::new()?;
/// assert!(!fd.arm(&mut rx)?, "empty: armed");
/// tx.push(7)?;
/// // The waiter signals the eventfd: poll(2) it as an event loop would.
/// let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
/// // SAFETY: `p` is one valid pollfd.
/// assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1);
/// fd.clear();
/// assert_eq!(rx.try_pop()?, 7);
/// # Ok(()) }
/// ```
#[cfg(not(shm_loom))]
pub struct ReadyFd {
    signal: Arc<Signal>,
    armed: Vec<(Ticket, Armed, usize)>,
}

/// The eventfd, shared with the wakers the waiter holds (it stays open until the last
/// of them is gone).
#[cfg(not(shm_loom))]
struct Signal(std::os::fd::OwnedFd);

#[cfg(not(shm_loom))]
impl std::task::Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        use std::os::fd::AsRawFd;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our own eventfd. EAGAIN (the
        // counter at its maximum) leaves it readable, which is all a signal needs.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                std::ptr::from_ref(&one).cast::<libc::c_void>(),
                8,
            )
        };
    }
}

// SAFETY: as for `Ready`: each `Armed` points into the mapping its `keep` keeps mapped,
// and holds an index into a process-wide table; the tickets and the eventfd are plain data.
#[cfg(not(shm_loom))]
unsafe impl Send for ReadyFd {}

#[cfg(not(shm_loom))]
impl ReadyFd {
    /// A new eventfd, not readable until an armed end signals it.
    ///
    /// # Errors
    ///
    /// The OS error of `eventfd(2)`.
    pub fn new() -> std::io::Result<ReadyFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(ReadyFd {
            signal: Arc::new(Signal(fd)),
            armed: Vec::new(),
        })
    }

    /// Arms `end`: the fd becomes readable once it may be ready. `true` (and the fd
    /// signalled) if it is ready now: then nothing is armed. An end armed before and not
    /// yet signalled stays armed (arming it again adds nothing).
    ///
    /// # Errors
    ///
    /// `Interrupted` once a shutdown was requested ([`Shutdown`](crate::Shutdown)).
    pub fn arm<E: Selectable + ?Sized>(&mut self, end: &mut E) -> Result<bool, SelectError> {
        self.forget_fired();
        let waker = Waker::from(self.signal.clone());
        match arm_wait(end, &waker)? {
            None => {
                waker.wake();
                Ok(true)
            }
            Some((ticket, armed)) => {
                let addr = armed.keep.addr();
                if self.armed.iter().any(|(_, _, a)| *a == addr) {
                    // Armed already (and not signalled yet): the older registration
                    // covers this one.
                    ticket.cancel();
                } else {
                    self.armed.push((ticket, armed, addr));
                }
                Ok(false)
            }
        }
    }

    /// Makes the fd unreadable again (reads its counter), and forgets the ends that
    /// signalled it: arm them again once their `try_` calls come up empty. Returns
    /// whether it was readable.
    pub fn clear(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from our own (non-blocking) eventfd.
        let n = unsafe {
            libc::read(
                self.signal.0.as_raw_fd(),
                std::ptr::from_mut(&mut count).cast::<libc::c_void>(),
                8,
            )
        };
        self.forget_fired();
        n == 8 && count > 0
    }

    /// How many ends are armed and have not signalled yet.
    pub fn armed(&mut self) -> usize {
        self.forget_fired();
        self.armed.len()
    }

    fn forget_fired(&mut self) {
        // A registration the waiter fired is gone from its table.
        self.armed.retain(|(t, _, _)| t.is_pending());
    }
}

#[cfg(not(shm_loom))]
impl std::os::fd::AsRawFd for ReadyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.signal.0.as_raw_fd()
    }
}

#[cfg(not(shm_loom))]
impl std::os::fd::AsFd for ReadyFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.signal.0.as_fd()
    }
}

#[cfg(not(shm_loom))]
impl Drop for ReadyFd {
    fn drop(&mut self) {
        for (t, _, _) in self.armed.drain(..) {
            t.cancel();
        }
    }
}
