//! Helpers shared by the cross-process tests: unique names, cleanup guards, and re-launching
//! this test binary as a child process that runs one `#[ignore]`d child test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A segment name no other test (or parallel test run) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "/shmring-test-{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the segment when dropped, even if the test panicked.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = shm_core::remove(&self.0);
    }
}

/// A unique segment name and the guard that removes that segment when the test ends.
pub fn scratch(tag: &str) -> (String, Cleanup) {
    let name = unique_name(tag);
    let guard = Cleanup(name.clone());
    (name, guard)
}

/// Env var telling a re-launched test binary which segment to use.
pub const NAME_VAR: &str = "SHMRING_TEST_NAME";

/// A command that re-runs this test binary, executing only the ignored test `test`.
pub fn child(test: &str, name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--ignored",
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(NAME_VAR, name)
    .stdin(Stdio::null());
    c
}

/// In a child test: the segment name, or `None` when run outside a parent (then the child
/// test does nothing).
pub fn child_name() -> Option<String> {
    std::env::var(NAME_VAR).ok()
}

/// The text after `CHILD:` (libtest may print `test name ... ` before it on the same line).
fn child_payload(line: &str) -> Option<&str> {
    line.find("CHILD:").map(|at| &line[at + "CHILD:".len()..])
}

/// Lines the child printed with the `CHILD:` prefix.
pub fn child_lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| child_payload(l).map(str::to_owned))
        .collect()
}

/// Runs a child to completion and returns its `CHILD:` lines; panics with its output if it
/// failed.
pub fn run_child(mut cmd: Command) -> Vec<String> {
    child_output_lines(cmd.output().expect("spawn child"))
}

/// The `CHILD:` lines of a child that ran to completion; panics with its output if it
/// failed.
pub fn child_output_lines(out: std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "child failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    child_lines(&out.stdout)
}

/// A spawned child whose stdout we read line by line; killed and reaped on drop.
pub struct Running {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(l) = child_payload(&line) {
                    if tx.send(l.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Running { child, lines: rx }
    }

    /// Waits (bounded) for the child to print `CHILD:<want>`.
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(_) => continue,
                Err(e) => panic!("child never printed {want:?}: {e:?}"),
            }
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Drops root to `nobody` (uid/gid 65534) in this process. Root ignores file modes, so a
/// permission test must run its checks in a child that called this.
pub fn become_nobody() {
    // SAFETY: plain syscalls; this runs in a single-threaded child test process
    // (--test-threads=1), so no other thread observes the uid change mid-way.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(65534), 0, "setgid");
        assert_eq!(libc::setuid(65534), 0, "setuid");
    }
}

/// Whether this process runs as root (the permission tests need to drop from root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so
/// timestamps printed by children compare with the parent's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Running {
    /// Waits (bounded) for the next `CHILD:` line, whatever it says.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("child printed nothing within {timeout:?}: {e:?}"))
    }

    /// The next `CHILD:` line, or `None` once the child's output has ended (it exited).
    pub fn try_next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("child printed nothing within {timeout:?}: {e:?}"),
        }
    }

    /// Waits (bounded) for the child to exit and returns whether it succeeded.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            if Instant::now() >= deadline {
                panic!("child {} did not exit within {timeout:?}", self.child.id());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Overwrites `bytes` at `offset` of the segment's file, as a hostile or buggy peer would.
pub fn poke(name: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Reads the `u64` at `offset` of segment `name`'s file (a peek at shared state a test
/// cannot otherwise see, such as an MPMC slot's sequence word).
pub fn peek_u64(name: &str, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/shm{name}")).unwrap();
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, offset).unwrap();
    u64::from_ne_bytes(w)
}

/// Waits (bounded: 30 s, then the test fails) until `done` holds for the `u32` at `offset` of
/// segment `name`'s file: how a test knows that a peer reached a state shown only in shared
/// memory, such as a waiter counted on a futex line or a lock word's waiters bit.
pub fn until_word(name: &str, offset: u64, what: &str, done: impl Fn(u32) -> bool) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/shm{name}")).unwrap();
    let t = Instant::now();
    loop {
        let mut w = [0u8; 4];
        f.read_exact_at(&mut w, offset).unwrap();
        if done(u32::from_ne_bytes(w)) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
