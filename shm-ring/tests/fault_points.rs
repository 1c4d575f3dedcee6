//! A ring end dies at each named step of attaching, publishing, reading and detaching
//! (feature `fault-injection`: `SHMRING_FAULT=<point>:<n>` SIGKILLs the child the `n`-th
//! time it reaches `<point>`). The survivor must see what
//! CRASH-SEMANTICS.md says, within its bound, lose nothing, and never hang.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use shm_ring::mpmc::{self, MAX_ENDPOINTS};
use shm_ring::{spsc, EndStatus, PopError, PushError, RingError, LIVENESS_INTERVAL};

/// `spsc` or `mpmc`.
const KIND: &str = "SHMRING_KIND";
/// `producer` or `consumer`.
const SIDE: &str = "SHMRING_SIDE";
/// Items to push (0, 1, ...) or to pop after attaching.
const COUNT: &str = "SHMRING_COUNT";
/// Milliseconds to sleep between attaching and the work, so that the parent is parked by then.
const DELAY: &str = "SHMRING_DELAY_MS";
/// Set: after the work, hold the end until killed.
const HOLD: &str = "SHMRING_HOLD";
/// Milliseconds to sleep after the work and before dropping the end, so that the parent is
/// parked again when the end closes.
const LINGER: &str = "SHMRING_LINGER_MS";
/// Longer than any documented bound: a survivor still blocked after this has hung.
const HANG: Duration = Duration::from_secs(5);
/// What the tests accept as "within a slice" of [`LIVENESS_INTERVAL`] on a loaded 2-core CI
/// machine (the figure each test prints is the measurement; this bound only catches a hang).
const NOTICED: Duration = Duration::from_secs(1);

/// A child of this file: attaches to `name` as `side` of a `kind` ring, sleeps `delay_ms`,
/// pushes or pops `count` items, then drops its end; dies at `fault` (`<point>:<n>`).
fn end(kind: &str, side: &str, name: &str, count: u64, delay_ms: u64, fault: &str) -> Command {
    let mut c = child("child_fault", name);
    c.env(KIND, kind)
        .env(SIDE, side)
        .env(COUNT, count.to_string())
        .env(DELAY, delay_ms.to_string());
    if !fault.is_empty() {
        c.env("SHMRING_FAULT", fault);
    }
    c
}

/// A child that attaches as `side` and holds its end until killed.
fn holder(kind: &str, side: &str, name: &str) -> Running {
    let mut c = end(kind, side, name, 0, 0, "");
    c.env(HOLD, "1");
    let mut r = Running::spawn(c);
    r.expect_line("holding", Duration::from_secs(30));
    r
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_fault() {
    let Some(name) = child_name() else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let count: u64 = var(COUNT).parse().unwrap_or(0);
    let delay = Duration::from_millis(var(DELAY).parse().unwrap_or(0));
    let linger = Duration::from_millis(var(LINGER).parse().unwrap_or(0));
    let hold = || {
        if std::env::var_os(HOLD).is_some() {
            println!("CHILD:holding");
            std::thread::sleep(Duration::from_secs(60));
        }
    };
    // Attach, sleep `delay`, push 0.. (or pop and print) `count` items, hold if asked.
    macro_rules! produce {
        ($ring:ident, $name:expr, $count:expr, $delay:expr) => {{
            let mut tx = $ring::open::<u64>($name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep($delay);
            for i in 0..$count {
                tx.push(i).unwrap();
            }
            std::thread::sleep(linger);
            hold();
        }};
    }
    macro_rules! consume {
        ($ring:ident, $name:expr, $count:expr, $delay:expr) => {{
            let mut rx = $ring::open::<u64>($name).unwrap().consumer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep($delay);
            for _ in 0..$count {
                println!("CHILD:popped {}", rx.pop().unwrap());
            }
            std::thread::sleep(linger);
            hold();
        }};
    }
    match (var(KIND).as_str(), var(SIDE).as_str()) {
        ("no-proc", _) => without_proc(&name),
        ("spsc", "producer") => produce!(spsc, &name, count, delay),
        ("spsc", "consumer") => consume!(spsc, &name, count, delay),
        ("mpmc", "producer") => produce!(mpmc, &name, count, delay),
        ("mpmc", "consumer") => consume!(mpmc, &name, count, delay),
        other => panic!("unknown child {other:?}"),
    }
}

/// Fails unless `out` is a death by SIGKILL at the fault point.
fn assert_died(out: &std::process::Output) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "the child should have died at its fault point: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the child to its death at the fault point; returns its `CHILD:` lines.
fn run_to_death(mut cmd: Command) -> Vec<String> {
    let out = cmd.output().expect("spawn child");
    assert_died(&out);
    child_lines(&out.stdout)
}

/// Runs the child on a thread; the handle yields the moment its death was seen.
fn die_in_background(mut cmd: Command) -> JoinHandle<Instant> {
    std::thread::spawn(move || {
        let out = cmd.output().expect("spawn child");
        let died = Instant::now();
        assert_died(&out);
        died
    })
}

/// How long after the death `at` came (zero if it came first: the death was seen late).
fn after(death: JoinHandle<Instant>, at: Instant) -> Duration {
    at.saturating_duration_since(death.join().expect("the child's thread"))
}

// ------------------------------------------------------------ SPSC

/// A producer process of the `kind` ring `name` attaches, waits until we are parked in
/// `pop`, publishes item 0, and dies at `point` before waking us: we get the item within a
/// slice, then `PeerDied`; `pushes_pops` then reads (1, 1).
fn producer_dies_after_publishing(
    kind: &str,
    name: &str,
    point: &str,
    mut pop: impl FnMut() -> Result<u64, PopError>,
    pushes_pops: impl Fn() -> (u64, u64),
) {
    let death = die_in_background(end(kind, "producer", name, 1, 300, &format!("{point}:1")));
    assert_eq!(pop(), Ok(0), "{point}");
    let took = after(death, Instant::now());
    println!("{point}: the parked consumer had the item {took:?} after the death");
    assert!(took < NOTICED, "{point}: {took:?}");
    // Then the producer's death, with nothing lost and nothing more.
    assert_eq!(pop(), Err(PopError::PeerDied), "{point}");
    assert_eq!(pushes_pops(), (1, 1), "{point}");
}

#[test]
fn spsc_producer_dies_after_publishing_before_waking() {
    let (name, _c) = scratch("f-spsc-pub");
    let ring = spsc::create::<u64>(&name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    producer_dies_after_publishing(
        "spsc",
        &name,
        "spsc-producer-published",
        || rx.pop_timeout(HANG),
        || (ring.stats().pushes, ring.stats().pops),
    );
}

#[test]
fn spsc_consumer_dies_after_freeing_a_slot_before_waking() {
    let (name, _c) = scratch("f-spsc-free");
    let ring = spsc::create::<u64>(&name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.try_push(0).unwrap();
    tx.try_push(1).unwrap();
    // We park on the full ring; it pops item 0, publishes `head`, and dies before waking us.
    // The exit watcher wakes us, and the push hears of the death (the freed slot is not
    // used: nobody would read it).
    let death = die_in_background(end(
        "spsc",
        "consumer",
        &name,
        1,
        300,
        "spsc-consumer-published:1",
    ));
    assert_eq!(tx.push_timeout(2, HANG), Err(PushError::PeerDied(2)));
    let took = after(death, Instant::now());
    println!(
        "spsc-consumer-published: the parked producer heard PeerDied {took:?} after the death"
    );
    assert!(took < NOTICED, "{took:?}");
    assert_eq!(tx.push_timeout(3, HANG), Err(PushError::PeerDied(3)));
    assert_eq!(ring.stats().pops, 1);
    // A new consumer takes the end over: item 0 was consumed, 1 is there, once; then the
    // producer's pushes land again.
    let mut rx = ring.consumer().unwrap();
    tx.try_push(2).unwrap();
    assert_eq!(rx.try_pop(), Ok(1));
    assert_eq!(rx.try_pop(), Ok(2));
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
}

#[test]
fn spsc_consumer_dies_between_reading_a_slot_and_freeing_it() {
    let (name, _c) = scratch("f-spsc-read");
    let ring = spsc::create::<u64>(&name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    for i in 0..4 {
        tx.try_push(i).unwrap();
    }
    // It pops 0 and 1, reads 2, and dies before moving `head` past it.
    let lines = run_to_death(end("spsc", "consumer", &name, 4, 0, "spsc-consumer-read:3"));
    assert_eq!(lines, ["attached", "popped 0", "popped 1"]);
    assert_eq!(ring.stats().pops, 2);
    assert!(matches!(
        ring.stats().consumer,
        EndStatus::Attached { alive: false, .. }
    ));
    // Its successor gets 2 again (at-least-once across a take-over), then 3; nothing is lost.
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.try_pop(), Ok(2));
    assert_eq!(rx.try_pop(), Ok(3));
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
}

/// What an end's history was before a process died attaching to it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Before {
    /// Nobody ever attached.
    Never,
    /// A previous holder closed it.
    Closed,
    /// A previous holder was killed (the dying process takes a dead end over).
    DeadHolder,
}

#[test]
fn spsc_end_killed_while_attaching() {
    for side in ["producer", "consumer"] {
        for before in [Before::Never, Before::Closed, Before::DeadHolder] {
            let (name, _c) = scratch("f-spsc-attach");
            let ring = spsc::create::<u64>(&name, 4).unwrap();
            let mut tx = (side == "consumer").then(|| ring.producer().unwrap());
            let mut rx = (side == "producer").then(|| ring.consumer().unwrap());
            match before {
                Before::Never => {}
                Before::Closed if side == "producer" => drop(ring.producer().unwrap()),
                Before::Closed => drop(ring.consumer().unwrap()),
                Before::DeadHolder => holder("spsc", side, &name).kill9(),
            }
            // It wins the owner word, then dies before setting the end's state.
            run_to_death(end("spsc", side, &name, 0, 0, "end-claimed:1"));
            let st = ring.stats();
            let status = if side == "producer" {
                st.producer
            } else {
                st.consumer
            };
            let short = Duration::from_millis(200);
            // The other side sees the end's previous state: waiting on, closed, or dead.
            let seen = match (&mut tx, &mut rx) {
                (_, Some(rx)) => match rx.pop_timeout(short) {
                    Err(e) => e,
                    Ok(v) => panic!("{side} {before:?}: popped {v}"),
                },
                (Some(tx), _) => {
                    // A dead or closed consumer is heard before the ring fills; else, once
                    // it is full.
                    let mut heard = None;
                    for i in 0..4 {
                        match tx.try_push(i) {
                            Ok(()) => {}
                            Err(PushError::PeerDied(_)) => {
                                heard = Some(PopError::PeerDied);
                                break;
                            }
                            Err(PushError::Disconnected(_)) => {
                                heard = Some(PopError::Disconnected);
                                break;
                            }
                            Err(e) => panic!("{side} {before:?}: {e:?}"),
                        }
                    }
                    match (heard, tx.push_timeout(9, short)) {
                        (None, Err(PushError::Timeout(_))) => PopError::Timeout,
                        (None | Some(PopError::Disconnected), Err(PushError::Disconnected(_))) => {
                            PopError::Disconnected
                        }
                        (None | Some(PopError::PeerDied), Err(PushError::PeerDied(_))) => {
                            PopError::PeerDied
                        }
                        other => panic!("{side} {before:?}: {other:?}"),
                    }
                }
                _ => unreachable!(),
            };
            let (status_ok, want_seen) = match before {
                Before::Never => (status == EndStatus::Never, PopError::Timeout),
                Before::Closed => (status == EndStatus::Closed, PopError::Disconnected),
                Before::DeadHolder => (
                    matches!(status, EndStatus::Attached { alive: false, .. }),
                    PopError::PeerDied,
                ),
            };
            assert!(status_ok, "{side} {before:?}: {status:?}");
            assert_eq!(seen, want_seen, "{side} {before:?}");
            // The end is free for a new process to claim, and the ring works.
            match (tx, rx) {
                (_, Some(mut rx)) => {
                    let mut tx = ring.producer().unwrap();
                    tx.try_push(5).unwrap();
                    assert_eq!(rx.try_pop(), Ok(5), "{side} {before:?}");
                }
                (Some(mut tx), _) => {
                    let mut rx = ring.consumer().unwrap();
                    // A dead or closed consumer was heard before the first push (nothing
                    // landed); otherwise the ring holds what was pushed, from 0.
                    if before != Before::Never {
                        assert_eq!(rx.try_pop(), Err(PopError::Empty), "{side} {before:?}");
                        tx.try_push(0).unwrap();
                    }
                    assert_eq!(rx.try_pop(), Ok(0), "{side} {before:?}");
                }
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn spsc_end_killed_while_closing() {
    for point in ["end-closed", "end-released"] {
        // The producer pushes 0..3, lingers until we are parked again in `pop`, and dies
        // in its `Drop`: no wake comes.
        let (name, _c) = scratch("f-spsc-close-p");
        let ring = spsc::create::<u64>(&name, 8).unwrap();
        let mut rx = ring.consumer().unwrap();
        let mut closer = end("spsc", "producer", &name, 3, 300, &format!("{point}:1"));
        closer.env(LINGER, "300");
        let death = die_in_background(closer);
        for i in 0..3 {
            assert_eq!(rx.pop_timeout(HANG), Ok(i), "{point}");
        }
        // Its close was complete: `Disconnected` after the drain, not `PeerDied`.
        assert_eq!(rx.pop_timeout(HANG), Err(PopError::Disconnected), "{point}");
        let took = after(death, Instant::now());
        println!("{point}: the parked consumer saw the close {took:?} after the death");
        assert!(took < NOTICED, "{point}: {took:?}");
        assert_eq!(ring.stats().producer, EndStatus::Closed);
        // A new producer can attach and the ring goes on.
        let mut tx = ring.producer().unwrap();
        tx.try_push(3).unwrap();
        assert_eq!(rx.try_pop(), Ok(3));

        // The consumer dies in its `Drop` while we are parked on a full ring.
        let (name, _c) = scratch("f-spsc-close-c");
        let ring = spsc::create::<u64>(&name, 2).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.try_push(0).unwrap();
        tx.try_push(1).unwrap();
        let death = die_in_background(end(
            "spsc",
            "consumer",
            &name,
            0,
            300,
            &format!("{point}:1"),
        ));
        assert_eq!(
            tx.push_timeout(2, HANG),
            Err(PushError::Disconnected(2)),
            "{point}"
        );
        let took = after(death, Instant::now());
        println!("{point}: the parked producer saw the close {took:?} after the death");
        assert!(took < NOTICED, "{point}: {took:?}");
        let mut rx = ring.consumer().unwrap();
        assert_eq!(rx.try_pop(), Ok(0));
    }
}

// ------------------------------------------------------------ MPMC

#[test]
fn mpmc_producer_dies_after_publishing_before_waking() {
    let (name, _c) = scratch("f-mpmc-pub");
    let ring = mpmc::create::<u64>(&name, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    producer_dies_after_publishing(
        "mpmc",
        &name,
        "mpmc-producer-published",
        || rx.pop_timeout(HANG),
        || (ring.stats().pushes, ring.stats().pops),
    );
}

#[test]
fn mpmc_endpoint_killed_while_attaching() {
    // A first-ever attach dies before `ever` is set: consumers go on waiting for a
    // producer (no `PeerDied`, no `Disconnected`), and a new producer is heard.
    let (name, _c) = scratch("f-mpmc-attach1");
    let ring = mpmc::create::<u64>(&name, 4).unwrap();
    let mut rx = ring.consumer().unwrap();
    run_to_death(end("mpmc", "producer", &name, 0, 0, "end-claimed:1"));
    let short = LIVENESS_INTERVAL * 20;
    assert_eq!(rx.pop_timeout(short), Err(PopError::Timeout));
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
    assert_eq!(ring.stats().producers, 0, "the dead claim was reaped");
    let mut tx = ring.producer().unwrap();
    tx.try_push(1).unwrap();
    assert_eq!(rx.try_pop(), Ok(1));
    drop(tx);
    assert_eq!(rx.try_pop(), Err(PopError::Disconnected));

    // With a producer attached before (and gone cleanly), a process killed attaching is
    // a producer that died: `PeerDied`, within a liveness interval of the next check.
    run_to_death(end("mpmc", "producer", &name, 0, 0, "end-claimed:1"));
    let t = Instant::now();
    assert_eq!(rx.pop_timeout(HANG), Err(PopError::PeerDied));
    println!(
        "end-claimed (MPMC, ever set): PeerDied {:?} after the death",
        t.elapsed()
    );
    assert_eq!(ring.stats().producers, 0);
}

#[test]
fn mpmc_endpoint_killed_while_detaching() {
    for (point, want) in [
        // `last_departure` says CLOSED_CLEANLY but the owner word stays: reaped as dead.
        ("end-closed", PopError::PeerDied),
        // Owner word cleared, the wake not made: a clean departure; parked peers notice.
        ("end-released", PopError::Disconnected),
    ] {
        let (name, _c) = scratch("f-mpmc-detach");
        let ring = mpmc::create::<u64>(&name, 8).unwrap();
        let mut rx = ring.consumer().unwrap();
        // It pushes 2, lingers until we are parked again, and dies detaching.
        let mut closer = end("mpmc", "producer", &name, 2, 300, &format!("{point}:1"));
        closer.env(LINGER, "300");
        let death = die_in_background(closer);
        assert_eq!(rx.pop_timeout(HANG), Ok(0), "{point}");
        assert_eq!(rx.pop_timeout(HANG), Ok(1), "{point}");
        assert_eq!(rx.pop_timeout(HANG), Err(want), "{point}");
        let took = after(death, Instant::now());
        println!(
            "{point} (MPMC producer): the parked consumer saw {want:?} {took:?} after the death"
        );
        assert!(took < NOTICED, "{point}: {took:?}");
        assert_eq!(ring.stats().producers, 0, "{point}");
        // The slot is free again.
        let mut tx = ring.producer().unwrap();
        tx.try_push(2).unwrap();
        assert_eq!(rx.try_pop(), Ok(2));
    }
}

#[test]
fn mpmc_parked_endpoint_killed_costs_a_wake_per_item_and_nothing_else() {
    let (name, _c) = scratch("f-mpmc-parked");
    let ring = mpmc::create::<u64>(&name, 16).unwrap();
    let mut tx = ring.producer().unwrap();
    // A consumer asleep in `pop` on the empty ring is killed.
    let mut c = end("mpmc", "consumer", &name, 1, 0, "");
    c.env(HOLD, "1");
    let mut parked = Running::spawn(c);
    parked.expect_line("attached", Duration::from_secs(30));
    // Asleep: the consumers' `waiting` word (control block at 128, its line 3 at +384)
    // counts it. A loaded machine may take far longer than the spin phase to get there.
    until_word(&name, 128 + 384, "the consumer asleep", |w| w != 0);
    parked.kill9();
    let before = ring.stats().wakeups;
    // (Pushing on for a successor: by default pushes would report the death at once.)
    tx.buffer_while_unattended(true);
    for i in 0..10 {
        tx.try_push(i).unwrap();
    }
    // Its `waiting` count stays behind: every publish now pays a FUTEX_WAKE for it.
    assert!(ring.stats().wakeups >= before + 10, "{:?}", ring.stats());
    // Nothing else changes: a new consumer gets every item, in order.
    let mut rx = ring.consumer().unwrap();
    for i in 0..10 {
        assert_eq!(rx.try_pop(), Ok(i));
    }
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
}

#[test]
fn mpmc_dead_endpoints_are_reaped_by_attach() {
    let (name, _c) = scratch("f-mpmc-reap");
    let ring = mpmc::create::<u64>(&name, 4).unwrap();
    // Every slot but one is held by this (live) process, the last by a child we kill.
    let live: Vec<_> = (0..MAX_ENDPOINTS - 1)
        .map(|_| ring.producer().unwrap())
        .collect();
    let mut dead = holder("mpmc", "producer", &name);
    assert!(matches!(
        ring.producer(),
        Err(RingError::TooManyEndpoints { .. })
    ));
    dead.kill9();
    // The dead one's slot is reaped on the way: one more attach succeeds...
    let last = ring.producer().unwrap();
    assert_eq!(ring.stats().producers, MAX_ENDPOINTS as u32);
    // ...and then all slots are held by live processes: refused.
    assert!(matches!(
        ring.producer(),
        Err(RingError::TooManyEndpoints { .. })
    ));
    drop(last);
    drop(live);
}

// ------------------------------------------------------------ liveness without /proc

/// Run in the forked child before `exec`, where it is the only thread: moves it into a new
/// mount namespace (and, without the privilege for that, a new user namespace that maps
/// our own uid and gid onto themselves) and mounts an empty tmpfs over `/proc`. `maps` are
/// the `uid_map` and `gid_map` lines, formatted before the fork. Only async-signal-safe
/// calls: syscalls, no allocation.
fn hide_proc(maps: &[std::ffi::CString; 2]) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: every call below is a plain syscall on NUL-terminated strings that outlive
    // it and on buffers of the length passed.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            for (file, text) in [
                (c"/proc/self/setgroups", c"deny"),
                (c"/proc/self/uid_map", maps[0].as_c_str()),
                (c"/proc/self/gid_map", maps[1].as_c_str()),
            ] {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(err());
                }
                let len = text.to_bytes().len();
                let wrote = libc::write(fd, text.as_ptr().cast(), len);
                libc::close(fd);
                if wrote != len as isize {
                    return Err(err());
                }
            }
        }
        let none = c"none".as_ptr();
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            none,
            c"/".as_ptr(),
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
            || libc::mount(
                none,
                c"/proc".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
        {
            return Err(err());
        }
    }
    Ok(())
}

/// In the child [`hide_proc`] made: nobody's identity can be read, so nobody may be
/// judged dead but a task the kernel says does not exist.
fn without_proc(name: &str) {
    assert!(
        !std::path::Path::new("/proc/self/stat").exists(),
        "/proc is not hidden"
    );
    let parent = std::os::unix::process::parent_id();
    assert_eq!(
        shm_core::ProcessId::lookup(parent),
        shm_core::Lookup::Unknown
    );
    // A pid nothing runs under is still known to be gone (the kernel says so).
    let mut exited = Command::new("true").spawn().unwrap();
    let gone = exited.id();
    exited.wait().unwrap();
    assert_eq!(shm_core::ProcessId::lookup(gone), shm_core::Lookup::Gone);
    // The parent holds the producer end: it is not taken over.
    match spsc::open::<u64>(name).unwrap().producer() {
        Err(RingError::RoleTaken { pid, .. }) => assert_eq!(pid, parent),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("took a live process's end over"),
    }
    // ...and its ring is not reported dead to a consumer.
    let mut rx = spsc::open::<u64>(name).unwrap().consumer().unwrap();
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(100)),
        Err(PopError::Timeout)
    );
    // The parent holds a lock: it is waited for, never taken as a dead holder's.
    let m = shm_sync::Shared::<shm_sync::Mutex<u64>>::open(&format!("{name}-m")).unwrap();
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(100)),
        Err(shm_sync::LockError::Timeout)
    ));
    println!("CHILD:ok");
}

#[test]
fn without_proc_nobody_alive_is_judged_dead() {
    use std::os::unix::process::CommandExt;
    let name = unique_name("no-proc");
    let mname = format!("{name}-m");
    let (_c, _c2) = (Cleanup(name.clone()), Cleanup(mname.clone()));
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let _tx = ring.producer().unwrap();
    let m =
        shm_sync::Shared::<shm_sync::Mutex<u64>>::create(&mname, (0, shm_sync::Protocol::Normal))
            .unwrap();
    let _held = m.lock().unwrap();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let maps = [
        std::ffi::CString::new(format!("{uid} {uid} 1")).unwrap(),
        std::ffi::CString::new(format!("{gid} {gid} 1")).unwrap(),
    ];
    let mut cmd = end("no-proc", "", &name, 0, 0, "");
    // SAFETY: `hide_proc` makes only async-signal-safe calls (raw syscalls, no allocation,
    // no locks), as code between fork and exec must.
    unsafe { cmd.pre_exec(move || hide_proc(&maps)) };
    match cmd.output() {
        Ok(out) => assert_eq!(child_output_lines(out), ["ok"]),
        // Neither privilege nor user namespaces: nothing can hide /proc from a process here.
        Err(e) => println!("no private /proc on this machine ({e}); nothing to check"),
    }
}

/// A consumer killed after taking an item out of the ring but before `pop` handed it to its
/// caller (MPMC: after releasing the slot, inside the wake-up of producers; SPSC: after
/// publishing `head`): the item is gone, delivered to nobody, and counted nowhere (not in
/// `reclaimed` or `skipped`): the ring shows it popped. This is the at-most-once loss that
/// a consumer's death can cause at any point after its read; CRASH-SEMANTICS.md lists it
/// (issue 12, defect 11: it was the most common loss of a 300-kill run, and unlisted).
#[test]
fn a_consumer_killed_after_taking_an_item_loses_it_uncounted() {
    for (kind, point) in [
        ("mpmc", "mpmc-consumer-released:2"),
        ("spsc", "spsc-consumer-published:2"),
    ] {
        let (name, _c) = scratch("f-lost-after-release");
        let pops = |name: &str| -> (u64, u64) {
            match kind {
                "mpmc" => {
                    let st = mpmc::open::<u64>(name).unwrap().stats();
                    assert_eq!((st.reclaimed, st.skipped), (0, 0), "{st:?}");
                    (st.pushes, st.pops)
                }
                _ => {
                    let st = spsc::open::<u64>(name).unwrap().stats();
                    (st.pushes, st.pops)
                }
            }
        };
        let mpmc_ring = (kind == "mpmc").then(|| mpmc::create::<u64>(&name, 8).unwrap());
        let spsc_ring = (kind == "spsc").then(|| spsc::create::<u64>(&name, 8).unwrap());
        let mut mtx = mpmc_ring.as_ref().map(|r| r.producer().unwrap());
        let mut stx = spsc_ring.as_ref().map(|r| r.producer().unwrap());
        for i in 0..4u64 {
            if let Some(t) = mtx.as_mut() {
                t.push(i).unwrap();
            }
            if let Some(t) = stx.as_mut() {
                t.push(i).unwrap();
            }
        }
        // The consumer pops 0, then takes 1 out of the ring and dies before returning it.
        let lines = run_to_death(end(kind, "consumer", &name, 4, 0, point));
        assert_eq!(lines, ["attached", "popped 0"], "{kind}");
        assert_eq!(pops(&name), (4, 2), "{kind}: item 1 counts as popped");
        // A successor gets 2 and 3: item 1 was delivered to nobody.
        let mut got = Vec::new();
        if let Some(r) = &mpmc_ring {
            let mut rx = r.consumer().unwrap();
            while let Ok(v) = rx.try_pop() {
                got.push(v);
            }
        }
        if let Some(r) = &spsc_ring {
            let mut rx = r.consumer().unwrap();
            while let Ok(v) = rx.try_pop() {
                got.push(v);
            }
        }
        assert_eq!(got, [2, 3], "{kind}");
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_producer_whose_consumer_died_claiming_its_end_sleeps_rather_than_spins() {
    // A consumer wins the end's owner word and is killed before its end is ATTACHED. The
    // producer's push had armed an exit notice on it, which fires; but no check calls an
    // end that never attached dead, so a blocked push must fall back to sleeping on its
    // timer rather than return from every sleep at once on the spent notice.
    let (name, _c) = scratch("f-spsc-claim-dies");
    let ring = spsc::create::<u64>(&name, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.try_push(0).unwrap();
    tx.try_push(1).unwrap();
    let mut kid = Running::spawn(end("spsc", "consumer", &name, 0, 0, "end-claimed:1:60000"));
    // The consumer's owner word (control block at 128, its `End` at +32): the pid half.
    until_word(&name, 128 + 32 + 4, "the consumer's claim", |w| w != 0);
    // This push sees the new owner and arms its notice while the claimant lives.
    assert_eq!(tx.try_push(2), Err(PushError::Full(2)));
    kid.kill9();
    std::thread::sleep(Duration::from_millis(50));
    let cpu = thread_cpu();
    assert_eq!(
        tx.push_timeout(2, Duration::from_secs(1)),
        Err(PushError::Timeout(2))
    );
    let used = thread_cpu() - cpu;
    println!("a 1 s push_timeout on the orphaned claim used {used:?} of CPU");
    // Sleeping on the 10 ms timer costs a few ms; spinning on the notice costs the second.
    assert!(
        used < Duration::from_millis(300),
        "spun: {used:?} of CPU in 1 s"
    );
    // A consumer can still take the end over, and gets what was pushed.
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.try_pop(), Ok(0));
}
