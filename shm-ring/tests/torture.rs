//! Crash torture: round after round, a worker process does random operations on a lock or
//! a ring while this process works on it too, and is SIGKILLed at a random moment. After
//! each kill the survivors must make progress (no call blocks past `HANG`), hear of the
//! death where the protocol says so (`OwnerDied` / `PeerDied`), and lose no committed
//! message nor deliver one twice (checked with sequence numbers).
//!
//! `SHMRING_TORTURE_ROUNDS` (default 200) sets the rounds, `SHMRING_TORTURE_SEED` replays
//! a run. Long run: `SHMRING_TORTURE_ROUNDS=10000 cargo test --release -p shm-ring --test
//! torture -- --nocapture`.
#![cfg(not(shm_loom))]

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::*;
use shm_core::{Fingerprint, Kind, Layout, Region, SegmentBuilder};
use shm_ring::broadcast::{self, Policy};
use shm_ring::{mpmc, spsc, ChunkError, PopError, PushError, RecvError, SendError};
use shm_sync::{LockError, Mutex, Protocol, Shared, SpinLock};

const ROLE: &str = "SHMRING_TORTURE_ROLE";
const SEED: &str = "SHMRING_TORTURE_SEED";
/// A survivor still blocked after this has hung (every documented bound is far below it).
const HANG: Duration = Duration::from_secs(5);
/// The largest batch (`push_slice` / `pop_slice`) an MPMC worker makes.
const MAX_BATCH: u64 = 8;
/// MPMC claim timeout in these rounds (the bound for giving up a dead peer's claim).
const CLAIM_TIMEOUT: Duration = Duration::from_millis(50);
/// Most items a parent producer pushes in one MPMC round (the size of the consumer's log).
const LOG_LEN: u64 = 1 << 20;

/// xorshift64*: small, seedable, good enough to pick operations and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Pod, Zeroable, Debug, shm_core::TypeIdentity)]
#[repr(C)]
struct Ledger {
    /// Bumped first in a critical section...
    a: u64,
    /// ...and this last: a holder killed in between leaves `a == b + 1`.
    b: u64,
}

fn log_layout() -> (Layout, Region<AtomicU8>) {
    let mut l = Layout::new();
    let r = l.push::<AtomicU8>(LOG_LEN).unwrap();
    (l, r)
}

fn log_builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .kind(Kind::Raw)
        .fingerprint(Fingerprint::untyped(0x0074_6f72_746c_6f67))
        .layout(&log_layout().0)
}

// ------------------------------------------------------------------------------------------
// Workers (child processes): random operations until killed.

#[test]
#[ignore = "child process of the torture test"]
fn child_torture() {
    let Some(name) = child_name() else { return };
    let mut rng = Rng(std::env::var(SEED).unwrap().parse::<u64>().unwrap() | 1);
    match std::env::var(ROLE).unwrap().as_str() {
        "mutex" => {
            let m = Shared::<Mutex<Ledger>>::open(&name).unwrap();
            println!("CHILD:ready");
            loop {
                mutex_op(&m, &mut rng);
            }
        }
        "spin" => {
            let s = Shared::<SpinLock<Ledger>>::open(&name).unwrap();
            println!("CHILD:ready");
            loop {
                spin_op(&s, &mut rng);
            }
        }
        "spsc-producer" => {
            let mut tx = spsc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:ready");
            let mut next = 0u64;
            loop {
                spsc_produce(&mut tx, &mut next, &mut rng);
            }
        }
        "spsc-consumer" => {
            let mut rx = spsc::open::<u64>(&name).unwrap().consumer().unwrap();
            println!("CHILD:ready");
            let mut next = 0u64;
            loop {
                spsc_consume(&mut rx, &mut next, &mut rng).unwrap();
            }
        }
        "log-producer" => {
            let mut tx = shm_ring::log::open(&name).unwrap().producer().unwrap();
            println!("CHILD:ready");
            let mut next = 0u64;
            loop {
                let m = log_msg(1, next, rng.next());
                // In place, killed anywhere between claim and commit; or a send.
                if rng.below(2) == 0 {
                    let mut c = tx.claim_timeout(m.len(), HANG).unwrap();
                    c.buf().copy_from_slice(&m);
                    c.commit(m.len()).unwrap();
                } else {
                    tx.send_timeout(&m, HANG).unwrap();
                }
                next += 1;
            }
        }
        "log-consumer" => {
            let mut rx = shm_ring::log::open(&name).unwrap().consumer().unwrap();
            let log_seg = log_builder(&format!("{name}-log")).open().unwrap();
            let log = log_seg.region(log_layout().1).unwrap();
            println!("CHILD:ready");
            // Relaxed (both): read by the parent only after we are dead and reaped. Each
            // frame is logged while it is held (before its drop frees it), so a frame held
            // at the kill is logged here and delivered again to the successor.
            let seen = |bytes: &[u8]| {
                let seq = log_check(2, bytes) as usize;
                assert_eq!(log[seq].swap(1, Ordering::Relaxed), 0, "delivered twice");
            };
            loop {
                if rng.below(4) == 0 {
                    // A drain (one release for the batch): killed anywhere inside it.
                    let n = 1 + rng.below(MAX_BATCH) as usize;
                    match rx.drain_timeout(n, Duration::from_millis(2), |m| seen(m.bytes)) {
                        Ok(_) | Err(PopError::Timeout) => {}
                        Err(e) => panic!("worker drain: {e}"),
                    }
                    continue;
                }
                match rx.recv_timeout(Duration::from_millis(1 + rng.below(3))) {
                    Ok(f) => seen(&f),
                    Err(PopError::Timeout) => {}
                    Err(e) => panic!("worker recv: {e}"),
                }
            }
        }
        "mpmc-producer" => {
            let mut tx = mpmc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:ready");
            let mut next = 0u64;
            loop {
                if rng.below(4) == 0 {
                    // A batch (one claim for the run): killed anywhere inside it.
                    let n = 1 + rng.below(MAX_BATCH) as usize;
                    let vals: [u64; MAX_BATCH as usize] =
                        std::array::from_fn(|i| 1 << 48 | (next + i as u64));
                    next += tx.push_slice(&vals[..n]) as u64;
                    continue;
                }
                let v = 1 << 48 | next;
                match tx.push_timeout(v, HANG) {
                    Ok(()) => next += 1,
                    Err(PushError::Expired(_)) => {} // our claim was skipped: retry
                    Err(e) => panic!("worker push: {e}"),
                }
                if rng.below(8) == 0 {
                    std::hint::spin_loop();
                }
            }
        }
        "mpmc-consumer" => {
            let mut rx = mpmc::open::<u64>(&name).unwrap().consumer().unwrap();
            let log_seg = log_builder(&format!("{name}-log")).open().unwrap();
            let log = log_seg.region(log_layout().1).unwrap();
            println!("CHILD:ready");
            let mut buf = [0u64; MAX_BATCH as usize];
            loop {
                if rng.below(4) == 0 {
                    let n = 1 + rng.below(MAX_BATCH) as usize;
                    let k = rx.pop_slice(&mut buf[..n]);
                    for &v in &buf[..k] {
                        let seq = (v & ((1 << 48) - 1)) as usize;
                        // Relaxed: as below.
                        assert_eq!(log[seq].swap(1, Ordering::Relaxed), 0, "delivered twice");
                    }
                    continue;
                }
                match rx.pop_timeout(Duration::from_millis(1 + rng.below(3))) {
                    Ok(v) => {
                        // Relaxed: read by the parent only after we are dead and reaped.
                        let seq = (v & ((1 << 48) - 1)) as usize;
                        assert_eq!(log[seq].swap(1, Ordering::Relaxed), 0, "delivered twice");
                    }
                    Err(PopError::Timeout | PopError::Expired) => {}
                    Err(e) => panic!("worker pop: {e}"),
                }
            }
        }
        "broadcast-publisher" => {
            let mut tx = broadcast::open::<u64>(&name).unwrap().publisher().unwrap();
            println!("CHILD:ready");
            loop {
                let at = tx.position();
                if rng.below(4) == 0 {
                    // A batch: killed anywhere inside it.
                    let n = 1 + rng.below(MAX_BATCH) as usize;
                    let vals: [u64; MAX_BATCH as usize] = std::array::from_fn(|i| at + i as u64);
                    let _ = tx.publish_slice(&vals[..n]).unwrap();
                } else {
                    match tx.publish_timeout(at, Duration::from_millis(2)) {
                        Ok(()) | Err(shm_ring::PublishError::Timeout(_)) => {}
                        Err(e) => panic!("worker publish: {e}"),
                    }
                }
            }
        }
        "broadcast-subscriber" => {
            let mut rx = broadcast::open::<u64>(&name).unwrap().subscribe().unwrap();
            println!("CHILD:ready");
            let mut next = rx.position();
            let mut buf = [0u64; MAX_BATCH as usize];
            loop {
                let got = if rng.below(3) == 0 {
                    let n = 1 + rng.below(MAX_BATCH) as usize;
                    rx.recv_slice(&mut buf[..n]).map(|k| buf[..k].to_vec())
                } else {
                    rx.recv_timeout(Duration::from_millis(1 + rng.below(3)))
                        .map(|v| vec![v])
                };
                match got {
                    Ok(vs) => {
                        for v in vs {
                            assert_eq!(v, next, "lost, duplicated or reordered");
                            next += 1;
                        }
                    }
                    Err(RecvError::Empty | RecvError::Timeout) => {}
                    Err(e) => panic!("worker recv: {e}"),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// One random lock operation: lock / try_lock / lock_timeout, a critical section that
/// bumps `a` then `b`, repairing after a dead holder.
fn mutex_op(m: &Mutex<Ledger>, rng: &mut Rng) -> Option<bool> {
    let r = match rng.below(3) {
        0 => m.lock(),
        1 => m.try_lock(),
        _ => m.lock_timeout(Duration::from_micros(rng.below(2000))),
    };
    let (mut g, died) = match r {
        Ok(g) => (g, false),
        Err(LockError::OwnerDied(mut g)) => {
            assert!(g.a == g.b || g.a == g.b + 1, "ledger broken: {:?}", *g);
            g.b = g.a;
            g.mark_consistent();
            (g, true)
        }
        Err(LockError::WouldBlock | LockError::Timeout) => return None,
        Err(e) => panic!("lock: {e}"),
    };
    assert_eq!(g.a, g.b, "two holders at once, or an unreported death");
    g.a += 1;
    for _ in 0..rng.below(64) {
        std::hint::spin_loop();
    }
    g.b += 1;
    Some(died)
}

fn spin_op(s: &SpinLock<Ledger>, rng: &mut Rng) -> Option<bool> {
    let r = match rng.below(3) {
        0 => s.lock(),
        1 => s.try_lock(),
        _ => s.lock_timeout(Duration::from_micros(rng.below(2000))),
    };
    let (mut g, died) = match r {
        Ok(g) => (g, false),
        Err(LockError::OwnerDied(mut g)) => {
            assert!(g.a == g.b || g.a == g.b + 1, "ledger broken: {:?}", *g);
            g.b = g.a;
            g.mark_consistent();
            (g, true)
        }
        Err(LockError::WouldBlock | LockError::Timeout) => return None,
        Err(e) => panic!("lock: {e}"),
    };
    assert_eq!(g.a, g.b, "two holders at once, or an unreported death");
    g.a += 1;
    for _ in 0..rng.below(64) {
        std::hint::spin_loop();
    }
    g.b += 1;
    Some(died)
}

/// Pushes the next few sequence numbers: one at a time, or a chunk committed in part.
fn spsc_produce(tx: &mut spsc::Producer<u64>, next: &mut u64, rng: &mut Rng) {
    match rng.below(3) {
        0 => {
            if tx.push_timeout(*next, Duration::from_millis(2)).is_ok() {
                *next += 1;
            }
        }
        1 => {
            if tx.try_push(*next).is_ok() {
                *next += 1;
            }
        }
        _ => {
            let want = 1 + rng.below(16) as usize;
            if let Ok(mut c) = tx.write_chunk_uninit(want) {
                for k in 0..want {
                    c.set(k, *next + k as u64);
                }
                let commit = rng.below(want as u64 + 1) as usize;
                c.commit(commit);
                *next += commit as u64;
            }
        }
    }
}

/// Pops a few items, checking they continue the sequence; `Err` once the producer is gone.
fn spsc_consume(
    rx: &mut spsc::Consumer<u64>,
    next: &mut u64,
    rng: &mut Rng,
) -> Result<(), PopError> {
    let mut check = |v: u64| {
        assert_eq!(v, *next, "lost, duplicated or reordered");
        *next += 1;
    };
    match rng.below(3) {
        0 => match rx.pop_timeout(Duration::from_millis(2)) {
            Ok(v) => check(v),
            Err(PopError::Timeout) => {}
            Err(e) => return Err(e),
        },
        1 => match rx.try_pop() {
            Ok(v) => check(v),
            Err(PopError::Empty) => {}
            Err(e) => return Err(e),
        },
        _ => {
            let want = 1 + rng.below(16) as usize;
            match rx.read_chunk(want) {
                Ok(c) => {
                    let commit = rng.below(want as u64 + 1) as usize;
                    for k in 0..commit {
                        check(c.get(k));
                    }
                    c.commit(commit);
                }
                Err(ChunkError::TooFewSlots { .. }) => {}
                Err(e) => panic!("read_chunk: {e}"),
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The parent: one round per scenario pick.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Mutex,
    MutexPi,
    Spin,
    SpscProducerDies,
    SpscConsumerDies,
    MpmcProducerDies,
    MpmcConsumerDies,
    BroadcastPublisherDies,
    BroadcastSubscriberDies,
    LogProducerDies,
    LogConsumerDies,
}

const SCENARIOS: [Scenario; 11] = [
    Scenario::Mutex,
    Scenario::MutexPi,
    Scenario::Spin,
    Scenario::SpscProducerDies,
    Scenario::SpscConsumerDies,
    Scenario::MpmcProducerDies,
    Scenario::MpmcConsumerDies,
    Scenario::BroadcastPublisherDies,
    Scenario::BroadcastSubscriberDies,
    Scenario::LogProducerDies,
    Scenario::LogConsumerDies,
];

/// What a round measured.
#[derive(Default)]
struct Outcome {
    /// From the kill to the survivor learning of it (when it had to).
    detected: Option<Duration>,
    /// The death was reported (OwnerDied / PeerDied).
    reported: bool,
    /// MPMC: claims given up (skipped or reclaimed) after the claim timeout.
    gave_up: u64,
}

/// Starts the worker, lets it run `run_for` after it is ready, and SIGKILLs it; fails if it
/// died on its own first. Returns the instant the SIGKILL was sent.
fn kill_after(worker: &mut Running, run_for: Duration) -> Instant {
    worker.expect_line("ready", HANG);
    std::thread::sleep(run_for);
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker died on its own (a check failed in it)"
    );
    // Timed from the moment SIGKILL is sent: the survivors' bound includes the kernel
    // tearing the process down.
    let killed = Instant::now();
    worker.kill9();
    killed
}

fn worker(role: &str, name: &str, seed: u64) -> Running {
    let mut c = child("child_torture", name);
    c.env(ROLE, role).env(SEED, seed.to_string());
    Running::spawn(c)
}

/// Runs `op` until `stop`; returns when it first reported a dead holder.
fn contend(
    stop: &AtomicBool,
    rng: &mut Rng,
    mut op: impl FnMut(&mut Rng) -> Option<bool>,
) -> Option<Instant> {
    let mut died_at = None;
    // Relaxed: a stop request, no data rides on it.
    while !stop.load(Ordering::Relaxed) {
        if op(rng) == Some(true) && died_at.is_none() {
            died_at = Some(Instant::now());
        }
    }
    died_at
}

fn lock_round(protocol: Option<Protocol>, seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-lock");
    let role = if protocol.is_some() { "mutex" } else { "spin" };
    let keep = match protocol {
        Some(p) => Ok(Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), p)).unwrap()),
        None => Err(Shared::<SpinLock<Ledger>>::create(&name, Ledger::zeroed()).unwrap()),
    };
    let mut w = worker(role, &name, seed);
    // A contender in this process, before and after the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, name2) = (stop.clone(), name.clone());
    let contender = std::thread::spawn(move || {
        let mut rng = Rng(seed.rotate_left(17) | 1);
        match protocol {
            Some(_) => {
                let m = Shared::<Mutex<Ledger>>::open(&name2).unwrap();
                contend(&stop2, &mut rng, |r| mutex_op(&m, r))
            }
            None => {
                let s = Shared::<SpinLock<Ledger>>::open(&name2).unwrap();
                contend(&stop2, &mut rng, |r| spin_op(&s, r))
            }
        }
    });
    let killed = kill_after(&mut w, run_for);
    // After the kill: the next lock must come back within HANG, telling of the death if
    // the worker held the lock.
    let t = Instant::now();
    let (reported, at) = match &keep {
        Ok(m) => match m.lock_timeout(HANG) {
            Ok(g) => {
                assert_eq!(g.a, g.b);
                (false, Instant::now())
            }
            Err(LockError::OwnerDied(mut g)) => {
                assert!(g.a == g.b || g.a == g.b + 1, "{:?}", *g);
                g.b = g.a;
                g.mark_consistent();
                (true, Instant::now())
            }
            Err(e) => panic!("{role} after the kill: {e} (after {:?})", t.elapsed()),
        },
        Err(s) => match s.lock_timeout(HANG) {
            Ok(g) => {
                assert_eq!(g.a, g.b);
                (false, Instant::now())
            }
            Err(LockError::OwnerDied(mut g)) => {
                assert!(g.a == g.b || g.a == g.b + 1, "{:?}", *g);
                g.b = g.a;
                g.mark_consistent();
                (true, Instant::now())
            }
            Err(e) => panic!("{role} after the kill: {e} (after {:?})", t.elapsed()),
        },
    };
    stop.store(true, Ordering::Relaxed);
    let contender_saw = contender.join().expect("the contender failed a check");
    // Whoever learnt of the death first (the contender may have, while we waited).
    let first = match contender_saw {
        Some(c) if c >= killed && c < at => c,
        _ => at,
    };
    let reported = reported || contender_saw.is_some_and(|c| c >= killed);
    Outcome {
        detected: reported.then(|| first.saturating_duration_since(killed)),
        reported,
        gave_up: 0,
    }
}

fn spsc_producer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-spsc-p");
    let ring = spsc::create::<u64>(&name, 1 << (2 + seed % 6)).unwrap();
    let mut w = worker("spsc-producer", &name, seed);
    let mut rx = ring.consumer().unwrap();
    let consumer = std::thread::spawn(move || {
        let (mut next, mut rng) = (0u64, Rng(seed ^ 0x5eed | 1));
        loop {
            match spsc_consume(&mut rx, &mut next, &mut rng) {
                Ok(()) => {}
                Err(PopError::PeerDied) => return (next, Instant::now()),
                Err(e) => panic!("consumer: {e} after {next}"),
            }
        }
    });
    let killed = kill_after(&mut w, run_for);
    let t = Instant::now();
    while !consumer.is_finished() {
        assert!(t.elapsed() < HANG, "the consumer never learnt of the death");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (got, at) = consumer.join().expect("the consumer failed a check");
    let st = ring.stats();
    // Every committed item arrived, once, in order (checked item by item in the thread).
    assert_eq!(
        got, st.pushes,
        "committed {} but delivered {got}",
        st.pushes
    );
    assert_eq!(st.head, st.tail);
    Outcome {
        detected: Some(at.saturating_duration_since(killed)),
        reported: true,
        gave_up: 0,
    }
}

fn spsc_consumer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-spsc-c");
    let ring = spsc::create::<u64>(&name, 1 << (2 + seed % 6)).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut w = worker("spsc-consumer", &name, seed);
    let producer = std::thread::spawn(move || {
        let (mut next, mut rng) = (0u64, Rng(seed ^ 0xfeed | 1));
        let t = Instant::now();
        loop {
            spsc_produce(&mut tx, &mut next, &mut rng);
            // Once the ring is full and the consumer dead, pushes say so.
            match tx.push_timeout(next, Duration::from_millis(1)) {
                Ok(()) => next += 1,
                Err(PushError::Timeout(_) | PushError::Full(_)) => {}
                Err(PushError::PeerDied(_)) => return (next, Instant::now(), tx),
                Err(e) => panic!("producer: {e}"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "producer never finished"
            );
        }
    });
    let killed = kill_after(&mut w, run_for);
    let t = Instant::now();
    while !producer.is_finished() {
        assert!(t.elapsed() < HANG, "the producer never learnt of the death");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (pushed, at, _tx) = producer.join().expect("the producer failed a check");
    // A new consumer takes the dead one's end and gets everything it had not released:
    // from `head` on, in order (an item it read but did not release comes again).
    let st = ring.stats();
    assert_eq!(st.tail, pushed);
    let mut rx = ring
        .consumer()
        .expect("the dead consumer's end can be taken over");
    let mut next = st.head;
    while let Ok(v) = rx.try_pop() {
        assert_eq!(v, next, "lost, duplicated or reordered after the takeover");
        next += 1;
    }
    assert_eq!(next, pushed, "items missing after the takeover");
    Outcome {
        detected: Some(at.saturating_duration_since(killed)),
        reported: true,
        gave_up: 0,
    }
}

fn mpmc_producer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-mpmc-p");
    let ring = mpmc::Builder::<u64>::new(&name)
        .capacity(1 << (2 + seed % 6))
        .claim_timeout(CLAIM_TIMEOUT)
        .create()
        .unwrap();
    let mut w = worker("mpmc-producer", &name, seed);
    let mut rx = ring.consumer().unwrap();
    let mut tx = ring.producer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        // Relaxed: a stop request, no data rides on it.
        while !stop2.load(Ordering::Relaxed) && next < LOG_LEN {
            match tx.push_timeout(2 << 48 | next, HANG) {
                Ok(()) => next += 1,
                Err(PushError::Expired(_)) => {} // our claim was skipped: retry
                Err(e) => panic!("parent producer: {e}"),
            }
        }
        next // dropping `tx` closes this producer
    });
    let consumer = std::thread::spawn(move || {
        // Per producer: items received, and gaps (items lost because a claim of ours was
        // reclaimed while this thread was descheduled past the claim timeout).
        let (mut next, mut got, mut gaps) = ([0u64; 3], [0u64; 3], 0u64);
        loop {
            match rx.pop_timeout(HANG) {
                Ok(v) => {
                    let (id, seq) = ((v >> 48) as usize, v & ((1 << 48) - 1));
                    assert!(id == 1 || id == 2, "garbage {v:#x}");
                    assert!(
                        seq >= next[id],
                        "producer {id}: {seq} duplicated or reordered"
                    );
                    gaps += seq - next[id];
                    next[id] = seq + 1;
                    got[id] += 1;
                }
                Err(PopError::Expired) => {}
                Err(PopError::PeerDied) | Err(PopError::Disconnected) => {
                    return (next, got, gaps);
                }
                Err(PopError::Timeout) => panic!("consumer hung at {next:?}"),
                Err(e) => panic!("consumer: {e} at {next:?}"),
            }
        }
    });
    let killed = kill_after(&mut w, run_for);
    // Keep producing a little past the kill, then stop: the consumer must drain all of ours
    // and get past the dead worker's abandoned claim, if it left one.
    std::thread::sleep(CLAIM_TIMEOUT * 2);
    stop.store(true, Ordering::Relaxed);
    let ours = producer.join().expect("the parent producer failed a check");
    let t = Instant::now();
    while !consumer.is_finished() {
        assert!(t.elapsed() < HANG, "the consumer hung after the kill");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (next, got, gaps) = consumer.join().expect("the consumer failed a check");
    let st = ring.stats();
    // Every claim was delivered once, or given up after the claim timeout: the dead
    // worker's abandoned claim skipped, or an item of a (stalled) claim of ours reclaimed,
    // which is the only way an item goes missing.
    assert_eq!(
        got[1] + got[2] + st.skipped + st.reclaimed,
        st.pushes,
        "{st:?}"
    );
    assert_eq!(
        gaps, st.reclaimed,
        "items lost beyond reclaimed claims: {st:?}"
    );
    assert_eq!(
        next[2], ours,
        "our producer pushed {ours}, last seen {}",
        next[2]
    );
    let _ = killed;
    Outcome {
        detected: None,
        reported: false,
        gave_up: st.skipped + st.reclaimed,
    }
}

/// A log message of producer `id`, number `seq`: 16 to 200 bytes (from `r`), its number
/// first, then bytes that follow from both, so a torn or misframed message shows.
fn log_msg(id: u8, seq: u64, r: u64) -> Vec<u8> {
    let len = 16 + (r % 185) as usize;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u64).to_le_bytes());
    m.extend((16..len).map(|k| (k as u64 ^ seq ^ u64::from(id)) as u8));
    m
}

fn log_check(id: u8, bytes: &[u8]) -> u64 {
    assert!(bytes.len() >= 16, "a message of {} bytes", bytes.len());
    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len(), "producer {id} message {seq}: misframed");
    for (k, &b) in bytes.iter().enumerate().skip(16) {
        assert_eq!(
            b,
            (k as u64 ^ seq ^ u64::from(id)) as u8,
            "producer {id} message {seq}: torn"
        );
    }
    seq
}

/// A log producer worker (id 1, message type 1) killed at a random moment, maybe between
/// a claim and its commit; this process's own producer (id 2) goes on. Every message either
/// committed is delivered once, in order per producer, whole; the dead worker's pending
/// claim (if any) is given up or padded after the claim timeout; then the consumer sees
/// `Disconnected` once our producer closes.
fn log_producer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-log-p");
    let ring = shm_ring::log::Builder::new(&name)
        .capacity(1 << (10 + seed % 6))
        .max_len(200)
        .claim_timeout(CLAIM_TIMEOUT)
        .create()
        .unwrap();
    let mut w = worker("log-producer", &name, seed);
    let mut rx = ring.consumer().unwrap();
    let mut tx = ring.producer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let (mut next, mut r) = (0u64, seed | 1);
        // Relaxed: a stop request, no data rides on it.
        while !stop2.load(Ordering::Relaxed) && next < LOG_LEN {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = log_msg(2, next, r >> 33);
            let mut c = tx.claim_timeout(m.len(), HANG).expect("parent producer");
            c.buf().copy_from_slice(&m);
            c.set_type(2);
            c.commit(m.len()).unwrap();
            next += 1;
        }
        next // dropping `tx` closes this producer
    });
    let consumer = std::thread::spawn(move || {
        let mut next = [0u64; 3];
        loop {
            match rx.recv_timeout(HANG) {
                Ok(f) => {
                    let id = if f.msg_type() == 2 { 2 } else { 1 };
                    let seq = log_check(id as u8, &f);
                    assert_eq!(seq, next[id], "producer {id}: lost, doubled or reordered");
                    next[id] += 1;
                }
                Err(PopError::PeerDied) | Err(PopError::Disconnected) => return next,
                Err(PopError::Timeout) => panic!("consumer hung at {next:?}"),
                Err(e) => panic!("consumer: {e} at {next:?}"),
            }
        }
    });
    let _killed = kill_after(&mut w, run_for);
    std::thread::sleep(CLAIM_TIMEOUT * 2);
    stop.store(true, Ordering::Relaxed);
    let ours = producer.join().expect("the parent producer failed a check");
    let t = Instant::now();
    while !consumer.is_finished() {
        assert!(t.elapsed() < HANG, "the consumer hung after the kill");
        std::thread::sleep(Duration::from_millis(1));
    }
    let next = consumer.join().expect("the consumer failed a check");
    assert_eq!(
        next[2], ours,
        "our producer sent {ours}, the consumer got {}",
        next[2]
    );
    let st = ring.stats();
    assert!(
        st.skipped + st.abandoned <= 1,
        "more than the dead worker's claim given up: {st:?}"
    );
    Outcome {
        detected: None,
        reported: false,
        gave_up: st.skipped + st.abandoned,
    }
}

/// A consumer worker (single receives and drains) is killed while this process's producer
/// sends messages of 16-200 bytes (in place or copied) into a log of 1-32 KiB; this
/// process's consumer then takes the log over and drains it. Every message sent is
/// delivered, whole: nothing lost; delivered to both only what the worker held when it
/// died (a frame, or a drain's batch, logged and not yet released: the successor starts at
/// `consumed`, which moves only when a frame is dropped).
fn log_consumer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-log-c");
    let _c2 = Cleanup(format!("{name}-log"));
    let ring = shm_ring::log::Builder::new(&name)
        .capacity(1 << (10 + seed % 6))
        .max_len(200)
        .claim_timeout(CLAIM_TIMEOUT)
        .create()
        .unwrap();
    let log_seg = log_builder(&format!("{name}-log")).create().unwrap();
    let mut w = worker("log-consumer", &name, seed);
    let mut tx = ring.producer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let (mut next, mut r) = (0u64, seed | 1);
        // Relaxed: a stop request, no data rides on it.
        while !stop2.load(Ordering::Relaxed) && next < LOG_LEN {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = log_msg(2, next, r >> 33);
            // On a full log with the worker dead, a claim hears `PeerDied`: nothing was
            // sent; try again until the successor below has attached.
            let sent = if r % 2 == 0 {
                tx.claim_timeout(m.len(), HANG).map(|mut c| {
                    c.buf().copy_from_slice(&m);
                    c.commit(m.len()).unwrap();
                })
            } else {
                tx.send_timeout(&m, HANG)
            };
            match sent {
                Ok(()) => next += 1,
                Err(SendError::PeerDied) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("parent producer: {e}"),
            }
        }
        next // dropping `tx` closes this producer
    });
    let _killed = kill_after(&mut w, run_for);
    // The successor: takes the dead worker's end over.
    let t = Instant::now();
    let mut rx = loop {
        match ring.consumer() {
            Ok(rx) => break rx,
            Err(e) => {
                assert!(t.elapsed() < HANG, "no successor could attach: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let consumer = std::thread::spawn(move || {
        let mut got = vec![false; LOG_LEN as usize];
        let mut first = None;
        loop {
            match rx.recv_timeout(HANG) {
                Ok(f) => {
                    let seq = log_check(2, &f);
                    assert!(!got[seq as usize], "{seq} delivered twice to the successor");
                    got[seq as usize] = true;
                    first.get_or_insert(seq);
                }
                Err(PopError::Disconnected) => return (got, first),
                Err(e) => panic!("successor: {e}"),
            }
        }
    });
    std::thread::sleep(CLAIM_TIMEOUT);
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().expect("the parent producer failed a check");
    let t = Instant::now();
    while !consumer.is_finished() {
        assert!(t.elapsed() < HANG, "the successor hung");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (got, first) = consumer.join().expect("the successor failed a check");
    let log = log_seg.region(log_layout().1).unwrap();
    let (mut missing, mut both) = (Vec::new(), Vec::new());
    for seq in 0..sent {
        // Relaxed: the worker is dead and reaped.
        let by_worker = log[seq as usize].load(Ordering::Relaxed) == 1;
        match (got[seq as usize], by_worker) {
            (true, true) => both.push(seq),
            (false, false) => missing.push(seq),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "{} sent messages lost (first {:?})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Redelivered: only what the worker held, the successor's first frames.
    assert!(
        both.len() as u64 <= MAX_BATCH && both.first().is_none_or(|&b| Some(b) == first),
        "delivered to both: {both:?} (the successor began at {first:?})"
    );
    Outcome {
        detected: None,
        reported: false,
        gave_up: 0,
    }
}

fn mpmc_consumer_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-mpmc-c");
    let _c2 = Cleanup(format!("{name}-log"));
    let ring = mpmc::Builder::<u64>::new(&name)
        .capacity(1 << (2 + seed % 6))
        .claim_timeout(CLAIM_TIMEOUT)
        .create()
        .unwrap();
    let log_seg = log_builder(&format!("{name}-log")).create().unwrap();
    let mut w = worker("mpmc-consumer", &name, seed);
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let mut next = 0u64;
        // Relaxed: a stop request, no data rides on it.
        while !stop2.load(Ordering::Relaxed) && next < LOG_LEN {
            match tx.push_timeout(next, HANG) {
                Ok(()) => next += 1,
                Err(PushError::Expired(_)) => {}
                Err(e) => panic!("parent producer: {e}"),
            }
        }
        next
    });
    let consumer = std::thread::spawn(move || {
        let mut got = vec![false; LOG_LEN as usize];
        loop {
            match rx.pop_timeout(HANG) {
                Ok(v) => {
                    assert!(!got[v as usize], "{v} delivered twice");
                    got[v as usize] = true;
                }
                Err(PopError::Expired) => {}
                Err(PopError::Disconnected) => return got,
                Err(e) => panic!("consumer: {e}"),
            }
        }
    });
    let killed = kill_after(&mut w, run_for);
    std::thread::sleep(CLAIM_TIMEOUT * 2);
    stop.store(true, Ordering::Relaxed);
    let pushed = producer.join().expect("the parent producer failed a check");
    let t = Instant::now();
    while !consumer.is_finished() {
        assert!(t.elapsed() < HANG, "the consumer hung after the kill");
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = consumer.join().expect("the consumer failed a check");
    let log = log_seg.region(log_layout().1).unwrap();
    // Each item went to exactly one consumer, but for those the worker was holding when it
    // died (read or marked, not yet logged): one, or a batch of at most `MAX_BATCH`.
    let mut missing = Vec::new();
    for seq in 0..pushed {
        // Relaxed: the worker is dead and reaped.
        let by_worker = log[seq as usize].load(Ordering::Relaxed) == 1;
        match (got[seq as usize], by_worker) {
            (true, true) => panic!("{seq} delivered to both consumers"),
            (false, false) => missing.push(seq),
            _ => {}
        }
    }
    // Lost: the worker's in-flight item (read and released, or marked and reclaimed), and
    // items of claims of ours reclaimed while this process was descheduled.
    let st = ring.stats();
    assert!(
        missing.len() as u64 <= MAX_BATCH + st.reclaimed,
        "{} items lost (first {:?}); stats {st:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
    );
    let _ = killed;
    Outcome {
        detected: None,
        reported: false,
        gave_up: st.skipped + st.reclaimed,
    }
}

/// A publisher worker (single publishes and batches) is killed; two subscriber threads of
/// this process (one slow) check every value against its position, and end with
/// `PeerDied`: received + lagged = every position the publisher sealed (and, under
/// back-pressure, nothing lagged).
fn broadcast_publisher_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-bcast-p");
    let policy = if seed % 2 == 0 {
        Policy::Overwrite
    } else {
        Policy::BackPressure
    };
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(1 << (2 + seed % 6))
        .policy(policy)
        .create()
        .unwrap();
    let subs: Vec<_> = (0..2).map(|_| ring.subscribe().unwrap()).collect();
    let mut w = worker("broadcast-publisher", &name, seed);
    let threads: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(k, mut rx)| {
            std::thread::spawn(move || {
                let (mut next, mut lagged) = (0u64, 0u64);
                loop {
                    match rx.recv_timeout(HANG) {
                        Ok(v) => {
                            assert_eq!(v, next, "torn, misplaced or reordered");
                            next += 1;
                            if k == 1 && next % 64 == 0 {
                                std::thread::sleep(Duration::from_micros(50));
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            next += n;
                            lagged += n;
                        }
                        Err(RecvError::PeerDied) => return (next, lagged, Instant::now()),
                        Err(e) => panic!("subscriber: {e} after {next}"),
                    }
                }
            })
        })
        .collect();
    let killed = kill_after(&mut w, run_for);
    let mut detected = Duration::ZERO;
    for th in threads {
        let t = Instant::now();
        while !th.is_finished() {
            assert!(
                t.elapsed() < 2 * HANG,
                "a subscriber never learnt of the death"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (end, lagged, at) = th.join().expect("a subscriber failed a check");
        // Everything sealed: `tail`, or beyond it if the worker died mid-commit (a
        // successor would start after every sealed position).
        let tail = ring.stats().tail;
        assert!(end >= tail, "received + lagged {end} < published {tail}");
        if policy == Policy::BackPressure {
            assert_eq!(lagged, 0, "lapped under back-pressure");
        }
        detected = detected.max(at.saturating_duration_since(killed));
    }
    // A successor goes on after every sealed message.
    let p = ring.publisher().unwrap();
    assert!(p.position() >= ring.stats().tail);
    Outcome {
        detected: Some(detected),
        reported: true,
        gave_up: 0,
    }
}

/// A back-pressure subscriber worker is killed; this process publishes all along. After the
/// kill, two rings' worth of publishes each succeed within the bound (the dead record is
/// evicted once it holds the publisher back), and a subscriber thread here got every
/// message in order.
fn broadcast_subscriber_dies(seed: u64, run_for: Duration) -> Outcome {
    let (name, _c) = scratch("torture-bcast-s");
    let cap = 1u64 << (2 + seed % 6);
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(cap)
        .policy(Policy::BackPressure)
        .create()
        .unwrap();
    let mut tx = ring.publisher().unwrap();
    let mut mine = ring.subscribe().unwrap();
    let mut w = worker("broadcast-subscriber", &name, seed);
    w.expect_line("ready", HANG);
    let reader = std::thread::spawn(move || {
        let mut next = 0u64;
        loop {
            match mine.recv_timeout(Duration::from_millis(1)) {
                Ok(v) => {
                    assert_eq!(v, next, "lost, duplicated or reordered");
                    next += 1;
                }
                Err(RecvError::Timeout) => {}
                // The publisher is dropped after the last publish: everything was read.
                Err(RecvError::Disconnected) => return next,
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    let publisher = std::thread::spawn(move || {
        let mut next = 0u64;
        let t = Instant::now();
        while t.elapsed() < run_for {
            if tx.publish_timeout(next, Duration::from_millis(1)).is_ok() {
                next += 1;
            }
        }
        (tx, next)
    });
    std::thread::sleep(run_for);
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker died on its own (a check failed in it)"
    );
    let killed = Instant::now();
    w.kill9();
    let (mut tx, mut next) = publisher.join().unwrap();
    for _ in 0..2 * cap {
        tx.publish_timeout(next, HANG)
            .unwrap_or_else(|e| panic!("the dead subscriber still holds the publisher: {e}"));
        next += 1;
    }
    let freed = killed.elapsed();
    drop(tx);
    let got = reader.join().expect("the subscriber here failed a check");
    assert_eq!(got, next, "the live subscriber missed messages");
    Outcome {
        detected: Some(freed),
        reported: ring.stats().evictions == 1,
        gave_up: 0,
    }
}

#[test]
fn crash_torture() {
    let rounds: u64 = std::env::var("SHMRING_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var(SEED)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(mono_ns);
    eprintln!("crash torture: {rounds} rounds, seed {seed} (replay with {SEED}={seed})");
    let mut rng = Rng(seed | 1);
    let mut kills = [0u64; SCENARIOS.len()];
    let mut reported = [0u64; SCENARIOS.len()];
    let mut detect: Vec<Vec<Duration>> = vec![Vec::new(); SCENARIOS.len()];
    let mut gave_up = [0u64; SCENARIOS.len()];
    let started = Instant::now();
    for round in 0..rounds {
        let k = rng.below(SCENARIOS.len() as u64) as usize;
        let s = SCENARIOS[k];
        let round_seed = rng.next();
        let run_for = Duration::from_micros(rng.below(4000));
        let out = std::panic::catch_unwind(|| match s {
            Scenario::Mutex => lock_round(Some(Protocol::Normal), round_seed, run_for),
            Scenario::MutexPi => {
                lock_round(Some(Protocol::PriorityInheritance), round_seed, run_for)
            }
            Scenario::Spin => lock_round(None, round_seed, run_for),
            Scenario::SpscProducerDies => spsc_producer_dies(round_seed, run_for),
            Scenario::SpscConsumerDies => spsc_consumer_dies(round_seed, run_for),
            Scenario::MpmcProducerDies => mpmc_producer_dies(round_seed, run_for),
            Scenario::MpmcConsumerDies => mpmc_consumer_dies(round_seed, run_for),
            Scenario::BroadcastPublisherDies => broadcast_publisher_dies(round_seed, run_for),
            Scenario::BroadcastSubscriberDies => broadcast_subscriber_dies(round_seed, run_for),
            Scenario::LogProducerDies => log_producer_dies(round_seed, run_for),
            Scenario::LogConsumerDies => log_consumer_dies(round_seed, run_for),
        })
        .unwrap_or_else(|e| {
            panic!(
                "round {round} ({s:?}, worker ran {run_for:?}) failed; replay with \
                 {SEED}={seed}: {}",
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or(e.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )
        });
        kills[k] += 1;
        reported[k] += u64::from(out.reported);
        gave_up[k] += out.gave_up;
        if let Some(d) = out.detected {
            detect[k].push(d);
        }
    }
    eprintln!(
        "{rounds} rounds, {rounds} kills survived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (k, s) in SCENARIOS.iter().enumerate() {
        let d = &mut detect[k];
        d.sort();
        let (p50, max) = match d.len() {
            0 => (None, None),
            n => (Some(d[n / 2]), Some(d[n - 1])),
        };
        match s {
            Scenario::MpmcProducerDies
            | Scenario::MpmcConsumerDies
            | Scenario::LogProducerDies
            | Scenario::LogConsumerDies => {
                eprintln!(
                    "  {s:?}: {} kills, {} claims given up after the claim timeout",
                    kills[k], gave_up[k]
                )
            }
            _ => eprintln!(
                "  {s:?}: {} kills, death reported in {}; from the kill until a survivor \
                 knew: median {p50:?}, max {max:?}",
                kills[k], reported[k]
            ),
        }
    }
}
