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
