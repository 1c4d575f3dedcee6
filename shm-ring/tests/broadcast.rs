//! Broadcast rings: every subscriber receives every message in order; under overwrite,
//! received + lagged = published exactly; under back-pressure, 4 subscriber processes
//! receive everything exactly once; late join with history; publishers and subscribers
//! killed at each step or stalled past every timeout; untether; hostile bytes.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use shm_core::OpenErrorKind;
use shm_ring::broadcast::{self, Policy, Ring, MAX_SUBSCRIBERS};
use shm_ring::{spsc, PublishError, RecvError, RingError, Role};

const ROLE: &str = "SHMRING_ROLE";
const ARG: &str = "SHMRING_ARG";

fn role(r: &str, name: &str, arg: impl ToString) -> std::process::Command {
    let mut c = child("child_broadcast", name);
    c.env(ROLE, r).env(ARG, arg.to_string());
    c
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_broadcast() {
    let Some(name) = child_name() else { return };
    let arg: u64 = std::env::var(ARG).unwrap().parse().unwrap();
    match std::env::var(ROLE).unwrap().as_str() {
        "subscribe" => subscribe_and_count(&name, arg),
        "publish" => publish_n(&name, arg),
        "publish-batch" => publish_batches(&name, arg),
        "stall" => subscribe_and_stall(&name),
        other => panic!("unknown role {other}"),
    }
}

/// The value published at position `p` (a test can tell a torn or misplaced one).
fn value(p: u64) -> [u64; 4] {
    [p, !p, p.rotate_left(17), p ^ 0x5555_5555_5555_5555]
}

/// Checks a received value against the position it should hold.
fn check(v: [u64; 4], expect: u64) {
    assert_eq!(
        v,
        value(expect),
        "message at position {expect} is wrong or torn"
    );
}

/// Receives until `Disconnected`/`PeerDied`, checking each message's position; `arg`: 1 =
/// back-pressure (a lap is a failure), 2 = slow (yields every 64 messages).
fn subscribe_and_count(name: &str, arg: u64) {
    let ring = broadcast::open::<[u64; 4]>(name).unwrap();
    let mut sub = ring.subscribe().unwrap();
    let mut expect = sub.position();
    println!("CHILD:attached");
    let (mut received, mut lagged) = (0u64, 0u64);
    let end = loop {
        match sub.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => {
                check(v, expect);
                expect += 1;
                received += 1;
                if arg == 2 && received % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            Err(RecvError::Lagged(n)) => {
                assert_ne!(arg, 1, "a back-pressure subscriber was lapped");
                expect += n;
                lagged += n;
            }
            Err(e) => break e,
        }
    };
    println!("CHILD:got {received} {lagged} {end:?}");
}

/// Publishes `arg` messages from the current position on (a fault point may kill it).
fn publish_n(name: &str, arg: u64) {
    let ring = broadcast::open::<[u64; 4]>(name).unwrap();
    let mut p = ring.publisher().unwrap();
    println!("CHILD:attached {}", p.position());
    for _ in 0..arg {
        let at = p.position();
        p.publish(value(at)).unwrap();
    }
    println!("CHILD:done");
}

/// Publishes `arg` batches of 5 (`publish_slice`).
fn publish_batches(name: &str, arg: u64) {
    let ring = broadcast::open::<[u64; 4]>(name).unwrap();
    let mut p = ring.publisher().unwrap();
    println!("CHILD:attached {}", p.position());
    for _ in 0..arg {
        let at = p.position();
        let batch: Vec<_> = (at..at + 5).map(value).collect();
        assert_eq!(p.publish_slice(&batch).unwrap(), 5);
    }
    println!("CHILD:done");
}

/// Subscribes and never reads again.
fn subscribe_and_stall(name: &str) {
    let ring = broadcast::open::<[u64; 4]>(name).unwrap();
    let _sub = ring.subscribe().unwrap();
    println!("CHILD:attached");
    std::thread::sleep(Duration::from_secs(600));
}

fn parse_got(line: &str) -> (u64, u64, String) {
    let mut f = line.split(' ');
    assert_eq!(f.next(), Some("got"), "{line}");
    let r = f.next().unwrap().parse().unwrap();
    let l = f.next().unwrap().parse().unwrap();
    (r, l, f.next().unwrap().to_owned())
}

// ------------------------------------------------------------ across processes

#[test]
fn four_subscriber_processes_under_back_pressure_receive_everything_in_order() {
    const N: u64 = 200_000;
    let (name, _c) = scratch("bcast-bp4");
    let ring = broadcast::Builder::<[u64; 4]>::new(&name)
        .capacity(256)
        .policy(Policy::BackPressure)
        .create()
        .unwrap();
    let mut subs: Vec<_> = (0..4)
        .map(|_| Running::spawn(role("subscribe", &name, 1)))
        .collect();
    for s in &mut subs {
        s.expect_line("attached", Duration::from_secs(30));
    }
    let mut p = ring.publisher().unwrap();
    let t = Instant::now();
    for i in 0..N {
        p.publish_timeout(value(i), Duration::from_secs(60))
            .unwrap();
    }
    drop(p);
    for s in &mut subs {
        let (received, lagged, end) = parse_got(&s.next_line(Duration::from_secs(120)));
        assert_eq!((received, lagged), (N, 0), "every message, none lapped");
        assert_eq!(end, "Disconnected");
        assert!(s.wait_success(Duration::from_secs(30)));
    }
    println!(
        "broadcast 1P4S back-pressure: {N} messages to each of 4 in {:?} (debug build)",
        t.elapsed()
    );
}

#[test]
fn overwrite_subscribers_get_received_plus_lagged_equal_to_published_exactly() {
    const N: u64 = 300_000;
    let (name, _c) = scratch("bcast-ow");
    let ring = broadcast::create::<[u64; 4]>(&name, 64).unwrap();
    let mut subs: Vec<_> = [0, 2, 2]
        .iter()
        .map(|&a| Running::spawn(role("subscribe", &name, a)))
        .collect();
    for s in &mut subs {
        s.expect_line("attached", Duration::from_secs(30));
    }
    let mut p = ring.publisher().unwrap();
    for i in 0..N {
        p.publish(value(i)).unwrap();
    }
    drop(p);
    for s in &mut subs {
        let (received, lagged, end) = parse_got(&s.next_line(Duration::from_secs(120)));
        assert_eq!(
            received + lagged,
            N,
            "received {received} + lagged {lagged}"
        );
        assert!(received > 0);
        assert_eq!(end, "Disconnected");
        assert!(s.wait_success(Duration::from_secs(30)));
    }
}

/// The publisher killed at each step of a publish: subscribers receive what was published,
/// never a torn value, then `PeerDied`; a new publisher takes over and its first message is
/// the next one every subscriber receives.
#[test]
fn a_publisher_killed_at_any_step_leaves_no_torn_value_and_is_taken_over() {
    // (point, k, messages the subscriber receives, how it ends). Killed while claiming
    // the end, the publisher never attached: nothing tells subscribers it existed.
    // "publish-batch": killed after sealing 2 slots of its second batch of 5, before the
    // batch's `tail` store: the successor goes on after both.
    for (r, point, k, before, how) in [
        (
            "publish",
            "broadcast-publisher-wrote",
            50,
            49,
            RecvError::PeerDied,
        ),
        (
            "publish",
            "broadcast-publisher-sealed",
            50,
            50,
            RecvError::PeerDied,
        ),
        (
            "publish",
            "broadcast-publisher-published",
            50,
            50,
            RecvError::PeerDied,
        ),
        (
            "publish-batch",
            "broadcast-publisher-sealed",
            7,
            7,
            RecvError::PeerDied,
        ),
        ("publish", "end-claimed", 1, 0, RecvError::Timeout),
    ] {
        let (name, _c) = scratch("bcast-kill-p");
        // Large enough that the subscriber, which reads only after the death, is not lapped.
        let ring = broadcast::create::<[u64; 4]>(&name, 64).unwrap();
        let mut sub = ring.subscribe().unwrap();
        let mut doomed = role(r, &name, 1_000_000);
        doomed.env("SHMRING_FAULT", format!("{point}:{k}"));
        let mut doomed = Running::spawn(doomed);
        let pid = doomed.child.id();
        assert!(
            !doomed.wait_success(Duration::from_secs(60)),
            "{point}: killed"
        );
        let mut got = 0u64;
        let mut expect = 0u64;
        let end = loop {
            match sub.recv_timeout(Duration::from_millis(500)) {
                Ok(v) => {
                    check(v, expect);
                    expect += 1;
                    got += 1;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(end, how, "{point}");
        assert_eq!(got, before, "{point}");
        let mut next = ring.publisher().unwrap();
        assert_eq!(next.attachment().took_over_from, Some(pid), "{point}");
        assert_eq!(
            next.position(),
            before,
            "{point}: goes on after the last published"
        );
        next.publish(value(next.position())).unwrap();
        check(sub.recv_timeout(Duration::from_secs(10)).unwrap(), before);
    }
}

#[test]
fn a_killed_or_stalled_subscriber_stops_holding_a_back_pressure_publisher() {
    // Killed at rest, and killed mid-read (between its copy and its position store).
    for (r, fault) in [
        ("stall", None),
        ("subscribe", Some("broadcast-subscriber-copied:3")),
    ] {
        let (name, _c) = scratch("bcast-kill-s");
        let ring = broadcast::Builder::<[u64; 4]>::new(&name)
            .capacity(16)
            .policy(Policy::BackPressure)
            .create()
            .unwrap();
        let mut cmd = role(r, &name, 1);
        if let Some(f) = fault {
            cmd.env("SHMRING_FAULT", f);
        }
        let mut doomed = Running::spawn(cmd);
        doomed.expect_line("attached", Duration::from_secs(30));
        let mut p = ring.publisher().unwrap();
        let mut published = 0;
        while published < 16 {
            p.publish_timeout(value(published), Duration::from_secs(10))
                .unwrap();
            published += 1;
        }
        if fault.is_some() {
            assert!(
                !doomed.wait_success(Duration::from_secs(30)),
                "killed at its fault"
            );
        } else {
            assert!(matches!(
                p.try_publish(value(16)),
                Err(PublishError::Full(_))
            ));
            doomed.kill9();
        }
        // The dead subscriber's record no longer holds the publisher back, even one that
        // only ever calls the non-blocking forms (they check the blocker too).
        let t = Instant::now();
        while p.try_publish(value(published)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{r}: try_publish never got past the dead subscriber"
            );
            std::thread::yield_now();
        }
        published += 1;
        // (A batch takes at most a ring: what one scan clears.)
        let batch: Vec<_> = (published..published + 16).map(value).collect();
        assert_eq!(p.publish_slice(&batch).unwrap(), 16, "{r}");
        published += 16;
        for i in published..published + 32 {
            p.publish_timeout(value(i), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        assert_eq!(ring.stats().evictions, 1, "{r}");
        // Its record is taken over once the free ones are gone.
        let all: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| ring.subscribe().unwrap())
            .collect();
        let pid = doomed.child.id();
        assert!(
            all.iter()
                .any(|s| s.subscription().took_over_from == Some(pid)),
            "{r}"
        );
    }
}

#[test]
fn a_subscriber_stalled_mid_copy_past_a_lap_gets_lagged_never_a_torn_value() {
    let (name, _c) = scratch("bcast-stall");
    let ring = broadcast::create::<[u64; 4]>(&name, 8).unwrap();
    let mut p = ring.publisher().unwrap();
    let mut cmd = role("subscribe", &name, 0);
    cmd.env("SHMRING_FAULT", "broadcast-subscriber-copied:1:400");
    let mut s = Running::spawn(cmd);
    s.expect_line("attached", Duration::from_secs(30));
    p.publish(value(0)).unwrap();
    // The subscriber copies position 0 and stalls 400 ms; we lap it many times meanwhile.
    std::thread::sleep(Duration::from_millis(100));
    for i in 1..1000 {
        p.publish(value(i)).unwrap();
    }
    drop(p);
    let (received, lagged, end) = parse_got(&s.next_line(Duration::from_secs(60)));
    assert_eq!(received + lagged, 1000);
    assert!(
        lagged >= 1000 - 8,
        "position 0's copy was thrown away: {lagged}"
    );
    assert_eq!(end, "Disconnected");
}

// ------------------------------------------------------------ in one process

#[test]
fn threads_overwrite_exact_counts_and_order() {
    const N: u64 = 200_000;
    let ring = Ring::<[u64; 4]>::in_process(32, Policy::Overwrite, None).unwrap();
    let subs: Vec<_> = (0..3).map(|_| ring.subscribe().unwrap()).collect();
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for (k, mut sub) in subs.into_iter().enumerate() {
            let done = &done;
            s.spawn(move || {
                let (mut expect, mut received, mut lagged) = (0u64, 0u64, 0u64);
                loop {
                    match sub.recv() {
                        Ok(v) => {
                            check(v, expect);
                            expect += 1;
                            received += 1;
                            if k == 2 && received % 16 == 0 {
                                std::thread::yield_now();
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            expect += n;
                            lagged += n;
                        }
                        Err(RecvError::Disconnected) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(received + lagged, N);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut p = ring.publisher().unwrap();
        for i in 0..N {
            p.publish(value(i)).unwrap();
        }
    });
    assert_eq!(done.load(Ordering::Relaxed), 3);
    let st = ring.stats();
    assert_eq!(st.published, N);
    assert!(st.subscribers.is_empty());
}

#[test]
fn threads_back_pressure_lose_nothing_with_batches() {
    const N: u64 = 100_000;
    let ring = Ring::<u64>::in_process(64, Policy::BackPressure, None).unwrap();
    let subs: Vec<_> = (0..3).map(|_| ring.subscribe().unwrap()).collect();
    std::thread::scope(|s| {
        for mut sub in subs {
            s.spawn(move || {
                let mut expect = 0u64;
                let mut buf = [0u64; 7];
                loop {
                    match sub.recv_slice(&mut buf) {
                        Ok(n) => {
                            for &v in &buf[..n] {
                                assert_eq!(v, expect);
                                expect += 1;
                            }
                        }
                        Err(RecvError::Empty) => std::thread::yield_now(),
                        Err(RecvError::Disconnected) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(expect, N);
            });
        }
        let mut p = ring.publisher().unwrap();
        let mut next = 0u64;
        let batch: Vec<u64> = (0..10).collect();
        while next < N {
            let len = (N - next).min(10) as usize;
            let vals: Vec<u64> = batch[..len].iter().map(|b| b + next).collect();
            let n = p.publish_slice(&vals).unwrap();
            next += n as u64;
            if n == 0 {
                std::thread::yield_now();
            }
        }
    });
}

#[test]
fn late_join_with_and_without_history() {
    let ring = Ring::<u64>::in_process(16, Policy::Overwrite, None).unwrap();
    let mut p = ring.publisher().unwrap();
    for i in 0..10 {
        p.publish(i).unwrap();
    }
    let mut live = ring.subscribe().unwrap();
    assert_eq!(live.try_recv(), Err(RecvError::Empty));
    let mut four = ring.subscribe_with_history(4).unwrap();
    assert_eq!(four.subscription().history, 4);
    let mut all = ring.subscribe_with_history(16).unwrap();
    assert_eq!(
        all.subscription().history,
        10,
        "only 10 were ever published"
    );
    assert!(matches!(
        ring.subscribe_with_history(17),
        Err(RingError::HistoryTooLong {
            asked: 17,
            capacity: 16,
            ..
        })
    ));
    p.publish(10).unwrap();
    assert_eq!(live.try_recv(), Ok(10));
    for want in 6..=10 {
        assert_eq!(four.try_recv(), Ok(want));
    }
    for want in 0..=10 {
        assert_eq!(all.try_recv(), Ok(want));
    }
    assert_eq!(all.try_recv(), Err(RecvError::Empty));
    // History after a wrap: the ring holds the last 16.
    for i in 11..40 {
        p.publish(i).unwrap();
    }
    let mut full = ring.subscribe_with_history(16).unwrap();
    // The oldest slot may be overwritten by the next publish: all 16 are still there now.
    for want in 24..40 {
        assert_eq!(full.try_recv(), Ok(want));
    }
}

#[test]
fn lagged_reports_exactly_what_was_missed_and_goes_on_from_the_oldest_held() {
    let ring = Ring::<u64>::in_process(4, Policy::Overwrite, None).unwrap();
    let mut p = ring.publisher().unwrap();
    let mut s = ring.subscribe().unwrap();
    for i in 0..6 {
        p.publish(i).unwrap();
    }
    assert_eq!(s.lag(), 6);
    assert_eq!(s.try_recv(), Err(RecvError::Lagged(3)));
    assert_eq!(s.try_recv(), Ok(3));
    assert_eq!(s.try_recv(), Ok(4));
    assert_eq!(s.try_recv(), Ok(5));
    assert_eq!(s.try_recv(), Err(RecvError::Empty));
    let st = ring.stats();
    assert_eq!(st.subscribers[0].lagged, 3);
    assert_eq!(st.subscribers[0].received, 3);
    assert_eq!(st.subscribers[0].lag, 0);
}

#[test]
fn untether_timeout_evicts_a_stalled_subscriber_who_learns_it_once() {
    let ring =
        Ring::<u64>::in_process(16, Policy::BackPressure, Some(Duration::from_millis(50))).unwrap();
    let mut p = ring.publisher().unwrap();
    let mut stalled = ring.subscribe().unwrap();
    let mut live = ring.subscribe().unwrap();
    for i in 0..16 {
        p.publish(i).unwrap();
        assert_eq!(live.try_recv(), Ok(i));
    }
    assert!(matches!(p.try_publish(16), Err(PublishError::Full(16))));
    let t = Instant::now();
    p.publish_timeout(16, Duration::from_secs(10)).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(live.try_recv(), Ok(16));
    let st = ring.stats();
    assert_eq!(st.evictions, 1);
    assert!(st.subscribers.iter().any(|s| s.evicted));
    assert_eq!(stalled.try_recv(), Err(RecvError::Evicted));
    // Untethered now: lapped like an overwrite subscriber, every message accounted for.
    let mut expect = 0u64;
    loop {
        match stalled.try_recv() {
            Ok(v) => {
                assert_eq!(v, expect);
                expect += 1;
            }
            Err(RecvError::Lagged(n)) => expect += n,
            Err(RecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(expect, 17);
    // It no longer holds the publisher back.
    for i in 17..100 {
        p.publish(i).unwrap();
        assert_eq!(live.try_recv(), Ok(i));
    }
}

#[test]
fn a_sleeping_subscriber_is_woken_by_publish_close_and_timeout() {
    let ring = Ring::<u64>::in_process(8, Policy::Overwrite, None).unwrap();
    let mut s = ring.subscribe().unwrap();
    assert_eq!(
        s.recv_timeout(Duration::from_millis(20)),
        Err(RecvError::Timeout)
    );
    let mut p = ring.publisher().unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            p.publish(7).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(p);
        });
        assert_eq!(s.recv(), Ok(7));
        assert_eq!(s.recv(), Err(RecvError::Disconnected));
    });
    // A new publisher: receiving goes on.
    let mut p = ring.publisher().unwrap();
    p.publish(8).unwrap();
    assert_eq!(s.recv(), Ok(8));
}

#[test]
fn subscriber_records_are_limited_and_freed_on_drop() {
    let ring = Ring::<u64>::in_process(8, Policy::Overwrite, None).unwrap();
    let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
        .map(|_| ring.subscribe().unwrap())
        .collect();
    assert!(matches!(
        ring.subscribe(),
        Err(RingError::TooManyEndpoints {
            role: Role::Subscriber,
            max: MAX_SUBSCRIBERS,
            ..
        })
    ));
    assert_eq!(ring.stats().subscribers.len(), MAX_SUBSCRIBERS);
    drop(subs);
    assert!(ring.stats().subscribers.is_empty());
    let _again = ring.subscribe().unwrap();
    let _p = ring.publisher().unwrap();
    assert!(matches!(
        ring.publisher(),
        Err(RingError::RoleTaken {
            role: Role::Publisher,
            ..
        })
    ));
}

#[test]
fn positions_and_sequence_words_wrap() {
    for start in [u64::MAX - 20, (1 << 63) - 20] {
        let (name, _c) = scratch("bcast-wrap");
        let ring = broadcast::Builder::<u64>::new(&name)
            .capacity(8)
            .initial_position(start)
            .create()
            .unwrap();
        let mut p = ring.publisher().unwrap();
        let mut s = ring.subscribe().unwrap();
        let mut lazy = ring.subscribe().unwrap();
        for i in 0..40u64 {
            p.publish(i).unwrap();
            assert_eq!(s.try_recv(), Ok(i));
        }
        assert_eq!(lazy.try_recv(), Err(RecvError::Lagged(33)));
        for want in 33..40 {
            assert_eq!(lazy.try_recv(), Ok(want));
        }
        let mut late = ring.subscribe_with_history(3).unwrap();
        assert_eq!(late.try_recv(), Ok(37));
        assert_eq!(ring.stats().published, 40);
    }
}

// ------------------------------------------------------------ bad input

#[test]
fn opening_checks_kind_type_and_policy() {
    let (name, _c) = scratch("bcast-open");
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(8)
        .policy(Policy::BackPressure)
        .untether_timeout(Duration::from_secs(2))
        .create()
        .unwrap();
    let other = broadcast::open::<u64>(&name).unwrap();
    assert_eq!(other.policy(), Policy::BackPressure);
    assert_eq!(other.untether_timeout(), Some(Duration::from_secs(2)));
    assert!(matches!(
        spsc::open::<u64>(&name),
        Err(RingError::Open(ref o)) if matches!(o.kind(), OpenErrorKind::KindMismatch { .. })
    ));
    assert!(broadcast::open::<u32>(&name).is_err());
    // A hostile policy word: `Corrupted` on open.
    let policy_at = (ring.raw_control() as usize + 16) as *mut u64;
    // SAFETY: the policy word of the live control block, written atomically.
    unsafe { AtomicU64::from_ptr(policy_at) }.store(7, Ordering::Relaxed);
    let e = broadcast::open::<u64>(&name).err().expect("refused");
    assert!(matches!(e, RingError::Corrupted { .. }), "{e}");
    assert!(e.to_string().contains("policy 7"), "{e}");
    assert!(matches!(
        broadcast::create::<u64>(&unique_name("bcast-zero"), 0),
        Err(RingError::ZeroCapacity { .. })
    ));
}

#[test]
fn hostile_sequence_words_and_records_give_corrupted_never_a_hang() {
    let ring = Ring::<u64>::in_process(8, Policy::BackPressure, None).unwrap();
    let mut p = ring.publisher().unwrap();
    let mut s = ring.subscribe().unwrap();
    p.publish(1).unwrap();
    let (slots, stride, _) = ring.raw_slots();
    let seq0 = slots.cast::<u64>();
    // SAFETY: slot 0's sequence word, written atomically (as a hostile peer would).
    let seq0 = unsafe { AtomicU64::from_ptr(seq0) };
    // Ahead of position 0 by an amount that is no whole number of laps.
    seq0.store(2 + 6, Ordering::Relaxed);
    assert_eq!(s.try_recv(), Err(RecvError::Corrupted));
    // Impossibly far ahead.
    seq0.store(1 << 63, Ordering::Relaxed);
    assert_eq!(s.try_recv(), Err(RecvError::Corrupted));
    // A subscriber record claiming a position a publisher can never have reached holds the
    // publisher back as a stalled subscriber would (it is not trusted to let it run over
    // anyone): `Full`, `Timeout`, never a hang; and a ring with an untether timeout cuts it
    // loose.
    let ctrl = ring.raw_control() as usize;
    let pos_word = (ctrl + 512 + 128 * s.subscription().index + 16) as *mut u64;
    // SAFETY: the subscriber record's position word, written atomically.
    unsafe { AtomicU64::from_ptr(pos_word) }.store(u64::MAX / 3, Ordering::Relaxed);
    // (The publisher writes what its last scan allowed before it looks again.)
    let mut i = 2;
    while p.try_publish(i).is_ok() {
        i += 1;
        assert!(i < 2 + 8, "the publisher ran past a ring");
    }
    assert!(matches!(
        p.publish_timeout(i, Duration::from_millis(20)),
        Err(PublishError::Timeout(_))
    ));
    let ring =
        Ring::<u64>::in_process(8, Policy::BackPressure, Some(Duration::from_millis(5))).unwrap();
    let mut p = ring.publisher().unwrap();
    let s = ring.subscribe().unwrap();
    let ctrl = ring.raw_control() as usize;
    let pos_word = (ctrl + 512 + 128 * s.subscription().index + 16) as *mut u64;
    // SAFETY: as above.
    unsafe { AtomicU64::from_ptr(pos_word) }.store(u64::MAX / 3, Ordering::Relaxed);
    for i in 0..100 {
        p.publish_timeout(i, Duration::from_secs(5)).unwrap();
    }
    assert_eq!(ring.stats().evictions, 1);
    let _ = stride;
}

#[test]
fn handles_learn_that_their_name_was_removed_and_re_created() {
    let (name, _c) = scratch("bcast-recreated");
    let old = broadcast::create::<u64>(&name, 8).unwrap();
    let (mut p, mut s) = (old.publisher().unwrap(), old.subscribe().unwrap());
    assert!(old.is_current() && p.is_current() && s.is_current());
    shm_core::remove(&name).unwrap();
    assert!(
        !old.is_current() && !p.is_current() && !s.is_current(),
        "the name is gone"
    );
    let new = broadcast::create::<u64>(&name, 8).unwrap();
    assert!(new.is_current());
    assert!(!old.is_current() && !p.is_current() && !s.is_current());
    // The old ring goes on for its own handles, and nothing crosses to the new one.
    p.try_publish(1).unwrap();
    assert_eq!(s.try_recv(), Ok(1));
    let mut s2 = new.subscribe().unwrap();
    assert!(s2.is_current());
    assert_eq!(s2.try_recv(), Err(RecvError::Empty));
    // The old ring's creator, dropped, leaves its successor's name alone.
    drop((p, s, old));
    assert!(new.is_current() && s2.is_current());
    let mut p2 = broadcast::open::<u64>(&name).unwrap().publisher().unwrap();
    p2.try_publish(2).unwrap();
    assert_eq!(s2.try_recv(), Ok(2));
}

/// `open_declared`: a ring of `[u32; 3]` read and written through a `[u64; 2]` view with
/// the fingerprint its header declares; another fingerprint, or a view of another size
/// class, is refused with both named.
#[test]
fn a_byte_view_opens_a_ring_by_its_declared_fingerprint_and_refuses_other_shapes() {
    let (name, _c) = scratch("bcast-view");
    let ring = broadcast::create::<[u32; 3]>(&name, 8).unwrap();
    let declared = shm_core::inspect(&name)
        .unwrap()
        .header
        .unwrap()
        .fingerprint;
    let mut typed_sub = ring.subscribe().unwrap();
    let view = broadcast::open_declared::<[u64; 2]>(&name, declared).unwrap();
    let mut raw_sub = view.subscribe().unwrap();
    let mut typed_pub = ring.publisher().unwrap();
    typed_pub.publish([1, 2, 3]).unwrap();
    let got = raw_sub.try_recv().unwrap();
    assert_eq!(
        &bytemuck::bytes_of(&got)[..12],
        bytemuck::bytes_of(&[1u32, 2, 3])
    );
    drop(typed_pub);
    let mut raw_pub = view.publisher().unwrap();
    let mut v = [0u64; 2];
    bytemuck::bytes_of_mut(&mut v)[..12].copy_from_slice(bytemuck::bytes_of(&[7u32, 8, 9]));
    raw_pub.publish(v).unwrap();
    assert_eq!(typed_sub.try_recv(), Ok([1, 2, 3]));
    assert_eq!(typed_sub.try_recv(), Ok([7, 8, 9]));

    match broadcast::open_declared::<[u64; 3]>(&name, declared) {
        Err(e @ RingError::PayloadView { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains("size 12, align 4") && s.contains("size 24"),
                "{s}"
            );
        }
        other => panic!("a 24-byte view of a 12-byte payload: {:?}", other.err()),
    }
    let other = shm_core::Fingerprint::of::<[u16; 6]>(0, 0);
    match broadcast::open_declared::<[u64; 2]>(&name, other) {
        Err(RingError::Open(e)) => {
            let s = e.to_string();
            assert!(s.contains("[u16; 6]") && s.contains("[u32; 3]"), "{s}");
        }
        other => panic!("another payload type: {:?}", other.err()),
    }
}
