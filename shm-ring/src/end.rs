//! Ring endpoints: which process holds each end, and whether it still runs.
//!
//! An endpoint slot in shared memory:
//!
//! | field   | meaning                                                              |
//! | ------- | -------------------------------------------------------------------- |
//! | `owner` | 0 = free; else `pid << 32 \| (process start time & 0xffff_ffff)`    |
//! | `state` | 0 = never attached, 1 = attached, 2 = closed (its handle was dropped) |
//! | `gen`   | bumped by every claim, right after its owner compare-exchange          |
//!
//! The owner word is claimed with one compare-exchange, so there is no moment at which an
//! end is held by nobody known; a slot whose owner is dead can be taken over the same way.
//! The generation tells one attachment of a slot from the next: an MPMC slot mark names
//! the endpoint and its generation, so a mark left by a dead attachment is never mistaken
//! for one of the live process that took the endpoint over.

use std::any::Any;
use std::sync::atomic::AtomicU64 as AtomicU64Std;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_sync::primitive::{AtomicU32, AtomicU64, Ordering};

use crate::wait::{Deadline, FlagLine, Waiter};

pub(crate) const NEVER: u32 = 0;
pub(crate) const ATTACHED: u32 = 1;
pub(crate) const CLOSED: u32 = 2;

/// The default liveness interval: how often a side that polls (`try_push`/`try_pop` on a
/// full or empty ring, and `BusySpin` waits) checks that its peer still runs, and how often
/// a sleeping side does so where its peer's death cannot wake it. Set per handle with
/// `set_liveness_interval`.
///
/// A sleeping side whose peer is watched through a pidfd is woken by the peer's death (the
/// process's exit watcher, one thread over every such pidfd; see
/// [`shm_core::ExitWatch::on_exit`]) and re-checks on its own only every
/// [`WATCHED_SLICE`] (or its liveness interval, if longer). The check goes through a pidfd on
/// the peer, which the handle keeps open until the peer changes or the handle drops: one
/// file descriptor per SPSC handle, and per MPMC handle one for each endpoint of the other
/// side that was attached at its last check (at most
/// [`MAX_ENDPOINTS`](crate::mpmc::MAX_ENDPOINTS)); once a handle has slept (an SPSC
/// producer: once it has attached or seen a new consumer), the exit watcher holds a
/// duplicate of each until that peer exits or changes, or the handle drops (so an MPMC
/// handle may hold up to 64). Where pidfds are unavailable, a check reads
/// `/proc`.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);

/// How long a sleeping side sleeps before re-checking on its own when its peer's death
/// will wake it: a safety net, not the way deaths are noticed.
pub const WATCHED_SLICE: Duration = Duration::from_secs(1);

/// One endpoint slot, as laid out in the control block.
#[repr(C)]
pub(crate) struct End {
    pub owner: AtomicU64,
    pub state: AtomicU32,
    pub gen: AtomicU32,
}

impl End {
    /// A free slot.
    pub fn new() -> End {
        End {
            owner: AtomicU64::new(0),
            state: AtomicU32::new(NEVER),
            gen: AtomicU32::new(0),
        }
    }
}

#[cfg(not(shm_loom))]
static_assertions::assert_eq_size!(End, [u64; 2]);

/// What an endpoint slot says, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStatus {
    /// Nobody ever attached.
    Never,
    /// Held by this process (pid), alive or not.
    Attached {
        /// The holder's pid.
        pid: u32,
        /// Whether it runs (checked in `/proc`; `true` when in doubt).
        alive: bool,
    },
    /// Its handle was dropped.
    Closed,
}

impl std::fmt::Display for EndStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndStatus::Never => f.write_str("never attached"),
            EndStatus::Attached { pid, alive: true } => write!(f, "pid {pid}"),
            EndStatus::Attached { pid, alive: false } => write!(f, "pid {pid} (dead)"),
            EndStatus::Closed => f.write_str("closed"),
        }
    }
}

/// How an end was attached: what a restarted process needs to tell the items before its
/// take-over from those after (see `spsc::Ring::consumer_resuming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// This attachment's number for its end: 1 for the first holder, then one more for each
    /// holder that took the end over (after a close or a death).
    pub generation: u32,
    /// The position this end started at: the next item it pops (a consumer) or pushes (a
    /// producer). Every position before it belongs to an earlier holder.
    pub position: u64,
    /// A consumer: the items in the ring when it attached that it will receive (the
    /// backlog: all of them with [`Resume::Backlog`](crate::spsc::Resume::Backlog), none
    /// with `Live`), at positions `position..position + backlog`. A producer: the items it
    /// found unconsumed.
    pub backlog: u64,
    /// A consumer with [`Resume::Live`](crate::spsc::Resume::Live): the items it skipped
    /// (counted, never delivered). 0 otherwise.
    pub skipped: u64,
    /// The pid of the dead holder whose end this one took over, if it took one over.
    pub took_over_from: Option<u32>,
}

impl Attachment {
    /// The attachment a claim made: its `generation`, and `was`, the owner word it
    /// replaced (a dead holder's, or 0), at `position` with `backlog` items waiting.
    pub(crate) fn claimed(generation: u32, was: u64, position: u64, backlog: u64) -> Attachment {
        Attachment {
            generation,
            position,
            backlog,
            skipped: 0,
            took_over_from: (was != 0).then_some((was >> 32) as u32),
        }
    }
}

/// The other end's current attachment, as this end reads it from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAttachment {
    /// Its [`Attachment::generation`].
    pub generation: u32,
    /// Its [`Attachment::position`]: positions from here on are (or will be) that holder's.
    pub since: u64,
}

/// This process's identity word.
#[cfg(not(shm_loom))]
pub(crate) fn me() -> u64 {
    let p = shm_core::ProcessId::current();
    (u64::from(p.pid) << 32) | u64::from(p.start_low32())
}

/// Under loom every handle is its own "process" (see `shm_sync::primitive::world`).
#[cfg(shm_loom)]
pub(crate) fn me() -> u64 {
    shm_sync::primitive::world::new_identity() << 32 | 1
}

/// Whether the process named by `word` is certainly gone.
#[cfg(not(shm_loom))]
pub(crate) fn is_dead(word: u64) -> bool {
    // Under Miri, `/proc` knows nothing true of the interpreter's pid (its lookups may fail,
    // and a failed lookup reads as "gone"), so no peer is ever judged dead there, as
    // shm-sync's lock holders are not: Miri's tests have no deaths, and a live peer wrongly
    // reaped would make the ring look abandoned.
    if word == 0 || cfg!(miri) {
        return false;
    }
    match shm_core::ProcessId::lookup_process((word >> 32) as u32) {
        shm_core::Lookup::Gone => true,
        shm_core::Lookup::Unknown => false,
        // A recorded start time of 0 (its holder could not read its own): only "no such
        // task" proves death.
        shm_core::Lookup::Running(p) => word as u32 != 0 && p.start_low32() != word as u32,
    }
}

/// Under loom a handle "dies" when a model says so (`shm_sync::primitive::world::die`);
/// whether a check sees it yet is loom's choice.
#[cfg(shm_loom)]
pub(crate) fn is_dead(word: u64) -> bool {
    word != 0 && shm_sync::primitive::world::is_dead(word >> 32)
}

/// [`is_dead`] made cheap to repeat for one peer: the first check of an identity word opens
/// a pidfd on that process and verifies it against the word ([`shm_core::ExitWatch`]: one
/// `/proc` read, and a second when the pidfd is refused, e.g. for a dead peer); later
/// checks of the same word are one `poll(2)` on it. A parked end checks
/// its peer once per [`LIVENESS_INTERVAL`], so this is most of what an idle waiter costs.
/// Where no pidfd can be had for a peer (pidfds unavailable, `/proc` hidden, a start time of
/// 0), every check of that word reads `/proc`, without trying the pidfd again.
///
/// A handle that has checked its peer holds one file descriptor on it until the peer's
/// word changes or the handle drops.
pub(crate) struct PeerWatch {
    word: u64,
    #[cfg(not(shm_loom))]
    watch: Option<shm_core::ExitWatch>,
    /// A pending wake-up of a flag line when `word`'s process exits.
    #[cfg(not(shm_loom))]
    notice: Option<shm_core::ExitNotice>,
    /// `word`'s process was found dead: a verdict that never changes for that word (pid and
    /// start time), so later checks of it make no syscall (a consumer skipping a dead
    /// producer's batch checks the same mark once per slot).
    #[cfg(not(shm_loom))]
    dead: bool,
}

/// Counts the exits of a handle's watched peers: each exit notice bumps it before it wakes
/// the flag line, so a sleeper that took a snapshot before its last checks and compares it
/// in its `ready` re-check cannot sleep through a death.
pub(crate) type Deaths = Arc<AtomicU64Std>;

/// A snapshot of `deaths`, to compare in a sleeper's `ready` check.
pub(crate) fn deaths_seen(deaths: &Deaths) -> u64 {
    // SeqCst: pairs with the SeqCst increment in an exit notice's callback.
    deaths.load(std::sync::atomic::Ordering::SeqCst)
}

/// A flag line inside a ring's mapping, with what keeps that mapping alive. Built only by
/// [`FlagTarget::of`], which projects the flag out of the ring's own control block, so the
/// pairing the exit watcher's thread relies on (the flag lies in what `keep` keeps mapped)
/// holds by construction.
pub(crate) struct FlagTarget<'a> {
    flag: &'a FlagLine,
    // Under loom no exit watcher runs, so nothing takes the mapping along.
    #[cfg_attr(shm_loom, allow(dead_code))]
    keep: &'a Arc<dyn Any + Send + Sync>,
}

impl<'a> FlagTarget<'a> {
    /// The flag line `pick` selects in `mem`'s control block. `pick` works for any
    /// lifetime of the block, so what it returns is either inside the block or `'static`.
    pub fn of<C, S>(
        mem: &'a crate::mem::Mem<C, S>,
        pick: impl for<'c> FnOnce(&'c C) -> &'c FlagLine,
    ) -> FlagTarget<'a> {
        FlagTarget {
            flag: pick(mem.ctrl()),
            keep: mem.owner(),
        }
    }

    /// Tests only: a flag that lives for the whole test process (so no mapping to keep).
    #[cfg(all(test, not(shm_loom)))]
    pub fn leaked(keep: &'a Arc<dyn Any + Send + Sync>) -> FlagTarget<'a> {
        FlagTarget {
            flag: Box::leak(Box::new(FlagLine::new())),
            keep,
        }
    }

    /// The flag line.
    pub fn line(&self) -> &'a FlagLine {
        self.flag
    }

    /// An owned reference to the flag, which keeps its mapping alive (for another thread
    /// to wake it later).
    pub fn to_ref(&self) -> FlagRef {
        // The flag lies in the mapping `keep` keeps (`FlagTarget::of`).
        FlagRef {
            flag: std::ptr::NonNull::from(self.flag),
            _keep: self.keep.clone(),
        }
    }
}

/// A flag line inside a mapping, kept alive by `_keep`, handed to the exit watcher's thread.
pub(crate) struct FlagRef {
    flag: std::ptr::NonNull<FlagLine>,
    _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `flag` points into memory that `_keep` keeps mapped (it came from a `FlagTarget`,
// whose flag lies in what its `keep` keeps); `FlagLine` is atomics only, which any thread
// may use.
unsafe impl Send for FlagRef {}

impl Clone for FlagRef {
    fn clone(&self) -> Self {
        FlagRef {
            flag: self.flag,
            _keep: self._keep.clone(),
        }
    }
}

impl FlagRef {
    /// The flag line.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn line(&self) -> &FlagLine {
        // SAFETY: `_keep` keeps the mapping (and so the flag) alive while `self` lives.
        unsafe { self.flag.as_ref() }
    }

    /// The flag line's address (to tell two flags apart).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn addr(&self) -> usize {
        self.flag.as_ptr() as usize
    }

    /// Bumps the flag's epoch and wakes every sleeper on it.
    #[cfg_attr(shm_loom, allow(dead_code))]
    pub(crate) fn wake(&self) {
        // SAFETY: `_keep` keeps the mapping (and so the flag) alive while `self` lives.
        crate::wait::wake(unsafe { self.flag.as_ref() }, u32::MAX);
    }
}

impl PeerWatch {
    pub fn new() -> PeerWatch {
        PeerWatch {
            word: 0,
            #[cfg(not(shm_loom))]
            watch: None,
            #[cfg(not(shm_loom))]
            notice: None,
            #[cfg(not(shm_loom))]
            dead: false,
        }
    }

    /// Arranges that a sleeper on `target`'s flag is woken (and `deaths` bumped first) when the
    /// process named by `word` exits. `true` if it will be (or need not: `word` is 0, which
    /// an attach ends with a wake-up, or names this process); `false` if the caller must
    /// check on a timer (no pidfd for that peer, or it is already dead).
    #[cfg(not(shm_loom))]
    pub fn wake_on_exit(
        &mut self,
        word: u64,
        me: u64,
        target: &FlagTarget<'_>,
        deaths: &Deaths,
    ) -> bool {
        if word == 0 || word == me {
            return true;
        }
        if word == self.word {
            if let Some(n) = &self.notice {
                // Fired: the peer is dead, and the caller's own check (the timer) must
                // say so; sleeping on the notice would wait a whole watched slice.
                return !n.fired();
            }
        }
        if self.is_dead(word) {
            return false;
        }
        let Some(watch) = self.watch.as_ref() else {
            return false;
        };
        let target = target.to_ref();
        let deaths = deaths.clone();
        self.notice = watch.on_exit(move || {
            // SeqCst: pairs with the sleeper's SeqCst load (`deaths_seen`) in its `ready`
            // check, made after its read of the epoch that `wake` bumps.
            deaths.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            target.wake();
        });
        self.notice.is_some()
    }

    /// Whether the exit notice on the watched peer fired: it is dead, and a waiter should
    /// check it now rather than sleep. Says so once: the spent notice is dropped, so a
    /// waiter whose check does not end its wait (the peer died before its end was
    /// `ATTACHED`, or the end holds a state no check knows) sleeps on the timer next
    /// instead of spinning on the notice.
    pub fn take_exited(&mut self) -> bool {
        #[cfg(not(shm_loom))]
        if self.notice.as_ref().is_some_and(|n| n.fired()) {
            self.notice = None;
            return true;
        }
        false
    }

    /// Whether an exit notice armed on `word` is pending: that process had not exited when
    /// the watcher last looked (a death shows once the watcher has seen it, within
    /// microseconds).
    pub fn watched_alive(&self, word: u64) -> bool {
        #[cfg(not(shm_loom))]
        return word != 0 && word == self.word && self.notice.as_ref().is_some_and(|n| !n.fired());
        #[cfg(shm_loom)]
        return {
            let _ = word;
            false
        };
    }

    /// Under loom no watcher runs: sleepers re-check on their slices.
    #[cfg(shm_loom)]
    pub fn wake_on_exit(
        &mut self,
        _word: u64,
        _me: u64,
        _target: &FlagTarget<'_>,
        _deaths: &Deaths,
    ) -> bool {
        false
    }

    /// Whether `word`'s process was already found dead (a verdict that never changes for
    /// that word): no syscall.
    pub fn known_dead(&self, word: u64) -> bool {
        #[cfg(not(shm_loom))]
        return word != 0 && word == self.word && self.dead;
        #[cfg(shm_loom)]
        return {
            let _ = word;
            false
        };
    }

    /// Whether the process named by `word` is certainly gone (as [`is_dead`]).
    #[cfg(not(shm_loom))]
    pub fn is_dead(&mut self, word: u64) -> bool {
        if word == 0 {
            return false;
        }
        if word == self.word {
            if self.dead {
                return true;
            }
            match self.watch.as_ref().map(|w| w.exited()) {
                Some(Some(exited)) => {
                    self.dead = exited;
                    return exited;
                }
                // The poll failed: ask `/proc` and try a new pidfd below.
                Some(None) => {}
                // No pidfd could be had for this peer: `/proc` it is.
                None => {
                    self.dead = is_dead(word);
                    return self.dead;
                }
            }
        }
        self.word = word;
        self.notice = None;
        let start = word as u32;
        self.watch = shm_core::ExitWatch::open((word >> 32) as u32, |p| {
            start != 0 && p.start_low32() == start
        });
        // A watch proves the peer was running after its pidfd was opened.
        self.dead = self.watch.is_none() && is_dead(word);
        self.dead
    }

    /// Drops the watch (and its descriptor): the peer left.
    pub fn forget(&mut self) {
        self.word = 0;
        #[cfg(not(shm_loom))]
        {
            self.notice = None;
            self.watch = None;
            self.dead = false;
        }
    }

    #[cfg(shm_loom)]
    pub fn is_dead(&mut self, word: u64) -> bool {
        self.word = word;
        is_dead(word)
    }
}

impl End {
    /// Claims the slot for `me`, returning the generation of this attachment. `Err(holder
    /// pid)` if a live process holds it.
    pub fn claim(&self, me: u64) -> Result<u32, u32> {
        self.claim_from(me).map(|(gen, _)| gen)
    }

    /// [`claim`](Self::claim), also returning the owner word it replaced (0 for a free
    /// slot; a dead holder's word for a take-over).
    pub fn claim_from(&self, me: u64) -> Result<(u32, u64), u32> {
        loop {
            let w = self.owner.load(Ordering::Relaxed);
            if w != 0 && !is_dead(w) {
                return Err((w >> 32) as u32);
            }
            // Acquire: pairs with the Release store in `release`, so what the previous
            // holder did to the ring is visible to us.
            if self
                .owner
                .compare_exchange(w, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // Release: orders our owner word before the new generation, for a broadcast
                // publisher that loads the generation (Acquire) and then the owner word before
                // it marks a record evicted (`Publisher::check_blocker`). MPMC readers of the
                // generation pair instead with this handle's first mark (a Release
                // compare-exchange of a slot's `seq`). Bumped only by the claim that won the
                // owner word, so each attachment gets its own.
                let gen = self.gen.fetch_add(1, Ordering::Release).wrapping_add(1);
                crate::fault_point!("end-claimed");
                // Release: pairs with the Acquire loads of `state` on the other side.
                self.state.store(ATTACHED, Ordering::Release);
                return Ok((gen, w));
            }
        }
    }

    /// [`claim_from`](Self::claim_from) for the one end of its kind of ring `name`: a
    /// live holder is `RoleTaken`, naming it.
    pub fn claim_role(
        &self,
        me: u64,
        name: &str,
        role: crate::error::Role,
    ) -> Result<(u32, u64), crate::error::RingError> {
        self.claim_from(me)
            .map_err(|pid| crate::error::RingError::RoleTaken {
                name: name.to_owned(),
                role,
                pid,
            })
    }

    /// Gives the slot up (the handle was dropped).
    pub fn release(&self, me: u64) {
        // Release: publishes everything this end did; pairs with the Acquire load of
        // `state` by the other side, which then re-reads the positions.
        self.state.store(CLOSED, Ordering::Release);
        crate::fault_point!("end-closed");
        let _ = self
            .owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
        crate::fault_point!("end-released");
    }

    /// The slot's status now. Reads `/proc` if attached.
    pub fn status(&self) -> EndStatus {
        self.status_by(is_dead)
    }

    /// [`status`](Self::status), checking liveness through `watch` (a pidfd poll once the
    /// same peer was seen before).
    pub fn status_watched(&self, watch: &mut PeerWatch) -> EndStatus {
        self.status_by(|w| watch.is_dead(w))
    }

    /// Whether the end is gone: closed, or held by a process that is dead. A holder that
    /// `watch`'s exit notice covers and that has not fired is alive without a syscall;
    /// others are looked up (`/proc`, or a pidfd).
    pub fn gone(&self, watch: &PeerWatch) -> bool {
        matches!(
            self.status_by(|w| !watch.watched_alive(w) && is_dead(w)),
            EndStatus::Closed | EndStatus::Attached { alive: false, .. }
        )
    }

    fn status_by(&self, mut dead: impl FnMut(u64) -> bool) -> EndStatus {
        // Acquire: pairs with the Release stores in `claim`/`release`.
        match self.state.load(Ordering::Acquire) {
            NEVER => EndStatus::Never,
            ATTACHED => {
                let w = self.owner.load(Ordering::Relaxed);
                if w == 0 {
                    // Between its release's two stores, or garbage: treat as closed.
                    EndStatus::Closed
                } else {
                    EndStatus::Attached {
                        pid: (w >> 32) as u32,
                        alive: !dead(w),
                    }
                }
            }
            _ => EndStatus::Closed,
        }
    }
}

/// Rate-limits liveness checks on polling paths: at most one per interval (by default
/// [`LIVENESS_INTERVAL`]), and the clock is read only every 256 polls.
pub(crate) struct LivenessTimer {
    polls: u32,
    next: Option<Instant>,
    interval: Duration,
}

impl LivenessTimer {
    pub fn new() -> LivenessTimer {
        LivenessTimer {
            polls: 0,
            next: None,
            interval: LIVENESS_INTERVAL,
        }
    }

    /// The interval between two checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Sets the interval (any `Duration`: one past `Instant`'s range means "check only
    /// when a sleep slice ends", never a panic).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
        self.expire();
    }

    /// Whether a check is due now; call on every idle poll.
    pub fn due(&mut self) -> bool {
        if cfg!(shm_loom) {
            return false;
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 256 != 1 {
            return false;
        }
        let now = Instant::now();
        match self.next {
            Some(at) if now < at => false,
            _ => {
                // An overflow (a huge interval): ten years on is as good as never.
                self.next = now
                    .checked_add(self.interval)
                    .or_else(|| now.checked_add(Duration::from_secs(315_360_000)));
                true
            }
        }
    }

    /// Forces the next `due` to check (after a sleep, say).
    pub fn expire(&mut self) {
        self.polls = 0;
        self.next = None;
    }
}

/// What a waiting end with one peer (an SPSC end, a broadcast subscriber) sleeps with: itself, its peer's end slot, the flag it sleeps on
/// (with what keeps it mapped), and its own liveness state.
pub(crate) struct Sleeper<'a> {
    pub me: u64,
    pub peer_end: &'a End,
    pub flag: FlagTarget<'a>,
    pub peer: &'a mut PeerWatch,
    pub deaths: &'a Deaths,
    pub liveness: &'a mut LivenessTimer,
    pub waiter: &'a mut Waiter,
}

/// Sleeps on `s.flag` until `moved` (the peer moved its position), the peer closes its end
/// or dies, or the deadline. The peer's death wakes us if a pidfd watches it (its exit
/// notice bumps `deaths` past `seen`, the snapshot taken before the caller's last checks);
/// else we re-check it every liveness interval.
pub(crate) fn sleep_on_peer(
    s: Sleeper<'_>,
    deadline: Deadline,
    seen: u64,
    moved: impl Fn() -> bool,
) {
    if s.peer.take_exited() {
        // The peer died while we were not asleep (its notice woke nobody): check it now.
        s.liveness.expire();
        return;
    }
    let word = s.peer_end.owner.load(Ordering::Relaxed);
    let interval = s.liveness.interval();
    let slice = if s.peer.wake_on_exit(word, s.me, &s.flag, s.deaths) {
        interval.max(WATCHED_SLICE)
    } else {
        interval
    };
    let (peer_end, deaths, peer) = (s.peer_end, s.deaths, s.peer);
    s.waiter.sleeping();
    crate::wait::park(
        &s.flag,
        deadline.slice(slice),
        || {
            // Relaxed: hints to skip the sleep; the caller re-reads with Acquire. The
            // peer's exit: SeqCst, pairs with the increment in its exit notice.
            // A new owner (an attach whose wake-up came before our read of the epoch)
            // must be watched before we sleep on its death: re-arm.
            moved()
                || peer_end.state.load(Ordering::Relaxed) == CLOSED
                || peer_end.owner.load(Ordering::Relaxed) != word
                || deaths_seen(deaths) != seen
        },
        // Between slices: go on sleeping while the deadline is ahead and the peer lives
        // (one pidfd poll per slice; `/proc` where there are no pidfds).
        || {
            let dead = matches!(
                peer_end.status_watched(peer),
                EndStatus::Attached { alive: false, .. }
            );
            (!deadline.passed() && !dead).then(|| deadline.slice(slice))
        },
    );
    s.liveness.expire();
}

#[cfg(all(test, not(shm_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_start_time_of_zero_is_proved_dead_only_by_no_such_task() {
        let p = shm_core::ProcessId::current();
        let pid = u64::from(p.pid) << 32;
        assert!(!is_dead(me()));
        // Our pid with a start time we do not have: another (dead) process.
        assert!(is_dead(
            pid | ((p.start_time as u32).wrapping_add(1) as u64)
        ));
        // Our pid with no start time recorded: we run, so it may be us.
        assert!(!is_dead(pid));
        let mut w = PeerWatch::new();
        assert!(!w.is_dead(pid));
        assert!(!w.is_dead(pid), "the /proc fallback, a second time");
        assert!(!w.is_dead(me()));
        assert!(!w.is_dead(me()), "through the pidfd");
    }
}
