//! A producer process writes 128-frame f32 blocks at 48 kHz on a fixed deadline through an
//! SPSC ring to a consumer process. The producer's loop never blocks (it uses `try_push`),
//! never allocates (checked with a counting allocator) and makes no syscall (it waits for
//! its deadline by reading CLOCK_MONOTONIC through the vDSO, and the consumer never sleeps
//! on the ring, so `try_push` never has anyone to wake). It reports missed deadlines; the
//! consumer reports xruns (blocks lost or late).
//!
//! Run: `cargo run --release -p shmring-examples --example audio` (it starts the consumer process itself).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use shm_ring::{spsc, PopError, PushError, WaitStrategy};

/// Counts heap allocations, to show the real-time loop makes none.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 128;
const RATE: u64 = 48_000;
/// 128 frames at 48 kHz: 2.667 ms.
const PERIOD_NS: u64 = FRAMES as u64 * 1_000_000_000 / RATE;
const BLOCKS: u64 = 750; // two seconds of sound

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Block {
    index: u64,
    /// When this block is due, CLOCK_MONOTONIC ns.
    deadline_ns: u64,
    samples: [f32; FRAMES],
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux and
    // is read through the vDSO (no syscall).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "consumer" {
        return consumer(&args[2]);
    }
    producer()
}

fn producer() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("/shmring-example-audio-{}", std::process::id());
    // Eight blocks of slack (21 ms): the consumer may run that far behind before an xrun.
    let ring = spsc::create::<Block>(&name, 8)?;
    let mut tx = ring.producer()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["consumer", &name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?; // "ready"

    let (mut missed, mut dropped, mut worst_late) = (0u64, 0u64, 0u64);
    let mut phase = 0f32;
    let step = 2.0 * std::f32::consts::PI * 440.0 / RATE as f32;
    let start = now_ns() + PERIOD_NS;
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    // The real-time loop: no allocation, no blocking call, no syscall.
    for index in 0..BLOCKS {
        let deadline = start + index * PERIOD_NS;
        while now_ns() < deadline {
            std::hint::spin_loop();
        }
        let mut block = Block {
            index,
            deadline_ns: deadline,
            samples: [0.0; FRAMES],
        };
        for s in &mut block.samples {
            *s = 0.25 * phase.sin();
            phase = (phase + step) % (2.0 * std::f32::consts::PI);
        }
        let late = now_ns().saturating_sub(deadline);
        worst_late = worst_late.max(late);
        if late > PERIOD_NS / 2 {
            missed += 1;
        }
        match tx.try_push(block) {
            Ok(()) => {}
            Err(PushError::Full(_)) => dropped += 1, // the consumer is behind: an xrun
            Err(e) => return Err(e.to_string().into()),
        }
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    drop(tx);
    println!(
        "producer: {BLOCKS} blocks of {FRAMES} frames at {RATE} Hz (every {:.3} ms); \
         missed deadlines (> half a period late): {missed}; worst lateness {:.1} us; \
         dropped on a full ring: {dropped}; heap allocations in the loop: {allocs}",
        PERIOD_NS as f64 / 1e6,
        worst_late as f64 / 1e3
    );
    for l in out.lines() {
        println!("{}", l?);
    }
    let status = child.wait()?;
    if !status.success() || allocs != 0 {
        return Err(format!("consumer status {status}, allocations {allocs}").into());
    }
    Ok(())
}

fn consumer(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = spsc::open::<Block>(name)?.consumer()?;
    // Busy-spin: the consumer never parks, so the producer's try_push never has a sleeper
    // to wake (its one possible syscall).
    rx.set_wait_strategy(WaitStrategy::BusySpin);
    println!("ready");
    let (mut got, mut lost, mut late, mut worst) = (0u64, 0u64, 0u64, 0u64);
    let mut expect = 0u64;
    let mut energy = 0f64;
    loop {
        match rx.pop() {
            Ok(b) => {
                let arrival = now_ns().saturating_sub(b.deadline_ns);
                worst = worst.max(arrival);
                if arrival > PERIOD_NS {
                    late += 1; // the device would have played silence: an xrun
                }
                lost += b.index - expect.min(b.index);
                expect = b.index + 1;
                got += 1;
                energy += b.samples.iter().map(|s| f64::from(s * s)).sum::<f64>();
            }
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let rms = (energy / (got.max(1) * FRAMES as u64) as f64).sqrt();
    println!(
        "consumer: {got} blocks, xruns: {} ({lost} lost, {late} arrived over a period late); \
         worst delivery {:.1} us after the deadline; signal rms {rms:.3} (a 0.25 sine: 0.177)",
        lost + late,
        worst as f64 / 1e3
    );
    Ok(())
}
