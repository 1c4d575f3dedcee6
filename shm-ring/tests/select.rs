//! `select` over ends of different kinds: ready at once, woken by another process's
//! publish, a timeout, a producer that closes and one that is SIGKILLed while we sleep.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_ring::select::{select, SelectError, Selectable};
use shm_ring::{broadcast, log, mpmc, spsc, PopError};

const ROLE: &str = "SHMRING_ROLE";
const HANG: Duration = Duration::from_secs(30);

fn role(r: &str, name: &str) -> std::process::Command {
    let mut c = child("child_select", name);
    c.env(ROLE, r);
    c
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_select() {
    let Some(name) = child_name() else { return };
    match std::env::var(ROLE).unwrap().as_str() {
        // Attaches to the SPSC ring `name`, then after 100 ms pushes 7 and exits cleanly.
        "spsc-push-later" => {
            let mut tx = spsc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.try_push(7).unwrap();
        }
        // Attaches to the log `name`, then after 100 ms sends "late" and exits cleanly.
        "log-send-later" => {
            let mut tx = log::open(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.try_send(b"late").unwrap();
        }
        // Publishes 9 on the broadcast ring `name` 100 ms after it is ready, then exits.
        "bcast-publish-later" => {
            let mut tx = broadcast::open::<u64>(&name).unwrap().publisher().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.publish(9).unwrap();
        }
        // Pops one item from the (full) SPSC ring `name` 100 ms after it is ready, then
        // holds its end until killed (or 60 s).
        "spsc-pop-later" => {
            let mut rx = spsc::open::<u64>(&name).unwrap().consumer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            rx.try_pop().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        // Attaches to the SPSC ring `name` and holds it until killed (or 60 s).
        "spsc-hold" => {
            let _tx = spsc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_secs(60));
        }
        // Attaches a producer to the MPMC ring `name`, pushes 11 after 100 ms, then holds
        // its end until killed (or 60 s).
        "mpmc-push-hold" => {
            let mut tx = mpmc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.try_push(11).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        // Attaches a consumer to the (full) MPMC ring `name`, pops one after 100 ms, then
        // holds its end until killed (or 60 s).
        "mpmc-pop-hold" => {
            let mut rx = mpmc::open::<u64>(&name).unwrap().consumer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            rx.try_pop().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Three ends: two SPSC rings and a log.
struct Set {
    _names: Vec<Cleanup>,
    names: Vec<String>,
    a: spsc::Consumer<u64>,
    b: spsc::Consumer<u64>,
    l: log::Consumer,
    _rings: (spsc::Ring<u64>, spsc::Ring<u64>, log::Ring),
}

fn set(tag: &str) -> Set {
    let (na, ca) = scratch(&format!("{tag}-a"));
    let (nb, cb) = scratch(&format!("{tag}-b"));
    let (nl, cl) = scratch(&format!("{tag}-l"));
    let ra = spsc::create::<u64>(&na, 64).unwrap();
    let rb = spsc::create::<u64>(&nb, 64).unwrap();
    let rl = log::Builder::new(&nl)
        .capacity(4096)
        .max_len(100)
        .create()
        .unwrap();
    Set {
        a: ra.consumer().unwrap(),
        b: rb.consumer().unwrap(),
        l: rl.consumer().unwrap(),
        _rings: (ra, rb, rl),
        names: vec![na, nb, nl],
        _names: vec![ca, cb, cl],
    }
}

impl Set {
    fn select(&mut self, timeout: Option<Duration>) -> Result<usize, SelectError> {
        let ends: &mut [&mut dyn Selectable] = &mut [&mut self.a, &mut self.b, &mut self.l];
        select(ends, timeout)
    }
}

#[test]
fn select_returns_a_ready_end_at_once_and_takes_ready_ends_in_turn() {
    let mut s = set("sel-ready");
    let (mut ta, mut tl) = (
        spsc::open::<u64>(&s.names[0]).unwrap().producer().unwrap(),
        log::open(&s.names[2]).unwrap().producer().unwrap(),
    );
    ta.try_push(1).unwrap();
    ta.try_push(2).unwrap();
    tl.try_send(b"x").unwrap();
    tl.try_send(b"y").unwrap();
    // Both ready ends come up across calls: neither starves.
    let mut seen = [0u32; 3];
    for _ in 0..4 {
        let i = s.select(Some(Duration::ZERO)).unwrap();
        seen[i] += 1;
        match i {
            0 => assert!(s.a.try_pop().is_ok()),
            2 => assert!(s.l.try_recv().is_ok()),
            other => panic!("end {other} was never ready"),
        }
    }
    assert_eq!(seen, [2, 0, 2]);
    // Nothing ready: a timeout, after about its length.
    let t = Instant::now();
    assert_eq!(
        s.select(Some(Duration::from_millis(30))),
        Err(SelectError::Timeout)
    );
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(select(&mut [], None), Err(SelectError::NoEnds));
}

#[test]
fn a_sleeping_select_is_woken_by_another_process_publishing_on_any_end() {
    for (which, who) in [(1usize, "spsc-push-later"), (2, "log-send-later")] {
        let mut s = set("sel-wake");
        let mut kid = Running::spawn(role(who, &s.names[which]));
        kid.expect_line("attached", HANG);
        let t = Instant::now();
        let i = s.select(Some(HANG)).unwrap();
        let woke = t.elapsed();
        assert_eq!(i, which, "{who}");
        match i {
            1 => assert_eq!(s.b.try_pop(), Ok(7)),
            _ => assert_eq!(&s.l.try_recv().unwrap()[..], b"late"),
        }
        assert!(kid.wait_success(HANG));
        println!("{who}: woken {woke:?} after the select began (the publish came at 100 ms)");
        // The producer closed: the end is ready again, to report it.
        assert_eq!(s.select(Some(HANG)), Ok(which));
        let e = match which {
            1 => s.b.try_pop().unwrap_err(),
            _ => s.l.try_recv().unwrap_err(),
        };
        assert_eq!(e, PopError::Disconnected, "{who}");
    }
}

#[test]
fn a_producer_killed_while_select_sleeps_wakes_it_with_peer_died() {
    let mut s = set("sel-kill");
    let mut kid = Running::spawn(role("spsc-hold", &s.names[0]));
    kid.expect_line("attached", HANG);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        kid.kill9();
        t
    });
    let i = s.select(Some(HANG)).unwrap();
    let woke = Instant::now();
    let killed = killer.join().unwrap();
    assert_eq!(i, 0);
    assert_eq!(s.a.try_pop(), Err(PopError::PeerDied));
    println!(
        "woken {:?} after the SIGKILL (a select sleeping on a watched producer)",
        woke.duration_since(killed)
    );
}

/// A broadcast subscriber and an SPSC producer on a full ring, in one select with an SPSC
/// consumer: another process's publish wakes the subscriber, another process's pop the
/// producer (room for one more).
#[test]
fn select_waits_for_a_broadcast_message_and_for_room_on_a_full_ring() {
    let (nb, _cb) = scratch("sel-bcast");
    let (nf, _cf) = scratch("sel-full");
    let (ne, _ce) = scratch("sel-quiet");
    let bring = broadcast::create::<u64>(&nb, 8).unwrap();
    let fring = spsc::create::<u64>(&nf, 2).unwrap();
    let ering = spsc::create::<u64>(&ne, 8).unwrap();
    let mut sub = bring.subscribe().unwrap();
    let mut tx = fring.producer().unwrap();
    let mut quiet = ering.consumer().unwrap();
    while tx.try_push(1).is_ok() {}
    // The publisher wakes the subscriber (end 1).
    let mut kid = Running::spawn(role("bcast-publish-later", &nb));
    kid.expect_line("attached", HANG);
    let t = Instant::now();
    let i = select(&mut [&mut quiet, &mut sub, &mut tx], Some(HANG)).unwrap();
    println!("a publish woke the subscriber after {:?}", t.elapsed());
    assert_eq!(i, 1);
    assert_eq!(sub.try_recv(), Ok(9));
    assert!(kid.wait_success(HANG));
    // The consumer's pop makes room for the producer (end 2).
    let mut kid = Running::spawn(role("spsc-pop-later", &nf));
    kid.expect_line("attached", HANG);
    let t = Instant::now();
    // The subscriber's publisher left: it is ready to report that; leave it out.
    let i = select(&mut [&mut quiet, &mut tx], Some(HANG)).unwrap();
    println!(
        "a pop woke the producer of a full ring after {:?}",
        t.elapsed()
    );
    assert_eq!(i, 1);
    assert!(tx.try_push(2).is_ok());
    // Full again, and the consumer is killed: the producer's end is ready (`PeerDied`).
    kid.kill9();
    let i = select(&mut [&mut quiet, &mut tx], Some(HANG)).unwrap();
    assert_eq!(i, 1);
    let r = tx.try_push(3);
    assert!(matches!(r, Err(shm_ring::PushError::PeerDied(3))), "{r:?}");
}

/// MPMC ends in a select: another process's push wakes a consumer, its pop wakes a
/// producer on a full ring, and its SIGKILL wakes both (`PeerDied` once drained / for the
/// producer).
#[test]
fn select_waits_on_mpmc_ends_for_an_item_for_room_and_for_a_death() {
    let (na, _ca) = scratch("sel-mpmc-items");
    let (nb, _cb) = scratch("sel-mpmc-room");
    let (ne, _ce) = scratch("sel-mpmc-quiet");
    let items = mpmc::create::<u64>(&na, 8).unwrap();
    let room = mpmc::create::<u64>(&nb, 2).unwrap();
    let ering = spsc::create::<u64>(&ne, 8).unwrap();
    let mut rx = items.consumer().unwrap();
    let mut tx = room.producer().unwrap();
    let mut quiet = ering.consumer().unwrap();
    while tx.try_push(1).is_ok() {}
    // Another process's push wakes the consumer (end 1).
    let mut pusher = Running::spawn(role("mpmc-push-hold", &na));
    pusher.expect_line("attached", HANG);
    let t = Instant::now();
    let i = select(&mut [&mut quiet, &mut rx], Some(HANG)).unwrap();
    println!("an MPMC push woke the consumer after {:?}", t.elapsed());
    assert_eq!(i, 1);
    assert_eq!(rx.try_pop(), Ok(11));
    // Another process's pop makes room for the producer (end 1).
    let mut popper = Running::spawn(role("mpmc-pop-hold", &nb));
    popper.expect_line("attached", HANG);
    let t = Instant::now();
    let i = select(&mut [&mut quiet, &mut tx], Some(HANG)).unwrap();
    println!(
        "an MPMC pop woke the producer of a full ring after {:?}",
        t.elapsed()
    );
    assert_eq!(i, 1);
    assert!(tx.try_push(2).is_ok());
    // Both peers are SIGKILLed: both ends become ready to report it.
    pusher.kill9();
    popper.kill9();
    let i = select(&mut [&mut quiet, &mut rx], Some(HANG)).unwrap();
    assert_eq!(i, 1);
    assert_eq!(rx.try_pop(), Err(PopError::PeerDied));
    let i = select(&mut [&mut quiet, &mut tx], Some(HANG)).unwrap();
    assert_eq!(i, 1);
    let r = tx.try_push(3);
    assert!(matches!(r, Err(shm_ring::PushError::PeerDied(3))), "{r:?}");
}
