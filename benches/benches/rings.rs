#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Rings: round trips between two processes against the cache-line floor, and throughput
//! against rtrb (SPSC) and crossbeam's `ArrayQueue` (MPMC).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shm_core::{Fingerprint, Layout, Region, SegmentBuilder};
use shm_ring::{broadcast, mpmc, spsc, RecvError, WaitStrategy};
use shmring_benches::{
    allowed_cpus, child_role, pin_thread, spawn_peer, unique_name, unpin_thread,
};

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
    // Peers run on the second allowed CPU, the bench process on the first (as `shmring
    // bench` does), so cross-process rows never share a CPU with their partner.
    pin_thread(1);
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
        "spsc-sink-one" => {
            // Pops everything one at a time, counting into the ring's own stats (its head).
            let mut rx = spsc::open::<u64>(name).unwrap().consumer().unwrap();
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            while let Ok(v) = rx.pop() {
                black_box(v);
            }
        }
        "spsc-sink-chunk" => {
            // Pops everything in slices of up to 64.
            let mut rx = spsc::open::<u64>(name).unwrap().consumer().unwrap();
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let mut buf = [0u64; 64];
            loop {
                if rx.pop_slice(&mut buf) == 0 {
                    match rx.pop() {
                        Ok(v) => {
                            black_box(v);
                        }
                        Err(_) => return,
                    }
                }
                black_box(&buf);
            }
        }
        "service-echo" => {
            // Answers each request with its own bytes, written in place.
            let mut server = shm_ring::service::Server::create(name).unwrap();
            server.set_wait_strategy(WaitStrategy::BusySpin);
            // Ends after a minute with no request (the bench also kills it when done), so
            // a bench that died cannot leave it running.
            while let Ok(req) = server.recv_timeout(Duration::from_secs(60)) {
                let n = req.bytes().len();
                let _ = req.reply_with(n, |request, reply| {
                    reply.copy_from_slice(request);
                    n
                });
            }
        }
        "log-echo" => {
            let mut rx = shm_ring::log::open(&format!("{name}-ping"))
                .unwrap()
                .consumer()
                .unwrap();
            let mut tx = shm_ring::log::open(&format!("{name}-pong"))
                .unwrap()
                .producer()
                .unwrap();
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            while let Ok(f) = rx.recv() {
                if tx.send(&f).is_err() {
                    return;
                }
            }
        }
        "unix-echo" => {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(name).unwrap();
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    return;
                }
            }
        }
        other => panic!("unknown peer role {other}"),
    }
}

fn round_trips(c: &mut Criterion) {
    pin_thread(0);
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
    // The byte log, 64-byte messages each way (two logs).
    {
        let name = unique_name("log");
        let mk = |n: String| {
            shm_ring::log::Builder::new(&n)
                .capacity(64 << 10)
                .max_len(1024)
                .create()
                .unwrap()
        };
        let (ping, pong) = (mk(format!("{name}-ping")), mk(format!("{name}-pong")));
        let (mut tx, mut rx) = (ping.producer().unwrap(), pong.consumer().unwrap());
        tx.set_wait_strategy(WaitStrategy::BusySpin);
        rx.set_wait_strategy(WaitStrategy::BusySpin);
        let child = spawn_peer("log-echo", &name);
        let msg = [7u8; 64];
        g.bench_function("log 64 B (send / recv, BusySpin)", |b| {
            b.iter(|| {
                tx.send(black_box(&msg)).unwrap();
                assert_eq!(rx.recv().unwrap().len(), 64);
            })
        });
        drop(tx);
        drop(child);
    }
    // Request/reply: a 64-byte call to a server process.
    {
        let name = unique_name("service");
        let child = spawn_peer("service-echo", &name);
        let t = std::time::Instant::now();
        let mut client = loop {
            match shm_ring::service::Client::connect(&name) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(10), "no service: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        client.set_wait_strategy(WaitStrategy::BusySpin);
        let req = [7u8; 64];
        g.bench_function(
            "service 64 B (Client::call; recv_timeout / reply_with)",
            |b| {
                b.iter(|| {
                    let r = client
                        .call(black_box(&req), Duration::from_secs(10))
                        .unwrap();
                    assert_eq!(r.len(), 64);
                })
            },
        );
        let reply_log = shm_ring::service::reply_log_name(&name, client.endpoint());
        drop(client);
        drop(child);
        let _ = shm_core::remove(&name);
        let _ = shm_core::remove(&reply_log);
    }
    // A Unix socket, 64 bytes each way (the kernel's loopback).
    {
        use std::io::{Read, Write};
        let path = format!("/tmp{}.sock", unique_name("unix"));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let child = spawn_peer("unix-echo", &path);
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [7u8; 64];
        g.bench_function("unix socket 64 B (write_all / read_exact)", |b| {
            b.iter(|| {
                s.write_all(black_box(&buf)).unwrap();
                s.read_exact(&mut buf).unwrap();
            })
        });
        drop(s);
        drop(child);
        let _ = std::fs::remove_file(&path);
    }
    g.finish();
    unpin_thread();
}

/// Times `n` messages from the calling thread (pinned to the first CPU) to a consumer thread
/// (pinned to the second): `produce` pushes all `n`, `consume` pops until it has `n`.
fn two_threads<Rx: Send + 'static>(
    n: u64,
    rx: Rx,
    produce: impl FnOnce(u64),
    consume: impl FnOnce(Rx, u64) + Send + 'static,
) -> Duration {
    pin_thread(0);
    let consumer = std::thread::spawn(move || {
        pin_thread(1);
        consume(rx, n)
    });
    let t = Instant::now();
    produce(n);
    consumer.join().unwrap();
    let d = t.elapsed();
    unpin_thread();
    d
}

type Msg64 = [u64; 8];

fn spsc_in_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc throughput, 2 threads");
    g.throughput(Throughput::Elements(1));
    macro_rules! one_at_a_time {
        ($t:ty, $label:literal, $make:expr) => {{
            let make: fn(u64) -> $t = $make;
            g.bench_function(concat!("shmring ", $label), |b| {
                b.iter_custom(|n| {
                    let ring = spsc::Ring::<$t>::in_process(4096).unwrap();
                    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
                    tx.set_wait_strategy(WaitStrategy::BusySpin);
                    rx.set_wait_strategy(WaitStrategy::BusySpin);
                    two_threads(
                        n,
                        rx,
                        |n| (0..n).for_each(|i| tx.push(make(i)).unwrap()),
                        |mut rx, n| {
                            (0..n).for_each(|_| {
                                black_box(rx.pop().unwrap());
                            })
                        },
                    )
                })
            });
            g.bench_function(concat!("rtrb ", $label), |b| {
                b.iter_custom(|n| {
                    let (mut tx, rx) = rtrb::RingBuffer::<$t>::new(4096);
                    two_threads(
                        n,
                        rx,
                        |n| {
                            for i in 0..n {
                                while tx.push(make(i)).is_err() {
                                    std::hint::spin_loop();
                                }
                            }
                        },
                        |mut rx, n| {
                            let mut got = 0;
                            while got < n {
                                match rx.pop() {
                                    Ok(v) => {
                                        black_box(v);
                                        got += 1;
                                    }
                                    Err(_) => std::hint::spin_loop(),
                                }
                            }
                        },
                    )
                })
            });
            g.bench_function(concat!("crossbeam ArrayQueue ", $label), |b| {
                b.iter_custom(|n| {
                    let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<$t>::new(4096));
                    let tx = q.clone();
                    two_threads(
                        n,
                        q,
                        |n| {
                            for i in 0..n {
                                while tx.push(make(i)).is_err() {
                                    std::hint::spin_loop();
                                }
                            }
                        },
                        |q, n| {
                            let mut got = 0;
                            while got < n {
                                match q.pop() {
                                    Some(v) => {
                                        black_box(v);
                                        got += 1;
                                    }
                                    None => std::hint::spin_loop(),
                                }
                            }
                        },
                    )
                })
            });
            g.bench_function(concat!("std sync_channel ", $label), |b| {
                b.iter_custom(|n| {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<$t>(4096);
                    two_threads(
                        n,
                        rx,
                        |n| (0..n).for_each(|i| tx.send(make(i)).unwrap()),
                        |rx, n| {
                            (0..n).for_each(|_| {
                                black_box(rx.recv().unwrap());
                            })
                        },
                    )
                })
            });
        }};
    }
    one_at_a_time!(u64, "u64", |i| i);
    one_at_a_time!(Msg64, "64B", |i| [i; 8]);
    // Chunks of 64 (the peers without a chunk API are left out).
    g.bench_function("shmring u64 chunks of 64", |b| {
        b.iter_custom(|n| {
            let ring = spsc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            two_threads(
                n,
                rx,
                |n| {
                    let mut i = 0;
                    while i < n {
                        let want = (n - i).min(64) as usize;
                        if let Ok(mut chunk) = tx.write_chunk_uninit(want) {
                            let (a, b2) = chunk.as_mut_slices();
                            for (k, s) in a.iter_mut().chain(b2.iter_mut()).enumerate() {
                                *s = i + k as u64;
                            }
                            chunk.commit_all();
                            i += want as u64;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                },
                |mut rx, n| {
                    let mut got = 0;
                    let mut buf = [0u64; 64];
                    while got < n {
                        let k = rx.pop_slice(&mut buf);
                        black_box(&buf[..k]);
                        if k == 0 {
                            std::hint::spin_loop();
                        }
                        got += k as u64;
                    }
                },
            )
        })
    });
    g.bench_function("rtrb u64 chunks of 64", |b| {
        b.iter_custom(|n| {
            let (mut tx, rx) = rtrb::RingBuffer::<u64>::new(4096);
            two_threads(
                n,
                rx,
                |n| {
                    let mut i = 0;
                    while i < n {
                        let want = (n - i).min(64) as usize;
                        if let Ok(chunk) = tx.write_chunk_uninit(want) {
                            chunk.fill_from_iter(i..);
                            i += want as u64;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                },
                |mut rx, n| {
                    let mut got = 0;
                    while got < n {
                        let k = rx.slots().min(64);
                        if k == 0 {
                            std::hint::spin_loop();
                            continue;
                        }
                        let chunk = rx.read_chunk(k).unwrap();
                        let (a, b2) = chunk.as_slices();
                        black_box((a, b2));
                        chunk.commit_all();
                        got += k as u64;
                    }
                },
            )
        })
    });
    g.finish();
}

/// Between two processes: this process produces, a peer consumes (started once).
fn spsc_two_processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc throughput, 2 processes, u64");
    g.throughput(Throughput::Elements(1));
    for chunked in [false, true] {
        let name = unique_name("tput");
        let ring = spsc::create::<u64>(&name, 4096).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.set_wait_strategy(WaitStrategy::BusySpin);
        // The consumer works the way the producer does: one at a time, or in chunks.
        let child = spawn_peer(
            if chunked {
                "spsc-sink-chunk"
            } else {
                "spsc-sink-one"
            },
            &name,
        );
        let label = if chunked {
            "shmring chunks of 64"
        } else {
            "shmring one at a time"
        };
        pin_thread(0);
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
        unpin_thread();
        drop(tx);
        drop(child);
    }
    g.finish();
}

/// `p` producer and `p` consumer threads, pinned round robin; `n` messages in all.
fn mpmc_threads<Q: Send + Sync + 'static>(
    n: u64,
    p: u64,
    q: std::sync::Arc<Q>,
    push: fn(&Q, u64),
    pop: fn(&Q) -> bool,
) -> Duration {
    let start = std::sync::Arc::new(std::sync::Barrier::new(2 * p as usize + 1));
    let mut hs = Vec::new();
    for k in 0..p {
        let (q1, start1) = (q.clone(), start.clone());
        let share = n / p + u64::from(k < n % p);
        hs.push(std::thread::spawn(move || {
            pin_thread(k as usize);
            start1.wait();
            (0..share).for_each(|i| push(&q1, i));
        }));
        let (q, start) = (q.clone(), start.clone());
        hs.push(std::thread::spawn(move || {
            pin_thread((p + k) as usize);
            start.wait();
            let mut got = 0;
            while got < share {
                if pop(&q) {
                    got += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        }));
    }
    start.wait();
    let t = Instant::now();
    hs.into_iter().for_each(|h| h.join().unwrap());
    t.elapsed()
}

/// Per-thread shmring MPMC handles (each thread joins the ring itself).
struct ShmMpmc(mpmc::Ring<u64>);

thread_local! {
    static HANDLES: std::cell::RefCell<Option<(mpmc::Producer<u64>, mpmc::Consumer<u64>)>> =
        const { std::cell::RefCell::new(None) };
}

fn shm_push(q: &ShmMpmc, v: u64) {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        let (tx, _) = h.get_or_insert_with(|| join(&q.0));
        tx.push(v).unwrap();
    })
}

fn shm_pop(q: &ShmMpmc) -> bool {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        let (_, rx) = h.get_or_insert_with(|| join(&q.0));
        // The blocking pop with BusySpin is how a shmring consumer thread waits; each
        // consumer takes exactly its share, so it never blocks past the end.
        rx.pop().map(black_box).is_ok()
    })
}

fn join(r: &mpmc::Ring<u64>) -> (mpmc::Producer<u64>, mpmc::Consumer<u64>) {
    let (mut tx, mut rx) = (r.producer().unwrap(), r.consumer().unwrap());
    tx.set_wait_strategy(WaitStrategy::BusySpin);
    rx.set_wait_strategy(WaitStrategy::BusySpin);
    (tx, rx)
}

fn mpmc_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc throughput, u64, threads");
    g.throughput(Throughput::Elements(1));
    let cpus = allowed_cpus().len();
    for p in [1u64, 2, 4] {
        if p > 1 && (2 * p) as usize > cpus.max(4) {
            continue; // 4P4C only where there are 8 cores
        }
        g.bench_function(format!("shmring mpmc {p}P{p}C"), |b| {
            b.iter_custom(|n| {
                let q = std::sync::Arc::new(ShmMpmc(mpmc::Ring::in_process(4096).unwrap()));
                mpmc_threads(n, p, q, shm_push, shm_pop)
            })
        });
        g.bench_function(format!("crossbeam ArrayQueue {p}P{p}C"), |b| {
            b.iter_custom(|n| {
                let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(4096));
                mpmc_threads(
                    n,
                    p,
                    q,
                    |q, v| {
                        while q.push(v).is_err() {
                            std::hint::spin_loop();
                        }
                    },
                    |q| q.pop().map(black_box).is_some(),
                )
            })
        });
    }
    g.finish();
}

/// The wait path: the same SPSC ring between 2 threads, driven by `try_push`/`try_pop`
/// retry loops and by the blocking calls in each wait strategy (issue 13's "blocking calls
/// cost what polling costs").
fn spsc_wait_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc wait path, u64, 2 threads");
    g.throughput(Throughput::Elements(1));
    g.bench_function("try_push / try_pop loops", |b| {
        b.iter_custom(|n| {
            let ring = spsc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            two_threads(
                n,
                rx,
                |n| {
                    for i in 0..n {
                        while tx.try_push(i).is_err() {}
                    }
                },
                |mut rx, n| {
                    for _ in 0..n {
                        loop {
                            if let Ok(v) = rx.try_pop() {
                                black_box(v);
                                break;
                            }
                        }
                    }
                },
            )
        })
    });
    let budget = WaitStrategy::Budget(shm_ring::SpinBudget {
        spin: Duration::from_micros(20),
        yields: 2,
    });
    for (label, strategy) in [
        ("push / pop, BusySpin", WaitStrategy::BusySpin),
        ("push / pop, SpinThenPark", WaitStrategy::SpinThenPark),
        ("push / pop, Budget 20us + 2 yields", budget),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|n| {
                let ring = spsc::Ring::<u64>::in_process(4096).unwrap();
                let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
                tx.set_wait_strategy(strategy);
                rx.set_wait_strategy(strategy);
                two_threads(
                    n,
                    rx,
                    |n| (0..n).for_each(|i| tx.push(i).unwrap()),
                    |mut rx, n| {
                        (0..n).for_each(|_| {
                            black_box(rx.pop().unwrap());
                        })
                    },
                )
            })
        });
    }
    g.finish();
}

/// MPMC batches: `push_slice` / `pop_slice` of 64 (one claim per run), 1 producer and 1
/// consumer thread, next to `try_push` / `try_pop` loops on the same ring.
fn mpmc_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc 1P1C, u64, 2 threads");
    g.throughput(Throughput::Elements(1));
    g.bench_function("shmring push_slice / pop_slice of 64", |b| {
        b.iter_custom(|n| {
            let ring = mpmc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            let src = [7u64; 64];
            two_threads(
                n,
                rx,
                |n| {
                    let mut sent = 0;
                    while sent < n {
                        let k = (n - sent).min(64) as usize;
                        sent += tx.push_slice(&src[..k]) as u64;
                    }
                },
                |mut rx, n| {
                    let mut buf = [0u64; 64];
                    let mut got = 0;
                    while got < n {
                        got += rx.pop_slice(&mut buf) as u64;
                        black_box(&buf);
                    }
                },
            )
        })
    });
    g.bench_function("shmring try_push / try_pop loops", |b| {
        b.iter_custom(|n| {
            let ring = mpmc::Ring::<u64>::in_process(4096).unwrap();
            let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
            two_threads(
                n,
                rx,
                |n| {
                    for i in 0..n {
                        while tx.try_push(i).is_err() {}
                    }
                },
                |mut rx, n| {
                    for _ in 0..n {
                        while rx.try_pop().map(black_box).is_err() {}
                    }
                },
            )
        })
    });
    g.finish();
}

/// Broadcast between threads: one publisher and one busy subscriber under back-pressure
/// (`publish` / `recv`, BusySpin: compare with "spsc throughput, 2 threads", shmring u64),
/// and the publisher's rate under overwrite with 1, 2 and 8 subscriber threads that sleep
/// 1 ms and drain (`recv_slice`), which should not depend on how many.
fn broadcast_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast, u64, threads");
    g.throughput(Throughput::Elements(1));
    g.bench_function("shmring publish / recv, back-pressure, 1 subscriber", |b| {
        b.iter_custom(|n| {
            let ring =
                broadcast::Ring::<u64>::in_process(4096, broadcast::Policy::BackPressure, None)
                    .unwrap();
            let mut tx = ring.publisher().unwrap();
            let mut rx = ring.subscribe().unwrap();
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            two_threads(
                n,
                rx,
                |n| (0..n).for_each(|i| tx.publish(i).unwrap()),
                |mut rx, n| {
                    (0..n).for_each(|_| {
                        black_box(rx.recv().unwrap());
                    })
                },
            )
        })
    });
    for subs in [1usize, 2, 8] {
        g.bench_function(
            format!("shmring publish, overwrite, {subs} subscribers draining each ms"),
            |b| {
                b.iter_custom(|n| {
                    let ring = broadcast::Ring::<u64>::in_process(
                        4096,
                        broadcast::Policy::Overwrite,
                        None,
                    )
                    .unwrap();
                    let mut tx = ring.publisher().unwrap();
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let drainers: Vec<_> = (0..subs)
                        .map(|_| {
                            let mut rx = ring.subscribe().unwrap();
                            let stop = stop.clone();
                            std::thread::spawn(move || {
                                pin_thread(1);
                                let mut buf = [0u64; 256];
                                // Relaxed: a stop request, no data rides on it.
                                while !stop.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_millis(1));
                                    loop {
                                        match rx.recv_slice(&mut buf) {
                                            Ok(n) if n > 0 => {}
                                            Err(RecvError::Lagged(_)) => {}
                                            _ => break,
                                        }
                                    }
                                }
                            })
                        })
                        .collect();
                    pin_thread(0);
                    let t = Instant::now();
                    for i in 0..n {
                        tx.publish(i).unwrap();
                    }
                    let d = t.elapsed();
                    unpin_thread();
                    // Relaxed: as above.
                    stop.store(true, Ordering::Relaxed);
                    for d in drainers {
                        d.join().unwrap();
                    }
                    d
                })
            },
        );
    }
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
    targets = round_trips, spsc_in_process, spsc_wait_path, spsc_two_processes, mpmc_throughput,
        mpmc_batches, broadcast_threads
}

fn main() {
    allowed_cpus(); // before any pinning
    if let Some((role, name)) = child_role() {
        peer(&role, &name);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
