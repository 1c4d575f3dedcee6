//! A feed process publishes market-data ticks through an SPSC ring to a strategy process,
//! and the latest price through a `SeqLock`; the strategy prints tick-to-strategy latency.
//!
//! Run: `cargo run --release -p shmring-examples --example ticks` (it starts the strategy process itself).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use shm_ring::{spsc, PopError, WaitStrategy};
use shm_sync::{SeqLock, Shared};

/// One tick, as it crosses the ring. `Pod`: any bytes are a valid `Tick`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Tick {
    seq: u64,
    /// When the feed published it, CLOCK_MONOTONIC nanoseconds (shared by all processes).
    sent_ns: u64,
    price: f64,
    qty: u32,
    venue: u32,
}

/// The latest price, readable at any time without taking a lock.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Last {
    seq: u64,
    price: f64,
}

const TICKS: u64 = 200_000;
/// One tick every 2 µs: a busy feed, paced so latency (not queueing) is measured.
const GAP_NS: u64 = 2_000;

fn now_ns() -> u64 {
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux
    // (read through the vDSO: no syscall).
    let mut ts = unsafe { std::mem::zeroed::<libc::timespec>() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "strategy" {
        return strategy(&args[2]);
    }
    feed()
}

fn feed() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("/shmring-example-ticks-{}", std::process::id());
    let ring = spsc::create::<Tick>(&name, 4096)?;
    let last =
        Shared::<SeqLock<Last>>::create(&format!("{name}-last"), Last { seq: 0, price: 0.0 })?;
    let mut tx = ring.producer()?;
    let mut strategy = Command::new(std::env::current_exe()?)
        .args(["strategy", &name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(strategy.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?; // "ready"
    println!("feed: publishing {TICKS} ticks, one every {GAP_NS} ns");
    let mut price = 100.0;
    let mut next = now_ns();
    for seq in 0..TICKS {
        while now_ns() < next {
            std::hint::spin_loop();
        }
        next += GAP_NS;
        price += if seq % 3 == 0 { 0.01 } else { -0.005 };
        last.write(Last { seq, price })?;
        let tick = Tick {
            seq,
            sent_ns: now_ns(),
            price,
            qty: 1 + (seq % 100) as u32,
            venue: (seq % 4) as u32,
        };
        tx.push(tick)?;
    }
    drop(tx); // the strategy sees Disconnected once it has drained the ring
    for l in out.lines() {
        println!("{}", l?);
    }
    let status = strategy.wait()?;
    if !status.success() {
        return Err(format!("strategy failed: {status}").into());
    }
    Ok(())
}

fn strategy(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = spsc::open::<Tick>(name)?.consumer()?;
    rx.set_wait_strategy(WaitStrategy::BusySpin);
    let last = Shared::<SeqLock<Last>>::open(&format!("{name}-last"))?;
    let mut lat = Vec::with_capacity(TICKS as usize);
    let (mut expect, mut stale_reads) = (0u64, 0u64);
    println!("ready");
    loop {
        match rx.pop() {
            Ok(t) => {
                lat.push(now_ns().saturating_sub(t.sent_ns));
                if t.seq != expect {
                    return Err(format!("tick {expect} missing (got {})", t.seq).into());
                }
                expect += 1;
                // The SeqLock holds this tick's price or a newer one, never an older one.
                let l = last.read()?;
                stale_reads += u64::from(l.seq < t.seq);
            }
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "strategy: {} ticks in order, none lost; latest-price reads older than the tick: {stale_reads}",
        lat.len()
    );
    println!(
        "tick-to-strategy latency: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(0.999),
        lat[lat.len() - 1]
    );
    Ok(())
}
