//! A sequence lock: writers publish a `Pod` value, readers in other processes take
//! consistent snapshots without ever blocking a writer.

use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::primitive::{fence, yield_now, AtomicU32, AtomicU64, Backoff, Ordering};
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
    /// [`Changes`] only: the process that wrote last has exited (died, or ended) and
    /// nothing newer was written. The value read so far stays the latest; a new writer's
    /// first write ends this.
    WriterGone {
        /// The pid of the process that wrote last.
        pid: u32,
    },
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
            SeqLockError::WriterGone { .. } => {
                "the process that wrote last has exited and nothing newer was written"
            }
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
///
/// Readers can also wait for the next value without polling ([`SeqLock::changes`]): a
/// writer makes a `FUTEX_WAKE` only while a reader sleeps, and a sleeping reader learns
/// that the writer's process exited ([`SeqLockError::WriterGone`]) from the process's exit
/// watcher rather than a timer. Every write records its process
/// ([`SeqLock::writer`]), so a reader can tell fresh prices from a feed that stopped.
///
/// Layout (`#[repr(C)]`, 64 bytes before the value):
///
/// | offset | field       | written by                                                  |
/// | ------ | ----------- | ----------------------------------------------------------- |
/// | 0      | `seq`       | writers: odd while a write is under way                    |
/// | 8      | `writer_id` | writers: `pid << 32 \| start time low 32` of the last write's process |
/// | 16     | `writer`    | the writer lock                                             |
/// | 32     | `changes`   | writers (when a reader sleeps) and exit notices: a futex word |
/// | 36     | `waiting`   | readers sleeping in [`Changes`]: a count, and bit 31 `WOKEN` |
/// | 64     | the value   | writers, word by word                                       |
#[repr(C)]
pub struct SeqLock<T> {
    seq: AtomicU64,
    writer_id: AtomicU64,
    writer: SpinLock<()>,
    changes: AtomicU32,
    /// The sleeping readers ([`crate::sleepers`]): a writer wakes them once per round, so
    /// a reader killed in its sleep costs one `FUTEX_WAKE`, not one per write.
    waiting: AtomicU32,
    _reserved: [AtomicU64; 3],
    data: Data<T>,
}

/// Who wrote a [`SeqLock`] last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterStatus {
    /// Nobody has written since it was created (the initial value is the creator's).
    Never,
    /// The process `pid` wrote last and still runs.
    Running {
        /// Its pid.
        pid: u32,
    },
    /// The process `pid` wrote last and has exited.
    Exited {
        /// Its pid.
        pid: u32,
    },
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
mod layout_checks {
    use super::SeqLock;
    use static_assertions::const_assert_eq;
    const_assert_eq!(std::mem::offset_of!(SeqLock<[u64; 8]>, writer_id), 8);
    const_assert_eq!(std::mem::offset_of!(SeqLock<[u64; 8]>, changes), 32);
    const_assert_eq!(std::mem::offset_of!(SeqLock<[u64; 8]>, waiting), 36);
    const_assert_eq!(std::mem::offset_of!(SeqLock<[u64; 8]>, data), 64);
}

impl<T: bytemuck::Pod> SeqLock<T> {
    /// A seqlock holding `value` (for use inside one process, or under loom).
    pub fn new(value: T) -> SeqLock<T> {
        let s = SeqLock {
            seq: AtomicU64::new(0),
            writer_id: AtomicU64::new(0),
            writer: SpinLock::new(()),
            changes: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            _reserved: Default::default(),
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
        self.writer_id.store(0, Ordering::Relaxed);
        self.changes.store(0, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
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
        // Relaxed: a report for `writer`; a reader that sees the new value may see the
        // previous writer here for a moment, never a torn word.
        let me = crate::owner::process_word();
        if self.writer_id.load(Ordering::Relaxed) != me {
            self.writer_id.store(me, Ordering::Relaxed);
        }
        self.store_value(&value);
        crate::fault_point!("seqlock-written");
        // Release: publishes the data stores; pairs with the Acquire load of `seq` in
        // `try_read`.
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
        crate::fault_point!("seqlock-published");
        guard.mark_consistent();
        drop(guard);
        // The store-then-check handshake with a sleeping reader (`Changes::sleep`, which
        // announces itself, then re-reads `seq`): our half of the StoreLoad barrier, a
        // compiler fence when the process is registered for the reader's membarrier (see
        // `barrier`), else a SeqCst fence pairing with the one in `barrier::heavy`.
        crate::barrier::light(crate::owner::barrier_registered());
        if crate::sleepers::first_wake(&self.waiting) {
            self.wake_readers();
        }
        Ok(())
    }

    /// Wakes the readers sleeping in [`Changes`] (the first waker of a round of sleepers:
    /// `sleepers::first_wake`, whose Acquire orders each sleeper's read of `changes` before
    /// our bump below, which its futex wait then sees as a change).
    #[cold]
    fn wake_readers(&self) {
        // Release: pairs with the Acquire load of `changes` in `Changes::sleep`.
        self.changes.fetch_add(1, Ordering::Release);
        crate::futex::wake_all(&self.changes);
    }

    /// Who wrote last, and whether that process still runs (one `/proc` read).
    pub fn writer(&self) -> WriterStatus {
        // Relaxed: a report.
        let w = self.writer_id.load(Ordering::Relaxed);
        if w == 0 {
            return WriterStatus::Never;
        }
        let pid = (w >> 32) as u32;
        if process_is_dead(w) {
            WriterStatus::Exited { pid }
        } else {
            WriterStatus::Running { pid }
        }
    }

    /// A reader that waits for values newer than the one current now, without polling:
    /// see [`Changes`].
    pub fn changes(&self) -> Changes<'_, T> {
        Changes {
            lock: self,
            // Relaxed: a starting point; the first wait re-reads with Acquire.
            seen: self.seq.load(Ordering::Relaxed) & !1,
            #[cfg(not(shm_loom))]
            watch: WriterWatch::default(),
        }
    }

    /// One attempt at a consistent snapshot: `None` if a write was under way.
    pub fn try_read(&self) -> Option<T> {
        self.try_read_seq().map(|(v, _)| v)
    }

    /// [`try_read`](Self::try_read), with the (even) `seq` the snapshot was taken at.
    fn try_read_seq(&self) -> Option<(T, u64)> {
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
        (s1 == s2).then_some((value, s1))
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
        self.read_with_seq(deadline).map(|(v, _)| v)
    }

    /// A consistent snapshot and the (even) `seq` it was taken at, retrying while writes
    /// are under way (`WriterDied` if the writer died mid-write, `Timeout` at `deadline`).
    fn read_with_seq(&self, deadline: Option<Instant>) -> Result<(T, u64), SeqLockError> {
        let backoff = Backoff::new();
        let mut next_check: Option<Instant> = None;
        loop {
            if let Some(r) = self.try_read_seq() {
                return Ok(r);
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
                if self.write_died() {
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

    /// Whether a write is under way and its writer is dead. `seq` is read again after the
    /// death verdict: a stale odd `seq` read before it may belong to a write that the
    /// writer finished before it died (the verdict's Acquire, paired with the death, makes
    /// the finished write's even `seq` visible to the re-read).
    fn write_died(&self) -> bool {
        self.seq.load(Ordering::Relaxed) & 1 == 1
            && self.writer.holder_is_dead()
            // Acquire: after the verdict (see above).
            && self.seq.load(Ordering::Acquire) & 1 == 1
    }

    /// How many writes have completed (a snapshot).
    pub fn version(&self) -> u64 {
        self.seq.load(Ordering::Relaxed) / 2
    }
}

/// Whether the process named by identity word `w` (`pid << 32 | start low 32`) is
/// certainly gone; `false` when in doubt.
#[cfg(not(shm_loom))]
fn process_is_dead(w: u64) -> bool {
    match shm_core::ProcessId::lookup_process((w >> 32) as u32) {
        shm_core::Lookup::Gone => true,
        shm_core::Lookup::Unknown => false,
        // A recorded 0 (the writer could not read its own start time): only "no such
        // process" proves death.
        shm_core::Lookup::Running(p) => w as u32 != 0 && p.start_low32() != w as u32,
    }
}

#[cfg(shm_loom)]
fn process_is_dead(w: u64) -> bool {
    crate::primitive::world::is_dead(w >> 32)
}

/// How long a sleeping [`Changes`] reader sleeps before it checks the writer itself: long
/// when the writer's exit will wake it (an exit notice), short when nothing would.
const WATCHED_SLICE: Duration = Duration::from_secs(1);
const UNWATCHED_SLICE: Duration = Duration::from_millis(10);

/// A reader of a [`SeqLock`] that waits for each newer value: [`wait`](Self::wait) returns
/// the latest value written after the last one this reader returned, sleeping on a futex
/// until there is one. Values written in between are skipped (a seqlock keeps only the
/// latest). A writer pays a `FUTEX_WAKE` only while some reader sleeps.
///
/// A sleeping reader re-checks on its own once a second; it learns of the writer's exit
/// sooner, from the process's exit watcher (a pidfd on the writer), and returns
/// [`SeqLockError::WriterGone`]. Where no pidfd can be had it checks every 10 ms instead.
/// It holds one file descriptor on the writer while it has slept on it.
///
/// ```
/// use shm_sync::{SeqLock, SeqLockError};
/// use std::time::Duration;
///
/// let price = SeqLock::new(100.0f64);
/// let mut changes = price.changes();
/// assert_eq!(changes.wait_timeout(Duration::from_millis(1)), Err(SeqLockError::Timeout));
/// price.write(101.5).unwrap();
/// assert_eq!(changes.wait_timeout(Duration::from_secs(1)), Ok(101.5));
/// ```
pub struct Changes<'a, T> {
    lock: &'a SeqLock<T>,
    /// The (even) `seq` of the last value returned, or of the value current at creation.
    seen: u64,
    #[cfg(not(shm_loom))]
    watch: WriterWatch,
}

/// The writer a sleeping reader watches: a pidfd on its process, and a pending wake-up of
/// the lock's `changes` word when it exits.
#[cfg(not(shm_loom))]
#[derive(Default)]
struct WriterWatch {
    word: u64,
    watch: Option<shm_core::ExitWatch>,
    notice: Option<shm_core::ExitNotice>,
}

/// The `changes` word of a lock, for the exit watcher's thread.
#[cfg(not(shm_loom))]
struct WakeWord(std::ptr::NonNull<AtomicU32>);

// SAFETY: an atomic, which any thread may use; the pointer is valid while the `Changes`
// that registered the notice holding it lives (its notice is dropped first; see there).
#[cfg(not(shm_loom))]
unsafe impl Send for WakeWord {}

impl<T: bytemuck::Pod> Changes<'_, T> {
    /// The latest value now (without waiting), which later calls count as seen.
    ///
    /// # Errors
    ///
    /// As [`SeqLock::read`].
    pub fn latest(&mut self) -> Result<T, SeqLockError> {
        let (v, s) = self.lock.read_with_seq(None)?;
        self.seen = s;
        Ok(v)
    }

    /// Waits for a value newer than the last one returned, and returns it.
    ///
    /// # Errors
    ///
    /// `WriterGone` if the process that wrote last exited and nothing newer came;
    /// `WriterDied` if a writer died mid-update.
    pub fn wait(&mut self) -> Result<T, SeqLockError> {
        self.wait_until(None)
    }

    /// [`wait`](Self::wait), giving up after `timeout` (saturating: any duration).
    ///
    /// # Errors
    ///
    /// As `wait`, plus `Timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<T, SeqLockError> {
        self.wait_until(crate::primitive::deadline_after(timeout))
    }

    /// The number of writes the last returned value follows ([`SeqLock::version`]).
    pub fn version(&self) -> u64 {
        self.seen / 2
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<T, SeqLockError> {
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the writer's publishing read-modify-write of `seq`.
            let s = self.lock.seq.load(Ordering::Acquire);
            if s != self.seen {
                let (v, s) = self.lock.read_with_seq(deadline)?;
                if s != self.seen {
                    self.seen = s;
                    return Ok(v);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(SeqLockError::Timeout);
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            self.sleep(deadline)?;
        }
    }

    /// Sleeps until `seq` may have moved past `seen`, the writer exits, a slice ends or the
    /// deadline passes. `WriterGone` if the last writer's process is gone and `seq` has not
    /// moved.
    fn sleep(&mut self, deadline: Option<Instant>) -> Result<(), SeqLockError> {
        let lock = self.lock;
        // Acquire: pairs with the Release bump in `wake_readers` (and in exit notices).
        let epoch = lock.changes.load(Ordering::Acquire);
        // Count ourselves in (Release: pairs with the writer's Acquire in
        // `sleepers::first_wake`, so our read of `changes` above comes before its bump),
        // then our half of the handshake with the writer's publish (see `write_until`):
        // the heavy barrier orders the announcement before the re-read of `seq` below. If
        // it failed, a writer may have missed us: short slices.
        let ordered = crate::sleepers::announce(&lock.waiting);
        let result = (|| {
            // Acquire: pairs with the writer's Release store of `seq`.
            if lock.seq.load(Ordering::Acquire) != self.seen {
                return Ok(());
            }
            // Relaxed: which process to watch; its liveness is checked in the kernel.
            let w = lock.writer_id.load(Ordering::Relaxed);
            let watched = self.watch_writer(w);
            if w != 0 && !watched && process_is_dead(w) {
                // Acquire, after the verdict: the read of `seq` above may predate a write
                // the writer finished before it died; the verdict (paired with the death)
                // makes that write visible here, and it is a value, not a departure.
                if lock.seq.load(Ordering::Acquire) != self.seen {
                    return Ok(());
                }
                return Err(SeqLockError::WriterGone {
                    pid: (w >> 32) as u32,
                });
            }
            let slice = if watched && ordered {
                WATCHED_SLICE
            } else {
                UNWATCHED_SLICE
            };
            let slice = match deadline {
                Some(d) => slice.min(d.saturating_duration_since(Instant::now())),
                None => slice,
            };
            crate::futex::wait(&lock.changes, epoch, Some(slice));
            Ok(())
        })();
        crate::sleepers::retire(&lock.waiting);
        // A notice that fired means the writer exited: the next round finds it dead (no
        // pidfd is consulted for a fired notice: `watch_writer` then answers false).
        result
    }

    /// Arranges that the exit of `w`'s process bumps `changes` and wakes us. `true` if it
    /// is so arranged and has not fired (the writer runs, and its exit will wake us).
    #[cfg(not(shm_loom))]
    fn watch_writer(&mut self, w: u64) -> bool {
        let ww = &mut self.watch;
        if w == 0 {
            return false;
        }
        if ww.word != w {
            ww.notice = None;
            ww.word = w;
            ww.watch = shm_core::ExitWatch::open((w >> 32) as u32, |p| {
                w as u32 != 0 && p.start_low32() == w as u32
            });
            if let Some(watch) = &ww.watch {
                let word = WakeWord(std::ptr::NonNull::from(&self.lock.changes));
                ww.notice = watch.on_exit(move || {
                    // The whole `WakeWord` (which is `Send`), not its pointer field.
                    let word = word;
                    // SAFETY: the `Changes` that registered this notice drops it before the
                    // lock it borrows can go (field order and `Drop` below), and dropping a
                    // notice waits out a callback that is running; so the word is valid.
                    let changes = unsafe { word.0.as_ref() };
                    // Release: pairs with the Acquire load of `changes` in `sleep`.
                    changes.fetch_add(1, Ordering::Release);
                    crate::futex::wake_all(changes);
                });
            }
        }
        ww.notice.as_ref().is_some_and(|n| !n.fired())
    }

    #[cfg(shm_loom)]
    fn watch_writer(&mut self, _w: u64) -> bool {
        false
    }
}

#[cfg(not(shm_loom))]
impl<T> Drop for Changes<'_, T> {
    fn drop(&mut self) {
        // Before the borrow of the lock ends: cancels (or waits out) the exit callback that
        // points at the lock's `changes` word.
        self.watch.notice = None;
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
