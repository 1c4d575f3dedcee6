//! The heap-backed forms of the rings and locks between threads of one process: what the
//! Miri (`ci/miri.sh`) and ThreadSanitizer (`ci/tsan.sh`) scripts run, since neither can
//! follow a second process. Sizes shrink under Miri, which is slow.
#![cfg(not(shm_loom))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_ring::broadcast::{self, Policy};
use shm_ring::{mpmc, spsc, PopError, RecvError, WaitStrategy};
use shm_sync::{Condvar, Event, Mutex, Reset, Semaphore, SeqLock, SpinLock};

const N: u64 = if cfg!(miri) { 200 } else { 200_000 };
/// Longer than any wait here should take, even under Miri: a wait still blocked after this
/// has hung (a lost item or wake-up), and the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(120);
const THREADS: u64 = if cfg!(miri) { 2 } else { 4 };

#[test]
fn spsc_threads_deliver_in_order_with_both_strategies() {
    for strategy in [WaitStrategy::BusySpin, WaitStrategy::SpinThenPark] {
        let ring = spsc::Ring::<[u64; 2]>::in_process(8).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let p = std::thread::spawn(move || {
            for i in 0..N {
                if i % 3 == 0 {
                    let t = Instant::now();
                    let mut c = loop {
                        if let Ok(c) = tx.write_chunk_uninit(1) {
                            break c;
                        }
                        assert!(t.elapsed() < HANG, "no slot freed");
                        std::thread::yield_now();
                    };
                    c.set(0, [i, !i]);
                    c.commit_all();
                } else {
                    tx.push_timeout([i, !i], HANG).unwrap();
                }
            }
        });
        for i in 0..N {
            let v = if i % 5 == 0 {
                let t = Instant::now();
                loop {
                    if let Ok(c) = rx.read_chunk(1) {
                        let v = c.get(0);
                        c.commit_all();
                        break v;
                    }
                    assert!(t.elapsed() < HANG, "item {i} never came");
                    std::thread::yield_now();
                }
            } else {
                rx.pop_timeout(HANG).unwrap()
            };
            assert_eq!(v, [i, !i], "{strategy:?}");
        }
        p.join().unwrap();
        assert_eq!(rx.pop_timeout(HANG), Err(PopError::Disconnected));
    }
}

#[test]
fn mpmc_threads_deliver_each_item_once() {
    // Under Miri a thread can sit unscheduled for longer than the default 100 ms claim
    // timeout without having died; the ring would count its claims as lost (at most once,
    // as documented) and this test, which wants each item exactly once, would fail.
    let claim_timeout = if cfg!(miri) {
        Duration::from_secs(60)
    } else {
        mpmc::DEFAULT_CLAIM_TIMEOUT
    };
    let ring = mpmc::Ring::<u64>::in_process_with_claim_timeout(8, claim_timeout).unwrap();
    let mut handles = Vec::new();
    for p in 0..THREADS {
        let mut tx = ring.producer().unwrap();
        tx.set_wait_strategy(WaitStrategy::SpinThenPark);
        handles.push(std::thread::spawn(move || {
            // Each producer takes turns: one at a time, a batch (`push_slice`: one claim per
            // run), a chunk filled in place (`write_chunk`).
            let vals: Vec<u64> = (0..N / THREADS).map(|i| p << 32 | i).collect();
            let t0 = std::time::Instant::now();
            let mut done = 0;
            while done < vals.len() {
                assert!(t0.elapsed() < HANG * 4, "producer {p} stuck at {done}");
                let rest = &vals[done..];
                let k = rest.len().min(1 + done % 5);
                done += match (p as usize + done) % 3 {
                    0 => {
                        tx.push_timeout(rest[0], HANG).unwrap();
                        1
                    }
                    1 => tx.push_slice(&rest[..k]),
                    _ => match tx.write_chunk(k) {
                        Ok(mut c) => {
                            c.copy_from(&rest[..k]);
                            c.commit_all()
                        }
                        Err(shm_ring::ChunkError::TooFewSlots { .. }) => 0,
                        Err(e) => panic!("{e}"),
                    },
                };
            }
            Vec::new()
        }));
    }
    for _ in 0..THREADS {
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::SpinThenPark);
        let batches = handles.len() % 2 == 1;
        handles.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut last = vec![None::<u64>; THREADS as usize];
            let mut buf = [0u64; 4];
            let mut take = |v: u64, got: &mut Vec<u64>| {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert!(last[p].is_none_or(|l| i > l), "producer {p} reordered");
                last[p] = Some(i);
                got.push(v);
            };
            loop {
                // Every other consumer takes batches (`pop_slice`) while there are items.
                let k = if batches { rx.pop_slice(&mut buf) } else { 0 };
                for &v in &buf[..k] {
                    take(v, &mut got);
                }
                if k > 0 {
                    continue;
                }
                match rx.pop_timeout(HANG) {
                    Ok(v) => take(v, &mut got),
                    Err(PopError::Disconnected) => return got,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let stats = ring.clone();
    drop(ring);
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let want: Vec<u64> = (0..THREADS)
        .flat_map(|p| (0..N / THREADS).map(move |i| p << 32 | i))
        .collect();
    assert_eq!(all, want, "lost or duplicated: {:?}", stats.stats());
}

/// Threads bump a two-word counter under a lock; only mutual exclusion keeps it exact.
macro_rules! exclusion {
    ($lock:expr) => {{
        let lock = Arc::new($lock);
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..N / THREADS / 4 {
                        let mut g = lock.lock_timeout(HANG).unwrap();
                        assert_eq!(g[0], g[1], "two holders at once");
                        g[0] += 1;
                        g[1] += 1;
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(
            lock.lock_timeout(HANG).unwrap()[0],
            THREADS * (N / THREADS / 4)
        );
    }};
}

/// Broadcast under both policies: every subscriber thread gets every message in order
/// (back-pressure) or every message accounted for as received or lagged (overwrite), each
/// value whole (`[i, !i]`), with blocking receives, batches and a publisher that blocks.
#[test]
fn broadcast_threads_every_subscriber_sees_every_message() {
    for policy in [Policy::BackPressure, Policy::Overwrite] {
        let ring = broadcast::Ring::<[u64; 2]>::in_process(16, policy, None).unwrap();
        let subs: Vec<_> = (0..THREADS).map(|_| ring.subscribe().unwrap()).collect();
        let mut tx = ring.publisher().unwrap();
        let readers: Vec<_> = subs
            .into_iter()
            .enumerate()
            .map(|(k, mut rx)| {
                std::thread::spawn(move || {
                    // (No `BusySpin` here: spinning subscribers would take both CPUs of a
                    // 2-core machine from the publisher they wait for.)
                    let (mut expect, mut buf) = (0u64, [[0u64; 2]; 3]);
                    loop {
                        let got = if k == 0 {
                            rx.recv_slice(&mut buf).map(|n| buf[..n].to_vec())
                        } else {
                            rx.recv_timeout(HANG).map(|v| vec![v])
                        };
                        match got {
                            Ok(vs) => {
                                for v in vs {
                                    assert_eq!(v, [expect, !expect], "{policy:?}");
                                    expect += 1;
                                }
                            }
                            Err(RecvError::Lagged(n)) => {
                                assert_eq!(policy, Policy::Overwrite, "lapped under back-pressure");
                                expect += n;
                            }
                            Err(RecvError::Empty) => std::thread::yield_now(),
                            Err(RecvError::Disconnected) => break,
                            Err(e) => panic!("{policy:?}: {e}"),
                        }
                    }
                    assert_eq!(expect, N / 4, "{policy:?}: received + lagged = published");
                })
            })
            .collect();
        // A quarter of N: each ring's worth waits for every subscriber thread to run.
        for i in 0..N / 4 {
            tx.publish_timeout([i, !i], HANG).unwrap();
        }
        drop(tx);
        for r in readers {
            r.join().unwrap();
        }
    }
}

#[test]
fn mutex_and_spinlock_exclude_between_threads() {
    exclusion!(Mutex::new([0u64; 2]));
    exclusion!(SpinLock::new([0u64; 2]));
}

#[test]
fn seqlock_readers_never_see_a_torn_value() {
    let s = Arc::new(SeqLock::new([0u64; 4]));
    let s2 = s.clone();
    let w = std::thread::spawn(move || {
        for i in 1..=N / 10 {
            s2.write_timeout([i; 4], HANG).unwrap();
        }
    });
    let mut last = 0;
    while last < N / 10 {
        let v = s.read_timeout(HANG).unwrap();
        assert!(v.iter().all(|&x| x == v[0]), "torn: {v:?}");
        assert!(v[0] >= last, "went back");
        last = v[0];
    }
    w.join().unwrap();
}

#[test]
fn semaphore_event_and_condvar_hand_over_between_threads() {
    let rounds = N / 100;
    let sem = Arc::new(Semaphore::new(0));
    let ev = Arc::new(Event::new(Reset::Auto));
    let (sem2, ev2) = (sem.clone(), ev.clone());
    let t = std::thread::spawn(move || {
        for _ in 0..rounds {
            sem2.acquire_timeout(HANG).unwrap();
            ev2.set();
        }
    });
    for _ in 0..rounds {
        sem.release(1).unwrap();
        ev.wait_timeout(HANG).unwrap();
    }
    t.join().unwrap();

    let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
    let pair2 = pair.clone();
    let t = std::thread::spawn(move || {
        let (m, cv) = &*pair2;
        for i in 0..rounds {
            let g = m.lock_timeout(HANG).unwrap();
            let (g, timed_out) = cv.wait_timeout_while(g, HANG, |v| *v % 2 == 0);
            assert!(!timed_out, "a notify was lost");
            let mut g = g.unwrap();
            assert_eq!(*g, 2 * i + 1);
            *g += 1;
            cv.notify_one();
        }
    });
    let (m, cv) = &*pair;
    for i in 0..rounds {
        let mut g = m.lock_timeout(HANG).unwrap();
        *g += 1;
        cv.notify_one();
        let (g, timed_out) = cv.wait_timeout_while(g, HANG, |v| *v % 2 == 1);
        assert!(!timed_out, "a notify was lost");
        let g = g.unwrap();
        assert_eq!(*g, 2 * i + 2);
    }
    t.join().unwrap();
}

/// Handles of a ring whose payload is `Send` are `Send + Sync` (the negative case, a payload
/// that is not `Send`, is the `compile_fail` doctests in `src/lib.rs`).
#[test]
fn handles_of_send_payloads_are_send_and_sync() {
    fn both<X: Send + Sync>() {}
    both::<spsc::Ring<u64>>();
    both::<spsc::Producer<u64>>();
    both::<spsc::Consumer<u64>>();
    both::<mpmc::Ring<[u8; 24]>>();
    both::<mpmc::Producer<[u8; 24]>>();
    both::<mpmc::Consumer<[u8; 24]>>();
}

/// A peer that keeps writing into published slots (a hostile or buggy process; played here
/// by a thread that writes every slot's value words with relaxed atomic stores, as another
/// process's stores are, word by word) while the consumer pops them: what it pops is garbage,
/// never a data race in this process, and the ring goes on (issue 12, defect 6).
/// ThreadSanitizer (`.ci/tsan.sh`) checks the "never a data race" part: before, slots were
/// read with plain loads (`ptr::read`). The producer fills the rings between rounds, while
/// the scribbler pauses: this process's own writes are plain (a write observes nothing), so
/// only the consumer's reads meet the scribbling.
#[test]
fn a_peer_scribbling_on_published_slots_is_garbage_not_a_data_race() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Barrier;
    type Block = [u64; 4];
    const ROUNDS: u64 = if cfg!(miri) { 4 } else { 2_000 };
    const K: u64 = 12;

    /// Where a ring's slot values lie (from `raw_slots`, `raw_values`), to hand to the scribbling thread.
    #[derive(Clone, Copy)]
    struct Values(*mut u8, usize, u64);
    // SAFETY: only an address, used by the scribbler for atomic stores into the ring's
    // slots, which this process's readers access only atomically.
    unsafe impl Send for Values {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for Values {}

    /// Writes every slot's value once.
    fn scribble(v: Values, x: &mut u64) {
        let Values(base, stride, cap) = v;
        for i in 0..cap as usize {
            for w in 0..4 {
                *x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                // SAFETY: inside the ring's slot array (`raw_values`: `cap` slots of `stride`
                // bytes from `base`), 8-aligned (the value is a `[u64; 4]`).
                unsafe {
                    let p = base.add(i * stride + 8 * w).cast::<u64>();
                    AtomicU64::from_ptr(p).store(*x, Ordering::Relaxed);
                }
            }
        }
    }

    let spsc = spsc::Ring::<Block>::in_process(16).unwrap();
    let mpmc = mpmc::Ring::<Block>::in_process(16).unwrap();
    let values = |(b, s, c): (*mut u8, usize, u64)| Values(b, s, c);
    let (sv, mv) = (values(spsc.raw_slots()), values(mpmc.raw_values()));
    let (mut stx, mut srx) = (spsc.producer().unwrap(), spsc.consumer().unwrap());
    let (mut mtx, mut mrx) = (mpmc.producer().unwrap(), mpmc.consumer().unwrap());
    let (start, end) = (Barrier::new(3), Barrier::new(3));
    let popped = AtomicBool::new(false);
    let garbage = std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 1u64;
            for _ in 0..ROUNDS {
                start.wait();
                // Scribble until the consumer has popped the round, and at least once.
                loop {
                    scribble(sv, &mut x);
                    scribble(mv, &mut x);
                    if popped.load(Ordering::Relaxed) {
                        break;
                    }
                }
                end.wait();
            }
        });
        let consumer = s.spawn(|| {
            let (mut garbage, mut buf) = (0u64, [[0u64; 4]; 1]);
            for round in 0..ROUNDS {
                start.wait();
                for i in 0..K {
                    let want = [round * K + i; 4];
                    // One at a time, through a chunk's copy and through `pop_slice`, in turn.
                    let v = match i % 3 {
                        0 => srx.pop_timeout(HANG).unwrap(),
                        1 => {
                            let c = srx.read_chunk(1).unwrap();
                            c.copy_to(&mut buf);
                            c.commit_all();
                            buf[0]
                        }
                        _ => {
                            assert_eq!(srx.pop_slice(&mut buf), 1);
                            buf[0]
                        }
                    };
                    let m = mrx.pop_timeout(HANG).unwrap();
                    garbage += u64::from(v != want) + u64::from(m != want);
                }
                popped.store(true, Ordering::Relaxed);
                end.wait();
            }
            garbage
        });
        for round in 0..ROUNDS {
            for i in 0..K {
                stx.push([round * K + i; 4]).unwrap();
                mtx.push([round * K + i; 4]).unwrap();
            }
            start.wait();
            end.wait();
            popped.store(false, Ordering::Relaxed);
        }
        consumer.join().unwrap()
    });
    println!(
        "scribbled-on rings: {} pops each, {garbage} garbage values",
        ROUNDS * K
    );
}
