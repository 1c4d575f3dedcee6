//! The wait path across processes: a sleeping end hears of its peer's death from the
//! process's exit watcher (not from a timer), and an idle sleeper wakes at most about once
//! a second. Peers are real processes, killed with SIGKILL.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_ring::{mpmc, spsc, PopError, PushError, SpinBudget, WaitStrategy};

const ROLE: &str = "SHMRING_ROLE";

fn role(r: &str, name: &str) -> std::process::Command {
    let mut c = child("child_wait", name);
    c.env(ROLE, r);
    c
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_wait() {
    let Some(name) = child_name() else { return };
    // Each role attaches, says so, and holds its end until it is killed.
    let hold = || std::thread::sleep(Duration::from_secs(120));
    macro_rules! hold {
        ($ring:ident, $end:ident) => {{
            let _end = $ring::open::<u64>(&name).unwrap().$end().unwrap();
            println!("CHILD:holding");
            hold();
        }};
    }
    match std::env::var(ROLE).unwrap().as_str() {
        "spsc-producer" => hold!(spsc, producer),
        "spsc-consumer" => hold!(spsc, consumer),
        "mpmc-producer" => hold!(mpmc, producer),
        "mpmc-consumer" => hold!(mpmc, consumer),
        other => panic!("unknown role {other}"),
    }
}

/// A child holding the end `r` of ring `name`, once it says so.
fn holding(r: &str, name: &str) -> Running {
    let mut peer = Running::spawn(role(r, name));
    peer.expect_line("holding", Duration::from_secs(30));
    peer
}

/// A liveness interval far longer than any test: a death noticed within it was noticed
/// through the exit watcher.
const NEVER: Duration = Duration::from_secs(3600);

/// Kills `peer` 300 ms from now, from another thread.
fn kill_soon(mut peer: Running) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        peer.kill9();
        Instant::now()
    })
}

#[test]
fn a_sleeping_consumer_hears_of_its_producers_death_without_a_timer() {
    for strategy in [
        WaitStrategy::SpinThenPark,
        WaitStrategy::Budget(SpinBudget {
            spin: Duration::ZERO,
            yields: 0,
        }),
    ] {
        let (name, _c) = scratch("wait-spsc-c");
        let ring = spsc::create::<u64>(&name, 64).unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(strategy);
        rx.set_liveness_interval(NEVER);
        let peer = holding("spsc-producer", &name);
        let killer = kill_soon(peer);
        // Without the watcher this would sleep for the whole timeout (its slices are an
        // hour long) and end in `Timeout`.
        assert_eq!(
            rx.pop_timeout(Duration::from_secs(60)),
            Err(PopError::PeerDied)
        );
        let killed = killer.join().unwrap();
        println!(
            "{strategy:?}: PeerDied {:?} after SIGKILL",
            killed.elapsed()
        );
    }
}

#[test]
fn a_sleeping_producer_hears_of_its_consumers_death_without_a_timer() {
    let (name, _c) = scratch("wait-spsc-p");
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.set_liveness_interval(NEVER);
    let peer = holding("spsc-consumer", &name);
    for i in 0..4 {
        tx.try_push(i).unwrap();
    }
    let killer = kill_soon(peer);
    assert_eq!(
        tx.push_timeout(9, Duration::from_secs(60)),
        Err(PushError::PeerDied(9))
    );
    killer.join().unwrap();
}

#[test]
fn sleeping_mpmc_ends_hear_of_the_last_peers_death_without_a_timer() {
    let (name, _c) = scratch("wait-mpmc-c");
    let ring = mpmc::create::<u64>(&name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();
    rx.set_liveness_interval(NEVER);
    let peer = holding("mpmc-producer", &name);
    let killer = kill_soon(peer);
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(60)),
        Err(PopError::PeerDied)
    );
    killer.join().unwrap();
    drop(rx);

    let (name, _c) = scratch("wait-mpmc-p");
    let ring = mpmc::create::<u64>(&name, 4).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.set_liveness_interval(NEVER);
    let peer = holding("mpmc-consumer", &name);
    for i in 0..4 {
        tx.try_push(i).unwrap();
    }
    let killer = kill_soon(peer);
    assert_eq!(
        tx.push_timeout(9, Duration::from_secs(60)),
        Err(PushError::PeerDied(9))
    );
    killer.join().unwrap();
}

/// This thread's voluntary context switches so far (each sleep that ended is one).
fn voluntary_switches() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

#[test]
fn an_idle_sleeper_wakes_about_once_a_second_not_once_per_liveness_interval() {
    let (name, _c) = scratch("wait-idle-s");
    let ring = spsc::create::<u64>(&name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut peer = holding("spsc-producer", &name);
    let before = voluntary_switches();
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(3)),
        Err(PopError::Timeout)
    );
    let spsc_sleeps = voluntary_switches() - before;

    let name = unique_name("wait-idle-m");
    let _c2 = Cleanup(name.clone());
    let ring = mpmc::create::<u64>(&name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut peer2 = holding("mpmc-producer", &name);
    let before = voluntary_switches();
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(3)),
        Err(PopError::Timeout)
    );
    let mpmc_sleeps = voluntary_switches() - before;
    println!("3 s idle: spsc {spsc_sleeps} sleeps, mpmc {mpmc_sleeps}");
    // One sleep per second of the slice, plus a few for the spin phase's yields and the
    // scheduler; a 10 ms timer would make about 300.
    assert!(spsc_sleeps <= 12, "spsc: {spsc_sleeps} sleeps in 3 s");
    assert!(mpmc_sleeps <= 12, "mpmc: {mpmc_sleeps} sleeps in 3 s");
    peer.kill9();
    peer2.kill9();
}

#[test]
fn a_peer_that_dies_between_two_sleeps_is_heard_at_once() {
    // The consumer sleeps once (arming an exit notice on the producer), then works; the
    // producer dies while the consumer is not asleep, so its notice wakes nobody. The
    // next `pop` must not sleep on that spent notice: with an hour-long liveness interval
    // it would sleep until its timeout.
    let (name, _c) = scratch("wait-between");
    let ring = spsc::create::<u64>(&name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();
    rx.set_liveness_interval(NEVER);
    let mut peer = holding("spsc-producer", &name);
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(50)),
        Err(PopError::Timeout)
    );
    // A poll of the empty ring spends the liveness check that the sleep left due.
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
    peer.kill9();
    std::thread::sleep(Duration::from_millis(200)); // the notice has fired by now
    let t = Instant::now();
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(10)),
        Err(PopError::PeerDied)
    );
    let took = t.elapsed();
    println!("PeerDied {took:?} into the second wait");
    assert!(
        took < Duration::from_secs(5),
        "slept on a spent notice: {took:?}"
    );
}

#[test]
fn a_push_hears_of_its_consumers_death_before_the_ring_fills() {
    let (name, _c) = scratch("wait-push-death");
    let ring = spsc::create::<u64>(&name, 4096).unwrap();
    let mut tx = ring.producer().unwrap();
    // Only the exit watcher can tell in time: the liveness check runs only on a full ring.
    tx.set_liveness_interval(NEVER);
    let mut peer = holding("spsc-consumer", &name);
    tx.try_push(0).unwrap();
    assert!(!tx.is_abandoned());
    peer.kill9();
    let killed = Instant::now();
    let mut pushed = 1u64;
    let err = loop {
        match tx.try_push(pushed) {
            Ok(()) => pushed += 1,
            Err(e) => break e,
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no PeerDied in 10 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let took = killed.elapsed();
    assert_eq!(err, PushError::PeerDied(pushed));
    assert!(pushed < 4096, "the ring filled first: {pushed} pushes");
    assert!(tx.is_abandoned());
    // It stays so: every push says it, and nothing more lands in the ring.
    assert_eq!(tx.try_push(7), Err(PushError::PeerDied(7)));
    assert_eq!(ring.stats().pushes, pushed);
    println!("PeerDied {took:?} after SIGKILL, after {pushed} pushes");
    // A consumer that takes the end over gets the backlog, and pushes flow again.
    let mut rx = ring.consumer().unwrap();
    assert!(!tx.is_abandoned());
    tx.try_push(pushed).unwrap();
    for i in 0..=pushed {
        assert_eq!(rx.try_pop(), Ok(i));
    }
}

#[test]
fn is_abandoned_counts_a_killed_producer() {
    let (name, _c) = scratch("wait-abandon-p");
    let ring = spsc::create::<u64>(&name, 64).unwrap();
    let rx = ring.consumer().unwrap();
    let mut peer = holding("spsc-producer", &name);
    assert!(!rx.is_abandoned());
    peer.kill9();
    assert!(rx.is_abandoned());
}

#[test]
fn a_claim_another_consumer_finished_leaves_no_short_sleep_slices_behind() {
    // C2 waits on an item whose producer has claimed but not published it, so it re-checks
    // that claim's timeout on short (1 ms) slices. C1 then takes the item. On the idle
    // ring that follows, C2 must sleep its long slices again, not 1 ms ones for a claim
    // that is long finished.
    let (name, _c) = scratch("wait-stale-stuck");
    let ring = mpmc::create::<u64>(&name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    let (mut c1, mut c2) = (ring.consumer().unwrap(), ring.consumer().unwrap());
    let mut chunk = tx.write_chunk(1).unwrap();
    assert_eq!(
        c2.pop_timeout(Duration::from_millis(20)),
        Err(PopError::Timeout)
    );
    chunk.set(0, 7);
    chunk.commit_all();
    assert_eq!(c1.try_pop(), Ok(7));
    let sleeps = std::thread::spawn(move || {
        let before = voluntary_switches();
        assert_eq!(
            c2.pop_timeout(Duration::from_secs(2)),
            Err(PopError::Timeout)
        );
        voluntary_switches() - before
    })
    .join()
    .unwrap();
    println!("2 s idle after a finished claim: {sleeps} sleeps");
    // About one per second of slice plus the spin phase's yields; 1 ms slices make ~2000.
    assert!(sleeps <= 12, "{sleeps} sleeps in 2 s");
    drop(tx);
}

#[test]
fn a_budget_spinning_longer_than_the_liveness_interval_still_checks_its_peer_each_interval() {
    // `Budget` with an hour-long spin never sleeps, so no exit notice can end its wait: the
    // spin is cut once per liveness interval, and each cut must check the peer.
    for kind in ["spsc", "mpmc"] {
        let (name, _c) = scratch(&format!("wait-long-budget-{kind}"));
        let long = WaitStrategy::Budget(SpinBudget {
            spin: Duration::from_secs(3600),
            yields: 0,
        });
        let (killed, got) = if kind == "spsc" {
            let ring = spsc::create::<u64>(&name, 64).unwrap();
            let mut rx = ring.consumer().unwrap();
            rx.set_wait_strategy(long);
            let killer = kill_soon(holding("spsc-producer", &name));
            let got = rx.pop_timeout(Duration::from_secs(60));
            (killer.join().unwrap(), got)
        } else {
            let ring = mpmc::create::<u64>(&name, 64).unwrap();
            let mut rx = ring.consumer().unwrap();
            rx.set_wait_strategy(long);
            let killer = kill_soon(holding("mpmc-producer", &name));
            let got = rx.pop_timeout(Duration::from_secs(60));
            (killer.join().unwrap(), got)
        };
        assert_eq!(got, Err(PopError::PeerDied), "{kind}");
        let took = killed.elapsed();
        println!("{kind}: a 1 h budget heard PeerDied {took:?} after SIGKILL");
        // The interval is 10 ms; a check on every 256th cut would take 2.56 s.
        assert!(took < Duration::from_secs(1), "{kind}: {took:?}");
    }
}
