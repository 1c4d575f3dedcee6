//! A sequence lock: writers publish a `Pod` value, readers in other processes take
//! consistent snapshots without ever blocking a writer.

use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::primitive::{fence, yield_now, AtomicU64, Backoff, Ordering};
use crate::spin::{SpinLock, SPIN_LIVENESS_INTERVAL};

/// Why a read or write of a [`SeqLock`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqLockError {
    /// The last writer died mid-update: the value stays torn until the next write.
    WriterDied,
    /// The timeout passed first.
    Timeout,
    /// The calling thread is the writer (a write from inside a write).
    WouldDeadlock,
    /// The writer lock's state word holds a value shmring never writes.
    Corrupted,
}

impl std::fmt::Display for SeqLockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SeqLockError::WriterDied => {
                "the writer died mid-update; the value is torn until the next write"
            }
            SeqLockError::Timeout => "timed out",
            SeqLockError::WouldDeadlock => "the calling thread is already writing",
            SeqLockError::Corrupted => "the seqlock's writer lock is corrupted",
        })
    }
}

impl std::error::Error for SeqLockError {}

/// The latest value of a `T`, written by one process at a time and read by any number.
///
/// `seq` is even when the value is stable and odd while a write is under way. A writer
/// takes the writer lock (a [`SpinLock`], so a dead writer is detected and replaced),
/// makes `seq` odd, stores the value word by word with atomic stores, and makes `seq` even
/// again. A reader copies the words between two reads of `seq` and keeps the copy only if
/// both reads are the same even number, so it never returns a torn value. The value is
/// moved as atomic 8-byte words (and single bytes for a tail), so concurrent reads and
/// writes are never a data race.
#[repr(C)]
pub struct SeqLock<T> {
    seq: AtomicU64,
    _reserved: AtomicU64,
    writer: SpinLock<()>,
    data: Data<T>,
}

#[cfg(not(shm_loom))]
#[repr(C, align(8))]
struct Data<T>(std::cell::UnsafeCell<T>);

/// Under loom, the value lives in (at most 8) loom atomics so loom sees every access.
#[cfg(shm_loom)]
struct Data<T>([AtomicU64; 8], std::marker::PhantomData<T>);

// SAFETY: the value is only ever accessed through atomic loads and stores of its words,
// and `T: Send` lets it move between threads.
unsafe impl<T: Send> Sync for SeqLock<T> {}
// SAFETY: moving the lock moves the `T`.
unsafe impl<T: Send> Send for SeqLock<T> {}

#[cfg(not(shm_loom))]
// SAFETY: `#[repr(C)]` of atomics, a `ShmSafe` spinlock and a `Pod` value accessed only
// through atomic word loads/stores: any bytes are valid, zero is "seq 0, value zeroed", no
// Drop glue.
unsafe impl<T: bytemuck::Pod + Send> shm_core::ShmSafe for SeqLock<T> {}

#[cfg(not(shm_loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(SeqLock<[u64; 8]>, data), 32);

impl<T: bytemuck::Pod> SeqLock<T> {
    /// A seqlock holding `value` (for use inside one process, or under loom).
    pub fn new(value: T) -> SeqLock<T> {
        let s = SeqLock {
            seq: AtomicU64::new(0),
            _reserved: AtomicU64::new(0),
            writer: SpinLock::new(()),
            data: Data::zeroed(),
        };
        s.store_value(&value);
        s
    }

    /// Initialises a zeroed seqlock in place with `value`.
    ///
    /// # Safety
    ///
    /// No other thread or process may access `self` during the call.
    pub unsafe fn init_in_place(&self, value: T) {
        // SAFETY: forwarded from our caller.
        unsafe { self.writer.init_in_place(()) };
        self.store_value(&value);
        self.seq.store(0, Ordering::Relaxed);
    }

    /// Publishes `value`. Never waits for readers; waits only for another writer.
    ///
    /// # Errors
    ///
    /// `WouldDeadlock` if called while this thread is writing. (A dead previous writer is
    /// replaced silently: this write overwrites the whole value.)
    pub fn write(&self, value: T) -> Result<(), SeqLockError> {
        self.write_until(value, None)
    }

    /// [`write`](Self::write), giving up after `timeout` if another writer holds on.
    ///
    /// # Errors
    ///
    /// As `write`, plus `Timeout`.
    pub fn write_timeout(&self, value: T, timeout: Duration) -> Result<(), SeqLockError> {
        self.write_until(value, Some(timeout))
    }

    fn write_until(&self, value: T, timeout: Option<Duration>) -> Result<(), SeqLockError> {
        let res = match timeout {
            Some(t) => self.writer.lock_timeout(t),
            None => self.writer.lock(),
        };
        let mut guard = match res {
            Ok(g) => g,
            Err(LockError::OwnerDied(mut g)) => {
                // We rewrite the whole value below, which is the repair.
                g.mark_consistent();
                g
            }
            Err(LockError::Timeout) => return Err(SeqLockError::Timeout),
            Err(LockError::WouldDeadlock) => return Err(SeqLockError::WouldDeadlock),
            // `lock` never returns WouldBlock; NotRecoverable means a scribbled state word.
            Err(LockError::WouldBlock) | Err(LockError::NotRecoverable) => {
                return Err(SeqLockError::Corrupted)
            }
        };
        crate::fault_point!("seqlock-locked");
        let s = self.seq.load(Ordering::Relaxed);
        // An odd `s` means a writer died mid-update: keep it odd while we rewrite.
        let odd = s | 1;
        if s != odd {
            self.seq.store(odd, Ordering::Relaxed);
        }
        // Release fence: orders the odd `seq` before the data stores below, so a reader
        // that sees any of our data sees `seq` changed; pairs with the Acquire fence in
        // `try_read`.
        fence(Ordering::Release);
        self.store_value(&value);
        crate::fault_point!("seqlock-written");
        // Release: publishes the data stores; pairs with the Acquire load of `seq` in
        // `try_read`.
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
        crate::fault_point!("seqlock-published");
        guard.mark_consistent();
        drop(guard);
        Ok(())
    }

    /// One attempt at a consistent snapshot: `None` if a write was under way.
    pub fn try_read(&self) -> Option<T> {
        // Acquire: pairs with the Release store that ended the last write, so the data
        // loads below see at least that write.
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let value = self.load_value();
        // Acquire fence: orders the data loads before the second `seq` load; pairs with the
        // Release fence in `write_until`, so if we read any data of a newer write, we also
        // see its odd `seq`.
        fence(Ordering::Acquire);
        let s2 = self.seq.load(Ordering::Relaxed);
        (s1 == s2).then_some(value)
    }

    /// A consistent snapshot, retrying while writes are under way.
    ///
    /// # Errors
    ///
    /// `WriterDied` if the writer died mid-update (nothing consistent exists until the
    /// next write).
    pub fn read(&self) -> Result<T, SeqLockError> {
        self.read_until(None)
    }

    /// [`read`](Self::read), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As `read`, plus `Timeout`.
    pub fn read_timeout(&self, timeout: Duration) -> Result<T, SeqLockError> {
        self.read_until(crate::primitive::deadline_after(timeout))
    }

    fn read_until(&self, deadline: Option<Instant>) -> Result<T, SeqLockError> {
        let backoff = Backoff::new();
        let mut next_check: Option<Instant> = None;
        loop {
            if let Some(v) = self.try_read() {
                return Ok(v);
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            let now = (cfg!(not(shm_loom)) || deadline.is_some()).then(Instant::now);
            let due = match (now, next_check) {
                (Some(now), Some(at)) => now >= at,
                _ => true,
            };
            if due {
                if self.seq.load(Ordering::Relaxed) & 1 == 1 && self.writer.holder_is_dead() {
                    return Err(SeqLockError::WriterDied);
                }
                next_check = now.map(|n| n + SPIN_LIVENESS_INTERVAL);
            }
            if let (Some(d), Some(now)) = (deadline, now) {
                if now >= d {
                    return Err(SeqLockError::Timeout);
                }
            }
            yield_now();
        }
    }

    /// How many writes have completed (a snapshot).
    pub fn version(&self) -> u64 {
        self.seq.load(Ordering::Relaxed) / 2
    }
}

#[cfg(not(shm_loom))]
impl<T: bytemuck::Pod> Data<T> {
    fn zeroed() -> Data<T> {
        Data(std::cell::UnsafeCell::new(T::zeroed()))
    }
}

#[cfg(shm_loom)]
impl<T: bytemuck::Pod> Data<T> {
    fn zeroed() -> Data<T> {
        assert!(
            std::mem::size_of::<T>() <= 64,
            "loom models of SeqLock take values of at most 64 bytes"
        );
        Data(Default::default(), std::marker::PhantomData)
    }
}

impl<T: bytemuck::Pod> SeqLock<T> {
    #[cfg(not(shm_loom))]
    fn store_value(&self, value: &T) {
        use std::sync::atomic::AtomicU8;
        let src = bytemuck::bytes_of(value);
        let dst = self.data.0.get().cast::<u8>();
        let mut i = 0;
        while i + 8 <= src.len() {
            let word = u64::from_ne_bytes(src[i..i + 8].try_into().expect("8 bytes"));
            // SAFETY: `dst + i .. dst + i + 8` lies inside the value, which is 8-aligned
            // (`Data` is `align(8)`) at an offset that is a multiple of 8; the value is only
            // ever accessed through atomics of this same size at this same address.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(dst.add(i).cast()) }
                .store(word, Ordering::Relaxed);
            i += 8;
        }
        while i < src.len() {
            // SAFETY: `dst + i` lies inside the value; tail bytes are only ever accessed
            // through `AtomicU8` at this address.
            unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
            i += 1;
        }
    }

    #[cfg(not(shm_loom))]
    fn load_value(&self) -> T {
        use std::sync::atomic::AtomicU8;
        let mut out = T::zeroed();
        let dst = bytemuck::bytes_of_mut(&mut out);
        let src = self.data.0.get().cast::<u8>();
        let mut i = 0;
        while i + 8 <= dst.len() {
            // SAFETY: as in `store_value`: an aligned word inside the value, only ever
            // accessed atomically.
            let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(src.add(i).cast()) }
                .load(Ordering::Relaxed);
            dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
            i += 8;
        }
        while i < dst.len() {
            // SAFETY: as in `store_value`: a tail byte only ever accessed atomically.
            dst[i] = unsafe { AtomicU8::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
            i += 1;
        }
        out
    }

    #[cfg(shm_loom)]
    fn store_value(&self, value: &T) {
        let src = bytemuck::bytes_of(value);
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.data.0[i].store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }

    #[cfg(shm_loom)]
    fn load_value(&self) -> T {
        let mut out = T::zeroed();
        let dst = bytemuck::bytes_of_mut(&mut out);
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = self.data.0[i].load(Ordering::Relaxed).to_ne_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        out
    }
}
