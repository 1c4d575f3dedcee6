//! SIGINT and SIGTERM with `Shutdown::on_signals`: a blocked end returns `Interrupted`,
//! the process drops its handles, and its peers see a clean close (`Disconnected`, not
//! `PeerDied`) while the creator's drop removes the name. Real processes, real signals.
#![cfg(not(shm_loom))] // real processes and signals: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use shm_core::OpenErrorKind;
use shm_ring::broadcast::{self, Policy};
use shm_ring::{mpmc, spsc, PopError, PublishError, PushError, RecvError, RingError, Shutdown};

const ROLE: &str = "SHMRING_ROLE";
const HANG: Duration = Duration::from_secs(20);

fn role(r: &str, name: &str) -> std::process::Command {
    let mut c = child("child_signalled", name);
    c.env(ROLE, r);
    c
}

fn signal(child: &Running, sig: libc::c_int) {
    let pid = child.child.id() as libc::pid_t;
    // SAFETY: `kill` with a pid we spawned (not yet reaped) and a valid signal number.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0);
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_signalled() {
    let Some(name) = child_name() else { return };
    let stop = Shutdown::on_signals().unwrap();
    match std::env::var(ROLE).unwrap().as_str() {
        // Creates the ring, takes the consumer, and pops until interrupted.
        "spsc-consumer" => {
            let ring = spsc::create::<u64>(&name, 8).unwrap();
            let mut rx = ring.consumer().unwrap();
            println!("CHILD:ready");
            loop {
                match rx.pop() {
                    Ok(v) => println!("CHILD:got {v}"),
                    Err(PopError::Interrupted) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            println!("CHILD:interrupted {}", stop.signal().unwrap());
        }
        // Joins the parent's ring as producer, fills it, and blocks pushing one more.
        "spsc-producer" => {
            let ring = spsc::open::<u64>(&name).unwrap();
            let mut tx = ring.producer().unwrap();
            for i in 0..ring.capacity() {
                tx.push(i).unwrap();
            }
            println!("CHILD:full");
            match tx.push(99) {
                Err(PushError::Interrupted(v)) => println!("CHILD:interrupted {v}"),
                other => panic!("{other:?}"),
            }
        }
        // Joins the parent's MPMC ring as a consumer and pops until interrupted.
        "mpmc-consumer" => {
            let ring = mpmc::open::<u64>(&name).unwrap();
            let mut rx = ring.consumer().unwrap();
            println!("CHILD:ready");
            loop {
                match rx.pop() {
                    Ok(v) => println!("CHILD:got {v}"),
                    Err(PopError::Interrupted) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            println!("CHILD:interrupted {}", stop.signal().unwrap());
        }
        // Subscribes to the parent's broadcast ring and receives until interrupted.
        "broadcast-subscriber" => {
            let ring = broadcast::open::<u64>(&name).unwrap();
            let mut rx = ring.subscribe().unwrap();
            println!("CHILD:ready");
            loop {
                match rx.recv() {
                    Ok(v) => println!("CHILD:got {v}"),
                    Err(RecvError::Interrupted) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            println!("CHILD:interrupted {}", stop.signal().unwrap());
        }
        // Publishes to the parent's back-pressure ring until it is full, then blocks
        // publishing one more.
        "broadcast-publisher" => {
            let ring = broadcast::open::<u64>(&name).unwrap();
            let mut tx = ring.publisher().unwrap();
            for i in 0..ring.capacity() {
                tx.publish(i).unwrap();
            }
            println!("CHILD:full");
            match tx.publish(99) {
                Err(PublishError::Interrupted(v)) => println!("CHILD:interrupted {v}"),
                other => panic!("{other:?}"),
            }
        }
        // Never looks at the shutdown: only a second signal ends it.
        "oblivious" => {
            let _ring = spsc::create::<u64>(&name, 8).unwrap();
            println!("CHILD:ready");
            std::thread::sleep(Duration::from_secs(120));
        }
        // Requests the shutdown itself, then lives through one SIGTERM (the first signal)
        // and reports it.
        "request-first" => {
            stop.request();
            assert!(stop.requested());
            println!("CHILD:ready");
            let t = Instant::now();
            while stop.signal().is_none() && t.elapsed() < HANG {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("CHILD:alive after signal {}", stop.signal().unwrap());
        }
        // Forks a grandchild, which must not act on this process's set-up: SIGTERM to it
        // has its default action, and this process hears nothing.
        "forker" => {
            // SAFETY: after the fork the grandchild calls only `pause` (async-signal-safe)
            // until a signal ends it; the parent waits for it.
            let g = unsafe { libc::fork() };
            assert!(g >= 0, "fork failed");
            if g == 0 {
                // SAFETY: `alarm` and `pause` are async-signal-safe and have no
                // preconditions. The alarm ends the grandchild in 30 s should the test fail
                // before it sends SIGTERM (nobody else would reap or kill it).
                unsafe { libc::alarm(30) };
                loop {
                    // SAFETY: as above.
                    unsafe { libc::pause() };
                }
            }
            println!("CHILD:forked {g}");
            let mut status = 0;
            // SAFETY: `g` is our child; `status` is a valid int to fill.
            assert_eq!(unsafe { libc::waitpid(g, &mut status, 0) }, g);
            assert!(libc::WIFSIGNALED(status), "grandchild status {status:#x}");
            std::thread::sleep(Duration::from_millis(50));
            println!(
                "CHILD:grandchild ended by {}; requested here: {}",
                libc::WTERMSIG(status),
                stop.requested()
            );
        }
        other => panic!("unknown role {other}"),
    }
    // Handles drop here: the ends close, the creator's segment removes its name.
}

#[test]
fn sigterm_closes_a_sleeping_consumer_cleanly_and_removes_its_name() {
    let (name, _c) = scratch("sig-spsc-c");
    let mut kid = Running::spawn(role("spsc-consumer", &name));
    kid.expect_line("ready", HANG);
    let ring = spsc::open::<u64>(&name).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.push_timeout(7, HANG).unwrap();
    kid.expect_line("got 7", HANG);
    // Long enough for the consumer to be asleep on the futex, not polling.
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    signal(&kid, libc::SIGTERM);
    kid.expect_line(&format!("interrupted {}", libc::SIGTERM), HANG);
    assert!(kid.wait_success(HANG), "the child did not exit cleanly");
    println!("SIGTERM to a clean exit: {:?}", t.elapsed());
    // A clean close, not a death; and the name is gone.
    assert!(matches!(
        tx.push_timeout(8, HANG),
        Err(PushError::Disconnected(8))
    ));
    assert!(tx.is_abandoned());
    assert!(!ring.is_current());
    match spsc::open::<u64>(&name) {
        Err(RingError::Open(e)) => assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}"),
        other => panic!("the name survived: {:?}", other.err()),
    }
}

#[test]
fn sigint_interrupts_a_producer_blocked_on_a_full_ring() {
    let (name, _c) = scratch("sig-spsc-p");
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Running::spawn(role("spsc-producer", &name));
    kid.expect_line("full", HANG);
    std::thread::sleep(Duration::from_millis(50));
    signal(&kid, libc::SIGINT);
    // The value comes back to the producer, which then closes.
    kid.expect_line("interrupted 99", HANG);
    assert!(kid.wait_success(HANG));
    for i in 0..4 {
        assert_eq!(rx.pop_timeout(HANG), Ok(i));
    }
    assert_eq!(rx.pop_timeout(HANG), Err(PopError::Disconnected));
}

#[test]
fn sigterm_closes_a_sleeping_mpmc_consumer_cleanly() {
    let (name, _c) = scratch("sig-mpmc-c");
    let ring = mpmc::create::<u64>(&name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut kid = Running::spawn(role("mpmc-consumer", &name));
    kid.expect_line("ready", HANG);
    tx.push_timeout(5, HANG).unwrap();
    kid.expect_line("got 5", HANG);
    std::thread::sleep(Duration::from_millis(50));
    signal(&kid, libc::SIGTERM);
    kid.expect_line(&format!("interrupted {}", libc::SIGTERM), HANG);
    assert!(kid.wait_success(HANG));
    // The consumers left cleanly: the next push says Disconnected, not PeerDied.
    assert!(matches!(
        tx.push_timeout(4, HANG),
        Err(PushError::Disconnected(4))
    ));
    assert!(tx.is_abandoned());
}

#[test]
fn a_second_signal_ends_a_process_that_never_looks() {
    let (name, _c) = scratch("sig-twice");
    let mut kid = Running::spawn(role("oblivious", &name));
    kid.expect_line("ready", HANG);
    signal(&kid, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        kid.child.try_wait().unwrap().is_none(),
        "the first SIGINT only requests a shutdown"
    );
    signal(&kid, libc::SIGINT);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = kid.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < HANG, "a second SIGINT did not end it");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

#[test]
fn a_signal_after_an_own_request_is_still_the_first() {
    let (name, _c) = scratch("sig-request");
    let mut kid = Running::spawn(role("request-first", &name));
    kid.expect_line("ready", HANG);
    signal(&kid, libc::SIGTERM);
    kid.expect_line(&format!("alive after signal {}", libc::SIGTERM), HANG);
    assert!(kid.wait_success(HANG));
}

#[test]
fn a_forked_child_has_the_default_action_and_leaves_its_parent_alone() {
    let (name, _c) = scratch("sig-fork");
    let mut kid = Running::spawn(role("forker", &name));
    let line = kid.next_line(HANG);
    let g: libc::pid_t = line
        .strip_prefix("forked ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: `kill` with a valid signal; `g` is the grandchild our child waits for.
    let r = unsafe { libc::kill(g, libc::SIGTERM) };
    assert_eq!(r, 0);
    kid.expect_line(
        &format!(
            "grandchild ended by {}; requested here: false",
            libc::SIGTERM
        ),
        HANG,
    );
    assert!(kid.wait_success(HANG));
}

#[test]
fn sigterm_interrupts_a_sleeping_broadcast_subscriber_whose_record_is_freed() {
    let (name, _c) = scratch("sig-bcast-s");
    let ring = broadcast::create::<u64>(&name, 8).unwrap();
    let mut tx = ring.publisher().unwrap();
    let mut kid = Running::spawn(role("broadcast-subscriber", &name));
    kid.expect_line("ready", HANG);
    tx.publish(5).unwrap();
    kid.expect_line("got 5", HANG);
    std::thread::sleep(Duration::from_millis(50));
    signal(&kid, libc::SIGTERM);
    kid.expect_line(&format!("interrupted {}", libc::SIGTERM), HANG);
    assert!(kid.wait_success(HANG));
    // It left cleanly: its subscriber record is free again.
    assert!(ring.stats().subscribers.is_empty());
}

#[test]
fn sigint_interrupts_a_broadcast_publisher_held_back_by_a_subscriber() {
    let (name, _c) = scratch("sig-bcast-p");
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(4)
        .policy(Policy::BackPressure)
        .create()
        .unwrap();
    let mut rx = ring.subscribe().unwrap();
    let mut kid = Running::spawn(role("broadcast-publisher", &name));
    kid.expect_line("full", HANG);
    std::thread::sleep(Duration::from_millis(50));
    signal(&kid, libc::SIGINT);
    // The value comes back to the publisher, which then closes.
    kid.expect_line("interrupted 99", HANG);
    assert!(kid.wait_success(HANG));
    for i in 0..4 {
        assert_eq!(rx.recv_timeout(HANG), Ok(i));
    }
    assert_eq!(rx.recv_timeout(HANG), Err(RecvError::Disconnected));
}
