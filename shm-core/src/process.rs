//! Process identity that survives pid reuse: a pid plus the process start time.
//!
//! Linux reuses pids quickly (`pid_max` can be as low as 32768), so a bare pid says
//! nothing about whether the process that wrote it is still alive. [`ProcessId`] pairs the
//! pid with the `starttime` field of `/proc/<pid>/stat` (clock ticks since boot), which a
//! recycled pid will not match.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

/// Bumped in the child of every `fork(3)` (by a `pthread_atfork` handler registered the
/// first time [`ThisProcess::now`] runs).
static FORK_EPOCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The process a handle was made in, told apart from a child that inherited a copy of the
/// handle by `fork` at the cost of one load from a static (no `getpid` syscall): handles
/// that name an endpoint in shared memory keep one and refuse to act in any other process.
///
/// Forks through libc's `fork(3)` (and `posix_spawn`, which execs at once) are seen; a raw
/// `clone(2)` that copies the address space without running `pthread_atfork` handlers is
/// not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThisProcess(u32);

impl ThisProcess {
    /// The calling process.
    pub fn now() -> ThisProcess {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| crate::sys::at_fork_child(after_fork_in_child));
        ThisProcess(FORK_EPOCH.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether the calling process is still the one `self` was made in (not a forked child).
    #[inline]
    pub fn is_current(&self) -> bool {
        // Relaxed: the epoch only ever changes in a new process, on its only thread, before
        // any of its code runs; every later load in that process sees it.
        FORK_EPOCH.load(std::sync::atomic::Ordering::Relaxed) == self.0
    }
}

/// A process, named by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// `starttime` from `/proc/<pid>/stat`: clock ticks after boot at which it started.
    pub start_time: u64,
}

/// Whether a recorded process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The same process (pid and start time) is running.
    Alive,
    /// It exited (or is a zombie), or its pid now belongs to another process.
    Dead,
    /// `/proc` could not tell (not mounted, or hidden by `hidepid`); treat as alive.
    Unknown,
}

/// What [`ProcessId::lookup`] found under a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A live process (or thread) with this identity.
    Running(ProcessId),
    /// Nothing runs under the pid (or only a zombie).
    Gone,
    /// `/proc` could not tell.
    Unknown,
}

struct StatFields {
    state: u8,
    /// Live threads in the thread group (field 20).
    num_threads: u64,
    start_time: u64,
}

impl StatFields {
    /// Whether the task ran its last instruction. A zombie (`Z`) thread-group leader whose
    /// group still has other live threads (its main thread exited alone) is, as a
    /// *process*, still running; as a *thread*, it is gone.
    fn exited(&self, as_process: bool) -> bool {
        match self.state {
            b'X' => true,
            b'Z' => !(as_process && self.num_threads > 1),
            _ => false,
        }
    }
}

fn read_stat(pid: u32) -> Result<Option<StatFields>, ()> {
    // A stack buffer, no allocation: this runs on polling paths. The line is at most a few
    // hundred bytes (the command name is capped at 64).
    let mut buf = [0u8; 1024];
    let len = match crate::sys::read_proc_stat(pid, &mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    let text = &buf[..len];
    // The command name (field 2) is in parentheses and may itself contain spaces and
    // parentheses, so parse from the last ')'.
    let close = text.iter().rposition(|&b| b == b')').ok_or(())?;
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|_| ())?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; num_threads is field 20 and starttime field 22, i.e. the 18th
    // and the 20th after the ')'.
    let state = fields.next().and_then(|s| s.bytes().next()).ok_or(())?;
    let num_threads = fields.nth(16).and_then(|s| s.parse().ok()).ok_or(())?;
    let start_time = fields.nth(1).and_then(|s| s.parse().ok()).ok_or(())?;
    Ok(Some(StatFields {
        state,
        num_threads,
        start_time,
    }))
}

/// `/proc/<pid>/stat` is missing: the task is gone, unless the kernel still knows it (then
/// `/proc` is not mounted here, or `hidepid` hides the entry, and nobody can tell who runs
/// under the id: Unknown, which callers treat as alive).
fn missing_means_gone(pid: u32) -> bool {
    matches!(crate::sys::task_exists(pid), Ok(false))
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> ProcessId {
        static ME: OnceLock<(u32, u64)> = OnceLock::new();
        let pid = std::process::id();
        // A forked child has a new pid: recompute if the cached one is not ours.
        if let Some(&(p, start_time)) = ME.get() {
            if p == pid {
                return ProcessId { pid, start_time };
            }
        }
        let start_time = Self::start_time_of(pid);
        // A failed read (0) is not cached: the next call tries again.
        if start_time != 0 {
            let _ = ME.set((pid, start_time));
        }
        ProcessId { pid, start_time }
    }

    fn start_time_of(pid: u32) -> u64 {
        match read_stat(pid) {
            Ok(Some(f)) => f.start_time,
            _ => 0,
        }
    }

    /// The process with this pid now, if there is one.
    pub fn of_pid(pid: u32) -> Option<ProcessId> {
        match read_stat(pid) {
            Ok(Some(f)) => Some(ProcessId {
                pid,
                start_time: f.start_time,
            }),
            _ => None,
        }
    }

    /// What runs under the thread id `tid` now (`/proc/<tid>/stat` exists for every
    /// thread), where `start_time` is the thread's own start: a lock holder's identity. A
    /// process's main thread that exited alone is gone; see [`lookup_process`] for the
    /// process.
    ///
    /// [`lookup_process`]: Self::lookup_process
    pub fn lookup(tid: u32) -> Lookup {
        Self::lookup_as(tid, false)
    }

    /// What process runs under `pid` now: as [`lookup`](Self::lookup), except that a
    /// process whose main thread exited while other threads still run is running.
    pub fn lookup_process(pid: u32) -> Lookup {
        Self::lookup_as(pid, true)
    }

    fn lookup_as(pid: u32, as_process: bool) -> Lookup {
        if pid == 0 || pid > i32::MAX as u32 {
            return Lookup::Gone;
        }
        match read_stat(pid) {
            Ok(None) if missing_means_gone(pid) => Lookup::Gone,
            Ok(None) => Lookup::Unknown,
            Ok(Some(f)) if f.exited(as_process) => Lookup::Gone,
            Ok(Some(f)) => Lookup::Running(ProcessId {
                pid,
                start_time: f.start_time,
            }),
            Err(()) => Lookup::Unknown,
        }
    }

    /// Whether this process is still running. A zombie counts as dead: it will never
    /// run another instruction (unless only its main thread exited and others run). A
    /// start time of 0 means the recorder could not read its own: then only a pid that
    /// names nothing (or a zombie) proves death.
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return Liveness::Dead;
        }
        match read_stat(self.pid) {
            Ok(None) if missing_means_gone(self.pid) => Liveness::Dead,
            Ok(None) => Liveness::Unknown,
            Ok(Some(f)) if f.exited(true) => Liveness::Dead,
            Ok(Some(_)) if self.start_time == 0 => Liveness::Unknown,
            Ok(Some(f)) if f.start_time != self.start_time => Liveness::Dead,
            Ok(Some(_)) => Liveness::Alive,
            Err(()) => Liveness::Unknown,
        }
    }

    /// `liveness() == Liveness::Dead`.
    pub fn is_dead(&self) -> bool {
        self.liveness() == Liveness::Dead
    }

    /// The low 32 bits of this start time, as identity words in shared memory record it:
    /// never 0 for a known start time (a real start whose low bits are 0 records as 1), so
    /// that a recorded 0 always means "the holder could not read its own start time".
    /// Recorders and checkers must both use this.
    pub fn start_low32(&self) -> u32 {
        match self.start_time as u32 {
            0 if self.start_time != 0 => 1,
            lo => lo,
        }
    }

    /// The start time in seconds after boot.
    pub fn start_secs_after_boot(&self) -> f64 {
        self.start_time as f64 / crate::sys::clock_ticks() as f64
    }
}

/// A cheap, repeatable check of whether one process has exited, for polling loops: a
/// pidfd, opened once and verified against the process's identity, after which each check
/// is one `poll(2)` call instead of a `/proc` read (open, read, close).
///
/// The descriptor names the process itself, not its pid: a pid reused after the process
/// exits does not fool it. It holds one file descriptor while it lives.
#[derive(Debug)]
pub struct ExitWatch {
    fd: OwnedFd,
}

impl ExitWatch {
    /// Watches the process now running under `pid`, if `is_it` accepts its identity. The
    /// descriptor is opened first, the identity read from `/proc` next, and the descriptor's
    /// process is then checked to be still running: it held the pid over the whole
    /// interval, so the identity read was its own. `None` if pidfds are unavailable (Linux
    /// before 5.3, a seccomp filter, Miri), nothing (or a zombie) runs under `pid`, `/proc`
    /// cannot tell, `is_it` refuses, or the process exited meanwhile: callers then fall
    /// back to [`ProcessId::lookup`].
    pub fn open(pid: u32, is_it: impl FnOnce(&ProcessId) -> bool) -> Option<ExitWatch> {
        if pid == 0 || pid > i32::MAX as u32 {
            return None;
        }
        let fd = crate::sys::pidfd_open(pid).ok()?;
        match ProcessId::lookup_process(pid) {
            Lookup::Running(p) if is_it(&p) => {}
            _ => return None,
        }
        match crate::sys::pidfd_exited(fd.as_fd()) {
            Ok(false) => Some(ExitWatch { fd }),
            _ => None,
        }
    }

    /// Whether the process has exited (a zombie counts as exited). `None` if the check
    /// itself failed (then ask `/proc`).
    pub fn exited(&self) -> Option<bool> {
        crate::sys::pidfd_exited(self.fd.as_fd()).ok()
    }

    /// Runs `on_exit` once, on this process's exit-watcher thread, soon after the watched
    /// process exits (at once if it has already), unless the returned [`ExitNotice`] is
    /// dropped first. This is how a sleeper learns of a peer's death without a timer: the
    /// callback wakes it.
    ///
    /// The watcher is one thread per process, started by the first call, sleeping in
    /// `epoll_wait(2)` over the pidfds of every notice; each notice holds a duplicate of
    /// this watch's descriptor until it is dropped or fires. `None` if the thread or the
    /// epoll set cannot be had (the caller then polls, as before), and in a child forked
    /// while another thread was registering a notice.
    ///
    /// `on_exit` runs with the watcher's lock held: it must be short and must not create
    /// or drop a notice.
    pub fn on_exit(&self, on_exit: impl FnOnce() + Send + 'static) -> Option<ExitNotice> {
        crate::exit_watcher::register(self.fd.as_fd(), Box::new(on_exit))
    }
}

/// A pending [`ExitWatch::on_exit`] callback; dropping it cancels the callback (and closes
/// its descriptor) if it has not run.
#[derive(Debug)]
pub struct ExitNotice {
    pub(crate) inner: crate::exit_watcher::Notice,
}

impl ExitNotice {
    /// Whether the callback has run (the process exited). `SeqCst`: the flag is set
    /// before the callback runs, so a sleeper that reads a value of its wake-up word and
    /// then finds this `false` is woken by the callback's change of that word.
    pub fn fired(&self) -> bool {
        self.inner.fired()
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (started {:.2} s after boot)",
            self.pid,
            self.start_secs_after_boot()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(ProcessId::of_pid(me.pid), Some(me));
    }

    #[test]
    fn wrong_start_time_is_dead() {
        let me = ProcessId::current();
        let other = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert_eq!(other.liveness(), Liveness::Dead);
        assert_eq!(
            ProcessId {
                pid: 0,
                start_time: 0
            }
            .liveness(),
            Liveness::Dead
        );
    }

    #[test]
    fn exit_watch_sees_a_child_exit_and_refuses_a_wrong_identity() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let id = ProcessId::of_pid(child.id()).expect("the child runs");
        let w = ExitWatch::open(id.pid, |p| *p == id).expect("pidfds work here");
        assert_eq!(w.exited(), Some(false));
        assert!(
            ExitWatch::open(id.pid, |p| p.start_time == id.start_time + 1).is_none(),
            "a different start time is another process"
        );
        child.kill().unwrap();
        // Not reaped yet: a zombie has exited.
        let t = std::time::Instant::now();
        while w.exited() != Some(true) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "never saw the exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert_eq!(w.exited(), Some(true));
        // Reaped: nothing runs under the pid, or another process that is not `id`.
        assert!(ExitWatch::open(id.pid, |p| *p == id).is_none());
    }

    /// Keeps a forked child's process alive for a while after its main thread exits.
    extern "C" fn linger(_: *mut libc::c_void) -> *mut libc::c_void {
        let ts = libc::timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        // SAFETY: plain syscalls in the forked child; `ts` outlives the call.
        unsafe {
            libc::nanosleep(&ts, std::ptr::null_mut());
            libc::_exit(0)
        }
    }

    #[test]
    fn a_process_whose_main_thread_exited_alone_still_runs() {
        // SAFETY: fork leaves the child with this thread alone, whatever other threads the
        // test harness runs. Besides raw syscalls, the child calls only `pthread_create`,
        // which POSIX does not list as async-signal-safe but glibc supports after fork (its
        // fork handling resets the thread-stack and allocator locks in the child); the new
        // thread makes only raw syscalls. No Rust code that could allocate or lock runs in
        // the child.
        let pid = unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let mut t: libc::pthread_t = std::mem::zeroed();
                if libc::pthread_create(&mut t, std::ptr::null(), linger, std::ptr::null_mut()) != 0
                {
                    libc::_exit(1);
                }
                // Ends this (the main) thread only; `linger` keeps the process alive.
                libc::syscall(libc::SYS_exit, 0);
                libc::_exit(2);
            }
            pid
        };
        assert!(pid > 0, "fork failed");
        let pid = pid as u32;
        let t = std::time::Instant::now();
        let zombie_leader = loop {
            let mut buf = [0u8; 1024];
            let n = crate::sys::read_proc_stat(pid, &mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.rsplit(')').next().unwrap().split_whitespace().next() == Some("Z") {
                break text;
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "{text}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        // As a thread (a lock holder), its main thread is gone; as a process (a ring end, a
        // segment's creator), it still runs.
        assert_eq!(ProcessId::lookup(pid), Lookup::Gone, "{zombie_leader}");
        let id = match ProcessId::lookup_process(pid) {
            Lookup::Running(id) => id,
            other => panic!("{other:?}: {zombie_leader}"),
        };
        assert_eq!(id.liveness(), Liveness::Alive);
        assert!(ExitWatch::open(pid, |p| *p == id).is_some());
        // SAFETY: our own child, not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        assert_eq!(id.liveness(), Liveness::Dead);
    }

    #[test]
    fn start_low32_is_never_zero_for_a_known_start() {
        let at = |start_time| ProcessId { pid: 1, start_time }.start_low32();
        assert_eq!(at(0), 0);
        assert_eq!(at(1 << 32), 1);
        assert_eq!(at((1 << 32) + 5), 5);
        assert_eq!(at(7), 7);
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of_pid(child.id()).expect("a child we have not reaped exists");
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Dead);
    }
}
