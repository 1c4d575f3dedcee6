//! The byte log: variable-length messages from many producers (threads and processes) to
//! one consumer; padding at the wrap; claims aborted, shortened, stalled, or left by a
//! killed producer; a consumer killed in the middle of a release; hostile words.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use shm_ring::log::{self, Ring};
use shm_ring::{PopError, RingError, SendError};

const ROLE: &str = "SHMRING_ROLE";
const ARG: &str = "SHMRING_ARG";
const HANG: Duration = Duration::from_secs(30);

fn role(r: &str, name: &str, arg: u64, fault: &str) -> std::process::Command {
    let mut c = child("child_log", name);
    c.env(ROLE, r).env(ARG, arg.to_string());
    if !fault.is_empty() {
        c.env("SHMRING_FAULT", fault);
    }
    c
}

/// A message of producer `id`, number `seq`: its length (12 ..= `max`) and every byte
/// follow from `(id, seq)`, so a lost, doubled, torn or misframed message shows.
fn msg(id: u32, seq: u64, max: usize) -> Vec<u8> {
    let h = (u64::from(id) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let len = 12 + (h % (max as u64 - 11)) as usize;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((12..len).map(|k| (id as usize * 31 + seq as usize * 7 + k) as u8));
    m
}

/// The producer and number of a message, after checking all of it.
fn check(bytes: &[u8], max: usize) -> (u32, u64) {
    assert!(bytes.len() >= 12, "a message of {} bytes", bytes.len());
    let id = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[4..12].try_into().unwrap());
    assert_eq!(
        bytes,
        &msg(id, seq, max)[..],
        "message {seq} of producer {id} is torn"
    );
    (id, seq)
}

/// Checks that each producer's messages come in order, each once.
#[derive(Default)]
struct Order(HashMap<u32, u64>);

impl Order {
    fn next(&mut self, (id, seq): (u32, u64)) {
        let want = self.0.entry(id).or_insert(0);
        assert_eq!(seq, *want, "producer {id}: lost, doubled or reordered");
        *want += 1;
    }
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_log() {
    let Some(name) = child_name() else { return };
    let arg: u64 = std::env::var(ARG).unwrap().parse().unwrap();
    match std::env::var(ROLE).unwrap().as_str() {
        // Sends `arg` messages as producer (its endpoint index is its id), retrying a claim
        // that expired (it stalled past the claim timeout and was given up).
        "produce" => {
            let ring = log::open(&name).unwrap();
            let max = ring.max_len() as usize;
            let mut tx = ring.producer().unwrap();
            let id = tx.attachment().endpoint as u32;
            println!("CHILD:attached {id}");
            let mut expired = 0;
            for seq in 0..arg {
                let m = msg(id, seq, max);
                // Odd messages with `try_send`, which reports an expired claim (and is
                // retried here); even ones with `send_timeout`, which retries it itself.
                loop {
                    let r = if seq % 2 == 1 {
                        tx.try_send(&m)
                    } else {
                        tx.send_timeout(&m, HANG)
                    };
                    match r {
                        Ok(()) => break,
                        Err(SendError::Full) => std::thread::yield_now(),
                        Err(SendError::Expired) => expired += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            println!("CHILD:done {expired}");
        }
        // Receives `arg` messages, printing each one's number, then holds the end.
        "consume" => {
            let ring = log::open(&name).unwrap();
            let max = ring.max_len() as usize;
            let mut rx = ring.consumer().unwrap();
            println!("CHILD:attached");
            for _ in 0..arg {
                let f = rx.recv_timeout(HANG).unwrap();
                let (_, seq) = check(&f, max);
                println!("CHILD:got {seq}");
            }
            println!("CHILD:holding"); // every frame it read is dropped by now
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Receives until every producer is gone, checking each message; returns how many came
/// and how it ended.
fn drain_all(rx: &mut log::Consumer, max: usize, order: &mut Order) -> (u64, PopError) {
    let mut n = 0;
    loop {
        match rx.recv_timeout(HANG) {
            Ok(f) => {
                order.next(check(&f, max));
                n += 1;
            }
            Err(e) => return (n, e),
        }
    }
}

/// `drain_all` by `try_recv` in a loop, as a consumer that polls (no blocking call) does:
/// it must see a dead producer's claim settled and its departure, as a blocking one does.
fn drain_polling(rx: &mut log::Consumer, max: usize, order: &mut Order) -> (u64, PopError) {
    let (mut n, t) = (0, Instant::now());
    loop {
        match rx.try_recv() {
            Ok(f) => {
                order.next(check(&f, max));
                n += 1;
            }
            Err(PopError::Empty | PopError::InFlight) => {
                assert!(
                    t.elapsed() < HANG,
                    "a polling consumer hung at {n} messages"
                );
                std::hint::spin_loop();
            }
            Err(e) => return (n, e),
        }
    }
}

#[test]
fn three_producer_processes_with_random_lengths_deliver_each_message_once_in_order() {
    const N: u64 = 20_000;
    let (name, _c) = scratch("log-3p");
    let ring = log::Builder::new(&name)
        .capacity(64 << 10)
        .max_len(1000)
        .create()
        .unwrap();
    let mut rx = ring.consumer().unwrap();
    let t = Instant::now();
    let mut kids: Vec<_> = (0..3)
        .map(|_| Running::spawn(role("produce", &name, N, "")))
        .collect();
    let mut order = Order::default();
    let (n, end) = drain_all(&mut rx, 1000, &mut order);
    assert_eq!(end, PopError::Disconnected);
    assert_eq!(n, 3 * N);
    assert_eq!(order.0.len(), 3);
    assert!(order.0.values().all(|&v| v == N));
    for k in &mut kids {
        assert!(k.wait_success(HANG));
    }
    let s = ring.stats();
    assert_eq!(s.received, 3 * N);
    assert_eq!((s.skipped, s.abandoned, s.aborted), (0, 0, 0));
    println!(
        "log 3P1C: {} messages, {} bytes in {:?} (debug build), {} full stalls",
        s.received,
        s.bytes,
        t.elapsed(),
        s.full_stalls
    );
}

#[test]
fn threads_with_random_lengths_wrap_the_log_many_times_with_drains_and_frames() {
    for align in [8, 64] {
        threads_wrap(align);
    }
}

fn threads_wrap(align: u64) {
    const N: u64 = if cfg!(miri) { 12 } else { 30_000 };
    let ring = Ring::in_process_with(4096, 500, align, log::DEFAULT_CLAIM_TIMEOUT).unwrap();
    assert_eq!(ring.record_align(), align);
    let mut rx = ring.consumer().unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            let mut tx = ring.producer().unwrap();
            s.spawn(move || {
                let id = tx.attachment().endpoint as u32;
                for seq in 0..N {
                    // Every other message written in place and committed short.
                    if seq % 2 == 0 {
                        tx.send(&msg(id, seq, 500)).unwrap();
                    } else {
                        let m = msg(id, seq, 500);
                        let mut c = tx.claim(500).unwrap();
                        c.buf()[..m.len()].copy_from_slice(&m);
                        c.set_type(seq as u16);
                        c.set_flags(id as u8);
                        c.commit(m.len()).unwrap();
                    }
                }
            });
        }
        let mut order = Order::default();
        let mut n = 0;
        while n < 3 * N {
            if n % 3 == 0 {
                let got = rx
                    .drain_timeout(16, HANG, |m| {
                        let (id, seq) = check(m.bytes, 500);
                        if seq % 2 == 1 {
                            assert_eq!((m.msg_type, m.flags), (seq as u16, id as u8));
                        }
                        order.next((id, seq));
                    })
                    .unwrap();
                n += got as u64;
            } else {
                let f = rx.recv_timeout(HANG).unwrap();
                let (id, seq) = check(&f, 500);
                if seq % 2 == 1 {
                    assert_eq!((f.msg_type(), f.flags()), (seq as u16, id as u8));
                }
                order.next((id, seq));
                n += 1;
            }
        }
    });
    assert_eq!(rx.try_recv().unwrap_err(), PopError::Disconnected);
    let s = ring.stats();
    assert_eq!(s.received, 3 * N);
    assert!(s.head > 2 * s.capacity, "the log wrapped: head {}", s.head);
}

#[test]
fn positions_wrap_past_u64_max_with_padding_at_every_end() {
    let (name, _c) = scratch("log-wrap");
    // The first lap crosses u64::MAX itself.
    let (name2, _c2) = scratch("log-wrap2");
    let ring = log::Builder::new(&name2)
        .capacity(1024)
        .max_len(200)
        .initial_position(u64::MAX - 511)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    for seq in 0..100 {
        tx.try_send(&msg(7, seq, 200)).unwrap();
        assert_eq!(check(&rx.try_recv().unwrap(), 200), (7, seq));
    }
    // Opening or creating with options that could not make this log opens it as it is.
    let r = log::open_or_create(&name2, 64).unwrap();
    assert_eq!(
        (r.capacity(), r.max_len(), r.is_creator()),
        (1024, 200, false)
    );
    let start = u64::MAX - 4095; // a lap before the positions wrap
    let ring = log::Builder::new(&name)
        .capacity(1024)
        .max_len(200)
        .initial_position(start)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let mut order = Order::default();
    for seq in 0..2_000 {
        tx.try_send(&msg(7, seq, 200)).unwrap();
        let f = rx.try_recv().unwrap();
        order.next(check(&f, 200));
    }
    assert_eq!(rx.try_recv().unwrap_err(), PopError::Empty);
    assert!(rx.position() < start, "the position wrapped past u64::MAX");
}

#[test]
fn aborted_and_shortened_claims_become_padding_and_lengths_are_checked() {
    let ring = Ring::in_process(1024, 100).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    assert_eq!(
        tx.try_claim(101).err(),
        Some(SendError::TooLong { len: 101, max: 100 })
    );
    // Dropped: padding, skipped by the consumer, counted.
    let mut c = tx.try_claim(64).unwrap();
    c.buf().fill(0xee);
    drop(c);
    // Committed past what was claimed: refused, and given up like a drop.
    let c = tx.try_claim(8).unwrap();
    assert_eq!(c.commit(9), Err(SendError::TooLong { len: 9, max: 8 }));
    // Committed shorter: the rest is padding.
    let mut c = tx.try_claim(100).unwrap();
    c.buf()[..3].copy_from_slice(b"abc");
    c.commit(3).unwrap();
    tx.try_send(b"").unwrap(); // an empty message is a message
    tx.try_send(b"xyz").unwrap();
    assert_eq!(&rx.try_recv().unwrap()[..], b"abc");
    assert_eq!(rx.try_recv().unwrap().len(), 0);
    assert_eq!(&rx.try_recv().unwrap()[..], b"xyz");
    assert_eq!(rx.try_recv().unwrap_err(), PopError::Empty);
    assert_eq!(ring.stats().aborted, 2);
    // Full: a record that does not fit, then room again once the consumer frees it.
    let mut n = 0;
    while tx.try_send(&[1; 100]).is_ok() {
        n += 1;
    }
    assert_eq!(tx.try_send(&[1; 100]), Err(SendError::Full));
    assert!(n >= 7, "{n} records of 108 bytes in 1 KiB");
    // Frames are freed in batches (an eighth of the log), or whenever the consumer finds
    // nothing more to read.
    assert_eq!(rx.try_recv().unwrap().len(), 100);
    assert_eq!(rx.try_recv().unwrap().len(), 100);
    tx.try_send(&[2; 100]).unwrap();
    // A whole log of dropped claims (padding up to `tail == head + capacity`) is empty.
    while rx.try_recv().is_ok() {}
    let ring = Ring::in_process(1024, 504).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    drop(tx.try_claim(504).unwrap());
    drop(tx.try_claim(504).unwrap());
    assert_eq!(tx.try_send(b"x"), Err(SendError::Full));
    assert_eq!(rx.try_recv().unwrap_err(), PopError::Empty);
    tx.try_send(b"after").unwrap();
    assert_eq!(&rx.try_recv().unwrap()[..], b"after");
    // Creation refuses a largest message that does not fit in half the log.
    assert!(matches!(
        Ring::in_process(1024, 505),
        Err(RingError::MaxLenTooLarge {
            max_len: 505,
            capacity: 1024,
            ..
        })
    ));
    assert!(Ring::in_process(1024, 504).is_ok());
}

/// A consumer whose producers are gone (or that none joined yet) sleeps in
/// `wait_for_producers` until one attaches, rather than polling for it: the attach wakes it.
#[test]
fn a_consumer_with_no_producer_sleeps_until_one_attaches() {
    let (name, _c) = scratch("log-wait-attach");
    let ring = log::Builder::new(&name)
        .capacity(4096)
        .max_len(100)
        .create()
        .unwrap();
    let mut rx = ring.consumer().unwrap();
    // None yet: the wait times out.
    assert_eq!(
        rx.wait_for_producers(Duration::from_millis(20)),
        Err(PopError::Timeout)
    );
    for round in 0..2u64 {
        let name2 = name.clone();
        let (leave, told) = std::sync::mpsc::channel::<()>();
        let joiner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut tx = log::open(&name2).unwrap().producer().unwrap();
            tx.try_send(&msg(1, round, 100)).unwrap();
            // Attached until the wait has seen it; then dropped: it leaves again.
            told.recv().unwrap();
        });
        let t = Instant::now();
        rx.wait_for_producers(HANG).unwrap();
        let waited = t.elapsed();
        leave.send(()).unwrap();
        joiner.join().unwrap();
        assert_eq!(check(&rx.try_recv().unwrap(), 100), (1, round));
        // It left: the log says so once drained, and the next wait sleeps again.
        assert_eq!(rx.try_recv().unwrap_err(), PopError::Disconnected);
        println!("round {round}: woken {waited:?} after the wait began (the attach came at 30 ms)");
    }
}

#[test]
fn consumer_close_and_death_reach_the_producers() {
    let ring = Ring::in_process(1024, 100).unwrap();
    let mut tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    tx.try_send(b"1").unwrap();
    drop(rx);
    assert_eq!(tx.try_send(b"2"), Err(SendError::Disconnected));
    assert!(tx.is_abandoned());
    // A new consumer takes over and gets what was sent before.
    let mut rx = ring.consumer().unwrap();
    assert_eq!(&rx.try_recv().unwrap()[..], b"1");

    // Killed: a producer blocked on the full log hears it.
    let (name, _c) = scratch("log-cdeath");
    let ring = log::Builder::new(&name)
        .capacity(1024)
        .max_len(100)
        .create()
        .unwrap();
    let mut tx = ring.producer().unwrap();
    let mut kid = Running::spawn(role("consume", &name, 0, ""));
    kid.expect_line("attached", HANG);
    while tx.try_send(&[0; 100]).is_ok() {}
    kid.kill9();
    let t = Instant::now();
    assert_eq!(tx.send_timeout(&[0; 100], HANG), Err(SendError::PeerDied));
    println!(
        "a producer on a full log heard the consumer's death in {:?}",
        t.elapsed()
    );
}

/// (fault point in the producer child, claim timeout): the consumer's view of a producer
/// that dies or stalls at each step of a send.
#[test]
fn a_producer_killed_or_stalled_at_each_step_never_wedges_the_consumer() {
    // Killed after claiming (unmarked): the claim is given up (a hole), `skipped`.
    // Killed after marking: the dead producer's claim becomes padding, `abandoned`.
    // Killed after writing, before the commit: as after marking.
    for (point, skipped, abandoned) in [
        ("log-producer-claimed", 1, 0),
        ("log-producer-marked", 0, 1),
        ("log-producer-written", 0, 1),
    ] {
        for polling in [false, true] {
            let (name, _c) = scratch("log-kill");
            let ring = log::Builder::new(&name)
                .capacity(4096)
                .max_len(200)
                .claim_timeout(Duration::from_millis(50))
                .create()
                .unwrap();
            let mut rx = ring.consumer().unwrap();
            let mut kid = Running::spawn(role("produce", &name, 10, &format!("{point}:5")));
            let mut order = Order::default();
            let t = Instant::now();
            let drain = if polling { drain_polling } else { drain_all };
            let (n, end) = drain(&mut rx, 200, &mut order);
            assert_eq!(
                (n, end),
                (4, PopError::PeerDied),
                "{point} polling {polling}"
            );
            let s = ring.stats();
            assert_eq!((s.skipped, s.abandoned), (skipped, abandoned), "{point}");
            assert!(
                !kid.wait_success(HANG),
                "{point}: the child was to be killed"
            );
            println!(
                "killed at {point} (polling {polling}): 4 delivered, then PeerDied after {:?}",
                t.elapsed()
            );
            // A new producer's messages go on after the dead one's.
            let mut tx = ring.producer().unwrap();
            tx.try_send(&msg(99, 0, 200)).unwrap();
            assert_eq!(check(&rx.try_recv().unwrap(), 200), (99, 0));
        }
    }
}

/// A consumer that only polls (`try_recv` in a loop) while another producer stays
/// attached and idle (so the log is never abandoned) still settles a killed producer's
/// claim, marked or not, after the claim timeout, and goes on to the next message. (It
/// hung once: asking its liveness timer twice per poll, it never came due.)
#[test]
fn a_polling_consumer_settles_a_dead_claim_while_another_producer_idles() {
    for (point, settled) in [
        ("log-producer-claimed", (1, 0)),
        ("log-producer-marked", (0, 1)),
    ] {
        let (name, _c) = scratch("log-poll-kill");
        let ring = log::Builder::new(&name)
            .capacity(4096)
            .max_len(200)
            .claim_timeout(Duration::from_millis(50))
            .create()
            .unwrap();
        let mut rx = ring.consumer().unwrap();
        let mut idle = ring.producer().unwrap();
        let mut kid = Running::spawn(role("produce", &name, 10, &format!("{point}:5")));
        assert!(
            !kid.wait_success(HANG),
            "{point}: the child was to be killed"
        );
        // The dead claim is the last thing in the log; ours comes after it.
        idle.try_send(&msg(99, 0, 200)).unwrap();
        let (t, mut order, mut n) = (Instant::now(), Order::default(), 0);
        loop {
            match rx.try_recv() {
                Ok(f) => {
                    let (id, seq) = check(&f, 200);
                    if id == 99 {
                        break;
                    }
                    order.next((id, seq));
                    n += 1;
                }
                Err(PopError::Empty | PopError::InFlight) => {
                    assert!(
                        t.elapsed() < HANG,
                        "{point}: a polling consumer hung at {n}"
                    );
                    std::hint::spin_loop();
                }
                Err(e) => panic!("{point}: {e}"),
            }
        }
        assert_eq!(n, 4, "{point}");
        let s = ring.stats();
        assert_eq!((s.skipped, s.abandoned), settled, "{point}");
        println!("{point}: settled by polling in {:?}", t.elapsed());
    }
}

#[test]
fn a_producer_stalled_before_its_mark_gets_expired_and_one_stalled_after_is_waited_for() {
    for (point, skipped, expired) in [
        ("log-producer-claimed:4:400", 1, 1), // the 4th claim: message 3, a `try_send`
        ("log-producer-marked:3:400", 0, 0),
    ] {
        let (name, _c) = scratch("log-stall");
        let ring = log::Builder::new(&name)
            .capacity(4096)
            .max_len(200)
            .claim_timeout(Duration::from_millis(20))
            .create()
            .unwrap();
        let mut rx = ring.consumer().unwrap();
        let mut kid = Running::spawn(role("produce", &name, 10, point));
        let mut order = Order::default();
        let (n, end) = drain_all(&mut rx, 200, &mut order);
        assert_eq!((n, end), (10, PopError::Disconnected), "{point}");
        kid.expect_line(&format!("done {expired}"), HANG);
        assert!(kid.wait_success(HANG));
        let s = ring.stats();
        assert_eq!((s.skipped, s.abandoned), (skipped, 0), "{point}");
    }
}

#[test]
fn a_consumer_killed_at_rest_or_in_the_middle_of_freeing_leaves_nothing_to_redeliver() {
    // (fault, frames the child reads): at rest, holding its end after reading 3; or killed
    // in its first free of a batch (words rewritten, `head` not stored), which comes once
    // an eighth of the log (512 bytes) is read.
    for (fault, reads) in [("", 3), ("log-consumer-rewritten:1", 40)] {
        let (name, _c) = scratch("log-release");
        let ring = log::Builder::new(&name)
            .capacity(4096)
            .max_len(200)
            .create()
            .unwrap();
        let mut tx = ring.producer().unwrap();
        for seq in 0..20 {
            tx.try_send(&msg(0, seq, 200)).unwrap();
        }
        let mut kid = Running::spawn(role("consume", &name, reads, fault));
        let mut last = None;
        if fault.is_empty() {
            kid.expect_line("holding", HANG);
            last = Some(2);
            kid.kill9();
        } else {
            // Every frame it printed was dropped after the print; it died freeing them.
            while let Some(l) = kid.try_next_line(HANG) {
                last = l
                    .strip_prefix("got ")
                    .map(|v| v.parse::<u64>().unwrap())
                    .or(last);
            }
            assert!(!kid.wait_success(HANG), "the child was to die in its free");
        }
        let last = last.expect("the child read frames");
        assert!(ring.stats().head <= ring.stats().tail);
        // The successor frees what the dead one read: it starts after the last frame the
        // dead one dropped, nothing torn, nothing again.
        let mut rx = ring.consumer().unwrap();
        assert_eq!(rx.attachment().position, ring.stats().head);
        for seq in last + 1..20 {
            assert_eq!(check(&rx.try_recv().unwrap(), 200), (0, seq), "{fault:?}");
        }
        assert_eq!(rx.try_recv().unwrap_err(), PopError::Empty);
    }
}

#[test]
fn hostile_words_give_corrupted_never_a_panic_or_a_hang() {
    let garbage = [
        u64::MAX,                  // state 7
        (2 << 61) | 5000,          // committed, longer than max_len
        (3 << 61) | 3,             // padding of 3 bytes
        (3 << 61) | (1 << 40) | 8, // padding with stray bits
        (3 << 61) | 4096,          // padding past the end
        (1 << 61) | 5000,          // marked, longer than max_len
        (4 << 61) | 1,             // a hole with stray bits
        12345,                     // free, of another lap
    ];
    for g in garbage {
        let ring = Ring::in_process(1024, 100).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.try_send(b"ok").unwrap();
        let (words, _) = ring.raw_words();
        // SAFETY: word 0 of the log (the first record's header), written atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(words) }
            .store(g, std::sync::atomic::Ordering::Relaxed);
        let r = rx.try_recv().map(|f| f.len());
        assert_eq!(r, Err(PopError::Corrupted), "{g:#x}");
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)).map(|f| f.len()),
            Err(PopError::Corrupted)
        );
    }
}
