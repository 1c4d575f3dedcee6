//! Every system call shm-core makes. Nothing else in the crate touches `libc`.
//!
//! The wrappers return `io::Result` and keep the errno; callers turn it into the typed
//! error of their operation.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// What `fstat` tells about a segment's file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileStat {
    pub size: u64,
    pub uid: u32,
    pub mode: u32,
    pub ino: u64,
    pub dev: u64,
    /// Last modification, since the epoch (to the nanosecond: whole seconds alone would make
    /// a file just written look up to a second older than it is). `None` before 1970.
    pub mtime: Option<std::time::Duration>,
}

impl FileStat {
    fn from(st: &libc::stat) -> FileStat {
        FileStat {
            size: u64::try_from(st.st_size).unwrap_or(0),
            uid: st.st_uid,
            mode: st.st_mode,
            ino: st.st_ino,
            dev: st.st_dev,
            mtime: u64::try_from(st.st_mtime).ok().and_then(|s| {
                let ns = u32::try_from(st.st_mtime_nsec)
                    .ok()
                    .filter(|&ns| ns < 1_000_000_000)?;
                Some(std::time::Duration::new(s, ns))
            }),
        }
    }

    /// Whether this is a regular file (not a FIFO, socket, device or directory).
    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `shm_open(3)`. glibc adds `O_NOFOLLOW | O_CLOEXEC`, so a symlink planted under
/// `/dev/shm` is refused with `ELOOP`.
pub(crate) fn shm_open(name: &CStr, oflag: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe {
        libc::shm_open(
            name.as_ptr(),
            oflag | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    // SAFETY: `shm_open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_unlink(3)`.
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// `fchmod(2)`: sets the exact mode, whatever the umask did at creation.
pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `ftruncate(2)`.
pub(crate) fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a writable buffer of the right type; the kernel fills it on success.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: `fstat` returned 0, so it initialised `st`.
    Ok(FileStat::from(&unsafe { st.assume_init() }))
}

/// `lstat(2)` on a path (a symlink is described, not followed); used to check that a name
/// still refers to the file we created before unlinking it.
pub(crate) fn lstat_path(path: &CStr) -> io::Result<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a writable buffer of the right type.
    cvt(unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: `lstat` returned 0, so it initialised `st`.
    Ok(FileStat::from(&unsafe { st.assume_init() }))
}

/// `pread(2)` of exactly `buf.len()` bytes at `offset`; `Ok(false)` if the file is shorter.
/// Used to read headers of segments we do not map (a file truncated under a mapping would
/// raise SIGBUS; a short read is just an error).
pub(crate) fn pread_exact(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        let off = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), off) };
        match n {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Ok(false),
            n => done += n as usize,
        }
    }
    Ok(true)
}

/// `flock(2)` with `LOCK_SH` (`exclusive` false) or `LOCK_EX`, never blocking: `Ok(false)`
/// if another open file description holds a conflicting lock (`EWOULDBLOCK`). The lock
/// lasts as long as the open file description (every descriptor duplicated from `fd`,
/// across `fork` too), and the kernel drops it when the last one closes, however its holder
/// died.
pub(crate) fn flock_nb(fd: &OwnedFd, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: `fd` is a valid descriptor for the duration of the call.
        if unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Registers `child` to run in the child after each `fork(3)` (`pthread_atfork`).
pub(crate) fn at_fork_child(child: extern "C" fn()) {
    // Miri cannot fork (nor register fork handlers).
    if cfg!(miri) {
        return;
    }
    // SAFETY: registering a plain `extern "C"` function with no captured state.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

/// Major and minor numbers of a device id, as `/proc/<pid>/maps` prints them.
pub(crate) fn dev_major_minor(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// `mmap(2)` of a whole segment, shared.
pub(crate) fn mmap_shared(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr = NULL) aliases no Rust object;
    // `fd` is a valid descriptor for the duration of the call.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))
}

/// `munmap(2)`.
///
/// # Safety
///
/// `ptr`/`len` must be exactly a mapping returned by [`mmap_shared`] that is not used again.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller hands over a mapping of this length that nothing uses any more.
    // munmap of a valid mapping cannot fail, so the result is ignored.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// `madvise(MADV_HUGEPAGE)`.
pub(crate) fn madvise_hugepage(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: advice only; the range is a mapping we own.
    cvt(unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) }).map(drop)
}

/// Faults every page of the mapping in now, so the hot path never takes a page fault.
/// Uses `MADV_POPULATE_WRITE`/`READ` (Linux 5.14+) and falls back to touching each page
/// with a volatile read.
pub(crate) fn prefault(ptr: NonNull<u8>, len: usize, writable: bool) -> io::Result<()> {
    const MADV_POPULATE_READ: libc::c_int = 22;
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let advice = if writable {
        MADV_POPULATE_WRITE
    } else {
        MADV_POPULATE_READ
    };
    // SAFETY: advice only; the range is a mapping we own.
    let ret = unsafe { libc::madvise(ptr.as_ptr().cast(), len, advice) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    let page = page_size();
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len`, so the byte lies inside the mapping, which stays mapped for
        // the call; peers access the mapping atomically, so we read it atomically too.
        let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr(ptr.as_ptr().add(off)) };
        byte.load(std::sync::atomic::Ordering::Relaxed);
        off += page;
    }
    Ok(())
}

/// `mlock(2)`.
pub(crate) fn mlock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: locks pages of a mapping we own; no memory is accessed.
    cvt(unsafe { libc::mlock(ptr.as_ptr().cast(), len) }).map(drop)
}

/// The soft and hard `RLIMIT_MEMLOCK`, in bytes (`None` = unlimited).
pub(crate) fn memlock_limit() -> (Option<u64>, Option<u64>) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return (None, None);
    }
    let conv = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (conv(rl.rlim_cur), conv(rl.rlim_max))
}

/// The page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(sz).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// The effective uid of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Clock ticks per second, the unit of `starttime` in `/proc/<pid>/stat`.
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Reads `/proc/<pid>/stat` into `buf` without allocating (liveness checks run on polling
/// paths, which must not allocate). Returns the bytes read; `NotFound` if no such task.
pub(crate) fn read_proc_stat(pid: u32, buf: &mut [u8; 1024]) -> io::Result<usize> {
    // "/proc/" + at most 10 digits + "/stat" + NUL fits in 32 bytes.
    let mut path = [0u8; 32];
    let mut digits = [0u8; 10];
    let (mut n, mut p) = (0, pid);
    loop {
        digits[n] = b'0' + (p % 10) as u8;
        n += 1;
        p /= 10;
        if p == 0 {
            break;
        }
    }
    for (at, &b) in b"/proc/"
        .iter()
        .chain(digits[..n].iter().rev())
        .chain(b"/stat".iter())
        .enumerate()
    {
        path[at] = b;
    }
    // SAFETY: `path` is NUL-terminated (zero-initialised; at most 21 of its 32 bytes set).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `open` returned a fresh descriptor that nothing else owns; dropped below.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`, `buf.len() - len` bytes.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[len..].as_mut_ptr().cast(),
                buf.len() - len,
            )
        };
        match r {
            0 => break,
            r if r > 0 => len += r as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(len)
}

/// Whether any task has the id `pid` (`kill(pid, 0)`; a task we may not signal, `EPERM`,
/// exists too). Asked when `/proc/<pid>/stat` is missing, which an unmounted `/proc` or
/// `hidepid` also causes. `pid` must be positive: `kill` reads 0 and negative ids as
/// process groups.
pub(crate) fn task_exists(pid: u32) -> io::Result<bool> {
    // Miri has no kill(2): a missing `/proc` entry then means gone, as it did before.
    if cfg!(miri) {
        return Ok(false);
    }
    let pid = match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => p,
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    // SAFETY: signal 0 sends nothing; the kernel only checks that the task exists and
    // whether we may signal it.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        Some(libc::EPERM) => Ok(true),
        _ => Err(e),
    }
}

/// `pidfd_open(pid, 0)`: a descriptor for the process now running under `pid`, which
/// becomes readable when that process exits (whatever later reuses the pid).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // Miri has no pidfds; callers fall back to `/proc`.
    if cfg!(miri) {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall with integer arguments; on success it returns a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind a pidfd has exited (a zombie has): `poll(2)` with a zero
/// timeout. One syscall, no allocation.
pub(crate) fn pidfd_exited(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid `pollfd` that outlives the call, count 1, timeout 0.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r >= 0 {
            if p.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            return Ok(p.revents & (libc::POLLIN | libc::POLLHUP) != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to `ep` for readability, one-shot (it fires once, then stays quiet until
/// re-armed), with `token` as its data.
pub(crate) fn epoll_add_oneshot(
    ep: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: token,
    };
    // SAFETY: two valid descriptors and one `epoll_event` that outlives the call.
    let r =
        unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `fd` from `ep` (closing `fd` would too, but only once every duplicate is closed).
pub(crate) fn epoll_del(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) {
    // SAFETY: two valid descriptors; a null event is allowed for EPOLL_CTL_DEL since 2.6.9.
    unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    };
}

/// Waits (without a timeout) for events on `ep`; returns the tokens of those that fired.
pub(crate) fn epoll_wait(ep: BorrowedFd<'_>, out: &mut Vec<u64>) -> io::Result<()> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    loop {
        // SAFETY: `evs` holds 16 writable events and outlives the call.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 16, -1) };
        if n >= 0 {
            out.clear();
            // `n <= 16`, the count the kernel was given.
            out.extend(evs[..n as usize].iter().map(|e| e.u64));
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
