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
//! - a second one terminates the process at once, as if no handler were installed (for an
//!   application that never looks).
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
//! How: the handler only records the signal and writes a byte to a pipe (both
//! async-signal-safe; `errno` is preserved); a thread of this module reads the pipe, marks
//! the shutdown requested and wakes every sleeper of this process (which register while
//! they sleep, and only once the handler is installed). Other processes' sleepers on the
//! same rings wake once, find nothing changed, and sleep again. Not covered: a process
//! that installs its own handlers for these signals afterwards (the last `sigaction`
//! wins), and a sleeper that began sleeping before `on_signals` returned, which notices
//! within its sleep slice (at most about a second).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::end::{FlagRef, FlagTarget};

/// Whether `on_signals` ran: until then nothing registers and nothing is checked.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The signal that requested the shutdown (0: none yet; -1: requested by `request`).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// Whether the shutdown thread (or `request`) has acted on the request.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The pipe's write end, for the handler.
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// The flag lines this process's sleepers sleep on now.
static SLEEPERS: Mutex<Vec<Option<FlagRef>>> = Mutex::new(Vec::new());
/// `on_signals`' one-time set-up, and its outcome.
static SETUP: OnceLock<Result<(), String>> = OnceLock::new();

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
        SETUP
            .get_or_init(|| install().map_err(|e| e.to_string()))
            .clone()
            .map(|()| Shutdown(()))
            .map_err(io::Error::other)
    }

    /// Whether a shutdown was requested.
    pub fn requested(&self) -> bool {
        requested()
    }

    /// The signal that requested it (`libc::SIGINT`, `libc::SIGTERM`), if a signal did.
    pub fn signal(&self) -> Option<i32> {
        // Relaxed: a report; `requested` is what orders.
        match SIGNALLED.load(Ordering::Relaxed) {
            s if s > 0 => Some(s),
            _ => None,
        }
    }

    /// Requests the shutdown without a signal (an application's own stop command, or a
    /// test), with the same effect.
    pub fn request(&self) {
        // Relaxed: only "someone requested first"; `act` orders what matters.
        let _ = SIGNALLED.compare_exchange(0, -1, Ordering::Relaxed, Ordering::Relaxed);
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

/// While it lives, `act` wakes the sleeper on the registered flag line.
pub(crate) struct Registration(Option<usize>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            let mut t = SLEEPERS.lock().unwrap_or_else(|p| p.into_inner());
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
    let mut t = SLEEPERS.lock().unwrap_or_else(|p| p.into_inner());
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
    Registration(Some(i))
}

/// Marks the shutdown requested and wakes every registered sleeper.
fn act() {
    // SeqCst: pairs with the SeqCst load in `requested`. The wakes below bump each flag's
    // epoch with Release after this store, so a sleeper that sees a new epoch sees it.
    REQUESTED.store(true, Ordering::SeqCst);
    let t = SLEEPERS.lock().unwrap_or_else(|p| p.into_inner());
    for r in t.iter().flatten() {
        r.wake();
    }
}

/// The signal handler: records the first signal and tells the thread; a second signal
/// ends the process with the default action.
extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    // Relaxed: a signal handler may only touch lock-free atomics; the thread orders.
    if SIGNALLED
        .compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
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
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for `pipe2` to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [r, w] = fds;
    // SAFETY: `w` is the pipe's write end, just created and owned here. Non-blocking, so
    // the handler never blocks on a full pipe.
    if unsafe { libc::fcntl(w, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    PIPE_W.store(w, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("shmring-shutdown".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 16];
            loop {
                // SAFETY: `r` is the pipe's read end, owned by this thread for the
                // process's life; `buf` is a valid writable buffer of its length.
                let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    act();
                } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                {
                    return; // the write end closed (never expected) or a hard error
                }
            }
        })?;
    // Installed before the handlers: a signal that arrives between them finds sleepers
    // registering already.
    INSTALLED.store(true, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero `sigaction` is valid (empty mask, no flags); we set the
        // handler, which only uses async-signal-safe calls.
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
