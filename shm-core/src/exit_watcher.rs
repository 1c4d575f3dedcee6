//! The process's exit watcher: one thread, started by the first [`ExitWatch::on_exit`]
//! (`crate::ExitWatch`), that sleeps in `epoll_wait(2)` over the pidfds of every pending
//! notice and runs a notice's callback when its process exits.
//!
//! Each notice holds a duplicate of its watch's pidfd, registered one-shot under a token of
//! its own; the table of pending notices is behind one lock, which the thread holds while
//! it runs callbacks, so a notice dropped concurrently is either removed before its
//! callback runs or after it ran, never during.
//!
//! A forked child inherits the table but not the thread: a watcher belongs to the process
//! that started it ([`ThisProcess`]), and a child starts its own.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ThisProcess;

type Callback = Box<dyn FnOnce() + Send>;

struct Entry {
    fd: OwnedFd,
    callback: Callback,
    fired: Arc<AtomicBool>,
}

#[derive(Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
}

struct Watcher {
    ep: OwnedFd,
    origin: ThisProcess,
    table: Mutex<Table>,
}

/// The current process's watcher, if started.
static WATCHER: Mutex<Option<Arc<Watcher>>> = Mutex::new(None);

/// Locks the process-wide `WATCHER` slot, ignoring poison. Gives up after a bounded wait: a
/// child forked while another thread of its parent held the lock would otherwise wait
/// forever. (A watcher's own table is locked plainly: only its own process uses it.)
fn lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    for i in 0..10_000u32 {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                if i < 100 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
    None
}

fn watcher() -> Option<Arc<Watcher>> {
    let mut g = lock(&WATCHER)?;
    if let Some(w) = g.as_ref().filter(|w| w.origin.is_current()) {
        return Some(w.clone());
    }
    // None yet, or our parent's (inherited through fork, without its thread): start ours.
    // A parent's is leaked in the child: its descriptors are the child's copies, and
    // closing them would touch nothing of the parent's.
    if let Some(old) = g.take() {
        std::mem::forget(old);
    }
    let w = Arc::new(Watcher {
        ep: crate::sys::epoll_create().ok()?,
        origin: ThisProcess::now(),
        table: Mutex::new(Table::default()),
    });
    let run = w.clone();
    std::thread::Builder::new()
        .name("shmring-exits".into())
        .spawn(move || serve(&run))
        .ok()?;
    *g = Some(w.clone());
    Some(w)
}

fn serve(w: &Watcher) {
    let mut tokens = Vec::new();
    loop {
        if crate::sys::epoll_wait(w.ep.as_fd(), &mut tokens).is_err() {
            // Cannot happen with a valid epoll descriptor (interruptions are retried); if
            // it does, stop, and leave the slot empty so that the next registration starts
            // a new watcher. This one's pending notices never fire: their owners' own
            // checks (a timer) still run.
            if let Some(mut g) = lock(&WATCHER) {
                if g.as_ref().is_some_and(|x| std::ptr::eq(&**x, w)) {
                    *g = None;
                }
            }
            return;
        }
        // The table is only ever locked by this process's own threads (a forked child
        // starts its own watcher), so a plain lock cannot wait forever.
        let mut t = w.table.lock().unwrap_or_else(|p| p.into_inner());
        for token in &tokens {
            if let Some(e) = t.entries.remove(token) {
                crate::sys::epoll_del(w.ep.as_fd(), e.fd.as_fd());
                // SeqCst: pairs with the SeqCst load in `Notice::fired`; stored before the
                // callback's change of whatever its sleeper waits on, so a sleeper that
                // checks `fired` after reading that word misses neither.
                e.fired.store(true, Ordering::SeqCst);
                (e.callback)();
            }
        }
    }
}

/// Registers `callback` to run once when the process of pidfd `fd` exits.
pub(crate) fn register(fd: BorrowedFd<'_>, callback: Callback) -> Option<crate::ExitNotice> {
    let w = watcher()?;
    let fd = fd.try_clone_to_owned().ok()?;
    let fired = Arc::new(AtomicBool::new(false));
    let mut t = w.table.lock().unwrap_or_else(|p| p.into_inner());
    let token = t.next;
    t.next += 1;
    // Added under the table lock: the thread cannot see the event before the entry.
    crate::sys::epoll_add_oneshot(w.ep.as_fd(), fd.as_fd(), token).ok()?;
    t.entries.insert(
        token,
        Entry {
            fd,
            callback,
            fired: fired.clone(),
        },
    );
    drop(t);
    Some(crate::ExitNotice {
        inner: Notice {
            token,
            watcher: w,
            fired,
        },
    })
}

/// The registration behind an [`ExitNotice`](crate::ExitNotice).
pub(crate) struct Notice {
    token: u64,
    watcher: Arc<Watcher>,
    fired: Arc<AtomicBool>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("token", &self.token)
            .field("fired", &self.fired())
            .finish()
    }
}

impl Notice {
    pub fn fired(&self) -> bool {
        // SeqCst: pairs with the SeqCst store in `serve`.
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Notice {
    fn drop(&mut self) {
        if !self.watcher.origin.is_current() {
            return; // a forked child's copy: the table is the parent's
        }
        let mut t = self.watcher.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.entries.remove(&self.token) {
            crate::sys::epoll_del(self.watcher.ep.as_fd(), e.fd.as_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ExitWatch, ProcessId};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A child process, killed and reaped on drop.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Child {
        Child(
            std::process::Command::new("sleep")
                .arg("0.2")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    #[test]
    fn a_notice_fires_when_its_process_exits_and_not_after_it_is_dropped() {
        let (mut child, mut other) = (sleeper(), sleeper());
        let Some(w) = ExitWatch::open(child.0.id(), |_| true) else {
            return; // no pidfds here: nothing to test
        };
        let w2 = ExitWatch::open(other.0.id(), |_| true).expect("pidfd");
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let n = w.on_exit(move || tx.send(1).unwrap()).expect("a watcher");
        let cancelled = w2.on_exit(move || tx2.send(2).unwrap()).expect("a watcher");
        drop(cancelled);
        assert!(!n.fired());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert!(n.fired());
        child.0.wait().unwrap();
        other.0.wait().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        // A notice on a process that runs (ourselves) does not fire.
        let me = ProcessId::current();
        let w3 = ExitWatch::open(me.pid, |_| true).expect("pidfd on ourselves");
        let n3 = w3.on_exit(|| {}).expect("a watcher");
        std::thread::sleep(Duration::from_millis(50));
        assert!(!n3.fired(), "we are still running");
    }
}
