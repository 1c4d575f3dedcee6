//! A hostile peer writes arbitrary bytes into a ring segment: its header, its control block
//! and its slots (SPSC values, MPMC sequence words). Then this process opens, inspects,
//! joins and uses the ring, with the handles it held before and with fresh ones. Every
//! call must return `Ok` or a typed error: no panic, no out-of-bounds access (the ring
//! reads only inside its mapping, which the sanitizer scripts check), and no call that
//! does not end (a watchdog fails the case after `HANG`).
//!
//! A proptest-based fuzzer, so it runs on stable in CI: `SHMRING_FUZZ_CASES` (default 256
//! per target; 64 for MPMC in an unoptimised build, see there) sets the cases; `SHMRING_FUZZ_CASES=20000 cargo test --release -p shm-ring
//! --test fuzz` for a long run.
#![cfg(not(shm_loom))]

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{poke, scratch};
use proptest::prelude::*;
use shm_ring::broadcast::{self, Policy};
use shm_ring::{mpmc, spsc};

/// A call still running after this has hung.
const HANG: Duration = Duration::from_secs(20);
const CAP: u64 = 8;
const HEADER: u64 = 128;
/// Where the slots start: the control block (640 / 1920 bytes) rounded up to 128.
const SPSC_SLOTS: u64 = HEADER + 640;
const MPMC_SLOTS: u64 = HEADER + 1920;
const MPMC_SLOT: u64 = 16;
/// Broadcast: the control block is 4 lines and 64 subscriber records of 128 bytes.
const BCAST_SLOTS: u64 = HEADER + 128 * (4 + 64);
const BCAST_SLOT: u64 = 16;
/// Log: a 1,280-byte control block, then the buffer's words.
/// The log's control block: 1408 bytes, then a claim line (128 bytes) per producer
/// endpoint (32).
const LOG_CLAIMS: u64 = HEADER + 1408;
const LOG_WORDS: u64 = LOG_CLAIMS + 32 * 128;
const LOG_BYTES: u64 = 1024;
const LOG_MAX: u64 = 100;

fn cases() -> u32 {
    std::env::var("SHMRING_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// The MPMC target's cases: as `cases`, but 64 by default in an unoptimised build.
fn mpmc_cases() -> u32 {
    std::env::var("SHMRING_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 64 } else { 256 })
}

/// Where a hostile write lands.
#[derive(Debug, Clone, Copy)]
enum Area {
    Header,
    Control,
    Slots,
}

/// One hostile write: raw bytes, or a `u64` chosen to look almost right (positions near
/// the real ones, capacities, sequence states) at an 8-byte-aligned offset.
#[derive(Debug, Clone)]
enum Write {
    Bytes(Area, u16, Vec<u8>),
    Word(Area, u16, u64),
}

fn area() -> impl Strategy<Value = Area> {
    prop_oneof![Just(Area::Header), Just(Area::Control), Just(Area::Slots)]
}

fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(CAP - 1),
        Just(CAP),
        Just(CAP + 1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 63),
        (0u64..64),
        (0u64..64).prop_map(|d| d.wrapping_sub(32)),
        any::<u64>(),
    ]
}

/// An MPMC slot sequence word that looks almost right: a nearby position's lap tag, any
/// endpoint mark (index and generation), any state; or any [`word`].
fn seq_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..64, 0u64..(1 << 14), 0u64..4).prop_map(|(p, m, st)| (p << 16) | (m << 2) | st),
        (0u64..64, 0u64..4).prop_map(|(p, st)| (p << 16) | st),
        word(),
    ]
}

/// A log word that looks almost right: any state with a nearby length (a header, padding,
/// a hole), a mark naming any endpoint and generation, a `FREE` of a nearby lap.
fn log_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..8, 0u64..2048).prop_map(|(st, len)| (st << 61) | len),
        (0u64..(1 << 14), 0u64..200).prop_map(|(m, len)| (1 << 61) | (m << 32) | len),
        (0u64..512).prop_map(|p| p),
        word(),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        (
            area(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(a, o, b)| Write::Bytes(a, o, b)),
        (area(), any::<u16>(), word()).prop_map(|(a, o, w)| Write::Word(a, o, w)),
    ]
}

/// Applies `w` to the segment file (the mapping sees it at once: same pages), staying
/// inside `area`, which is `[start, end)` of the file.
fn apply(name: &str, w: &Write, areas: [(u64, u64); 3]) {
    let pick = |a: Area| match a {
        Area::Header => areas[0],
        Area::Control => areas[1],
        Area::Slots => areas[2],
    };
    match w {
        Write::Bytes(a, off, bytes) => {
            let (start, end) = pick(*a);
            let len = (bytes.len() as u64).min(end - start);
            let at = start + u64::from(*off) % (end - start - len + 1);
            poke(name, at, &bytes[..len as usize]);
        }
        Write::Word(a, off, v) => {
            let (start, end) = pick(*a);
            let words = (end - start) / 8;
            let at = start + (u64::from(*off) % words) * 8;
            poke(name, at, &v.to_ne_bytes());
        }
    }
}

/// What the victim does after the writes.
#[derive(Debug, Clone, Copy)]
enum Op {
    Push(u64),
    Pop,
    PushTimeout,
    PopTimeout,
    Chunk(u8),
    ReadChunk(u8),
    Slices(u8),
    Stats,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u64>().prop_map(Op::Push),
        Just(Op::Pop),
        Just(Op::PushTimeout),
        Just(Op::PopTimeout),
        (0u8..12).prop_map(Op::Chunk),
        (0u8..12).prop_map(Op::ReadChunk),
        (0u8..12).prop_map(Op::Slices),
        Just(Op::Stats),
    ]
}

/// Runs `f` on a thread; fails if it panics or does not finish within `HANG`.
fn watchdog(what: &str, f: impl FnOnce() + Send + 'static) -> Result<(), TestCaseError> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(HANG) {
        Ok(()) => {
            h.join()
                .map_err(|_| TestCaseError::fail(format!("{what} panicked")))?;
            Ok(())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = h.join();
            Err(TestCaseError::fail(format!("{what} panicked")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(TestCaseError::fail(format!("{what} hung for {HANG:?}")))
        }
    }
}

const SHORT: Duration = Duration::from_millis(1);

fn spsc_ops(
    tx: &mut Option<spsc::Producer<u64>>,
    rx: &mut Option<spsc::Consumer<u64>>,
    ops: &[Op],
) {
    let mut buf = [0u64; 16];
    for &op in ops {
        if let Some(tx) = tx.as_mut() {
            match op {
                Op::Push(v) => drop(tx.try_push(v)),
                Op::PushTimeout => drop(tx.push_timeout(1, SHORT)),
                Op::Chunk(n) => {
                    if let Ok(mut c) = tx.write_chunk_uninit(n as usize) {
                        let (a, b) = c.as_mut_slices();
                        a.iter_mut().chain(b.iter_mut()).for_each(|s| *s = 5);
                        c.commit(n as usize / 2);
                    }
                }
                Op::Slices(n) => drop(tx.push_slice(&buf[..n as usize])),
                Op::Stats => drop(tx.free_slots()),
                _ => {}
            }
        }
        if let Some(rx) = rx.as_mut() {
            match op {
                Op::Pop => drop(rx.try_pop()),
                Op::PopTimeout => drop(rx.pop_timeout(SHORT)),
                Op::ReadChunk(n) => {
                    if let Ok(c) = rx.read_chunk(n as usize) {
                        let (a, b) = c.as_slices();
                        std::hint::black_box((a, b));
                        c.commit(n as usize / 2);
                    }
                }
                Op::Slices(n) => drop(rx.pop_slice(&mut buf[..n as usize])),
                Op::Stats => drop(rx.len()),
                _ => {}
            }
        }
    }
}

fn mpmc_ops(
    tx: &mut Option<mpmc::Producer<u64>>,
    rx: &mut Option<mpmc::Consumer<u64>>,
    ops: &[Op],
) {
    let mut buf = [0u64; 16];
    for &op in ops {
        if let Some(tx) = tx.as_mut() {
            match op {
                Op::Push(v) => drop(tx.try_push(v)),
                Op::PushTimeout => drop(tx.push_timeout(1, SHORT)),
                Op::Slices(n) => drop(tx.push_slice(&buf[..n as usize])),
                Op::Chunk(n) => {
                    if let Ok(mut c) = tx.write_chunk(n as usize) {
                        c.copy_from(&buf[..n as usize]);
                        let _ = c.commit(n as usize / 2);
                    }
                }
                _ => {}
            }
        }
        if let Some(rx) = rx.as_mut() {
            match op {
                Op::Pop => drop(rx.try_pop()),
                Op::PopTimeout => drop(rx.pop_timeout(SHORT)),
                Op::Slices(n) | Op::ReadChunk(n) => drop(rx.pop_slice(&mut buf[..n as usize])),
                _ => {}
            }
        }
    }
}

fn broadcast_ops(
    tx: &mut Option<broadcast::Publisher<u64>>,
    rx: &mut [Option<broadcast::Subscriber<u64>>; 2],
    ops: &[Op],
) {
    let mut buf = [0u64; 16];
    for &op in ops {
        if let Some(tx) = tx.as_mut() {
            match op {
                Op::Push(v) => drop(tx.try_publish(v)),
                Op::PushTimeout => drop(tx.publish_timeout(1, SHORT)),
                Op::Slices(n) | Op::Chunk(n) => drop(tx.publish_slice(&buf[..n as usize])),
                _ => {}
            }
        }
        for rx in rx.iter_mut().flatten() {
            match op {
                Op::Pop => drop(rx.try_recv()),
                Op::PopTimeout => drop(rx.recv_timeout(SHORT)),
                Op::Slices(n) | Op::ReadChunk(n) => drop(rx.recv_slice(&mut buf[..n as usize])),
                Op::Stats => drop(rx.lag()),
                _ => {}
            }
        }
    }
}

fn log_ops(
    tx: &mut [Option<shm_ring::log::Producer>; 2],
    rx: &mut Option<shm_ring::log::Consumer>,
    ops: &[Op],
) {
    for &op in ops {
        for tx in tx.iter_mut().flatten() {
            match op {
                Op::Push(v) => drop(tx.try_send(&v.to_ne_bytes()[..(v % 9) as usize])),
                Op::PushTimeout => drop(tx.send_timeout(&[7; 40], SHORT)),
                Op::Chunk(n) => {
                    if let Ok(mut c) = tx.try_claim(usize::from(n) * 8) {
                        c.buf().fill(n);
                        let _ = c.commit(usize::from(n) * 4);
                    }
                }
                Op::Slices(n) => drop(tx.try_claim(usize::from(n))),
                _ => {}
            }
        }
        if let Some(rx) = rx.as_mut() {
            match op {
                Op::Pop => drop(rx.try_recv().map(|f| f.len())),
                Op::PopTimeout => drop(rx.recv_timeout(SHORT).map(|f| f.len())),
                Op::ReadChunk(n) => drop(rx.try_drain(usize::from(n), |m| {
                    std::hint::black_box(m.bytes.len());
                })),
                Op::Stats => drop(rx.is_abandoned()),
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn spsc_survives_hostile_bytes(
        before in 0u64..12,
        writes in prop::collection::vec(write(), 1..8),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let (name, _c) = scratch("fuzz-spsc");
        let ring = spsc::create::<u64>(&name, CAP).unwrap();
        let (mut tx, mut rx) = (Some(ring.producer().unwrap()), Some(ring.consumer().unwrap()));
        for i in 0..before {
            let _ = tx.as_mut().unwrap().try_push(i);
        }
        let areas = [(0, HEADER), (HEADER, SPSC_SLOTS), (SPSC_SLOTS, SPSC_SLOTS + CAP * 8)];
        for w in &writes {
            apply(&name, w, areas);
        }
        let n = name.clone();
        watchdog("spsc", move || {
            // Handles joined before the writes.
            spsc_ops(&mut tx, &mut rx, &ops);
            let _ = ring.stats();
            drop((tx, rx));
            // Everything a newcomer does.
            let _ = shm_core::inspect(&n);
            let _ = shm_core::list();
            let _ = shm_ring::inspect(&n);
            let _ = mpmc::open::<u64>(&n).map(|r| r.stats());
            if let Ok(r) = spsc::open::<u64>(&n) {
                let _ = r.stats();
                let (mut tx, mut rx) = (r.producer().ok(), r.consumer().ok());
                spsc_ops(&mut tx, &mut rx, &ops);
            }
        })?;
    }

    #[test]
    fn broadcast_survives_hostile_bytes(
        back_pressure in any::<bool>(),
        before in 0u64..12,
        writes in prop::collection::vec(write(), 1..8),
        seqs in prop::collection::vec((0u64..CAP, word()), 0..6),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let (name, _c) = scratch("fuzz-bcast");
        let policy = if back_pressure { Policy::BackPressure } else { Policy::Overwrite };
        let ring = broadcast::Builder::<u64>::new(&name)
            .capacity(CAP)
            .policy(policy)
            .untether_timeout(Duration::from_millis(2))
            .create()
            .unwrap();
        let mut tx = Some(ring.publisher().unwrap());
        let mut rx = [Some(ring.subscribe().unwrap()), Some(ring.subscribe().unwrap())];
        for i in 0..before {
            let _ = tx.as_mut().unwrap().try_publish(i);
            let _ = rx[0].as_mut().unwrap().try_recv();
        }
        let areas = [
            (0, HEADER),
            (HEADER, BCAST_SLOTS),
            (BCAST_SLOTS, BCAST_SLOTS + CAP * BCAST_SLOT),
        ];
        for w in &writes {
            apply(&name, w, areas);
        }
        // Sequence words: nearby positions (published or being written) and wild ones.
        for &(slot, v) in &seqs {
            poke(&name, BCAST_SLOTS + slot * BCAST_SLOT, &v.to_ne_bytes());
        }
        let n = name.clone();
        watchdog("broadcast", move || {
            broadcast_ops(&mut tx, &mut rx, &ops);
            let _ = ring.stats();
            drop((tx, rx));
            let _ = shm_core::inspect(&n);
            let _ = shm_ring::inspect(&n);
            let _ = mpmc::open::<u64>(&n).map(|r| r.stats());
            if let Ok(r) = broadcast::open::<u64>(&n) {
                let _ = r.stats();
                let mut tx = r.publisher().ok();
                let mut rx = [r.subscribe().ok(), r.subscribe_with_history(3).ok()];
                broadcast_ops(&mut tx, &mut rx, &ops);
            }
        })?;
    }

    #[test]
    fn log_survives_hostile_bytes(
        before in 0u64..12,
        writes in prop::collection::vec(write(), 1..8),
        words in prop::collection::vec((0u64..LOG_BYTES / 8, log_word()), 0..6),
        // Claim lines that name plausible claims (a position of this lap or the next, a
        // span near a record's, any mark), for the endpoints in use and one beyond.
        lines in prop::collection::vec(
            (0u64..3, 0u64..LOG_BYTES / 4, 0u64..300, any::<u32>()),
            0..3,
        ),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let (name, _c) = scratch("fuzz-log");
        let ring = shm_ring::log::Builder::new(&name)
            .capacity(LOG_BYTES)
            .max_len(LOG_MAX)
            .claim_timeout(Duration::from_millis(1))
            .create()
            .unwrap();
        let mut tx = [Some(ring.producer().unwrap()), Some(ring.producer().unwrap())];
        let mut rx = Some(ring.consumer().unwrap());
        for i in 0..before {
            let _ = tx[0].as_mut().unwrap().try_send(&[i as u8; 30]);
            if i % 2 == 0 {
                let _ = rx.as_mut().unwrap().try_recv().map(|f| f.len());
            }
        }
        let areas = [(0, HEADER), (HEADER, LOG_WORDS), (LOG_WORDS, LOG_WORDS + LOG_BYTES)];
        for w in &writes {
            apply(&name, w, areas);
        }
        for &(at, v) in &words {
            poke(&name, LOG_WORDS + at * 8, &v.to_ne_bytes());
        }
        for &(k, pos, span, mark) in &lines {
            let line = LOG_CLAIMS + k * 128;
            poke(&name, line + 8, &((u64::from(mark) << 32) | span).to_ne_bytes());
            poke(&name, line, &((pos * 8) | 1).to_ne_bytes());
        }
        let n = name.clone();
        watchdog("log", move || {
            log_ops(&mut tx, &mut rx, &ops);
            let _ = ring.stats();
            drop((tx, rx));
            let _ = shm_ring::inspect(&n);
            if let Ok(r) = shm_ring::log::open(&n) {
                let _ = r.stats();
                let mut tx = [r.producer().ok(), None];
                let mut rx = r.consumer().ok();
                log_ops(&mut tx, &mut rx, &ops);
            }
        })?;
    }
}

// MPMC apart: garbage that keeps a loop retrying ends it after `MAX_RETRIES` (1 << 20)
// re-reads, each with a spin hint, with `Corrupted`: on the 2-core VM about 0.4 s a case
// in release (1,000 cases in 416 s) and 1 s unoptimised, so a debug build (the README's
// test command, CI) runs 64 cases by default, and a release build or `SHMRING_FUZZ_CASES`
// the full count.
proptest! {
    #![proptest_config(ProptestConfig {
        cases: mpmc_cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mpmc_survives_hostile_bytes(
        before in 0u64..12,
        writes in prop::collection::vec(write(), 1..8),
        seqs in prop::collection::vec((0u64..CAP, seq_word()), 0..6),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let (name, _c) = scratch("fuzz-mpmc");
        let ring = mpmc::Builder::<u64>::new(&name)
            .capacity(CAP)
            .claim_timeout(Duration::from_millis(2))
            .create()
            .unwrap();
        let (mut tx, mut rx) = (Some(ring.producer().unwrap()), Some(ring.consumer().unwrap()));
        for i in 0..before {
            let _ = tx.as_mut().unwrap().try_push(i);
        }
        let areas = [
            (0, HEADER),
            (HEADER, MPMC_SLOTS),
            (MPMC_SLOTS, MPMC_SLOTS + CAP * MPMC_SLOT),
        ];
        for w in &writes {
            apply(&name, w, areas);
        }
        // Sequence words: near-miss states of nearby laps.
        for &(slot, v) in &seqs {
            poke(&name, MPMC_SLOTS + slot * MPMC_SLOT, &v.to_ne_bytes());
        }
        let n = name.clone();
        watchdog("mpmc", move || {
            mpmc_ops(&mut tx, &mut rx, &ops);
            let _ = ring.stats();
            drop((tx, rx));
            let _ = shm_core::inspect(&n);
            let _ = shm_ring::inspect(&n);
            let _ = spsc::open::<u64>(&n).map(|r| r.stats());
            if let Ok(r) = mpmc::open::<u64>(&n) {
                let _ = r.stats();
                let (mut tx, mut rx) = (r.producer().ok(), r.consumer().ok());
                mpmc_ops(&mut tx, &mut rx, &ops);
            }
        })?;
    }
}
