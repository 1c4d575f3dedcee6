//! Loom models of every shmring algorithm, each with a broken twin that loom must reject.
//! Build with `RUSTFLAGS="--cfg shm_loom"`; bounds come from `LOOM_MAX_PREEMPTIONS`.
#![cfg(shm_loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::thread;
use loom_tests::twins::*;
use shm_ring::{
    broadcast, log, mpmc, spsc, PopError, PublishError, PushError, RecvError, SendError,
};
use shm_sync::{Condvar, LockError, Mutex, Semaphore, SeqLock, SpinLock};

/// Runs `f` under loom; expects it to pass. Prints how many interleavings were explored.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom: {} interleavings explored (preemption bound {:?})",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        b.preemption_bound
    );
}

/// Runs a broken twin under loom; expects loom (or the model's assertions) to fail it.
fn twin_fails(f: impl Fn() + Sync + Send + 'static) {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model(f)));
    assert!(
        caught.is_err(),
        "loom accepted a broken twin: the model cannot see this bug"
    );
}

// ------------------------------------------------------------ SPSC ring

struct RealSpsc {
    tx: std::sync::Mutex<spsc::Producer<u64>>,
    rx: std::sync::Mutex<spsc::Consumer<u64>>,
}

impl SpscLike for RealSpsc {
    fn push(&self, v: u64) {
        self.tx.lock().unwrap().push(v).unwrap();
    }
    fn pop(&self) -> u64 {
        self.rx.lock().unwrap().pop().unwrap()
    }
}

/// Capacity 2, 3 pushes, 3 pops: in order, exactly once, with blocking (futex) waits.
fn spsc_body<Q: SpscLike>(q: Arc<Q>) {
    let p = q.clone();
    let producer = thread::spawn(move || {
        for v in 1..=3 {
            p.push(v);
        }
    });
    for v in 1..=3 {
        assert_eq!(q.pop(), v);
    }
    producer.join().unwrap();
}

fn real_spsc() -> Arc<RealSpsc> {
    let ring = spsc::Ring::<u64>::in_process(2).unwrap();
    Arc::new(RealSpsc {
        tx: std::sync::Mutex::new(ring.producer().unwrap()),
        rx: std::sync::Mutex::new(ring.consumer().unwrap()),
    })
}

#[test]
fn spsc_in_order_exactly_once() {
    model(|| spsc_body(real_spsc()));
}

#[test]
fn spsc_twin_relaxed_publish_is_caught() {
    twin_fails(|| spsc_body(Arc::new(RelaxedPublishSpsc::new())));
}

/// The real SPSC wake path (one wake per sleep, `WOKEN`) is what `spsc_in_order_exactly_once`
/// drives through its blocking pushes and pops; this twin leaves `WOKEN` set across sleeps.
#[test]
fn spsc_twin_sticky_woken_bit_is_caught() {
    twin_fails(|| {
        let h = Arc::new(StickyWokenHandoff::default());
        let p = h.clone();
        let producer = thread::spawn(move || {
            p.put(1);
            p.put(2);
        });
        h.take(1);
        h.take(2);
        producer.join().unwrap();
    });
}

#[test]
fn spsc_chunks_and_disconnect() {
    model(|| {
        let ring = spsc::Ring::<u64>::in_process(2).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let producer = thread::spawn(move || {
            let mut chunk = tx.write_chunk_uninit(2).unwrap();
            chunk.set(0, 1);
            chunk.set(1, 2);
            chunk.commit_all();
            tx.push(3).unwrap();
            // Dropping the producer disconnects the ring.
        });
        let mut got = Vec::new();
        loop {
            match rx.pop() {
                Ok(v) => got.push(v),
                Err(PopError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [1, 2, 3], "everything before the disconnect, in order");
        producer.join().unwrap();
    });
}

// ------------------------------------------------------------ MPMC ring

/// Pops one value with `try_pop`, yielding while empty; checks it was not seen before.
fn pop_one(rx: &mut mpmc::Consumer<u64>, seen: &AtomicU64) {
    loop {
        match rx.try_pop() {
            Ok(v) => {
                let before = seen.fetch_or(v, Ordering::Relaxed);
                assert_eq!(before & v, 0, "value {v} delivered twice");
                return;
            }
            Err(PopError::Empty | PopError::InFlight) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// A producer pushes 1, then 2 and 3 as one batch (`push_slice`: one claim for the run of
/// free slots) into a capacity-2 ring, while a consumer takes batches (`pop_slice`): every
/// value arrives once, in order.
#[test]
fn mpmc_batches_in_order_exactly_once() {
    model(|| {
        let ring = mpmc::Ring::<u64>::in_process(2).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let producer = thread::spawn(move || {
            assert_eq!(tx.push_slice(&[1]), 1);
            let rest = [2, 3];
            let mut done = 0;
            while done < rest.len() {
                let n = tx.push_slice(&rest[done..]);
                if n == 0 {
                    thread::yield_now();
                }
                done += n;
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u64; 2];
        while got.len() < 3 {
            let n = rx.pop_slice(&mut buf);
            if n == 0 {
                thread::yield_now();
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [1, 2, 3]);
        producer.join().unwrap();
    });
}

/// Two producers claim runs of `tail` at once (`push_slice` of 2 and of 1, capacity 4), so
/// one's compare-exchange can fail while the other's succeeds, and the loser retries from
/// the new `tail`, keeping the part of its checked run that lies past it. Drained after
/// both: every value once, each producer's in order, nothing overwritten.
#[test]
fn mpmc_racing_batch_claims_lose_and_retry_without_loss() {
    model(|| {
        let ring = mpmc::Ring::<u64>::in_process(4).unwrap();
        let producers: Vec<_> = [vec![1u64, 2], vec![3]]
            .into_iter()
            .map(|vals| {
                let mut tx = ring.producer().unwrap();
                thread::spawn(move || {
                    let mut done = 0;
                    while done < vals.len() {
                        let n = tx.push_slice(&vals[done..]);
                        if n == 0 {
                            thread::yield_now();
                        }
                        done += n;
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut rx = ring.consumer().unwrap();
        let mut got = [0u64; 4];
        assert_eq!(rx.pop_slice(&mut got), 3);
        let got = &got[..3];
        let mut sorted = got.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3], "{got:?}");
        let at = |v: u64| got.iter().position(|&g| g == v).unwrap();
        assert!(at(1) < at(2), "a producer's order broke: {got:?}");
    });
}

#[test]
fn mpmc_twin_batch_retry_keeping_a_stale_run_is_caught() {
    twin_fails(|| {
        let q = Arc::new(StaleRetryRunMpmc::new());
        let producers: Vec<_> = [vec![1u64], vec![2, 3]]
            .into_iter()
            .map(|vals| {
                let q = q.clone();
                thread::spawn(move || {
                    let mut done = 0;
                    // Bounded: a lost slot must fail the model, not hang it.
                    for _ in 0..3 {
                        if done == vals.len() {
                            break;
                        }
                        done += q.push_run(&vals[done..]);
                        thread::yield_now();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let got: Vec<u64> = std::iter::from_fn(|| q.try_pop()).take(2).collect();
        // Capacity 2: the first two pushed positions, each once.
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert!(
            sorted == [1, 2] || sorted == [2, 3],
            "a value was overwritten or lost: {got:?}"
        );
    });
}

#[test]
fn mpmc_twin_batch_claim_checking_one_slot_is_caught() {
    twin_fails(|| {
        let q = Arc::new(UncheckedRunMpmc::new());
        let p = q.clone();
        let producer = thread::spawn(move || {
            while p.push_run(&[1]) == 0 {
                thread::yield_now();
            }
            let rest = [2, 3];
            let mut done = 0;
            while done < rest.len() {
                let n = p.push_run(&rest[done..]);
                if n == 0 {
                    thread::yield_now();
                }
                done += n;
            }
        });
        for want in 1..=3 {
            loop {
                if let Some(v) = q.try_pop() {
                    assert_eq!(v, want, "a value was overwritten before it was taken");
                    break;
                }
                thread::yield_now();
            }
        }
        producer.join().unwrap();
    });
}

/// Two producers race for the slots of a capacity-2 ring; one consumer gets both values,
/// each exactly once.
#[test]
fn mpmc_two_producers_exactly_once() {
    model(|| {
        let ring = mpmc::Ring::<u64>::in_process(2).unwrap();
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let mut tx = ring.producer().unwrap();
                thread::spawn(move || tx.try_push(1 << p).unwrap())
            })
            .collect();
        let seen = AtomicU64::new(0);
        let mut rx = ring.consumer().unwrap();
        pop_one(&mut rx, &seen);
        pop_one(&mut rx, &seen);
        for t in producers {
            t.join().unwrap();
        }
        assert_eq!(seen.load(Ordering::Relaxed), 0b11, "every value delivered");
    });
}

/// Two consumers race for two values: each gets one, none twice.
#[test]
fn mpmc_two_consumers_exactly_once() {
    model(|| {
        let ring = mpmc::Ring::<u64>::in_process(2).unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let (mut rx, seen2) = (ring.consumer().unwrap(), seen.clone());
        let consumer = thread::spawn(move || pop_one(&mut rx, &seen2));
        let mut tx = ring.producer().unwrap();
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        pop_one(&mut ring.consumer().unwrap(), &seen);
        consumer.join().unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 0b11, "every value delivered");
    });
}

// ------------------------------------------------------------ MPMC: stalls, timeouts, deaths
//
// The claim timeout and the liveness verdict are loom's choices here
// (`shm_sync::primitive::world`): the main thread lets time pass, so any claim may be found
// stuck, and a handle that `die`s may be found dead by a check that loom lets see it. Every
// thread may be preempted anywhere, which plays a claimant stalled past the timeout that
// then resumes. The twin is the slot protocol in today's order (issue 12, defect 1).

/// The real ring on one slot, through the models' interface.
struct RealMpmc(mpmc::Ring<u64>);

impl MpmcLike for RealMpmc {
    type P = mpmc::Producer<u64>;
    type C = mpmc::Consumer<u64>;

    fn producer(&self) -> Self::P {
        self.0.producer().unwrap()
    }

    fn consumer(&self) -> Self::C {
        self.0.consumer().unwrap()
    }

    fn try_push(p: &mut Self::P, v: u64) -> Result<(), Try> {
        match p.try_push(v) {
            Ok(()) => Ok(()),
            // Full, or (once the consumers are all gone) nobody to push to.
            Err(
                PushError::Full(_)
                | PushError::InFlight(_)
                | PushError::Disconnected(_)
                | PushError::PeerDied(_),
            ) => Err(Try::Nothing),
            Err(PushError::Expired(_)) => Err(Try::Expired),
            Err(e) => panic!("{e}"),
        }
    }

    fn try_pop(c: &mut Self::C) -> Result<u64, Try> {
        match c.try_pop() {
            Ok(v) => Ok(v),
            // Empty, or (once the producers are all gone) drained.
            Err(
                PopError::Empty | PopError::InFlight | PopError::Disconnected | PopError::PeerDied,
            ) => Err(Try::Nothing),
            Err(PopError::Expired) => Err(Try::Expired),
            Err(e) => panic!("{e}"),
        }
    }

    fn die_producer(p: Self::P) {
        p.die();
    }

    fn die_consumer(c: Self::C) {
        c.die();
    }

    fn doom_producer_at(p: &mut Self::P, point: &'static str) {
        p.doom_at(point);
    }
}

fn real_mpmc() -> Arc<RealMpmc> {
    Arc::new(RealMpmc(mpmc::Ring::<u64>::in_process(1).unwrap()))
}

/// Producer 1 pushes once and dies; producer 2 pushes once; the consumer (with time passing)
/// pops twice meanwhile and drains afterwards. Every push that returned `Ok` is delivered
/// once, or lost to a consumer claim that was itself given up (that pop returns `Expired`:
/// the documented, counted loss). In today's order, producer 1 stalled between its claim and
/// its mark is skipped, producer 2 marks the next lap, producer 1 resumes and writes its
/// identity over producer 2's, dies, and the consumer gives producer 2's slot up: its `Ok`
/// push is lost with nobody told.
///
/// The stalled claimant runs on the model's main thread, so that its stall is the first of
/// the three preemptions the bug needs.
fn mpmc_stalled_producer_body<Q: MpmcLike>(q: Arc<Q>) {
    let mut rx = q.consumer();
    let (mut p1, mut p2) = (q.producer(), q.producer());
    let consumer = thread::spawn(move || {
        shm_sync::primitive::world::time_passes();
        let (mut got, mut expired) = (Vec::new(), 0);
        for _ in 0..2 {
            match Q::try_pop(&mut rx) {
                Ok(v) => got.push(v),
                Err(Try::Expired) => expired += 1,
                Err(Try::Nothing) => {}
            }
        }
        (rx, got, expired)
    });
    let t2 = thread::spawn(move || Q::try_push(&mut p2, 2).is_ok());
    let ok1 = Q::try_push(&mut p1, 1).is_ok();
    Q::die_producer(p1);
    let ok = [ok1, t2.join().unwrap()];
    let (mut rx, mut got, mut expired) = consumer.join().unwrap();
    for _ in 0..3 {
        match Q::try_pop(&mut rx) {
            Ok(v) => got.push(v),
            Err(Try::Expired) => expired += 1,
            Err(Try::Nothing) => {}
        }
    }
    for v in [1, 2] {
        let n = got.iter().filter(|&&g| g == v).count();
        assert!(n <= 1, "{v} delivered {n} times: {got:?}");
    }
    let pushed = ok.iter().filter(|&&ok| ok).count();
    assert_eq!(
        got.len() + expired,
        pushed,
        "pushes that returned Ok {ok:?}, delivered {got:?}, lost to expired pops {expired}"
    );
}

#[test]
fn mpmc_a_stalled_producer_leaves_no_trace_on_the_next_lap() {
    model(|| mpmc_stalled_producer_body(real_mpmc()));
}

#[test]
fn mpmc_twin_stale_writer_identity_is_caught() {
    twin_fails(|| mpmc_stalled_producer_body(Arc::new(StaleIdentityMpmc::new())));
}

/// One message is published; consumer 1 pops once and dies, consumer 2 pops once; the
/// producer (with time passing) pushes twice. Loom rejects any write of a slot a live
/// consumer may still be reading. In today's order, consumer 1 stalled between its claim
/// and its mark is reclaimed, consumer 2 marks the next lap, consumer 1 resumes and writes
/// its identity over consumer 2's, dies, and the producer rewrites consumer 2's slot under
/// it.
///
/// The stalled claimant runs on the model's main thread (see the producer model).
fn mpmc_stalled_consumer_body<Q: MpmcLike>(q: Arc<Q>) {
    let mut tx = q.producer();
    Q::try_push(&mut tx, 1).unwrap();
    let (mut c1, mut c2) = (q.consumer(), q.consumer());
    let producer = thread::spawn(move || {
        shm_sync::primitive::world::time_passes();
        let _ = Q::try_push(&mut tx, 2);
        let _ = Q::try_push(&mut tx, 3);
    });
    let t2 = thread::spawn(move || Q::try_pop(&mut c2).ok());
    let r1 = Q::try_pop(&mut c1).ok();
    Q::die_consumer(c1);
    producer.join().unwrap();
    let got = [r1, t2.join().unwrap()];
    assert!(
        got[0].is_none() || got[0] != got[1],
        "delivered twice: {got:?}"
    );
}

#[test]
fn mpmc_a_stalled_consumer_leaves_no_trace_on_the_next_lap() {
    model(|| mpmc_stalled_consumer_body(real_mpmc()));
}

#[test]
fn mpmc_twin_stale_reader_identity_is_caught() {
    twin_fails(|| mpmc_stalled_consumer_body(Arc::new(StaleIdentityMpmc::new())));
}

/// Producer 1 is killed with its slot marked WRITING and written, not published; the
/// consumer (with time passing) pops until producer 2's message arrives, which it pushes
/// into the next lap of the one slot. The dead writer's slot is skipped once its death is
/// seen, and producer 2's write is ordered after the dead writer's (loom rejects it
/// otherwise): the skip is a Release that the next lap's producer acquires. The twin skips
/// with a `Relaxed` compare-exchange.
fn mpmc_killed_writer_body<Q: MpmcLike>(q: Arc<Q>) {
    let (mut p1, mut p2, mut rx) = (q.producer(), q.producer(), q.consumer());
    Q::doom_producer_at(&mut p1, "mpmc-producer-written");
    let doomed = thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Q::try_push(&mut p1, 1)));
        match r {
            // Died mid-push: a dead process runs no destructor.
            Err(_) => std::mem::forget(p1),
            // Its unmarked claim was skipped first (or the ring was full): it dies anyway.
            Ok(r) => {
                assert!(r.is_err(), "a doomed push returned Ok");
                Q::die_producer(p1);
            }
        }
    });
    let consumer = thread::spawn(move || {
        shm_sync::primitive::world::time_passes();
        for _ in 0..8 {
            match Q::try_pop(&mut rx) {
                Ok(v) => return Some(v),
                Err(_) => thread::yield_now(),
            }
        }
        None
    });
    let mut pushed = false;
    for _ in 0..8 {
        if Q::try_push(&mut p2, 2).is_ok() {
            pushed = true;
            break;
        }
        thread::yield_now();
    }
    doomed.join().unwrap();
    let got = consumer.join().unwrap();
    assert_ne!(
        got,
        Some(1),
        "a dead writer's unpublished value was delivered"
    );
    if pushed {
        assert!(got.is_none_or(|v| v == 2), "{got:?}");
    }
}

#[test]
fn mpmc_a_writer_killed_mid_write_is_skipped_and_the_next_lap_ordered_after_it() {
    model(|| mpmc_killed_writer_body(real_mpmc()));
}

#[test]
fn mpmc_twin_relaxed_skip_of_a_dead_writer_is_caught() {
    twin_fails(|| mpmc_killed_writer_body(Arc::new(StaleIdentityMpmc::with_relaxed_skip(true))));
}

#[test]
fn mpmc_twin_relaxed_publish_is_caught() {
    twin_fails(|| {
        let q = Arc::new(RelaxedPublishMpmc::new());
        let p = q.clone();
        let producer = thread::spawn(move || assert!(p.try_push(7)));
        loop {
            if let Some(v) = q.try_pop() {
                assert_eq!(v, 7);
                break;
            }
            thread::yield_now();
        }
        producer.join().unwrap();
    });
}

// ------------------------------------------------------------ locks

#[test]
fn mutex_mutual_exclusion_and_no_lost_wake() {
    model(|| {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || *m.lock().unwrap() += 1)
            })
            .collect();
        *m.lock().unwrap() += 1;
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock().unwrap(), 3);
    });
}

#[test]
fn mutex_twin_missing_wake_is_caught() {
    twin_fails(|| {
        let m = Arc::new(NoWakeMutex::new());
        let m2 = m.clone();
        let t = thread::spawn(move || {
            m2.lock();
            m2.unlock();
        });
        m.lock();
        m.unlock();
        t.join().unwrap();
    });
}

#[test]
fn spinlock_mutual_exclusion() {
    model(|| {
        let s = Arc::new(SpinLock::new(0u64));
        let s2 = s.clone();
        let t = thread::spawn(move || *s2.lock().unwrap() += 1);
        *s.lock().unwrap() += 1;
        t.join().unwrap();
        assert_eq!(*s.lock().unwrap(), 2);
    });
}

#[test]
fn spinlock_twin_relaxed_acquire_is_caught() {
    twin_fails(|| {
        let s = Arc::new(RelaxedSpinLock::new());
        let s2 = s.clone();
        let t = thread::spawn(move || s2.increment());
        s.increment();
        t.join().unwrap();
    });
}

#[test]
fn mutex_owner_death_is_reported_once_then_repaired() {
    model(|| {
        let m = Arc::new(Mutex::new(0u64));
        let m1 = m.clone();
        // The holder "dies" holding the lock: it never unlocks.
        thread::spawn(move || {
            let mut g = m1.lock().unwrap();
            *g = 99; // half-done update
            g.die_holding();
        })
        .join()
        .unwrap();
        let died = Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (m, died) = (m.clone(), died.clone());
                thread::spawn(move || match m.lock() {
                    Ok(mut g) => *g += 1,
                    Err(LockError::OwnerDied(mut g)) => {
                        died.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(*g, 99);
                        *g = 1; // repaired
                        g.mark_consistent();
                    }
                    Err(e) => panic!("{e}"),
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(
            died.load(Ordering::Relaxed),
            1,
            "exactly one locker learns of the death"
        );
        assert_eq!(*m.lock().unwrap(), 2);
    });
}

/// The real locks, through the lock-recovery model's interface.
struct RealMutex(Mutex<u64>);
struct RealSpinLock(SpinLock<u64>);

/// The model's interface for a real lock type, whose guards have `mark_consistent` and
/// (under loom) `die_holding`.
macro_rules! robust_lock {
    ($real:ident) => {
        impl RobustLock for $real {
            fn try_lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> Option<bool> {
                match self.0.try_lock() {
                    Ok(mut g) => {
                        f(&mut g);
                        Some(false)
                    }
                    Err(LockError::OwnerDied(mut g)) => {
                        f(&mut g);
                        g.mark_consistent();
                        Some(true)
                    }
                    Err(LockError::WouldBlock) => None,
                    Err(e) => panic!("{e}"),
                }
            }

            fn lock_then(&self, f: &mut dyn FnMut(&mut u64)) -> bool {
                match self.0.lock() {
                    Ok(mut g) => {
                        f(&mut g);
                        false
                    }
                    Err(LockError::OwnerDied(mut g)) => {
                        f(&mut g);
                        g.mark_consistent();
                        true
                    }
                    Err(e) => panic!("{e}"),
                }
            }

            fn lock_and_die(&self, meanwhile: &mut dyn FnMut()) {
                let mut g = self.0.lock().unwrap();
                *g = 99;
                meanwhile();
                g.die_holding();
            }
        }
    };
}
robust_lock!(RealMutex);
robust_lock!(RealSpinLock);

/// A holder dies holding the lock while two lockers contend for it: one blocks in `lock`
/// (sleeping in slices that end once time passes, and re-checking the holder), the other
/// makes three `try_lock`s; the death is seen whenever loom lets a check see it. Mutual
/// exclusion holds (loom checks every data access) and at most one locker is told of the
/// death. (One locker tries a bounded number of times: two that spin without bound can
/// starve the holder forever in loom, which assumes no fairness.) The twin takes a dead
/// holder's lock with a plain store, so both lockers can take it at once.
fn lock_recovery_body<L: RobustLock>(l: Arc<L>) {
    let died = Arc::new(AtomicU32::new(0));
    let mut contenders = Vec::new();
    // The model's main thread is the holder: it locks, starts the contenders, lets time
    // pass, and dies holding the lock (so that no third thread spins on it).
    l.lock_and_die(&mut || {
        let (l2, died2) = (l.clone(), died.clone());
        contenders.push(thread::spawn(move || {
            if l2.lock_then(&mut |v| *v += 1) {
                died2.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let (l3, died3) = (l.clone(), died.clone());
        contenders.push(thread::spawn(move || {
            for _ in 0..3 {
                match l3.try_lock_then(&mut |v| *v += 1) {
                    Some(d) => {
                        if d {
                            died3.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    None => thread::yield_now(),
                }
            }
        }));
        shm_sync::primitive::world::time_passes();
    });
    for c in contenders {
        c.join().unwrap();
    }
    assert!(
        died.load(Ordering::Relaxed) <= 1,
        "two lockers were told the holder died"
    );
}

#[test]
fn mutex_recovery_from_a_holder_dying_under_contention() {
    model(|| lock_recovery_body(Arc::new(RealMutex(Mutex::new(0u64)))));
}

#[test]
fn spinlock_recovery_from_a_holder_dying_under_contention() {
    model(|| lock_recovery_body(Arc::new(RealSpinLock(SpinLock::new(0u64)))));
}

#[test]
fn lock_recovery_twin_plain_store_takeover_is_caught() {
    twin_fails(|| lock_recovery_body(Arc::new(StoreRecoveryLock::new())));
}

#[test]
fn owner_death_twin_silent_recovery_is_caught() {
    twin_fails(|| {
        let l = Arc::new(SilentRecoveryLock::new());
        let dead_owner = 1;
        l.lock(dead_owner, &[]);
        // Owner 1 dies holding it; owner 2 must be told.
        let told = l.lock(2, &[dead_owner]);
        assert!(told, "the new holder was not told the previous one died");
        l.unlock();
    });
}

// ------------------------------------------------------------ condvar

fn condvar_body(
    wait: impl for<'a> Fn(&'a Mutex<u32>, shm_sync::MutexGuard<'a, u32>) -> u32 + Send + Sync + 'static,
    notify: impl Fn() + Send + Sync + 'static,
    m: Arc<Mutex<u32>>,
) {
    let (m2, notify) = (m.clone(), Arc::new(notify));
    let t = thread::spawn(move || {
        *m2.lock().unwrap() = 1;
        notify();
    });
    let g = m.lock().unwrap();
    assert_eq!(wait(&m, g), 1);
    t.join().unwrap();
}

#[test]
fn condvar_no_lost_wake() {
    model(|| {
        let cv = Arc::new(Condvar::new());
        let cv2 = cv.clone();
        condvar_body(
            move |_, g| *cv.wait_while(g, |v| *v == 0).unwrap(),
            move || cv2.notify_one(),
            Arc::new(Mutex::new(0)),
        );
    });
}

#[test]
fn condvar_twin_late_read_is_caught() {
    twin_fails(|| {
        let cv = Arc::new(LateReadCondvar::new());
        let cv2 = cv.clone();
        condvar_body(
            move |m, mut g| {
                while *g == 0 {
                    g = cv.wait(m, g);
                }
                *g
            },
            move || cv2.notify_all(),
            Arc::new(Mutex::new(0)),
        );
    });
}

// ------------------------------------------------------------ semaphore

fn semaphore_body(
    acquire: impl Fn() + Send + Sync + 'static,
    release: impl Fn() + Send + Sync + 'static,
) {
    let inside = Arc::new(AtomicU32::new(0));
    let (acquire, release) = (Arc::new(acquire), Arc::new(release));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (inside, acquire, release) = (inside.clone(), acquire.clone(), release.clone());
            thread::spawn(move || {
                acquire();
                let n = inside.fetch_add(1, Ordering::Relaxed) + 1;
                assert!(n <= 1, "{n} holders of one permit");
                inside.fetch_sub(1, Ordering::Relaxed);
                release();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn semaphore_never_over_grants_nor_loses_permits() {
    model(|| {
        let s = Arc::new(Semaphore::new(1));
        let (s1, s2) = (s.clone(), s.clone());
        semaphore_body(move || s1.acquire(), move || s2.release(1).unwrap());
        assert_eq!(s.available(), 1, "no permit lost or created");
    });
}

#[test]
fn semaphore_twin_check_then_act_is_caught() {
    twin_fails(|| {
        let s = Arc::new(CheckThenActSemaphore::new(1));
        let (s1, s2) = (s.clone(), s.clone());
        semaphore_body(move || s1.acquire(), move || s2.release());
    });
}

// ------------------------------------------------------------ seqlock

#[test]
fn seqlock_never_returns_a_torn_value() {
    model(|| {
        let s = Arc::new(SeqLock::new([0u64; 2]));
        let w = s.clone();
        let writer = thread::spawn(move || {
            w.write([1, 1]).unwrap();
            w.write([2, 2]).unwrap();
        });
        if let Some(v) = s.try_read() {
            assert_eq!(v[0], v[1], "torn read {v:?}");
        }
        writer.join().unwrap();
        assert_eq!(s.read().unwrap(), [2, 2]);
    });
}

/// A reader asleep in `Changes::wait` is woken by the write it waits for: the writer's
/// publish and its check for sleepers against the reader's announcement and re-read.
#[test]
fn seqlock_reader_waiting_for_a_change_is_woken_by_it() {
    model(|| {
        let s = Arc::new(SeqLock::new([0u64; 2]));
        let w = s.clone();
        let mut changes = s.changes();
        let writer = thread::spawn(move || w.write([1, 1]).unwrap());
        assert_eq!(changes.wait(), Ok([1, 1]));
        writer.join().unwrap();
    });
}

#[test]
fn seqlock_twin_checking_for_sleepers_before_publishing_is_caught() {
    twin_fails(|| {
        let s = Arc::new(BrokenLatest::new(true));
        let w = s.clone();
        let writer = thread::spawn(move || w.write(1));
        assert_eq!(s.next(0), Ok(2));
        writer.join().unwrap();
    });
}

/// A writer that writes and dies: the reader gets the value (if it had not seen it) and
/// then `WriterGone`, once time passes, never a hang.
#[test]
fn seqlock_reader_learns_that_the_writer_is_gone() {
    model(|| {
        let s = Arc::new(SeqLock::new([0u64; 2]));
        let w = s.clone();
        let mut changes = s.changes();
        let writer = thread::spawn(move || {
            w.write([1, 1]).unwrap();
            shm_sync::loom_die();
            shm_sync::primitive::world::time_passes();
        });
        match changes.wait() {
            Ok(v) => {
                assert_eq!(v, [1, 1]);
                assert!(matches!(
                    changes.wait(),
                    Err(shm_sync::SeqLockError::WriterGone { .. })
                ));
            }
            Err(e) => panic!("{e:?} before the value"),
        }
        writer.join().unwrap();
    });
}

#[test]
fn seqlock_twin_never_checking_the_writer_is_caught() {
    twin_fails(|| {
        let s = Arc::new(BrokenLatest::new(false));
        let w = s.clone();
        let writer = thread::spawn(move || {
            let me = shm_sync::primitive::world::new_identity();
            w.write(me);
            shm_sync::primitive::world::die(me);
            shm_sync::primitive::world::time_passes();
        });
        let seen = s.next(0).unwrap();
        assert_eq!(s.next(seen), Err(LatestStop::Gone));
        writer.join().unwrap();
    });
}

#[test]
fn seqlock_twin_missing_recheck_is_caught() {
    twin_fails(|| {
        let s = Arc::new(NoRecheckSeqLock::new());
        let w = s.clone();
        let writer = thread::spawn(move || w.write(1));
        if let Some(v) = s.try_read() {
            assert_eq!(v[0], v[1], "torn read {v:?}");
        }
        writer.join().unwrap();
    });
}

// ------------------------------------------------------------ broadcast

struct RealLap {
    tx: std::sync::Mutex<broadcast::Publisher<[u64; 2]>>,
    rx: std::sync::Mutex<broadcast::Subscriber<[u64; 2]>>,
}

fn recv_of(r: Result<[u64; 2], RecvError>) -> Recv {
    match r {
        Ok(v) => Recv::Value(v),
        Err(RecvError::Lagged(n)) => Recv::Lagged(n),
        Err(RecvError::Empty) => Recv::Empty,
        Err(e) => panic!("{e}"),
    }
}

impl LapLike for RealLap {
    fn publish(&self, p: u64) {
        self.tx.lock().unwrap().publish([p, p]).unwrap();
    }
    fn try_recv(&self) -> Recv {
        recv_of(self.rx.lock().unwrap().try_recv())
    }
}

/// Capacity 2, overwrite; the publisher publishes positions 0, 1, 2 (the last laps slot 0)
/// while the subscriber receives: every value it gets is whole and the one published at its
/// position, and received + lagged = published, exactly.
fn lap_body<B: LapLike>(b: Arc<B>) {
    let p = b.clone();
    let publisher = thread::spawn(move || {
        for pos in 0..3 {
            p.publish(pos);
        }
    });
    let mut expect = 0;
    while expect < 3 {
        match b.try_recv() {
            Recv::Value(v) => {
                assert_eq!(v, [expect, expect], "torn or misplaced value");
                expect += 1;
            }
            Recv::Lagged(n) => expect += n,
            Recv::Empty => thread::yield_now(),
        }
    }
    assert_eq!(expect, 3, "received + lagged = published");
    publisher.join().unwrap();
}

#[test]
fn broadcast_lapped_reads_are_whole_and_counted_exactly() {
    model(|| {
        let ring =
            broadcast::Ring::<[u64; 2]>::in_process(2, broadcast::Policy::Overwrite, None).unwrap();
        lap_body(Arc::new(RealLap {
            tx: std::sync::Mutex::new(ring.publisher().unwrap()),
            rx: std::sync::Mutex::new(ring.subscribe().unwrap()),
        }));
    });
}

#[test]
fn broadcast_twin_without_the_sequence_recheck_is_caught() {
    twin_fails(|| lap_body(Arc::new(NoRecheckBroadcast::new())));
}

struct RealJoin {
    ring: broadcast::Ring<[u64; 2]>,
    tx: std::sync::Mutex<broadcast::Publisher<[u64; 2]>>,
    rx: std::sync::Mutex<Option<broadcast::Subscriber<[u64; 2]>>>,
}

impl JoinLike for RealJoin {
    fn try_publish(&self, p: u64) -> bool {
        match self.tx.lock().unwrap().try_publish([p, p]) {
            Ok(()) => true,
            Err(PublishError::Full(_)) => false,
            Err(e) => panic!("{e}"),
        }
    }
    fn join(&self) -> u64 {
        let s = self.ring.subscribe().unwrap();
        let at = s.position();
        *self.rx.lock().unwrap() = Some(s);
        at
    }
    fn try_recv(&self) -> Recv {
        recv_of(self.rx.lock().unwrap().as_mut().unwrap().try_recv())
    }
    fn leave(&self) {
        self.rx.lock().unwrap().take();
    }
}

/// Back-pressure, capacity 1: a subscriber joins live while the publisher publishes 0, 1,
/// 2; it receives everything from where it joined up to position 2, none lapped (the
/// publisher's scan saw its record, or it started past what that scan let be overwritten),
/// then leaves, and its record stops holding the publisher back.
fn join_body<J: JoinLike>(j: Arc<J>) {
    let p = j.clone();
    let publisher = thread::spawn(move || {
        for pos in 0..3 {
            while !p.try_publish(pos) {
                thread::yield_now();
            }
        }
    });
    let mut expect = j.join();
    while expect < 2 {
        match j.try_recv() {
            Recv::Value(v) => {
                assert_eq!(v, [expect, expect], "torn or misplaced value");
                expect += 1;
            }
            Recv::Lagged(n) => panic!("a live-joined back-pressure subscriber lost {n}"),
            Recv::Empty => thread::yield_now(),
        }
    }
    j.leave();
    publisher.join().unwrap();
}

#[test]
fn broadcast_live_join_under_back_pressure_loses_nothing_and_leave_frees() {
    model(|| {
        let ring =
            broadcast::Ring::<[u64; 2]>::in_process(1, broadcast::Policy::BackPressure, None)
                .unwrap();
        let tx = std::sync::Mutex::new(ring.publisher().unwrap());
        join_body(Arc::new(RealJoin {
            ring,
            tx,
            rx: std::sync::Mutex::new(None),
        }));
    });
}

#[test]
fn broadcast_twin_join_without_the_dekker_fences_is_caught() {
    twin_fails(|| join_body(Arc::new(UnfencedJoinBroadcast::new())));
}

// ------------------------------------------------------------ byte log

struct RealLog {
    tx: [std::sync::Mutex<Option<log::Producer>>; 2],
    rx: std::sync::Mutex<log::Consumer>,
}

impl RealLog {
    /// 64 bytes, messages of up to 8 bytes: records of 16, so sends wrap with padding.
    fn new() -> Arc<RealLog> {
        let ring = log::Ring::in_process(64, 8).unwrap();
        Arc::new(RealLog {
            tx: [
                std::sync::Mutex::new(Some(ring.producer().unwrap())),
                std::sync::Mutex::new(Some(ring.producer().unwrap())),
            ],
            rx: std::sync::Mutex::new(ring.consumer().unwrap()),
        })
    }
}

impl LogLike for RealLog {
    fn send(&self, who: usize, tag: u16) -> bool {
        let mut guard = self.tx[who].lock().unwrap();
        let tx = guard.as_mut().expect("a live producer");
        // A message of `tag % 9` bytes (loom models no bytes; the length sets the span).
        let ok = match tx.try_claim(8) {
            Ok(mut c) => {
                c.set_type(tag);
                c.commit(usize::from(tag) % 9).unwrap();
                true
            }
            Err(SendError::Expired) => false,
            Err(e) => panic!("{e}"),
        };
        ok
    }

    fn try_recv(&self) -> Option<u16> {
        match self.rx.lock().unwrap().try_recv() {
            Ok(f) => Some(f.msg_type()),
            // (`PeerDied`: every producer gone, the dead one last.)
            Err(PopError::Empty | PopError::InFlight | PopError::PeerDied) => None,
            Err(e) => panic!("{e}"),
        }
    }
}

impl DeadLogLike for RealLog {
    fn claim_and_die(&self, who: usize) {
        let mut tx = self.tx[who]
            .lock()
            .unwrap()
            .take()
            .expect("a live producer");
        match tx.try_claim(8) {
            // Marked, perhaps partly written: the process dies before its commit.
            Ok(c) => std::mem::forget(c),
            Err(SendError::Expired) => {}
            Err(e) => panic!("{e}"),
        }
        tx.die();
    }
}

/// Two producers send one message each while the consumer, with time passing (so it may
/// give up any claim it finds unmarked), polls; then it takes what is left. Every send
/// that said `Ok` is delivered exactly once, and nothing else is.
fn log_giveup_body<L: LogLike>(l: Arc<L>) {
    let l1 = l.clone();
    let p1 = thread::spawn(move || l1.send(0, 1));
    let lc = l.clone();
    let c = thread::spawn(move || {
        shm_sync::primitive::world::time_passes();
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Some(t) = lc.try_recv() {
                got.push(t);
            }
        }
        got
    });
    let ok2 = l.send(1, 2);
    let ok1 = p1.join().unwrap();
    let mut got = c.join().unwrap();
    for _ in 0..3 {
        if let Some(t) = l.try_recv() {
            got.push(t);
        }
    }
    got.sort_unstable();
    let want: Vec<u16> = [(ok1, 1), (ok2, 2)]
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|&(_, t)| t)
        .collect();
    assert_eq!(got, want, "delivered {got:?}, sends said Ok: {ok1} {ok2}");
}

#[test]
fn log_a_stalled_claim_given_up_is_never_written_and_every_ok_is_delivered() {
    model(|| log_giveup_body(RealLog::new()));
}

#[test]
fn log_twin_mark_without_the_dekker_fences_is_caught() {
    twin_fails(|| log_giveup_body(Arc::new(UnfencedMarkLog::new())));
}

/// Producer 0 claims (and marks) and dies before its commit; producer 1 sends one message;
/// the consumer, with time passing (claim timeouts may expire), polls meanwhile and
/// afterwards. Producer 1's message, if its send said `Ok`, is delivered exactly once (the
/// dead claim, before or after it, is padded, not waited for), and nothing else is.
fn log_dead_claim_body<L: DeadLogLike>(l: Arc<L>) {
    let l0 = l.clone();
    let p0 = thread::spawn(move || l0.claim_and_die(0));
    let lc = l.clone();
    let c = thread::spawn(move || {
        shm_sync::primitive::world::time_passes();
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Some(t) = lc.try_recv() {
                got.push(t);
            }
        }
        got
    });
    let ok1 = l.send(1, 2);
    p0.join().unwrap();
    let mut got = c.join().unwrap();
    for _ in 0..3 {
        if let Some(t) = l.try_recv() {
            got.push(t);
        }
    }
    let want: Vec<u16> = if ok1 { vec![2] } else { vec![] };
    assert_eq!(got, want, "delivered {got:?}; the live send said Ok: {ok1}");
}

#[test]
fn log_a_dead_producers_marked_claim_is_padded_and_the_next_message_arrives() {
    model(|| log_dead_claim_body(RealLog::new()));
}

#[test]
fn log_twin_padding_a_marked_claim_without_the_death_check_is_caught() {
    twin_fails(|| log_dead_claim_body(Arc::new(UndeadPadLog::new())));
}

/// One producer sends three messages of different lengths into a 64-byte log (records of
/// 8 to 16 bytes: the third wraps, after padding) while the consumer receives: all three,
/// in order, each once.
#[test]
fn log_wrapping_sends_with_padding_arrive_in_order() {
    model(|| {
        let l = RealLog::new();
        let lp = l.clone();
        let p = thread::spawn(move || {
            for tag in [8u16, 7, 3] {
                while !lp.send(0, tag) {}
            }
        });
        let mut got = Vec::new();
        for _ in 0..3 {
            if let Some(t) = l.try_recv() {
                got.push(t);
            }
        }
        p.join().unwrap();
        for _ in 0..4 {
            if let Some(t) = l.try_recv() {
                got.push(t);
            }
        }
        assert_eq!(got, [8, 7, 3]);
    });
}

// ------------------------------------------------------------ select

/// A consumer selects (untimed) over two SPSC rings while a producer pushes one item into
/// the second: the select returns that end, and the item is there. A wake-up lost between
/// the select's announcements and its sleep is a loom deadlock.
#[test]
fn select_over_two_rings_is_woken_by_a_push_into_either() {
    model(|| {
        let a = spsc::Ring::<u64>::in_process(1).unwrap();
        let b = spsc::Ring::<u64>::in_process(1).unwrap();
        let (mut ra, mut rb) = (a.consumer().unwrap(), b.consumer().unwrap());
        let (_ta, mut tb) = (a.producer().unwrap(), b.producer().unwrap());
        let p = thread::spawn(move || {
            tb.try_push(5).unwrap();
            tb
        });
        let i = shm_ring::select::select(&mut [&mut ra, &mut rb], None).unwrap();
        assert_eq!(i, 1);
        assert_eq!(rb.try_pop(), Ok(5));
        drop(p.join().unwrap());
    });
}

#[test]
fn select_twin_announcing_without_the_recheck_is_caught() {
    twin_fails(|| {
        let s = Arc::new(NoRecheckSelect::new());
        let s2 = s.clone();
        let p = thread::spawn(move || s2.publish(1));
        assert_eq!(s.select(), 1);
        p.join().unwrap();
    });
}

// ------------------------------------------------------------ async waiter

/// A `block_on` on loom's threads: polls, and parks until the waker unparks it (a missed
/// wake-up leaves it parked for ever, which loom reports as a deadlock).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(loom::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        thread::park();
    }
}

/// The async path end to end, real code: `pop_async` counts in, passes the barrier,
/// re-checks and hands its epoch to the waiter thread, which sleeps on it and on its kick
/// word; a push from another thread wakes it, and the waiter wakes the task. Two pops in a
/// row, so that the second registration can meet a waiter that already runs (between its
/// snapshot and its sleep). Every interleaving ends with both items popped.
#[test]
fn async_pops_are_woken_through_the_waiter_by_pushes() {
    model(|| {
        let a = spsc::Ring::<u64>::in_process(2).unwrap();
        let (mut rx, mut tx) = (a.consumer().unwrap(), a.producer().unwrap());
        let p = thread::spawn(move || {
            tx.try_push(5).unwrap();
            tx.try_push(6).unwrap();
            tx
        });
        assert_eq!(block_on(rx.pop_async()), Ok(5));
        assert_eq!(block_on(rx.pop_async()), Ok(6));
        drop(p.join().unwrap());
        shm_ring::aio::stop_waiters();
    });
}

/// The waiter's hand-off alone (the twin's model with the kick read as the real waiter
/// reads it): never a lost wake-up.
#[test]
fn async_waiter_hand_off_reading_its_kick_under_the_lock_is_sound() {
    model(|| {
        let w = Arc::new(LateKickWaiter::fixed());
        let (w2, w3) = (w.clone(), w.clone());
        let waiter = thread::spawn(move || w2.serve());
        let p = thread::spawn(move || w3.publish());
        w.wait();
        p.join().unwrap();
        waiter.join().unwrap();
    });
}

#[test]
fn async_waiter_twin_reading_its_kick_after_the_snapshot_is_caught() {
    twin_fails(|| {
        let w = Arc::new(LateKickWaiter::new());
        let (w2, w3) = (w.clone(), w.clone());
        let waiter = thread::spawn(move || w2.serve());
        let p = thread::spawn(move || w3.publish());
        w.wait();
        p.join().unwrap();
        waiter.join().unwrap();
    });
}
