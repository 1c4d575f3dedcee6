//! Closing rings cleanly on SIGINT and SIGTERM.
//!
//! A process ended by a signal it does not handle runs no `Drop`: its peers see `PeerDied`
//! rather than `Disconnected`, and a name it created stays behind. [`Shutdown::on_signals`]
//! handles SIGINT and SIGTERM instead:
//!
//! - the first one *requests a shutdown*: from then on every blocking call of this process
//!   (`push`, `pop`, their `_timeout` forms) that would wait returns `Interrupted`
//!   ([`PushError::Interrupted`](crate::PushError::Interrupted) gives the value back),
//!   sleeping ones are woken at once, and [`Shutdown::requested`] turns true. Calls that
//!   need not wait still succeed, so a consumer can drain what is there first. The
//!   application's loops end, the ring handles drop, and the peers see a clean close while
//!   the creator's drop removes the name;
//! - a second signal terminates the process at once, as if no handler were installed (for
//!   an application that never looks).
//!
//! A signal the process inherited as ignored (`nohup`, a background job of a
//! non-interactive shell) stays ignored. In the child of a `fork`, nothing of this is
//! installed: the signals have their default action again, and the child calls
//! `on_signals` itself if it wants the same.
//!
//! ```no_run
//! use shm_ring::{spsc, PopError, Shutdown};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stop = Shutdown::on_signals()?; // first, before any ring thread starts
//! let ring = spsc::open_or_create::<u64>("/ticks", 4096)?;
//! let mut rx = ring.consumer()?;
//! loop {
//!     match rx.pop() {
//!         Ok(v) => println!("{v}"),
//!         Err(PopError::Interrupted) => break, // Ctrl-C or SIGTERM
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! assert!(stop.requested());
//! drop(rx); // the producer sees Disconnected, not PeerDied
//! drop(ring); // the creator removes the name
//! # Ok(()) }
//! ```
//!
//! How: the handler only counts the signal and writes a byte to a pipe (both
//! async-signal-safe; `errno` is preserved); a thread of this module reads the pipe, marks
//! the shutdown requested and wakes every sleeper of this process (which register while
//! they sleep, and only once the handler is installed). Other processes' sleepers on the
//! same rings wake once, find nothing changed, and sleep again.
//!
//! Not covered: a process that installs its own handlers for these signals afterwards
//! (the last `sigaction` wins; handlers installed before are replaced, not chained); a
//! sleeper that began sleeping before `on_signals` returned, which notices within its
//! sleep slice (about a second by default, longer with a longer liveness interval); a
//! wait that spins rather than sleeps notices at its next check (every liveness interval
//! at most); and blocking calls other than a ring's push and pop (an open waiting for a
//! name, shm-sync's locks), which go on waiting.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use crate::end::{FlagRef, FlagTarget};

/// Whether `on_signals` ran in this process: until then nothing registers and nothing is
/// checked. Cleared in the child of a fork.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The first signal that requested the shutdown (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// Signals received: the second ends the process.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// Whether the shutdown thread (or `request`) has acted on a request.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The pipe's write end, for the handler.
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// This process's registry of sleepers, made by its `on_signals` (a forked child's copy of
/// its parent's is never used: the child may have inherited its lock held).
static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());
/// `on_signals`' set-up in this process: the pid it ran in, and its outcome.
static SETUP: Mutex<Option<(u32, Result<(), String>)>> = Mutex::new(None);

/// The flag lines this process's sleepers sleep on now.
struct Registry {
    sleepers: Mutex<Vec<Option<FlagRef>>>,
}

/// This process's registry, once `on_signals` made it.
fn registry() -> Option<&'static Registry> {
    // Acquire: pairs with the Release store in `install`, so the registry is seen whole.
    let p = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null `REGISTRY` points at a leaked `Box<Registry>`, which lives for the
    // rest of the process (and of any forked child, which never frees it).
    (!p.is_null()).then(|| unsafe { &*p })
}

/// A handle on this process's signal-driven shutdown. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Shutdown(());

impl Shutdown {
    /// Handles SIGINT and SIGTERM from now on, as the [module docs](self) describe. Call it
    /// once, early (further calls return another handle on the same set-up).
    ///
    /// # Errors
    ///
    /// The OS error of creating the pipe, starting the thread or installing a handler.
    pub fn on_signals() -> io::Result<Shutdown> {
        let pid = std::process::id();
        let mut setup = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        match &*setup {
            Some((p, r)) if *p == pid => r.clone().map(|()| Shutdown(())).map_err(io::Error::other),
            _ => {
                let r = install().map_err(|e| e.to_string());
                *setup = Some((pid, r.clone()));
                r.map(|()| Shutdown(())).map_err(io::Error::other)
            }
        }
    }

    /// Whether a shutdown was requested.
    pub fn requested(&self) -> bool {
        requested()
    }

    /// The first signal that arrived (`libc::SIGINT`, `libc::SIGTERM`), if one did.
    pub fn signal(&self) -> Option<i32> {
        // Relaxed: a report; `requested` is what orders.
        match SIGNALLED.load(Ordering::Relaxed) {
            s if s > 0 => Some(s),
            _ => None,
        }
    }

    /// Requests the shutdown without a signal (an application's own stop command, or a
    /// test), with the same effect; a signal after it still counts as the first. Takes a
    /// lock: never call it from a signal handler.
    pub fn request(&self) {
        act();
    }
}

/// Whether a shutdown was requested (false until `on_signals` ran). On blocking paths only.
#[inline]
pub(crate) fn requested() -> bool {
    // Relaxed on INSTALLED: a process that never installs pays one load. SeqCst on
    // REQUESTED: pairs with the SeqCst store in `act`; a sleeper that registered after
    // `act` walked the table reads it after taking the table's lock (see `register`).
    INSTALLED.load(Ordering::Relaxed) && REQUESTED.load(Ordering::SeqCst)
}

/// In the child of a fork: nothing of the parent's set-up applies (its thread did not
/// come along, its pipe is the parent's), so the signals get their default action back
/// and nothing registers until the child calls `on_signals` itself.
extern "C" fn after_fork_in_child() {
    INSTALLED.store(false, Ordering::Relaxed);
    REQUESTED.store(false, Ordering::Relaxed);
    SIGNALLED.store(0, Ordering::Relaxed);
    SIGNALS.store(0, Ordering::Relaxed);
    PIPE_W.store(-1, Ordering::Relaxed);
    REGISTRY.store(std::ptr::null_mut(), Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `signal` with SIG_DFL is always valid (and async-signal-safe, as the
        // child of a multi-threaded fork requires).
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// While it lives, `act` wakes the sleeper on the registered flag line.
pub(crate) struct Registration(Option<(&'static Registry, usize)>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((r, i)) = self.0 {
            let mut t = r.sleepers.lock().unwrap_or_else(|p| p.into_inner());
            t[i] = None;
        }
    }
}

/// Registers a sleeper on `target`'s flag, when the handler is installed (else nothing:
/// one load). The caller checks `requested` after this, inside the sleep's re-check, so a
/// request either finds it in the table or is seen by that check.
pub(crate) fn register(target: &FlagTarget<'_>) -> Registration {
    // Relaxed: a sleeper that misses a concurrent install notices within its slice.
    if !INSTALLED.load(Ordering::Relaxed) {
        return Registration(None);
    }
    let Some(reg) = registry() else {
        return Registration(None);
    };
    let mut t = reg.sleepers.lock().unwrap_or_else(|p| p.into_inner());
    let r = target.to_ref();
    let i = match t.iter().position(Option::is_none) {
        Some(i) => {
            t[i] = Some(r);
            i
        }
        None => {
            t.push(Some(r));
            t.len() - 1
        }
    };
    Registration(Some((reg, i)))
}

/// Marks the shutdown requested and wakes every registered sleeper.
fn act() {
    // SeqCst: pairs with the SeqCst load in `requested`. The wakes below bump each flag's
    // epoch with Release after this store, so a sleeper that sees a new epoch sees it.
    REQUESTED.store(true, Ordering::SeqCst);
    if let Some(reg) = registry() {
        let t = reg.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        for r in t.iter().flatten() {
            r.wake();
        }
    }
}

/// The signal handler: records the first signal and tells the thread; a second signal
/// ends the process with the default action.
extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    // Relaxed: a signal handler may only touch lock-free atomics; the thread orders.
    let _ = SIGNALLED.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
    if SIGNALS.fetch_add(1, Ordering::Relaxed) > 0 {
        // SAFETY: `signal` and `raise` are async-signal-safe; SIG_DFL for a signal is
        // always valid. With the default action restored, `raise` ends the process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    let byte = sig as u8;
    // SAFETY: `write` is async-signal-safe; `byte` is a valid one-byte buffer; a failed
    // write (a full pipe, which a second byte would find) changes nothing.
    unsafe {
        libc::write(
            PIPE_W.load(Ordering::Relaxed),
            std::ptr::addr_of!(byte).cast(),
            1,
        );
        *libc::__errno_location() = errno;
    }
}

fn install() -> io::Result<()> {
    static AT_FORK: Once = Once::new();
    // SAFETY: registering a plain `extern "C"` function with no captured state; it only
    // stores atomics and calls `signal`, as the child of a fork may.
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    });
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for `pipe2` to fill. Non-blocking, so the
    // handler never blocks on a full pipe (the reader blocks in `poll`, not `read`).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by `pipe2` and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let registry: &'static Registry = Box::leak(Box::new(Registry {
        sleepers: Mutex::new(Vec::new()),
    }));
    // Release: pairs with the Acquire load in `registry`.
    REGISTRY.store(std::ptr::from_ref(registry).cast_mut(), Ordering::Release);
    std::thread::Builder::new()
        .name("shmring-shutdown".to_owned())
        .spawn(move || {
            // Owns the read end for the thread's (the process's) life.
            let r = r;
            let mut buf = [0u8; 16];
            loop {
                let mut p = libc::pollfd {
                    fd: r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `p` is one valid `pollfd`; -1 waits without a timeout.
                let ready = unsafe { libc::poll(&mut p, 1, -1) };
                if ready < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // SAFETY: `r` is the pipe's read end; `buf` is a valid writable buffer of
                // its length. Non-blocking: an empty pipe answers EAGAIN.
                let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    act();
                } else if n == 0 || ready < 0 {
                    return; // the write end closed (never expected) or a hard error
                }
            }
        })?;
    // Installed before the handlers: a signal that arrives between them finds sleepers
    // registering already.
    INSTALLED.store(true, Ordering::Relaxed);
    // The handler's end; kept open for the process's life (the handler may run any time).
    PIPE_W.store(w.into_raw_fd(), Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero `sigaction` is valid (empty mask, no flags) for `sigaction`
        // to fill with the current disposition.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only reads the current one into `old`.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if old.sa_sigaction == libc::SIG_IGN {
            continue; // inherited as ignored (nohup, a background job): keep ignoring it
        }
        // SAFETY: as above; we set the handler, which only uses async-signal-safe calls.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SA_RESTART: the application's own blocking syscalls (reads, accepts) resume
        // rather than fail with EINTR; the rings' sleepers are woken by the thread.
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: `sa` is initialised; a null old-action pointer is allowed.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
