//! Loom models of every shmring algorithm, each with a broken twin that loom must reject.
//! Build with `RUSTFLAGS="--cfg shm_loom"`; bounds come from `LOOM_MAX_PREEMPTIONS`.
#![cfg(shm_loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::thread;
use loom_tests::twins::*;
use shm_ring::{mpmc, spsc, PopError};
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
            Err(PopError::Empty) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
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
