//! Every system call shm-sync makes: futex operations (always process-shared: never
//! `FUTEX_PRIVATE_FLAG`), `gettid`, and the monotonic clock.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `FUTEX_WAIT` (shared): sleeps while `*word == expected`, for at most `timeout`
/// (a relative time measured on `CLOCK_MONOTONIC`). Returns the errno on failure
/// (`EAGAIN` value changed, `ETIMEDOUT`, `EINTR`).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<()> {
    futex_wait_at(word.as_ptr(), expected, timeout)
}

/// The 32 low-order bits of a 64-bit atomic, as a futex word: the word shm-ring positions
/// are waited on (a position that changes always changes its low half, since it moves by
/// less than 2^32 between a wait and its check).
pub(crate) fn low_half(word: &AtomicU64) -> *mut u32 {
    let base = word.as_ptr().cast::<u32>();
    if cfg!(target_endian = "little") {
        base
    } else {
        base.wrapping_add(1)
    }
}

/// `FUTEX_WAIT` on the low half of a 64-bit word.
pub(crate) fn futex_wait_low(
    word: &AtomicU64,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<()> {
    futex_wait_at(low_half(word), expected, timeout)
}

/// `FUTEX_WAKE` on the low half of a 64-bit word.
pub(crate) fn futex_wake_low(word: &AtomicU64, n: u32) -> u32 {
    futex_wake_at(low_half(word), n)
}

fn futex_wait_at(addr: *mut u32, expected: u32, timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `addr` comes from a live atomic borrowed by our caller, so it is a valid,
    // aligned u32 for the call; the kernel only reads it (atomically). `ts_ptr` is null or
    // points to a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `FUTEX_WAKE` (shared): wakes up to `n` waiters; returns how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    futex_wake_at(word.as_ptr(), n)
}

fn futex_wake_at(addr: *mut u32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32);
    // SAFETY: `addr` comes from a live atomic borrowed by our caller; FUTEX_WAKE only uses
    // it as a key and does not access memory beyond it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        )
    };
    u32::try_from(r).unwrap_or(0)
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`: lets other processes' heavy
/// barriers reach this process's threads.
pub(crate) fn membarrier_register() -> io::Result<()> {
    // Miri has no membarrier: unregistered, publishers use real fences (see `barrier`).
    if cfg!(miri) {
        return Err(io::ErrorKind::Unsupported.into());
    }
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: a full barrier on every running thread of
/// every registered process.
pub(crate) fn membarrier_global() -> io::Result<()> {
    // Miri has no membarrier: the SeqCst fences of `barrier` pair up instead.
    if cfg!(miri) {
        return Err(io::ErrorKind::Unsupported.into());
    }
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const FUTEX_LOCK_PI2: libc::c_int = 13;

/// `FUTEX_LOCK_PI2` (shared): takes a priority-inheritance lock word for the calling
/// thread, sleeping in the kernel until `deadline` (an absolute `CLOCK_MONOTONIC` time).
pub(crate) fn futex_lock_pi(word: &AtomicU32, deadline: Option<libc::timespec>) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if crate::fault::no_lock_pi2() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let ts_ptr = deadline
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 that the kernel reads and writes atomically;
    // `ts_ptr` is null or points to a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            FUTEX_LOCK_PI2,
            0u32,
            ts_ptr,
            0usize,
            0u32,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const FUTEX_TRYLOCK_PI: libc::c_int = 8;

/// `FUTEX_TRYLOCK_PI` (shared): takes a PI lock word for the calling thread if the kernel,
/// which knows more than the word shows (a dead owner's lock it is handing to a queued
/// waiter, say), finds it free; never sleeps. `EWOULDBLOCK`/`EAGAIN` if held or in
/// hand-off, `ESRCH` if the word names a task that no longer exists and the kernel keeps
/// no state for it, `EDEADLK` if the word names the calling thread.
pub(crate) fn futex_trylock_pi(word: &AtomicU32) -> io::Result<()> {
    futex_pi_op(word, FUTEX_TRYLOCK_PI)
}

/// A PI futex operation on `word` that takes no timeout and no value (`FUTEX_TRYLOCK_PI`,
/// `FUTEX_UNLOCK_PI`), shared (never `FUTEX_PRIVATE_FLAG`).
fn futex_pi_op(word: &AtomicU32, op: libc::c_int) -> io::Result<()> {
    // SAFETY: `word` is a valid, aligned u32 that the kernel reads and writes atomically;
    // the other arguments are plain integers (no timeout, no second word).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            0u32,
            0usize,
            0usize,
            0u32,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether this kernel has `FUTEX_LOCK_PI2` (Linux 5.14+): a `FUTEX_LOCK_PI2` on a private
/// word that already names the calling thread answers `EDEADLK` where it exists and
/// `ENOSYS` where it does not, and changes nothing either way.
///
/// Only `ENOSYS` (the operation does not exist) answers "no"; a passing failure (`ENOMEM`,
/// `EINTR`) is asked again, a few times.
pub(crate) fn lock_pi2_supported() -> bool {
    let word = AtomicU32::new(gettid());
    for _ in 0..4 {
        match futex_lock_pi(&word, None).map_err(|e| e.raw_os_error()) {
            Err(Some(libc::EDEADLK)) => return true,
            Err(Some(libc::ENOSYS)) => return false,
            _ => std::thread::yield_now(),
        }
    }
    false
}

/// `FUTEX_UNLOCK_PI` (shared): hands a contended PI lock to its top waiter.
pub(crate) fn futex_unlock_pi(word: &AtomicU32) -> io::Result<()> {
    futex_pi_op(word, libc::FUTEX_UNLOCK_PI)
}

/// `CLOCK_MONOTONIC` now.
pub(crate) fn monotonic_now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

/// `CLOCK_MONOTONIC` now plus `d`.
pub(crate) fn monotonic_after(d: Duration) -> libc::timespec {
    let now = monotonic_now();
    let add = timespec(d);
    let mut sec = now.tv_sec.saturating_add(add.tv_sec);
    let mut nsec = now.tv_nsec + add.tv_nsec;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Registers `child` to run in the child after `fork`, so per-thread caches of thread ids
/// are refreshed there.
pub(crate) fn at_fork_child(child: extern "C" fn()) {
    // Miri cannot fork (nor register fork handlers).
    if cfg!(miri) {
        return;
    }
    // SAFETY: registering a plain `extern "C"` function with no captured state.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

/// An entry of `futex_waitv(2)`'s array (`struct futex_waitv`, linux/futex.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: a 32-bit futex word (and, without `FUTEX2_PRIVATE`, a shared one).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The most words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
pub(crate) const FUTEX_WAITV_MAX: usize = 128;

/// `futex_waitv`'s number (the same on every 64-bit architecture: asm-generic 449).
const SYS_FUTEX_WAITV: libc::c_long = 449;

/// `futex_waitv(2)` (Linux >= 5.16), shared: sleeps while every `*word == expected`, until
/// a `FUTEX_WAKE` on any of them, for at most `timeout` (turned into the absolute
/// `CLOCK_MONOTONIC` deadline the call takes). Returns the index of the word that was
/// woken; the errno on failure (`EAGAIN`: a word did not hold its value, `ETIMEDOUT`,
/// `EINTR`, `ENOSYS` on older kernels, `EINVAL` for more than [`FUTEX_WAITV_MAX`] words).
pub(crate) fn futex_waitv(
    words: &[(&AtomicU32, u32)],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if words.len() > FUTEX_WAITV_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut v = [FutexWaitv {
        val: 0,
        uaddr: 0,
        flags: 0,
        reserved: 0,
    }; FUTEX_WAITV_MAX];
    for (e, (word, expected)) in v.iter_mut().zip(words) {
        *e = FutexWaitv {
            val: u64::from(*expected),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        };
    }
    let deadline = timeout.map(monotonic_after);
    let ts_ptr = deadline
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `v` holds `words.len()` initialized entries, each naming a live, aligned
    // 32-bit atomic borrowed by our caller for the call (the kernel only reads the words,
    // atomically); `ts_ptr` is null or points to a live timespec; flags 0 and
    // CLOCK_MONOTONIC are what the call documents.
    let r = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            v.as_ptr(),
            words.len() as libc::c_uint,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
