#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Rings: round trips between two processes against the cache-line floor, and throughput
//! against rtrb (SPSC) and crossbeam's `ArrayQueue` (MPMC).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shm_core::{Fingerprint, Layout, Region, SegmentBuilder};
use shm_ring::{mpmc, spsc, WaitStrategy};
use shmring_benches::{child_role, spawn_peer, unique_name};

/// The floor: two words on separate cache lines of one shared mapping.
fn floor_layout() -> (Layout, Region<AtomicU64>, Region<AtomicU64>) {
    let mut l = Layout::new();
    let ping = l.push_aligned::<AtomicU64>(1, 128).unwrap();
    let pong = l.push_aligned::<AtomicU64>(1, 128).unwrap();
    (l, ping, pong)
}

fn floor_builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .fingerprint(Fingerprint::untyped(0xf100))
        .layout(&floor_layout().0)
}

const STOP: u64 = u64::MAX;

fn peer(role: &str, name: &str) {
    match role {
        "floor-echo" => {
            let seg = floor_builder(name).open().unwrap();
            let (_, ping, pong) = floor_layout();
            let (ping, pong) = (seg.get(ping).unwrap(), seg.get(pong).unwrap());
            let mut last = 0;
            loop {
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    std::hint::spin_loop();
                    continue;
                }
                if v == STOP {
                    return;
                }
                last = v;
                pong.store(v, Ordering::Release);
            }
        }
        "spsc-echo-spin" | "spsc-echo-park" => {
            let strategy = if role.ends_with("spin") {
                WaitStrategy::BusySpin
            } else {
                WaitStrategy::SpinThenPark
            };
            let mut rx = spsc::open::<u64>(&format!("{name}-ping"))
                .unwrap()
                .consumer()
                .unwrap();
            let mut tx = spsc::open::<u64>(&format!("{name}-pong"))
                .unwrap()
                .producer()
                .unwrap();
            rx.set_wait_strategy(strategy);
            tx.set_wait_strategy(strategy);
            while let Ok(v) = rx.pop() {
                if tx.push(v).is_err() {
                    return;
                }
            }
        }
        "spsc-sink" => {
            // Pops everything, counting into the ring's own stats (its head).
            let mut rx = spsc::open::<u64>(name).unwrap().consumer().unwrap();
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let mut buf = [0u64; 256];
            loop {
                if rx.pop_slice(&mut buf) == 0 {
                    match rx.pop() {
                        Ok(v) => {
                            black_box(v);
                        }
                        Err(_) => return,
                    }
                }
            }
        }
        other => panic!("unknown peer role {other}"),
    }
}

fn round_trips(c: &mut Criterion) {
    let mut g = c.benchmark_group("round trip, 2 processes");
    // floor
    let name = unique_name("floor");
    let seg = floor_builder(&name).create().unwrap();
    let (_, ping, pong) = floor_layout();
    let (ping, pong) = (seg.get(ping).unwrap(), seg.get(pong).unwrap());
    let child = spawn_peer("floor-echo", &name);
    let mut seq = 0u64;
    g.bench_function("floor (cache-line ping-pong)", |b| {
        b.iter(|| {
            seq += 1;
            ping.store(seq, Ordering::Release);
            while pong.load(Ordering::Acquire) != seq {
                std::hint::spin_loop();
            }
        })
    });
    ping.store(STOP, Ordering::Release);
    drop(child);
    // shmring SPSC, both strategies
    for (label, role, strategy) in [
        ("spsc-spin", "spsc-echo-spin", WaitStrategy::BusySpin),
        ("spsc-park", "spsc-echo-park", WaitStrategy::SpinThenPark),
    ] {
        let name = unique_name(label);
        let ping = spsc::create::<u64>(&format!("{name}-ping"), 64).unwrap();
        let pong = spsc::create::<u64>(&format!("{name}-pong"), 64).unwrap();
        let (mut tx, mut rx) = (ping.producer().unwrap(), pong.consumer().unwrap());
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let child = spawn_peer(role, &name);
        g.bench_function(label, |b| {
            b.iter(|| {
                tx.push(black_box(7)).unwrap();
                rx.pop().unwrap()
            })
        });
        drop(tx);
        drop(child);
    }
    g.finish();
}

fn spsc_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc throughput, u64");
    g.throughput(Throughput::Elements(1));
    // Between two processes, one at a time and in chunks of 64.
    for chunked in [false, true] {
        let name = unique_name("tput");
        let ring = spsc::create::<u64>(&name, 4096).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.set_wait_strategy(WaitStrategy::BusySpin);
        let child = spawn_peer("spsc-sink", &name);
        let label = if chunked {
            "shmring, 2 processes, chunks of 64"
        } else {
            "shmring, 2 processes, one at a time"
        };
        g.bench_function(label, |b| {
            b.iter_custom(|n| {
                let start = ring.stats().pops;
                let t = Instant::now();
                let mut i = 0;
                while i < n {
                    if chunked {
                        let want = (n - i).min(64) as usize;
                        if let Ok(mut chunk) = tx.write_chunk_uninit(want) {
                            let (a, b2) = chunk.as_mut_slices();
                            for (k, s) in a.iter_mut().chain(b2.iter_mut()).enumerate() {
                                *s = i + k as u64;
                            }
                            chunk.commit_all();
                            i += want as u64;
                        }
                    } else {
                        tx.push(i).unwrap();
                        i += 1;
                    }
                }
                while ring.stats().pops.wrapping_sub(start) < n {
                    std::hint::spin_loop();
                }
                t.elapsed()
            })
        });
        drop(tx);
        drop(child);
    }
    // In-process, two threads: shmring's heap ring and rtrb side by side.
    g.bench_function("shmring, 2 threads", |b| {
        b.iter_custom(|n| {
            let ring = spsc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let consumer = std::thread::spawn(move || {
                for _ in 0..n {
                    black_box(rx.pop().unwrap());
                }
            });
            let t = Instant::now();
            for i in 0..n {
                tx.push(i).unwrap();
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.bench_function("rtrb, 2 threads", |b| {
        b.iter_custom(|n| {
            let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(4096);
            let consumer = std::thread::spawn(move || {
                let mut got = 0;
                while got < n {
                    if let Ok(v) = rx.pop() {
                        black_box(v);
                        got += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            let t = Instant::now();
            for i in 0..n {
                while tx.push(i).is_err() {
                    std::hint::spin_loop();
                }
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.finish();
}

fn mpmc_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc throughput, u64, 1P1C threads");
    g.throughput(Throughput::Elements(1));
    g.bench_function("shmring mpmc", |b| {
        b.iter_custom(|n| {
            let ring = mpmc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let consumer = std::thread::spawn(move || {
                for _ in 0..n {
                    black_box(rx.pop().unwrap());
                }
            });
            let t = Instant::now();
            for i in 0..n {
                tx.push(i).unwrap();
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
    g.bench_function("crossbeam ArrayQueue", |b| {
        b.iter_custom(|n| {
            let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(4096));
            let q2 = q.clone();
            let consumer = std::thread::spawn(move || {
                let mut got = 0;
                while got < n {
                    if let Some(v) = q2.pop() {
                        black_box(v);
                        got += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            let t = Instant::now();
            for i in 0..n {
                while q.push(i).is_err() {
                    std::hint::spin_loop();
                }
            }
            consumer.join().unwrap();
            t.elapsed()
        })
    });
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
    targets = round_trips, spsc_throughput, mpmc_throughput
}

fn main() {
    if let Some((role, name)) = child_role() {
        peer(&role, &name);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
