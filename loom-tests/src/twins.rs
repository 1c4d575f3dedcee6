//! Broken copies of shmring's algorithms, each with one planted bug.

#![allow(missing_docs, clippy::new_without_default)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The operations the SPSC model drives, implemented by the real ring and by its twin.
pub trait SpscLike: Send + Sync + 'static {
    fn push(&self, v: u64);
    fn pop(&self) -> u64;
}

/// SPSC with `tail` published `Relaxed`: the consumer may read a slot before its write.
pub struct RelaxedPublishSpsc {
    slots: [UnsafeCell<u64>; 2],
    head: AtomicU64,
    tail: AtomicU64,
}

impl RelaxedPublishSpsc {
    pub fn new() -> Self {
        RelaxedPublishSpsc {
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }
}

// SAFETY: a test twin; loom checks every access to the cells.
unsafe impl Sync for RelaxedPublishSpsc {}

impl SpscLike for RelaxedPublishSpsc {
    fn push(&self, v: u64) {
        let t = self.tail.load(Ordering::Relaxed);
        while t - self.head.load(Ordering::Acquire) == 2 {
            loom::thread::yield_now();
        }
        // SAFETY: the slot is free by the (intended) protocol; loom checks it.
        self.slots[(t % 2) as usize].with_mut(|p| unsafe { *p = v });
        // PLANTED BUG: Relaxed instead of Release.
        self.tail.store(t + 1, Ordering::Relaxed);
    }

    fn pop(&self) -> u64 {
        let h = self.head.load(Ordering::Relaxed);
        while self.tail.load(Ordering::Acquire) == h {
            loom::thread::yield_now();
        }
        // SAFETY: as in `push`; loom reports the unsynchronised read.
        let v = self.slots[(h % 2) as usize].with(|p| unsafe { *p });
        self.head.store(h + 1, Ordering::Release);
        v
    }
}

/// A futex-word mutex whose unlock forgets to wake a sleeper.
pub struct NoWakeMutex {
    word: AtomicU32,
}

impl NoWakeMutex {
    pub fn new() -> Self {
        NoWakeMutex {
            word: AtomicU32::new(0),
        }
    }

    pub fn lock(&self) {
        loop {
            if self
                .word
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            if self.word.swap(2, Ordering::Acquire) == 0 {
                return;
            }
            shm_sync::futex::wait(&self.word, 2, None);
        }
    }

    pub fn unlock(&self) {
        // PLANTED BUG: clears the word but never calls futex::wake, even with sleepers.
        self.word.store(0, Ordering::Release);
    }
}

/// A spinlock whose acquire is `Relaxed`: the holder may not see the last holder's writes.
pub struct RelaxedSpinLock {
    word: AtomicBool,
    pub data: UnsafeCell<u64>,
}

// SAFETY: a test twin; loom checks every access to the cell.
unsafe impl Sync for RelaxedSpinLock {}

impl RelaxedSpinLock {
    pub fn new() -> Self {
        RelaxedSpinLock {
            word: AtomicBool::new(false),
            data: UnsafeCell::new(0),
        }
    }

    pub fn increment(&self) {
        // PLANTED BUG: Relaxed instead of Acquire.
        while self
            .word
            .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            loom::thread::yield_now();
        }
        // SAFETY: "protected" by the lock; loom reports the race.
        self.data.with_mut(|p| unsafe { *p += 1 });
        self.word.store(false, Ordering::Release);
    }
}

/// A condvar that reads its sequence word *after* unlocking the mutex: a notify in between
/// is lost and the waiter sleeps forever.
pub struct LateReadCondvar {
    seq: AtomicU32,
}

impl LateReadCondvar {
    pub fn new() -> Self {
        LateReadCondvar {
            seq: AtomicU32::new(0),
        }
    }

    pub fn wait<'a>(
        &self,
        m: &'a shm_sync::Mutex<u32>,
        g: shm_sync::MutexGuard<'a, u32>,
    ) -> shm_sync::MutexGuard<'a, u32> {
        drop(g);
        // PLANTED BUG: the re-check value is read after the unlock.
        let s = self.seq.load(Ordering::Acquire);
        shm_sync::futex::wait(&self.seq, s, None);
        m.lock().unwrap()
    }

    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        shm_sync::futex::wake_all(&self.seq);
    }
}

/// A semaphore that checks the count, then decrements it (not atomically).
pub struct CheckThenActSemaphore {
    count: AtomicU32,
}

impl CheckThenActSemaphore {
    pub fn new(n: u32) -> Self {
        CheckThenActSemaphore {
            count: AtomicU32::new(n),
        }
    }

    pub fn acquire(&self) {
        loop {
            // PLANTED BUG: load, then fetch_sub: two acquirers can both see 1.
            if self.count.load(Ordering::Acquire) > 0 {
                self.count.fetch_sub(1, Ordering::Acquire);
                return;
            }
            loom::thread::yield_now();
        }
    }

    pub fn release(&self) {
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// A seqlock whose reader forgets the second sequence check.
pub struct NoRecheckSeqLock {
    seq: AtomicU64,
    data: [AtomicU64; 2],
}

impl NoRecheckSeqLock {
    pub fn new() -> Self {
        NoRecheckSeqLock {
            seq: AtomicU64::new(0),
            data: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    pub fn write(&self, v: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.data[0].store(v, Ordering::Relaxed);
        self.data[1].store(v, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    pub fn try_read(&self) -> Option<[u64; 2]> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            return None;
        }
        // PLANTED BUG: no fence and no second read of `seq`.
        Some([
            self.data[0].load(Ordering::Relaxed),
            self.data[1].load(Ordering::Relaxed),
        ])
    }
}

/// An MPMC slot protocol whose publish is `Relaxed`.
pub struct RelaxedPublishMpmc {
    slots: [(AtomicU64, UnsafeCell<u64>); 2],
    head: AtomicU64,
    tail: AtomicU64,
}

// SAFETY: a test twin; loom checks every access to the cells.
unsafe impl Sync for RelaxedPublishMpmc {}

impl RelaxedPublishMpmc {
    pub fn new() -> Self {
        RelaxedPublishMpmc {
            slots: [
                (AtomicU64::new(0), UnsafeCell::new(0)),
                (AtomicU64::new(1), UnsafeCell::new(0)),
            ],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    pub fn try_push(&self, v: u64) -> bool {
        let pos = self.tail.load(Ordering::Relaxed);
        let (seq, cell) = &self.slots[(pos % 2) as usize];
        if seq.load(Ordering::Acquire) != pos {
            return false;
        }
        if self
            .tail
            .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: claimed; loom checks it.
        cell.with_mut(|p| unsafe { *p = v });
        // PLANTED BUG: Relaxed instead of Release.
        seq.store(pos + 1, Ordering::Relaxed);
        true
    }

    pub fn try_pop(&self) -> Option<u64> {
        let pos = self.head.load(Ordering::Relaxed);
        let (seq, cell) = &self.slots[(pos % 2) as usize];
        if seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        if self
            .head
            .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: claimed; loom reports the unsynchronised read.
        let v = cell.with(|p| unsafe { *p });
        seq.store(pos + 2, Ordering::Release);
        Some(v)
    }
}

/// A robust lock whose recovery from a dead holder hands out a plain lock (no "owner
/// died" report), so the repair step is skipped.
pub struct SilentRecoveryLock {
    owner: AtomicU64,
}

impl SilentRecoveryLock {
    pub fn new() -> Self {
        SilentRecoveryLock {
            owner: AtomicU64::new(0),
        }
    }

    /// Returns whether the caller was told the previous owner died.
    pub fn lock(&self, me: u64, dead: &[u64]) -> bool {
        loop {
            let w = self.owner.load(Ordering::Acquire);
            if (w == 0 || dead.contains(&w))
                && self
                    .owner
                    .compare_exchange(w, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // PLANTED BUG: should report `w != 0` (owner died).
                return false;
            }
            loom::thread::yield_now();
        }
    }

    pub fn unlock(&self) {
        self.owner.store(0, Ordering::Release);
    }
}

/// How a one-try ring operation of the MPMC models ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    /// Full, empty, or a claim still pending: nothing happened.
    Nothing,
    /// This handle's claim was given up while it stalled: nothing was written or read.
    Expired,
}

/// The operations the MPMC slot-protocol models drive, implemented by the real ring and by
/// its twin. Handles are per thread; `die` ends a handle's "process" between operations.
pub trait MpmcLike: Send + Sync + 'static {
    type P: Send + 'static;
    type C: Send + 'static;
    fn producer(&self) -> Self::P;
    fn consumer(&self) -> Self::C;
    fn try_push(p: &mut Self::P, v: u64) -> Result<(), Try>;
    fn try_pop(c: &mut Self::C) -> Result<u64, Try>;
    fn die_producer(p: Self::P);
    fn die_consumer(c: Self::C);
    /// The producer dies when it next reaches `point` (an `mpmc-*` fault point): the call
    /// unwinds with `shm_ring::LoomDied`.
    fn doom_producer_at(p: &mut Self::P, point: &'static str);
}

/// A one-slot MPMC ring with the slot protocol in *today's order* (before issue 12): the
/// claimant stores its identity into a separate word of the slot, *then* marks the slot
/// with a compare-exchange, and publishes and releases with plain stores. A claimant that
/// stalled between its claim and its mark, and was given up meanwhile, still overwrites the
/// identity of whoever marked the slot since.
pub struct StaleIdentityMpmc {
    seq: AtomicU64,
    who: AtomicU64,
    value: UnsafeCell<u64>,
    head: AtomicU64,
    tail: AtomicU64,
    /// A second planted bug, for the model of a writer killed mid-write: the skip of a
    /// dead writer's slot is `Relaxed`, so the next lap's write is not ordered after the
    /// dead writer's.
    relaxed_skip: bool,
}

// SAFETY: a test twin; loom checks every access to the cell.
unsafe impl Sync for StaleIdentityMpmc {}

const T_FREE: u64 = 0;
const T_WRITING: u64 = 1;
const T_PUBLISHED: u64 = 2;
const T_READING: u64 = 3;

fn enc(pos: u64, state: u64) -> u64 {
    pos << 2 | state
}

/// A handle on the twin: the ring, this handle's "process" identity, and the step at which
/// it dies (as `doom_at` on the real handles).
pub struct TwinHandle {
    q: std::sync::Arc<StaleIdentityMpmc>,
    me: u64,
    doom: Option<&'static str>,
}

impl StaleIdentityMpmc {
    pub fn new() -> std::sync::Arc<Self> {
        Self::with_relaxed_skip(false)
    }

    /// With the second planted bug (see `relaxed_skip`).
    pub fn with_relaxed_skip(relaxed_skip: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(StaleIdentityMpmc {
            seq: AtomicU64::new(enc(0, T_FREE)),
            who: AtomicU64::new(0),
            value: UnsafeCell::new(0),
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            relaxed_skip,
        })
    }

    fn handle(self: &std::sync::Arc<Self>) -> TwinHandle {
        TwinHandle {
            q: self.clone(),
            me: shm_sync::primitive::world::new_identity(),
            doom: None,
        }
    }
}

fn dead(who: u64) -> bool {
    who == 0 || shm_sync::primitive::world::is_dead(who)
}

impl MpmcLike for std::sync::Arc<StaleIdentityMpmc> {
    type P = TwinHandle;
    type C = TwinHandle;

    fn producer(&self) -> TwinHandle {
        self.handle()
    }

    fn consumer(&self) -> TwinHandle {
        self.handle()
    }

    fn try_push(p: &mut TwinHandle, v: u64) -> Result<(), Try> {
        let q = &p.q;
        for _ in 0..3 {
            let pos = q.tail.load(Ordering::Relaxed);
            let seq = q.seq.load(Ordering::Acquire);
            if seq == enc(pos, T_FREE) {
                if q.tail
                    .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                // TODAY'S ORDER: the identity, then the mark.
                q.who.store(p.me, Ordering::Relaxed);
                if q.seq
                    .compare_exchange(
                        enc(pos, T_FREE),
                        enc(pos, T_WRITING),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    return Err(Try::Expired);
                }
                // SAFETY: marked WRITING by us (by the intended protocol); loom checks it.
                q.value.with_mut(|c| unsafe { *c = v });
                if p.doom == Some("mpmc-producer-written") {
                    shm_sync::primitive::world::die(p.me);
                    std::panic::resume_unwind(Box::new(shm_ring::LoomDied));
                }
                // TODAY'S ORDER: a plain store, whoever holds the slot now.
                q.seq.store(enc(pos, T_PUBLISHED), Ordering::Release);
                return Ok(());
            }
            if seq >> 2 == pos.wrapping_sub(1) {
                let state = seq & 3;
                let claimed = q.head.load(Ordering::Relaxed) == pos;
                let give_up = shm_sync::primitive::world::timed_out()
                    && match state {
                        T_PUBLISHED => claimed,
                        T_READING => dead(q.who.load(Ordering::Relaxed)),
                        _ => false,
                    };
                if give_up
                    && q.seq
                        .compare_exchange(
                            seq,
                            enc(pos, T_FREE),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    continue;
                }
            }
            return Err(Try::Nothing);
        }
        Err(Try::Nothing)
    }

    fn try_pop(c: &mut TwinHandle) -> Result<u64, Try> {
        let q = &c.q;
        for _ in 0..3 {
            let pos = q.head.load(Ordering::Relaxed);
            let seq = q.seq.load(Ordering::Acquire);
            if seq == enc(pos, T_PUBLISHED) {
                if q.head
                    .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                // TODAY'S ORDER: the identity, then the mark.
                q.who.store(c.me, Ordering::Relaxed);
                if q.seq
                    .compare_exchange(
                        enc(pos, T_PUBLISHED),
                        enc(pos, T_READING),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    return Err(Try::Expired);
                }
                // SAFETY: marked READING by us (by the intended protocol); loom checks it.
                let v = q.value.with(|c| unsafe { *c });
                // TODAY'S ORDER: a plain store, whoever holds the slot now.
                q.seq.store(enc(pos + 1, T_FREE), Ordering::Release);
                return Ok(v);
            }
            let state = seq & 3;
            if seq >> 2 == pos && (state == T_FREE || state == T_WRITING) {
                let tail = q.tail.load(Ordering::Relaxed);
                if tail == pos
                    || !shm_sync::primitive::world::timed_out()
                    || (state == T_WRITING && !dead(q.who.load(Ordering::Relaxed)))
                {
                    return Err(Try::Nothing);
                }
                let order = if q.relaxed_skip {
                    Ordering::Relaxed // PLANTED BUG (with `relaxed_skip`)
                } else {
                    Ordering::Release
                };
                if q.seq
                    .compare_exchange(seq, enc(pos + 1, T_FREE), order, Ordering::Relaxed)
                    .is_ok()
                {
                    let _ =
                        q.head
                            .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed);
                }
                continue;
            }
            if seq >> 2 == pos + 1 && q.head.load(Ordering::Relaxed) == pos {
                let _ = q
                    .head
                    .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed);
                continue;
            }
            return Err(Try::Nothing);
        }
        Err(Try::Nothing)
    }

    fn die_producer(p: TwinHandle) {
        shm_sync::primitive::world::die(p.me);
    }

    fn die_consumer(c: TwinHandle) {
        shm_sync::primitive::world::die(c.me);
    }

    fn doom_producer_at(p: &mut TwinHandle, point: &'static str) {
        p.doom = Some(point);
    }
}

/// The robust-lock operations the lock-recovery model drives, for the real `Mutex` and
/// `SpinLock` and for their twin.
pub trait RobustLock: Send + Sync + 'static {
    /// Locks, runs `f` on the data, unlocks; returns whether it learnt that the previous
    /// holder died (and repaired).
    fn lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> bool;
    /// As `lock_then`, with one `try_lock`; `None` if the lock was held.
    fn try_lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> Option<bool>;
    /// Locks, writes the data half-way, runs `meanwhile` holding it, and dies holding it.
    fn lock_and_die(&self, meanwhile: &mut dyn FnMut());
}

/// A robust lock that takes a dead holder's lock with a plain store of its own identity
/// instead of a compare-exchange against the dead holder's word: two lockers that both see
/// the holder dead both take it.
pub struct StoreRecoveryLock {
    word: AtomicU64,
    data: UnsafeCell<u64>,
}

// SAFETY: a test twin; loom checks every access to the cell.
unsafe impl Sync for StoreRecoveryLock {}

impl StoreRecoveryLock {
    pub fn new() -> Self {
        StoreRecoveryLock {
            word: AtomicU64::new(0),
            data: UnsafeCell::new(0),
        }
    }

    /// One try: `Some(owner died)` if taken.
    fn try_acquire(&self, me: u64) -> Option<bool> {
        let w = self.word.load(Ordering::Acquire);
        if w == 0 {
            return self
                .word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
                .then_some(false);
        }
        if shm_sync::primitive::world::is_dead(w) {
            // PLANTED BUG: a plain store, not a compare-exchange from `w`.
            self.word.store(me, Ordering::Relaxed);
            return Some(true);
        }
        None
    }

    fn acquire(&self, me: u64) -> bool {
        loop {
            if let Some(died) = self.try_acquire(me) {
                return died;
            }
            loom::thread::yield_now();
        }
    }
}

impl RobustLock for StoreRecoveryLock {
    fn lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> bool {
        let me = shm_sync::primitive::world::new_identity();
        let died = self.acquire(me);
        // SAFETY: "protected" by the lock; loom reports the race.
        self.data.with_mut(|p| f(unsafe { &mut *p }));
        self.word.store(0, Ordering::Release);
        died
    }

    fn try_lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> Option<bool> {
        let me = shm_sync::primitive::world::new_identity();
        let died = self.try_acquire(me)?;
        // SAFETY: "protected" by the lock; loom reports the race.
        self.data.with_mut(|p| f(unsafe { &mut *p }));
        self.word.store(0, Ordering::Release);
        Some(died)
    }

    fn lock_and_die(&self, meanwhile: &mut dyn FnMut()) {
        let me = shm_sync::primitive::world::new_identity();
        self.acquire(me);
        // SAFETY: as in `lock_then`.
        self.data.with_mut(|p| unsafe { *p = 99 });
        meanwhile();
        shm_sync::primitive::world::die(me);
    }
}

/// The one-sleeper eventcount of SPSC rings (`park` + `wake_one_if_waiting` in shm-ring's
/// `wait.rs`), handing over one value at a time, with a sleeper that counts itself in
/// without clearing the `WOKEN` bit: after the first wake the bit stays set, every later
/// waker skips, and the next sleep is never woken.
pub struct StickyWokenHandoff {
    value: AtomicU64,
    epoch: AtomicU32,
    waiting: AtomicU32,
}

const WOKEN: u32 = 1 << 31;

impl Default for StickyWokenHandoff {
    fn default() -> Self {
        StickyWokenHandoff {
            value: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        }
    }
}

impl StickyWokenHandoff {
    pub fn put(&self, v: u64) {
        self.value.store(v, Ordering::Release);
        fence(Ordering::SeqCst);
        let w = self.waiting.load(Ordering::Relaxed);
        if w & !WOKEN != 0
            && w & WOKEN == 0
            && self.waiting.fetch_or(WOKEN, Ordering::Acquire) & WOKEN == 0
        {
            self.epoch.fetch_add(1, Ordering::Release);
            shm_sync::futex::wake(&self.epoch, 1);
        }
    }

    /// Waits until the value is at least `want`.
    pub fn take(&self, want: u64) {
        while self.value.load(Ordering::Acquire) < want {
            let e = self.epoch.load(Ordering::Acquire);
            // PLANTED BUG: counts itself in but leaves WOKEN set (the real code clears it
            // in the same read-modify-write).
            self.waiting.fetch_add(1, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.value.load(Ordering::Acquire) < want {
                shm_sync::futex::wait(&self.epoch, e, None);
            }
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// MPMC batch claims (`push_slice`: one compare-exchange of `tail` for a run of slots)
/// that check only the run's first slot is free: the rest may still hold values no
/// consumer has taken, which the batch then overwrites.
pub struct UncheckedRunMpmc {
    slots: [(AtomicU64, UnsafeCell<u64>); 2],
    head: AtomicU64,
    tail: AtomicU64,
}

// SAFETY: a test twin; loom checks every access to the cells.
unsafe impl Sync for UncheckedRunMpmc {}

impl UncheckedRunMpmc {
    pub fn new() -> Self {
        UncheckedRunMpmc {
            slots: [
                (AtomicU64::new(0), UnsafeCell::new(0)),
                (AtomicU64::new(1), UnsafeCell::new(0)),
            ],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    /// Pushes a run of `vals` (at most 2); returns how many.
    pub fn push_run(&self, vals: &[u64]) -> usize {
        let pos = self.tail.load(Ordering::Relaxed);
        if self.slots[(pos % 2) as usize].0.load(Ordering::Acquire) != pos {
            return 0;
        }
        // PLANTED BUG: the whole run is claimed on the first slot's word alone.
        let n = vals.len().min(2) as u64;
        if self
            .tail
            .compare_exchange(pos, pos + n, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return 0;
        }
        for i in 0..n {
            let (seq, cell) = &self.slots[((pos + i) % 2) as usize];
            // SAFETY: claimed (wrongly, for the second); loom reports the race.
            cell.with_mut(|p| unsafe { *p = vals[i as usize] });
            seq.store(pos + i + 1, Ordering::Release);
        }
        n as usize
    }

    pub fn try_pop(&self) -> Option<u64> {
        let pos = self.head.load(Ordering::Relaxed);
        let (seq, cell) = &self.slots[(pos % 2) as usize];
        if seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        if self
            .head
            .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: claimed; loom checks it.
        let v = cell.with(|p| unsafe { *p });
        seq.store(pos + 2, Ordering::Release);
        Some(v)
    }
}

/// MPMC batch claims that, when their compare-exchange of `tail` fails, keep the whole run
/// they checked and claim it from the new `tail`, although `tail` moved into it: the part
/// past the checked slots was never checked, and may hold a value no consumer has taken.
/// The real `claim_run` keeps only the part that lies past the new `tail`. In the real ring
/// a stale run would also be stopped by each slot's mark (a compare-exchange from FREE,
/// then given back as skips, at the cost of a claim timeout); this twin has no marks, so
/// it shows the model seeing the overwrite where the checked run is all that guards it.
pub struct StaleRetryRunMpmc {
    slots: [(AtomicU64, UnsafeCell<u64>); 2],
    head: AtomicU64,
    tail: AtomicU64,
}

// SAFETY: a test twin; loom checks every access to the cells.
unsafe impl Sync for StaleRetryRunMpmc {}

impl StaleRetryRunMpmc {
    pub fn new() -> Self {
        StaleRetryRunMpmc {
            slots: [
                (AtomicU64::new(0), UnsafeCell::new(0)),
                (AtomicU64::new(1), UnsafeCell::new(0)),
            ],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    /// Pushes a run of `vals` (at most 2); returns how many. A slot is free for position
    /// `p` when its word reads `p`, published when it reads `p + 1`.
    pub fn push_run(&self, vals: &[u64]) -> usize {
        let want = vals.len().min(2) as u64;
        let mut pos = self.tail.load(Ordering::Relaxed);
        let mut n = 0;
        loop {
            while n < want
                && self.slots[((pos + n) % 2) as usize]
                    .0
                    .load(Ordering::Acquire)
                    == pos + n
            {
                n += 1;
            }
            if n == 0 {
                return 0;
            }
            match self
                .tail
                .compare_exchange(pos, pos + n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                // PLANTED BUG: `n` is kept whole; it should lose what `tail` moved past.
                Err(now) => pos = now,
            }
        }
        for i in 0..n {
            let (seq, cell) = &self.slots[((pos + i) % 2) as usize];
            // SAFETY: claimed (wrongly, past the checked slots); loom reports the race.
            cell.with_mut(|p| unsafe { *p = vals[i as usize] });
            seq.store(pos + i + 1, Ordering::Release);
        }
        n as usize
    }

    pub fn try_pop(&self) -> Option<u64> {
        let pos = self.head.load(Ordering::Relaxed);
        let (seq, cell) = &self.slots[(pos % 2) as usize];
        if seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        if self
            .head
            .compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: claimed; loom checks it.
        let v = cell.with(|p| unsafe { *p });
        seq.store(pos + 2, Ordering::Release);
        Some(v)
    }
}

/// The wait-for-change handshake of `SeqLock`'s `Changes` reduced to its words, with one
/// planted bug chosen by the constructor: the writer checks for sleepers *before* it
/// publishes (a reader that announces in between sleeps through the write), or the reader
/// never asks whether the writer still lives (it waits for a dead writer until its
/// deadline).
pub struct BrokenLatest {
    seq: AtomicU64,
    changes: AtomicU32,
    waiting: AtomicU32,
    writer: AtomicU64,
    check_before_publish: bool,
}

/// Why `BrokenLatest::next` (and the model's view of the real `Changes::wait`) returned
/// no value.
#[derive(Debug, PartialEq, Eq)]
pub enum LatestStop {
    /// The writer is gone.
    Gone,
    /// The deadline passed.
    Timeout,
}

impl BrokenLatest {
    /// `check_before_publish`: the first planted bug; otherwise the second.
    pub fn new(check_before_publish: bool) -> Self {
        BrokenLatest {
            seq: AtomicU64::new(0),
            changes: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            writer: AtomicU64::new(0),
            check_before_publish,
        }
    }

    /// Writes as the loom thread `me` (a world identity).
    pub fn write(&self, me: u64) {
        self.writer.store(me, Ordering::Relaxed);
        let mut sleepers = 0;
        if self.check_before_publish {
            // PLANTED BUG: the check for sleepers comes before the publish.
            fence(Ordering::SeqCst);
            sleepers = self.waiting.load(Ordering::Relaxed);
        }
        self.seq.fetch_add(2, Ordering::Release);
        if !self.check_before_publish {
            fence(Ordering::SeqCst);
            sleepers = self.waiting.load(Ordering::Relaxed);
        }
        if sleepers != 0 {
            self.changes.fetch_add(1, Ordering::Release);
            shm_sync::futex::wake_all(&self.changes);
        }
    }

    /// Waits for `seq` to move past `seen`; returns the new `seq`.
    pub fn next(&self, seen: u64) -> Result<u64, LatestStop> {
        // A deadline of two sleep slices: after the first slice ends, loom shows this
        // thread fresh values (see the futex model), so a reader that checked the writer
        // would see it dead in the second round.
        let mut slices = 0;
        loop {
            let s = self.seq.load(Ordering::Acquire);
            if s != seen {
                return Ok(s);
            }
            let e = self.changes.load(Ordering::Acquire);
            self.waiting.fetch_add(1, Ordering::Release);
            fence(Ordering::SeqCst);
            let mut timed_out = false;
            if self.seq.load(Ordering::Acquire) == seen {
                // (No liveness check of `writer` in either twin; the real reader makes one
                // here. The first twin's writer is alive, so it needs none.)
                let _ = self.writer.load(Ordering::Relaxed);
                timed_out = matches!(
                    shm_sync::futex::wait(
                        &self.changes,
                        e,
                        Some(std::time::Duration::from_millis(10))
                    ),
                    shm_sync::futex::WaitOutcome::TimedOut
                );
            }
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if timed_out {
                slices += 1;
                if slices == 2 {
                    return Err(LatestStop::Timeout);
                }
            }
        }
    }
}

/// What the broadcast models see of one receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    Value([u64; 2]),
    Lagged(u64),
    Empty,
}

/// The operations the broadcast lap model drives (one publisher, one subscriber, capacity
/// 2, the value at position `p` is `[p, p]`), implemented by the real ring and its twin.
pub trait LapLike: Send + Sync + 'static {
    fn publish(&self, p: u64);
    fn try_recv(&self) -> Recv;
}

/// Broadcast's slot protocol with the subscriber's second load of the sequence word (and
/// the Acquire fence before it) left out: a copy that overlapped a later write is delivered.
pub struct NoRecheckBroadcast {
    seq: [AtomicU64; 2],
    words: [[AtomicU64; 2]; 2],
    tail: AtomicU64,
    /// The subscriber's position (one subscriber thread).
    pos: AtomicU64,
}

impl NoRecheckBroadcast {
    pub fn new() -> Self {
        NoRecheckBroadcast {
            // Fresh slots: position `i - 2` published (a lap before the first).
            seq: [AtomicU64::new(0u64.wrapping_sub(2)), AtomicU64::new(0)],
            words: Default::default(),
            tail: AtomicU64::new(0),
            pos: AtomicU64::new(0),
        }
    }
}

impl LapLike for NoRecheckBroadcast {
    fn publish(&self, p: u64) {
        let i = (p % 2) as usize;
        self.seq[i].store(2 * p + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.words[i][0].store(p, Ordering::Relaxed);
        self.words[i][1].store(p, Ordering::Relaxed);
        self.seq[i].store(2 * p + 2, Ordering::Release);
        self.tail.store(p + 1, Ordering::Release);
    }

    fn try_recv(&self) -> Recv {
        let r = self.pos.load(Ordering::Relaxed);
        let i = (r % 2) as usize;
        let s1 = self.seq[i].load(Ordering::Acquire);
        if s1 == 2 * r + 2 {
            let v = [
                self.words[i][0].load(Ordering::Relaxed),
                self.words[i][1].load(Ordering::Relaxed),
            ];
            // PLANTED BUG: no Acquire fence and no second load of `seq` to compare.
            self.pos.store(r + 1, Ordering::Relaxed);
            return Recv::Value(v);
        }
        if (s1.wrapping_sub(2 * r + 2) as i64) > 0 {
            let t = self.tail.load(Ordering::Acquire);
            let n = t.saturating_sub(1).saturating_sub(r).max(1);
            self.pos.store(r + n, Ordering::Relaxed);
            return Recv::Lagged(n);
        }
        Recv::Empty
    }
}

/// The operations the broadcast join model drives (back-pressure, capacity 1, one
/// subscriber that joins live while the publisher publishes, then leaves).
pub trait JoinLike: Send + Sync + 'static {
    /// `false`: full (the subscriber holds the publisher back).
    fn try_publish(&self, p: u64) -> bool;
    /// Joins at the live position; returns it.
    fn join(&self) -> u64;
    fn try_recv(&self) -> Recv;
    fn leave(&self);
}

/// Back-pressure broadcast whose joining subscriber and publisher scan without the SeqCst
/// fences between "store my position" / "load tail" and "store tail" / "load positions":
/// the publisher can miss a subscriber that read a `tail` it had already passed.
pub struct UnfencedJoinBroadcast {
    seq: AtomicU64,
    words: [AtomicU64; 2],
    tail: AtomicU64,
    attached: AtomicBool,
    sub_pos: AtomicU64,
    /// The subscriber's own position (one subscriber thread).
    mine: AtomicU64,
}

impl UnfencedJoinBroadcast {
    pub fn new() -> Self {
        UnfencedJoinBroadcast {
            seq: AtomicU64::new(0),
            words: Default::default(),
            tail: AtomicU64::new(0),
            attached: AtomicBool::new(false),
            sub_pos: AtomicU64::new(0),
            mine: AtomicU64::new(0),
        }
    }
}

impl JoinLike for UnfencedJoinBroadcast {
    fn try_publish(&self, p: u64) -> bool {
        // PLANTED BUG: no SeqCst fence before the scan.
        if self.attached.load(Ordering::Relaxed) && p - self.sub_pos.load(Ordering::Acquire) >= 1 {
            return false;
        }
        self.seq.store(2 * p + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.words[0].store(p, Ordering::Relaxed);
        self.words[1].store(p, Ordering::Relaxed);
        self.seq.store(2 * p + 2, Ordering::Release);
        self.tail.store(p + 1, Ordering::Release);
        true
    }

    fn join(&self) -> u64 {
        let t = self.tail.load(Ordering::Acquire);
        self.sub_pos.store(t, Ordering::Relaxed);
        self.attached.store(true, Ordering::Relaxed);
        // PLANTED BUG: no SeqCst fence, and `tail` is not read again after it.
        self.mine.store(t, Ordering::Relaxed);
        t
    }

    fn try_recv(&self) -> Recv {
        let r = self.mine.load(Ordering::Relaxed);
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 == 2 * r + 2 {
            let v = [
                self.words[0].load(Ordering::Relaxed),
                self.words[1].load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                self.mine.store(r + 1, Ordering::Relaxed);
                self.sub_pos.store(r + 1, Ordering::Release);
                return Recv::Value(v);
            }
            return Recv::Lagged(1);
        }
        if s1 > 2 * r + 2 {
            return Recv::Lagged(1);
        }
        Recv::Empty
    }

    fn leave(&self) {
        self.attached.store(false, Ordering::Release);
    }
}

// ------------------------------------------------------------ byte log

/// The operations the log models drive: producer `who` (0 or 1) sends a message tagged
/// `tag`, returning whether the send said `Ok` (`false`: its claim expired); the consumer
/// takes the next message's tag, if one is ready.
pub trait LogLike: Send + Sync + 'static {
    fn send(&self, who: usize, tag: u16) -> bool;
    fn try_recv(&self) -> Option<u16>;
}

/// A log model whose producer `who` can claim (and mark) a record and die before its
/// commit, as a killed process does.
pub trait DeadLogLike: LogLike {
    fn claim_and_die(&self, who: usize);
}

/// The log's claim / mark / give-up protocol reduced to one-word records (a header, no
/// message bytes): a producer marks its claim in its own claim line, then reads the
/// consumer's give-up horizon; the consumer, giving a claim up, stores the horizon, then
/// reads the claim lines. PLANTED BUG: neither side fences between its store and its load
/// (the real log has a `SeqCst` fence on each side): each can miss the other's store, so
/// the consumer gives up (a hole) a claim whose producer saw no horizon and commits over
/// the hole, returning `Ok`, and its message is never delivered.
pub struct UnfencedMarkLog {
    words: [AtomicU64; 4],
    tail: AtomicU64,
    /// The consumer's position (one consumer thread at a time).
    head: AtomicU64,
    /// The give-up horizon: claims below it not marked by now are given up.
    below: AtomicU64,
    /// Each producer's claim line: the position it marked, plus one (0: none).
    lines: [AtomicU64; 2],
}

const LOG_COMMITTED: u64 = 2 << 61;
const LOG_HOLE: u64 = 4 << 61;

impl UnfencedMarkLog {
    pub fn new() -> Self {
        UnfencedMarkLog {
            // Word i holds position 8i's FREE (its lap tag is i).
            words: std::array::from_fn(|i| AtomicU64::new(i as u64)),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            below: AtomicU64::new(0),
            lines: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Default for UnfencedMarkLog {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLike for UnfencedMarkLog {
    fn send(&self, who: usize, tag: u16) -> bool {
        let t = self.tail.fetch_add(8, Ordering::Relaxed);
        let i = (t / 8) as usize;
        self.lines[who].store(t + 1, Ordering::Release);
        // (The real log: `fence(SeqCst)` here.)
        if self.below.load(Ordering::Relaxed) > t {
            self.lines[who].store(0, Ordering::Release);
            return false;
        }
        self.words[i].store(LOG_COMMITTED | u64::from(tag), Ordering::Release);
        true
    }

    fn try_recv(&self) -> Option<u16> {
        loop {
            let p = self.head.load(Ordering::Relaxed);
            let i = (p / 8) as usize;
            let w = self.words[i].load(Ordering::Acquire);
            match w >> 61 {
                2 => {
                    self.head.store(p + 8, Ordering::Relaxed);
                    return Some((w & 0xffff) as u16);
                }
                4 => self.head.store(p + 8, Ordering::Relaxed),
                0 => {
                    let t = self.tail.load(Ordering::Relaxed);
                    if t <= p || !shm_sync::primitive::world::timed_out() {
                        return None;
                    }
                    // Give the claims below `t` up, unless marked.
                    self.below.store(t, Ordering::Relaxed);
                    // (The real log: `fence(SeqCst)` here.)
                    if self
                        .lines
                        .iter()
                        .any(|l| l.load(Ordering::Acquire) == p + 1)
                    {
                        return None; // marked: waited for
                    }
                    let _ = self.words[i].compare_exchange(
                        w,
                        LOG_HOLE,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                _ => return None,
            }
        }
    }
}

/// The log's protocol as in [`UnfencedMarkLog`] but with its fences, and with the dead
/// producer's path: a claim marked in a claim line and found past the claim timeout is
/// padded. PLANTED BUG: it is padded without asking whether the producer that marked it is
/// dead (the real log pads only a dead endpoint's claim, and waits for a live one however
/// long): a live producer's claim in flight is padded and skipped, its commit lands behind
/// the consumer, and its `Ok` message is never delivered.
pub struct UndeadPadLog {
    words: [AtomicU64; 4],
    tail: AtomicU64,
    head: AtomicU64,
    below: AtomicU64,
    lines: [AtomicU64; 2],
}

const LOG_PAD: u64 = 3 << 61;

impl UndeadPadLog {
    pub fn new() -> Self {
        UndeadPadLog {
            words: std::array::from_fn(|i| AtomicU64::new(i as u64)),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            below: AtomicU64::new(0),
            lines: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// P1 and P2: the claimed position, or `None` if it was given up.
    fn claim(&self, who: usize) -> Option<usize> {
        let t = self.tail.fetch_add(8, Ordering::Relaxed);
        self.lines[who].store(t + 1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.below.load(Ordering::Relaxed) > t {
            self.lines[who].store(0, Ordering::Release);
            return None;
        }
        Some((t / 8) as usize)
    }
}

impl Default for UndeadPadLog {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLike for UndeadPadLog {
    fn send(&self, who: usize, tag: u16) -> bool {
        let Some(i) = self.claim(who) else {
            return false;
        };
        self.words[i].store(LOG_COMMITTED | u64::from(tag), Ordering::Release);
        true
    }

    fn try_recv(&self) -> Option<u16> {
        loop {
            let p = self.head.load(Ordering::Relaxed);
            let i = (p / 8) as usize;
            let w = self.words[i].load(Ordering::Acquire);
            match w >> 61 {
                2 => {
                    self.head.store(p + 8, Ordering::Relaxed);
                    return Some((w & 0xffff) as u16);
                }
                3 | 4 => self.head.store(p + 8, Ordering::Relaxed),
                0 => {
                    let t = self.tail.load(Ordering::Relaxed);
                    if t <= p || !shm_sync::primitive::world::timed_out() {
                        return None;
                    }
                    self.below.store(t, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                    let marked = self
                        .lines
                        .iter()
                        .any(|l| l.load(Ordering::Acquire) == p + 1);
                    // PLANTED BUG: a marked claim is padded whether or not its producer is
                    // dead.
                    let to = if marked { LOG_PAD | 8 } else { LOG_HOLE };
                    if self.words[i]
                        .compare_exchange(w, to, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                    {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
}

impl DeadLogLike for UndeadPadLog {
    fn claim_and_die(&self, who: usize) {
        // Claimed and marked (or given up), never committed.
        let _ = self.claim(who);
    }
}

// ------------------------------------------------------------ select

/// Select's sleep protocol reduced to two ends, each a position and an eventcount
/// (`waiting`, `epoch`). A publisher stores its position, fences, and wakes the end's
/// epoch if anyone counts in. PLANTED BUG: the select checks the positions, counts itself
/// in on both epochs and sleeps on them, but never checks the positions again after
/// counting in (the real select checks after its heavy barrier): a publish between its
/// check and its count is missed, and the select sleeps forever.
pub struct NoRecheckSelect {
    pos: [AtomicU64; 2],
    waiting: [AtomicU32; 2],
    epoch: [AtomicU32; 2],
}

impl NoRecheckSelect {
    pub fn new() -> Self {
        NoRecheckSelect {
            pos: std::array::from_fn(|_| AtomicU64::new(0)),
            waiting: std::array::from_fn(|_| AtomicU32::new(0)),
            epoch: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Publishes on end `i`.
    pub fn publish(&self, i: usize) {
        self.pos[i].store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.waiting[i].load(Ordering::Relaxed) != 0 {
            self.epoch[i].fetch_add(1, Ordering::Release);
            shm_sync::futex::wake(&self.epoch[i], 1);
        }
    }

    /// Waits until an end has a publish; returns it.
    pub fn select(&self) -> usize {
        loop {
            if let Some(i) = (0..2).find(|&i| self.pos[i].load(Ordering::Acquire) != 0) {
                return i;
            }
            let e: [u32; 2] = std::array::from_fn(|i| self.epoch[i].load(Ordering::Acquire));
            for w in &self.waiting {
                w.fetch_add(1, Ordering::Release);
            }
            fence(Ordering::SeqCst);
            // (The real select checks the positions again here.)
            let words = [(&self.epoch[0], e[0]), (&self.epoch[1], e[1])];
            let _ = shm_sync::futex::wait_any(&words, None);
            for w in &self.waiting {
                w.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Default for NoRecheckSelect {
    fn default() -> Self {
        Self::new()
    }
}

/// Broken twin of the async waiter's hand-off (`shm_ring::aio`): a task counts in on an
/// end's epoch, re-checks, and registers its wait in the waiter's table, then bumps the
/// waiter's kick word and wakes it; the waiter snapshots the table and sleeps on the
/// registered epoch and its kick word together. PLANTED BUG (with `new`; `fixed` reads it
/// as the real waiter does, under the lock before the snapshot): the waiter reads its kick
/// word after taking the snapshot and releasing the lock. A registration between the two
/// is in neither the snapshot nor behind the kick value it sleeps on, so the waiter sleeps
/// on the old set and the publisher's wake of the epoch reaches nobody.
pub struct LateKickWaiter {
    late: bool,
    pos: AtomicU64,
    waiting: AtomicU32,
    epoch: AtomicU32,
    kick: AtomicU32,
    /// The registration: the epoch a task waits past (`None`: none yet), and whether the
    /// task is done (then the waiter ends).
    table: loom::sync::Mutex<(Option<u32>, bool)>,
    /// Set by the waiter once it fired the registration (the task's "park").
    fired: AtomicU32,
}

impl LateKickWaiter {
    pub fn new() -> Self {
        Self::with(true)
    }

    pub fn fixed() -> Self {
        Self::with(false)
    }

    fn with(late: bool) -> Self {
        LateKickWaiter {
            late,
            pos: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            kick: AtomicU32::new(0),
            table: loom::sync::Mutex::new((None, false)),
            fired: AtomicU32::new(0),
        }
    }

    pub fn publish(&self) {
        // Release: pairs with the task's Acquire loads of `pos`.
        self.pos.store(1, Ordering::Release);
        // SeqCst: pairs with the task's fence after counting in (the Dekker pair).
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) != 0 {
            // Release: pairs with the waiter's Acquire load of `epoch`.
            self.epoch.fetch_add(1, Ordering::Release);
            shm_sync::futex::wake(&self.epoch, 1);
        }
    }

    fn kick(&self) {
        // Release: pairs with the waiter's Acquire load of `kick`.
        self.kick.fetch_add(1, Ordering::Release);
        shm_sync::futex::wake(&self.kick, 1);
    }

    /// The task: returns once the item is there (at once, or after the waiter fired it),
    /// and tells the waiter it is done.
    pub fn wait(&self) {
        self.wait_for_item();
        // Acquire: pairs with the publisher's Release store.
        assert_eq!(self.pos.load(Ordering::Acquire), 1);
        self.table.lock().unwrap().1 = true;
        self.kick();
    }

    fn wait_for_item(&self) {
        // Acquire (every load of `pos`): pairs with the publisher's Release store.
        if self.pos.load(Ordering::Acquire) != 0 {
            return;
        }
        // Acquire: pairs with the publisher's Release bump.
        let e = self.epoch.load(Ordering::Acquire);
        // Release: as `sleepers::count_in`; the fence below does the ordering.
        self.waiting.fetch_add(1, Ordering::Release);
        // SeqCst: pairs with the publisher's fence (the Dekker pair).
        fence(Ordering::SeqCst);
        if self.pos.load(Ordering::Acquire) != 0 {
            return;
        }
        self.table.lock().unwrap().0 = Some(e);
        self.kick();
        // Acquire: pairs with the waiter's Release store of `fired`.
        while self.fired.load(Ordering::Acquire) == 0 {
            shm_sync::futex::wait(&self.fired, 0, None);
        }
    }

    /// The waiter, until the task is done.
    pub fn serve(&self) {
        loop {
            let (snapshot, kicked) = {
                let t = self.table.lock().unwrap();
                // Acquire (both loads of `kick`): pairs with the task's Release bump.
                let early = (!self.late).then(|| self.kick.load(Ordering::Acquire));
                if t.1 {
                    return;
                }
                (t.0, early)
            };
            // The bug: read after the snapshot, outside the lock.
            let kicked = kicked.unwrap_or_else(|| self.kick.load(Ordering::Acquire));
            match snapshot {
                // Acquire: pairs with the publisher's Release bump.
                Some(e) if self.epoch.load(Ordering::Acquire) != e => {
                    self.table.lock().unwrap().0 = None;
                    // Release: pairs with the task's Acquire load of `fired`.
                    self.fired.store(1, Ordering::Release);
                    shm_sync::futex::wake(&self.fired, 1);
                }
                Some(e) => {
                    let words = [(&self.epoch, e), (&self.kick, kicked)];
                    let _ = shm_sync::futex::wait_any(&words, None);
                }
                None => {
                    shm_sync::futex::wait(&self.kick, kicked, None);
                }
            }
        }
    }
}

impl Default for LateKickWaiter {
    fn default() -> Self {
        Self::new()
    }
}
