//! Plain loops over each queue, with no harness between the calls: the independent
//! cross-check of `shmring bench` and the criterion rows. Two threads pinned to two CPUs,
//! u64 messages, `N` per run; prints M msg/s per row. `cargo run --release -p
//! shmring-benches --example loops [-- rows...]`.
//!
//! The rows ending in `-2p` run the consumer in a second process (this binary, re-launched
//! with `--child`), as `shmring bench` does: the consumer times its `N` pops from the first
//! one and prints the rate; the producer is this process.

use std::sync::Barrier;
use std::time::Instant;

use shm_ring::{mpmc, spsc, PopError, PushError, WaitStrategy};

const N: u64 = match option_env!("LOOPS_N") {
    Some(_) => 160_000_000,
    None => 20_000_000,
};
const CAP: u64 = match option_env!("LOOPS_CAP") {
    Some(_) => 4096,
    None => 16384,
};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn two<P: Send, C: Send>(p: P, c: C, prod: fn(P), cons: fn(C)) -> f64 {
    let b = Barrier::new(2);
    let t = std::thread::scope(|s| {
        let b = &b;
        s.spawn(move || {
            pin(0);
            b.wait();
            prod(p)
        });
        let h = s.spawn(move || {
            pin(1);
            b.wait();
            let t0 = Instant::now();
            cons(c);
            t0.elapsed()
        });
        h.join().unwrap()
    });
    N as f64 / t.as_secs_f64() / 1e6
}

/// The wait strategy a `-2p` SPSC row names (`None`: `try_` retry loops).
fn strategy_of(row: &str) -> Option<WaitStrategy> {
    match row {
        "spsc-block-spin-2p" => Some(WaitStrategy::BusySpin),
        "spsc-block-park-2p" => Some(WaitStrategy::SpinThenPark),
        _ => None,
    }
}

/// `try_push` retried while the ring is full; any other error ends the run.
fn push_retrying(tx: &mut spsc::Producer<u64>, i: u64) {
    loop {
        match tx.try_push(i) {
            Ok(()) => return,
            Err(PushError::Full(_)) => {}
            Err(e) => panic!("push {i}: {e}"),
        }
    }
}

/// The consumer loop of a `-2p` row, in the child process.
fn child(row: &str, name: &str) {
    pin(1);
    let mut t0 = None;
    match row {
        "mpmc-block-2p" => {
            let mut rx = mpmc::open::<u64>(name).unwrap().consumer().unwrap();
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            for i in 0..N {
                assert_eq!(rx.pop().unwrap(), i);
                t0.get_or_insert_with(Instant::now);
            }
        }
        _ => {
            let mut rx = spsc::open::<u64>(name).unwrap().consumer().unwrap();
            let st = strategy_of(row);
            if let Some(st) = st {
                rx.set_wait_strategy(st);
            }
            for i in 0..N {
                let v = match st {
                    Some(_) => rx.pop().unwrap(),
                    None => loop {
                        match rx.try_pop() {
                            Ok(v) => break v,
                            Err(PopError::Empty) => {}
                            Err(e) => panic!("pop {i}: {e}"),
                        }
                    },
                };
                assert_eq!(v, i);
                t0.get_or_insert_with(Instant::now);
            }
        }
    }
    let secs = t0.unwrap().elapsed().as_secs_f64();
    println!("{row} {:.1}", (N - 1) as f64 / secs / 1e6);
}

/// The producer side of a `-2p` row: creates the ring, launches the consumer, pushes `N`.
fn two_processes(row: &str, name: &str) {
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--child", row, name])
            .spawn()
            .unwrap()
    };
    pin(0);
    let mut kid;
    if row == "mpmc-block-2p" {
        let r = mpmc::create::<u64>(name, CAP).unwrap();
        let mut tx = r.producer().unwrap();
        tx.set_wait_strategy(WaitStrategy::BusySpin);
        kid = spawn();
        for i in 0..N {
            tx.push(i).unwrap();
        }
        assert!(kid.wait().unwrap().success());
    } else {
        let r = spsc::create::<u64>(name, CAP).unwrap();
        let mut tx = r.producer().unwrap();
        let st = strategy_of(row);
        if let Some(st) = st {
            tx.set_wait_strategy(st);
        }
        kid = spawn();
        for i in 0..N {
            match st {
                Some(_) => tx.push(i).unwrap(),
                None => push_retrying(&mut tx, i),
            }
        }
        assert!(kid.wait().unwrap().success());
    }
}

fn main() {
    // A thread that panics must not leave its peer spinning on a ring nobody will move:
    // end the whole process (and so, through the ring's liveness checks, its child).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 && args[0] == "--child" {
        return child(&args[1], &args[2]);
    }
    let rows = args;
    let want = |r: &str| rows.is_empty() || rows.iter().any(|x| x == r);
    let name = |t: &str| format!("/loops-{t}-{}", std::process::id());
    if want("spsc-try") {
        let r = spsc::create::<u64>(&name("a"), CAP).unwrap();
        let f = two(
            r.producer().unwrap(),
            r.consumer().unwrap(),
            |mut tx| {
                for i in 0..N {
                    while tx.try_push(i).is_err() {}
                }
            },
            |mut rx| {
                for i in 0..N {
                    loop {
                        if let Ok(v) = rx.try_pop() {
                            assert_eq!(v, i);
                            break;
                        }
                    }
                }
            },
        );
        println!("spsc-try {f:.1}");
    }
    for (tag, st) in [
        ("spsc-block-spin", WaitStrategy::BusySpin),
        ("spsc-block-park", WaitStrategy::SpinThenPark),
    ] {
        if !want(tag) {
            continue;
        }
        let r = spsc::create::<u64>(&name("b"), CAP).unwrap();
        let (mut tx, mut rx) = (r.producer().unwrap(), r.consumer().unwrap());
        tx.set_wait_strategy(st);
        rx.set_wait_strategy(st);
        let f = two(
            tx,
            rx,
            |mut tx| {
                for i in 0..N {
                    tx.push(i).unwrap();
                }
            },
            |mut rx| {
                for i in 0..N {
                    assert_eq!(rx.pop().unwrap(), i);
                }
            },
        );
        println!("{tag} {f:.1}");
    }
    if want("rtrb") {
        let (tx, rx) = rtrb::RingBuffer::<u64>::new(CAP as usize);
        let f = two(
            tx,
            rx,
            |mut tx| {
                for i in 0..N {
                    while tx.push(i).is_err() {}
                }
            },
            |mut rx| {
                for i in 0..N {
                    loop {
                        if let Ok(v) = rx.pop() {
                            assert_eq!(v, i);
                            break;
                        }
                    }
                }
            },
        );
        println!("rtrb {f:.1}");
    }
    if want("mpmc-try") {
        let r = mpmc::create::<u64>(&name("c"), CAP).unwrap();
        let f = two(
            r.producer().unwrap(),
            r.consumer().unwrap(),
            |mut tx| {
                for i in 0..N {
                    while tx.try_push(i).is_err() {}
                }
            },
            |mut rx| {
                for i in 0..N {
                    loop {
                        if let Ok(v) = rx.try_pop() {
                            assert_eq!(v, i);
                            break;
                        }
                    }
                }
            },
        );
        println!("mpmc-try {f:.1}");
    }
    if want("mpmc-block") {
        let r = mpmc::create::<u64>(&name("d"), CAP).unwrap();
        let (mut tx, mut rx) = (r.producer().unwrap(), r.consumer().unwrap());
        tx.set_wait_strategy(WaitStrategy::BusySpin);
        rx.set_wait_strategy(WaitStrategy::BusySpin);
        let f = two(
            tx,
            rx,
            |mut tx| {
                for i in 0..N {
                    tx.push(i).unwrap();
                }
            },
            |mut rx| {
                for i in 0..N {
                    assert_eq!(rx.pop().unwrap(), i);
                }
            },
        );
        println!("mpmc-block {f:.1}");
    }
    if want("arrayqueue") {
        let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(CAP as usize));
        let f = two(
            q.clone(),
            q,
            |q| {
                for i in 0..N {
                    while q.push(i).is_err() {}
                }
            },
            |q| {
                for i in 0..N {
                    loop {
                        if let Some(v) = q.pop() {
                            assert_eq!(v, i);
                            break;
                        }
                    }
                }
            },
        );
        println!("arrayqueue {f:.1}");
    }
    for (i, row) in [
        "spsc-try-2p",
        "spsc-block-spin-2p",
        "spsc-block-park-2p",
        "mpmc-block-2p",
    ]
    .into_iter()
    .enumerate()
    {
        if want(row) {
            two_processes(row, &name(&format!("p{i}")));
        }
    }
}
