//! Lifecycle across processes: `open_or_create` races, opens that wait for a name, and one
//! name per ring.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_core::{OpenErrorKind, SegmentBuilder};
use shm_ring::{mpmc, spsc, RingError};

const KIND: &str = "SHMRING_KIND";
const START: &str = "SHMRING_START_NS";

#[test]
#[ignore = "child process of the tests in this file"]
fn child_open_or_create() {
    let Some(name) = child_name() else { return };
    let start: u64 = std::env::var(START).unwrap().parse().unwrap();
    while mono_ns() < start {
        std::hint::spin_loop();
    }
    // The ring is held to the end: the creator's drop would remove the name, and a racer
    // that came after that would rightly create a new ring.
    let (created, cap, _held): (bool, u64, Box<dyn std::any::Any>) =
        match std::env::var(KIND).unwrap().as_str() {
            "spsc" => {
                let r = spsc::open_or_create::<u64>(&name, 64).unwrap();
                (r.is_creator(), r.capacity(), Box::new(r))
            }
            _ => {
                let r = mpmc::open_or_create::<u64>(&name, 64).unwrap();
                // Every racer pushes, so the ring shows whose ring they all joined.
                let mut tx = r.producer().unwrap();
                tx.try_push(u64::from(r.is_creator())).unwrap();
                (r.is_creator(), r.capacity(), Box::new((r, tx)))
            }
        };
    println!("CHILD:{} {cap}", if created { "created" } else { "opened" });
    // Hold the ring (the creator's drop would remove the name) until the parent kills us.
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn eight_processes_racing_open_or_create_make_exactly_one_creator() {
    for kind in ["spsc", "mpmc"] {
        for round in 0..3 {
            let (name, _c) = scratch(&format!("ooc-{kind}-{round}"));
            let start = mono_ns() + 300_000_000;
            let mut kids: Vec<Running> = (0..8)
                .map(|_| {
                    let mut c = child("child_open_or_create", &name);
                    c.env(KIND, kind).env(START, start.to_string());
                    Running::spawn(c)
                })
                .collect();
            let lines: Vec<String> = kids
                .iter_mut()
                .map(|k| k.next_line(Duration::from_secs(30)))
                .collect();
            let created = lines.iter().filter(|l| l.starts_with("created")).count();
            assert_eq!(created, 1, "{kind} round {round}: {lines:?}");
            assert!(
                lines.iter().all(|l| l.ends_with(" 64")),
                "{kind}: every racer sees the creator's capacity: {lines:?}"
            );
            if kind == "mpmc" {
                // Exactly one initialiser: the eight pushes all landed in one ring, and the
                // creator's is among them.
                let r = mpmc::open::<u64>(&name).unwrap();
                let mut rx = r.consumer().unwrap();
                let got: Vec<u64> = std::iter::from_fn(|| rx.try_pop().ok()).collect();
                assert_eq!(got.len(), 8, "{got:?}");
                assert_eq!(got.iter().sum::<u64>(), 1, "{got:?}");
            }
        }
    }
}

#[test]
fn open_or_create_opens_a_ring_that_exists_and_keeps_its_capacity() {
    let (name, _c) = scratch("ooc-exists");
    let first = spsc::open_or_create::<u64>(&name, 16).unwrap();
    assert!(first.is_creator());
    let second = spsc::open_or_create::<u64>(&name, 4096).unwrap();
    assert!(!second.is_creator());
    assert_eq!(second.capacity(), 16);
    // The type is still checked.
    match spsc::open_or_create::<u32>(&name, 16) {
        Err(RingError::Open(e)) => {
            assert!(
                matches!(e.kind(), OpenErrorKind::FingerprintMismatch { .. }),
                "{e}"
            )
        }
        other => panic!("a u32 ring opened a u64 one: {:?}", other.map(|_| ())),
    }
    // And the kind.
    assert!(matches!(
        mpmc::open_or_create::<u64>(&name, 16),
        Err(RingError::Open(_))
    ));
}

#[test]
fn an_open_waits_for_a_name_that_appears_later() {
    for kind in ["spsc", "mpmc"] {
        let (name, _c) = scratch(&format!("wait-name-{kind}"));
        let creator = {
            let name = name.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                // Keep the name past this thread: the opener may not have opened yet.
                let seg = SegmentBuilder::new(&name).unlink_on_drop(false);
                match kind {
                    "spsc" => drop(spsc::Builder::<u64>::new(&name).segment(seg).create()),
                    _ => drop(mpmc::Builder::<u64>::new(&name).segment(seg).create()),
                }
            })
        };
        let t = Instant::now();
        let wait = Duration::from_secs(10);
        let opened = match kind {
            "spsc" => spsc::Builder::<u64>::new(&name)
                .wait_for_name(wait)
                .open()
                .map(|r| r.capacity()),
            _ => mpmc::Builder::<u64>::new(&name)
                .wait_for_name(wait)
                .open()
                .map(|r| r.capacity()),
        };
        assert_eq!(opened.unwrap(), 1024, "{kind}");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{kind}: {:?}",
            t.elapsed()
        );
        creator.join().unwrap();
    }
}

#[test]
fn a_wait_for_a_name_that_never_appears_ends_in_not_found() {
    let name = unique_name("wait-name-never");
    let t = Instant::now();
    let r = spsc::Builder::<u64>::new(&name)
        .wait_for_name(Duration::from_millis(100))
        .open();
    let took = t.elapsed();
    match r {
        Err(RingError::Open(e)) => assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}"),
        other => panic!("opened a ring nobody made: {:?}", other.map(|_| ())),
    }
    assert!(took >= Duration::from_millis(100), "{took:?}");
    // Without a wait, a missing name is `NotFound` on the first look: no retry at all, so
    // however slow the machine, far less than a wait of a minute would take.
    let t = Instant::now();
    match spsc::open::<u64>(&name) {
        Err(RingError::Open(e)) => assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}"),
        other => panic!("opened a ring nobody made: {:?}", other.map(|_| ())),
    }
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn a_wait_for_a_name_too_long_for_the_clock_waits_without_limit() {
    // `Duration::MAX` cannot be added to an `Instant`: it must mean "no limit", not a
    // panic and not "no wait".
    let (name, _c) = scratch("wait-name-max");
    let creator = {
        let name = name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let seg = SegmentBuilder::new(&name).unlink_on_drop(false);
            drop(
                spsc::Builder::<u64>::new(&name)
                    .segment(seg)
                    .create()
                    .unwrap(),
            );
        })
    };
    let r = spsc::Builder::<u64>::new(&name)
        .wait_for_name(Duration::MAX)
        .open()
        .unwrap();
    assert_eq!(r.capacity(), 1024);
    creator.join().unwrap();
}

#[test]
fn a_ring_has_one_name_whatever_its_segment_options_say() {
    let name = unique_name("one-name-a");
    let other = unique_name("one-name-b");
    let (_c1, _c2) = (Cleanup(name.clone()), Cleanup(other.clone()));
    let conflict = |r: Result<(), RingError>| match r {
        Err(e @ RingError::NameConflict { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&name) && text.contains(&other), "{text}");
        }
        other => panic!("the conflict went unnoticed: {other:?}"),
    };
    let seg = || SegmentBuilder::new(&other);
    conflict(
        spsc::Builder::<u64>::new(&name)
            .segment(seg())
            .create()
            .map(drop),
    );
    conflict(
        spsc::Builder::<u64>::new(&name)
            .segment(seg())
            .open()
            .map(drop),
    );
    conflict(
        spsc::Builder::<u64>::new(&name)
            .segment(seg())
            .open_or_create()
            .map(drop),
    );
    conflict(
        mpmc::Builder::<u64>::new(&name)
            .segment(seg())
            .create()
            .map(drop),
    );
    conflict(
        mpmc::Builder::<u64>::new(&name)
            .segment(seg())
            .open()
            .map(drop),
    );
    conflict(
        mpmc::Builder::<u64>::new(&name)
            .segment(seg())
            .open_or_create()
            .map(drop),
    );
    // Neither name was created.
    assert!(shm_core::inspect(&name).is_err());
    assert!(shm_core::inspect(&other).is_err());
    // Options for the ring's own name are used (here: the creator keeps the name).
    let r = spsc::Builder::<u64>::new(&name)
        .segment(SegmentBuilder::new(&name).unlink_on_drop(false))
        .create()
        .unwrap();
    assert_eq!(r.name(), name);
    drop(r);
    assert!(spsc::open::<u64>(&name).is_ok());
}

/// A feed's payload type, as the feed process builds it.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Tick {
    price: f64,
    qty: u32,
    venue: u32,
    ts: u64,
    id: u64,
}

/// The same bytes as another build of the reader declares them: one field renamed.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct TickV2 {
    price: f64,
    size: u32,
    venue: u32,
    ts: u64,
    id: u64,
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_feed_of_ticks() {
    let Some(name) = child_name() else { return };
    let ring = match std::env::var(KIND).unwrap().as_str() {
        "spsc" => {
            let r = spsc::create::<Tick>(&name, 16).unwrap();
            let mut tx = r.producer().unwrap();
            tx.try_push(Tick {
                price: 1.5,
                qty: 7,
                venue: 2,
                ts: 3,
                id: 4,
            })
            .unwrap();
            Box::new((r, tx)) as Box<dyn std::any::Any>
        }
        _ => {
            let r = mpmc::create::<Tick>(&name, 16).unwrap();
            let mut tx = r.producer().unwrap();
            tx.try_push(Tick {
                price: 1.5,
                qty: 7,
                venue: 2,
                ts: 3,
                id: 4,
            })
            .unwrap();
            Box::new((r, tx))
        }
    };
    println!("CHILD:ready");
    std::thread::sleep(Duration::from_secs(120));
    drop(ring);
}

#[test]
fn a_reader_of_another_payload_layout_is_refused_naming_both_types() {
    for kind in ["spsc", "mpmc"] {
        let (name, _c) = scratch(&format!("identity-{kind}"));
        let mut c = child("child_feed_of_ticks", &name);
        c.env(KIND, kind);
        let mut feed = Running::spawn(c);
        feed.expect_line("ready", Duration::from_secs(20));

        let refusals = match kind {
            "spsc" => [
                spsc::open::<[u64; 4]>(&name).map(drop),
                spsc::open::<TickV2>(&name).map(drop),
            ],
            _ => [
                mpmc::open::<[u64; 4]>(&name).map(drop),
                mpmc::open::<TickV2>(&name).map(drop),
            ],
        };
        let wants = [
            "payload type expected `[u64; 4]` (size 32, align 8), found `Tick` (size 32, align \
             8): the same size and alignment, but field names and field types or offsets differ",
            "payload type expected `TickV2` (size 32, align 8), found `Tick` (size 32, align \
             8): the same size, alignment, field types and offsets, but field names differ",
        ];
        for (got, want) in refusals.into_iter().zip(wants) {
            let e = got.expect_err("another layout must be refused");
            assert!(
                matches!(&e, RingError::Open(o) if matches!(o.kind(), OpenErrorKind::FingerprintMismatch { .. })),
                "{e:?}"
            );
            assert!(e.to_string().contains(want), "{kind}: {e}\n  lacks {want}");
        }
        // The reader built with the feed's type gets the feed's tick.
        let qty = match kind {
            "spsc" => {
                spsc::open::<Tick>(&name)
                    .unwrap()
                    .consumer()
                    .unwrap()
                    .try_pop()
                    .unwrap()
                    .qty
            }
            _ => {
                mpmc::open::<Tick>(&name)
                    .unwrap()
                    .consumer()
                    .unwrap()
                    .try_pop()
                    .unwrap()
                    .qty
            }
        };
        assert_eq!(qty, 7);
        feed.kill9();
    }
}

/// Child: creates the ring `name` and pushes `SHMRING_VALUE`. With `SHMRING_EXIT` set, it
/// waits for a consumer to attach and exits cleanly (its drop removes the name); else it
/// holds the ring until killed.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_creates_and_pushes() {
    let Some(name) = child_name() else { return };
    let value: u64 = std::env::var("SHMRING_VALUE").unwrap().parse().unwrap();
    let exit = std::env::var("SHMRING_EXIT").is_ok();
    let ring = spsc::create::<u64>(&name, 8).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.try_push(value).unwrap();
    println!("CHILD:ready");
    let t = Instant::now();
    while exit && t.elapsed() < Duration::from_secs(20) {
        if matches!(ring.stats().consumer, shm_ring::EndStatus::Attached { .. }) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn an_old_handle_learns_that_its_name_now_means_another_ring() {
    let (name, _c) = scratch("recreated");
    let mut first = child("child_creates_and_pushes", &name);
    first.env("SHMRING_VALUE", "1").env("SHMRING_EXIT", "1");
    let mut first = Running::spawn(first);
    first.expect_line("ready", Duration::from_secs(20));
    let old = spsc::open::<u64>(&name).unwrap();
    // Checked before joining: the creator leaves once a consumer has joined.
    assert!(old.is_current());
    let mut rx = old.consumer().unwrap();
    assert_eq!(rx.try_pop(), Ok(1));
    assert!(first.wait_success(Duration::from_secs(20)));
    // The creator left cleanly and its drop removed the name.
    assert_eq!(rx.try_pop(), Err(shm_ring::PopError::Disconnected));
    assert!(!rx.is_current(), "the name is gone");

    // Another process re-creates the name: the old handle still sees its own ring closed,
    // and is_current says the name now means another ring.
    let mut second = child("child_creates_and_pushes", &name);
    second.env("SHMRING_VALUE", "2");
    let mut second = Running::spawn(second);
    second.expect_line("ready", Duration::from_secs(20));
    assert_eq!(rx.try_pop(), Err(shm_ring::PopError::Disconnected));
    assert!(!rx.is_current() && !old.is_current());
    let new = spsc::open::<u64>(&name).unwrap();
    assert!(new.is_current());
    assert_eq!(new.consumer().unwrap().try_pop(), Ok(2));
    // In-process rings have no name: always current.
    assert!(spsc::Ring::<u64>::in_process(4).unwrap().is_current());
    second.kill9();
}

/// Child: joins the ring as consumer (`SHMRING_RESUME` = `live` or `backlog`), reports its
/// attachment, pops `SHMRING_POPS` items reporting each with its position, and holds the
/// end until killed.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_restarted_consumer() {
    let Some(name) = child_name() else { return };
    let resume = match std::env::var("SHMRING_RESUME").unwrap().as_str() {
        "live" => spsc::Resume::Live,
        _ => spsc::Resume::Backlog,
    };
    let pops: u64 = std::env::var("SHMRING_POPS").unwrap().parse().unwrap();
    let ring = spsc::open::<u64>(&name).unwrap();
    let mut rx = ring.consumer_resuming(resume).unwrap();
    let a = rx.attachment();
    println!(
        "CHILD:attached gen={} pos={} backlog={} skipped={} took_over={:?}",
        a.generation, a.position, a.backlog, a.skipped, a.took_over_from
    );
    for _ in 0..pops {
        let pos = rx.position();
        let v = rx.pop_timeout(Duration::from_secs(20)).unwrap();
        let old = pos < a.position + a.backlog;
        println!(
            "CHILD:got {v} at {pos}{}",
            if old { " (backlog)" } else { "" }
        );
    }
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_restarted_consumer_chooses_backlog_or_live_and_tells_them_apart() {
    let (name, _c) = scratch("restart-c");
    let ring = spsc::create::<u64>(&name, 64).unwrap();
    let mut tx = ring.producer().unwrap();
    let t20 = Duration::from_secs(20);
    let consumer = |resume: &str, pops: &str| {
        let mut c = child("child_restarted_consumer", &name);
        c.env("SHMRING_RESUME", resume).env("SHMRING_POPS", pops);
        Running::spawn(c)
    };
    // (Pushes land only while a consumer lives: once this process hears of a consumer's
    // death, pushes return PeerDied until a successor attaches.)
    for v in 0..10 {
        tx.try_push(v).unwrap();
    }
    // The first consumer takes 3, more arrive, and it is SIGKILLed with 17 left.
    let mut a = consumer("backlog", "3");
    a.expect_line(
        "attached gen=1 pos=0 backlog=10 skipped=0 took_over=None",
        t20,
    );
    for v in 0..3 {
        a.expect_line(&format!("got {v} at {v} (backlog)"), t20);
    }
    for v in 10..20 {
        tx.try_push(v).unwrap();
    }
    let a_pid = a.child.id();
    a.kill9();
    // A restart that wants only what comes next skips the 17 waiting (a strategy whose
    // ticks would be seconds old).
    let mut b = consumer("live", "1");
    b.expect_line(
        &format!("attached gen=2 pos=20 backlog=0 skipped=17 took_over=Some({a_pid})"),
        t20,
    );
    tx.push(100).unwrap();
    b.expect_line("got 100 at 20", t20);
    tx.try_push(200).unwrap();
    tx.try_push(201).unwrap();
    let b_pid = b.child.id();
    b.kill9();
    // A restart that must see everything gets what the dead one left, marked as backlog
    // by position, then new items.
    let mut c = consumer("backlog", "3");
    c.expect_line(
        &format!("attached gen=3 pos=21 backlog=2 skipped=0 took_over=Some({b_pid})"),
        t20,
    );
    c.expect_line("got 200 at 21 (backlog)", t20);
    c.expect_line("got 201 at 22 (backlog)", t20);
    // The producer tells which of its items the new consumer reads.
    let since = tx.consumer_attachment().unwrap();
    assert_eq!((since.generation, since.since), (3, 21));
    assert_eq!(tx.position(), 23);
    tx.try_push(300).unwrap();
    c.expect_line("got 300 at 23", t20);
    c.kill9();
}

/// Child: joins as producer, reports its attachment, pushes `SHMRING_FROM..SHMRING_TO`,
/// and holds the end until killed.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_restarted_producer() {
    let Some(name) = child_name() else { return };
    let from: u64 = std::env::var("SHMRING_FROM").unwrap().parse().unwrap();
    let to: u64 = std::env::var("SHMRING_TO").unwrap().parse().unwrap();
    let ring = spsc::open::<u64>(&name).unwrap();
    let mut tx = ring.producer().unwrap();
    let a = tx.attachment();
    for v in from..to {
        tx.push(v).unwrap();
    }
    println!(
        "CHILD:pushed gen={} pos={} took_over={:?}",
        a.generation, a.position, a.took_over_from
    );
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_consumer_tells_a_dead_producers_items_from_its_successors() {
    let (name, _c) = scratch("restart-p");
    let ring = spsc::create::<u64>(&name, 64).unwrap();
    let mut rx = ring.consumer().unwrap();
    let t20 = Duration::from_secs(20);
    let producer = |from: u64, to: u64| {
        let mut c = child("child_restarted_producer", &name);
        c.env("SHMRING_FROM", from.to_string())
            .env("SHMRING_TO", to.to_string());
        Running::spawn(c)
    };
    let mut a = producer(0, 5);
    a.expect_line("pushed gen=1 pos=0 took_over=None", t20);
    let a_pid = a.child.id();
    a.kill9();
    let mut b = producer(50, 55);
    b.expect_line(&format!("pushed gen=2 pos=5 took_over=Some({a_pid})"), t20);
    let p = rx.producer_attachment().unwrap();
    assert_eq!((p.generation, p.since), (2, 5));
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for _ in 0..10 {
        let pos = rx.position();
        let v = rx.pop_timeout(t20).unwrap();
        if pos < p.since {
            from_a.push(v);
        } else {
            from_b.push(v);
        }
    }
    assert_eq!(from_a, [0, 1, 2, 3, 4]);
    assert_eq!(from_b, [50, 51, 52, 53, 54]);
    assert_eq!(rx.attachment().generation, 1);
    b.kill9();
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_mpmc_consumer_holds() {
    let Some(name) = child_name() else { return };
    let ring = mpmc::open::<u64>(&name).unwrap();
    let rx = ring.consumer().unwrap();
    let a = rx.attachment();
    println!("CHILD:endpoint {} gen {}", a.endpoint, a.generation);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn an_mpmc_endpoint_taken_over_from_a_dead_holder_says_whose_it_was() {
    let (name, _c) = scratch("restart-m");
    let ring = mpmc::create::<u64>(&name, 16).unwrap();
    let tx = ring.producer().unwrap();
    assert_eq!(tx.attachment().generation, 1);
    assert_eq!(tx.attachment().took_over_from, None);
    let mut a = Running::spawn(child("child_mpmc_consumer_holds", &name));
    a.expect_line("endpoint 0 gen 1", Duration::from_secs(20));
    let pid = a.child.id();
    a.kill9();
    let rx = ring.consumer().unwrap();
    let at = rx.attachment();
    assert_eq!(
        (at.endpoint, at.generation, at.took_over_from),
        (0, 2, Some(pid))
    );
}
