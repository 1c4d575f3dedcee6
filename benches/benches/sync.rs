#![allow(missing_docs)] // criterion_group! generates undocumented items
//! shm-sync locks against `std::sync::Mutex` and `parking_lot::Mutex`: uncontended
//! lock/unlock, and lock/unlock while a rival thread or rival process hammers the same lock.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use shm_sync::{Mutex, Protocol, Shared, SpinLock};
use shmring_benches::{child_role, spawn_peer, unique_name};

/// The bench runs this many lock/unlock pairs per rival check.
const STOP_WORD: u64 = u64::MAX;

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended lock+unlock");
    let name = unique_name("unc-m");
    let m = Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal)).unwrap();
    g.bench_function("shm-sync Mutex", |b| {
        b.iter(|| *black_box(&m).lock().unwrap() += 1)
    });
    let name = unique_name("unc-pi");
    let pi = Shared::<Mutex<u64>>::create(&name, (0, Protocol::PriorityInheritance)).unwrap();
    g.bench_function("shm-sync Mutex (PI)", |b| {
        b.iter(|| *black_box(&pi).lock().unwrap() += 1)
    });
    let name = unique_name("unc-s");
    let s = Shared::<SpinLock<u64>>::create(&name, 0).unwrap();
    g.bench_function("shm-sync SpinLock", |b| {
        b.iter(|| *black_box(&s).lock().unwrap() += 1)
    });
    let std_m = std::sync::Mutex::new(0u64);
    g.bench_function("std::sync::Mutex", |b| {
        b.iter(|| *black_box(&std_m).lock().unwrap() += 1)
    });
    let pl = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot::Mutex", |b| {
        b.iter(|| *black_box(&pl).lock() += 1)
    });
    g.finish();
}

/// Runs `iters` lock/unlock pairs while `rival` hammers the same lock on another thread.
fn with_rival_thread<L: Send + Sync + 'static>(
    lock: Arc<L>,
    iters: u64,
    hammer: fn(&L),
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, s2) = (lock.clone(), stop.clone());
    let rival = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            hammer(&l2);
        }
    });
    // Let the rival get going before timing.
    std::thread::sleep(Duration::from_millis(1));
    let t = Instant::now();
    for _ in 0..iters {
        hammer(&lock);
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    rival.join().unwrap();
    took
}

fn contended_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock+unlock vs a rival thread");
    let name = unique_name("ct-m");
    let m = Arc::new(Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal)).unwrap());
    g.bench_function("shm-sync Mutex", |b| {
        b.iter_custom(|n| with_rival_thread(m.clone(), n, |m| *m.lock().unwrap() += 1))
    });
    let name = unique_name("ct-s");
    let s = Arc::new(Shared::<SpinLock<u64>>::create(&name, 0).unwrap());
    g.bench_function("shm-sync SpinLock", |b| {
        b.iter_custom(|n| with_rival_thread(s.clone(), n, |s| *s.lock().unwrap() += 1))
    });
    let std_m = Arc::new(std::sync::Mutex::new(0u64));
    g.bench_function("std::sync::Mutex", |b| {
        b.iter_custom(|n| with_rival_thread(std_m.clone(), n, |m| *m.lock().unwrap() += 1))
    });
    let pl = Arc::new(parking_lot::Mutex::new(0u64));
    g.bench_function("parking_lot::Mutex", |b| {
        b.iter_custom(|n| with_rival_thread(pl.clone(), n, |m| *m.lock() += 1))
    });
    g.finish();
}

/// A rival process: locks and increments until the value reads `STOP_WORD`.
fn rival_process(role: &str, name: &str) {
    match role {
        "mutex" => {
            let m = Shared::<Mutex<u64>>::open(name).unwrap();
            loop {
                let mut g = m.lock().unwrap();
                if *g == STOP_WORD {
                    return;
                }
                *g += 1;
            }
        }
        "spin" => {
            let s = Shared::<SpinLock<u64>>::open(name).unwrap();
            loop {
                let mut g = s.lock().unwrap();
                if *g == STOP_WORD {
                    return;
                }
                *g += 1;
            }
        }
        other => panic!("unknown bench child role {other}"),
    }
}

fn contended_processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock+unlock vs a rival process");
    let name = unique_name("cp-m");
    let m = Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal)).unwrap();
    let peer = spawn_peer("mutex", &name);
    g.bench_function("shm-sync Mutex", |b| {
        b.iter(|| {
            let mut v = m.lock().unwrap();
            *v = (*v + 1) % (STOP_WORD - 1);
        })
    });
    *m.lock().unwrap() = STOP_WORD;
    drop(peer);

    let name = unique_name("cp-s");
    let s = Shared::<SpinLock<u64>>::create(&name, 0).unwrap();
    let peer = spawn_peer("spin", &name);
    g.bench_function("shm-sync SpinLock", |b| {
        b.iter(|| {
            let mut v = s.lock().unwrap();
            *v = (*v + 1) % (STOP_WORD - 1);
        })
    });
    *s.lock().unwrap() = STOP_WORD;
    drop(peer);
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended, contended_threads, contended_processes
}

fn main() {
    if let Some((role, name)) = child_role() {
        rival_process(&role, &name);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
