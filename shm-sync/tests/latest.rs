//! Latest values across processes: a reader that waits for the next `SeqLock` value without
//! polling, learns that the writer's process is gone (SIGKILLed or exited), and a table of
//! seqlocks, one per instrument, in one segment.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_sync::{SeqLock, SeqLockError, SeqLockTable, Shared, WriterStatus};

const ROLE: &str = "SHMRING_ROLE";
const HANG: Duration = Duration::from_secs(20);

#[derive(
    Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable, shm_core::TypeIdentity,
)]
#[repr(C)]
struct Quote {
    bid: f64,
    ask: f64,
}

fn role(r: &str, name: &str) -> std::process::Command {
    let mut c = child("child_latest", name);
    c.env(ROLE, r);
    c
}

/// Voluntary context switches of the calling thread so far (each futex sleep is one).
fn voluntary_switches() -> u64 {
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_latest() {
    let Some(name) = child_name() else { return };
    match std::env::var(ROLE).unwrap().as_str() {
        // Writes `ask = 1, 2, 3`, 20 ms apart, then says so and waits to be killed (or,
        // "write-exit", exits).
        r @ ("write-hang" | "write-exit") => {
            let lock = Shared::<SeqLock<Quote>>::open(&name).unwrap();
            for i in 1..=3 {
                std::thread::sleep(Duration::from_millis(20));
                lock.write(Quote {
                    bid: 0.0,
                    ask: f64::from(i),
                })
                .unwrap();
            }
            println!("CHILD:written");
            if r == "write-hang" {
                std::thread::sleep(Duration::from_secs(120));
            }
        }
        // Writes entry `i` of the table with `ask = i` for every i, then exits.
        "table-write" => {
            let t = SeqLockTable::<Quote>::open(&name).unwrap();
            for (i, e) in t.iter().enumerate() {
                e.write(Quote {
                    bid: -(i as f64),
                    ask: i as f64,
                })
                .unwrap();
            }
            println!("CHILD:written {}", t.len());
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_reader_waits_for_each_value_and_learns_that_a_killed_writer_is_gone() {
    let (name, _c) = scratch("latest-kill");
    let lock = Shared::<SeqLock<Quote>>::create(&name, Quote { bid: 0.0, ask: 0.0 }).unwrap();
    assert_eq!(lock.writer(), WriterStatus::Never);
    let mut changes = lock.changes();
    let mut writer = Running::spawn(role("write-hang", &name));
    let pid = writer.child.id();
    // Each value arrives (the reader sleeps between them); a burst may be coalesced, so
    // the values seen only grow and end at the last one.
    let mut seen = Vec::new();
    while seen.last() != Some(&3.0) {
        let q = changes.wait_timeout(HANG).expect("a newer value");
        assert!(
            seen.last().is_none_or(|&l| q.ask > l),
            "{seen:?} then {q:?}"
        );
        seen.push(q.ask);
    }
    writer.expect_line("written", HANG);
    assert_eq!(lock.writer(), WriterStatus::Running { pid });

    // Asleep on a live writer, the reader wakes about once a second, not once a ms.
    let before = voluntary_switches();
    assert_eq!(
        changes.wait_timeout(Duration::from_millis(1500)),
        Err(SeqLockError::Timeout)
    );
    let switches = voluntary_switches() - before;
    println!("idle reader, 1.5 s: {switches} voluntary context switches");
    assert!(
        switches < 20,
        "{switches} sleeps in 1.5 s: the reader polls"
    );

    // SIGKILLed while the reader sleeps: the exit watcher wakes it with WriterGone.
    let t = Instant::now();
    std::thread::scope(|s| {
        let r = s.spawn(|| changes.wait_timeout(HANG));
        std::thread::sleep(Duration::from_millis(50));
        writer.kill9();
        assert_eq!(r.join().unwrap(), Err(SeqLockError::WriterGone { pid }));
    });
    println!(
        "WriterGone {:?} after the kill",
        t.elapsed().saturating_sub(Duration::from_millis(50))
    );
    assert_eq!(lock.writer(), WriterStatus::Exited { pid });
    // The latest value stays readable, and a new writer's first write ends WriterGone.
    assert_eq!(changes.latest().unwrap().ask, 3.0);
    assert_eq!(
        changes.wait_timeout(HANG),
        Err(SeqLockError::WriterGone { pid })
    );
    lock.write(Quote { bid: 1.0, ask: 4.0 }).unwrap();
    assert_eq!(changes.wait_timeout(HANG).unwrap().ask, 4.0);
    assert_eq!(
        lock.writer(),
        WriterStatus::Running {
            pid: std::process::id()
        }
    );
}

#[test]
fn a_writer_that_exits_cleanly_is_gone_too() {
    let (name, _c) = scratch("latest-exit");
    let lock = Shared::<SeqLock<Quote>>::create(&name, Quote { bid: 0.0, ask: 0.0 }).unwrap();
    let mut writer = Running::spawn(role("write-exit", &name));
    let pid = writer.child.id();
    writer.expect_line("written", HANG);
    assert!(writer.wait_success(HANG));
    let mut changes = lock.changes();
    assert_eq!(
        changes.wait_timeout(HANG),
        Err(SeqLockError::WriterGone { pid })
    );
    assert_eq!(changes.latest().unwrap().ask, 3.0);
}

#[test]
fn a_table_of_seqlocks_is_shared_entry_by_entry_and_checked_at_open() {
    let (name, _c) = scratch("latest-table");
    let t = SeqLockTable::<Quote>::create(
        &name,
        300,
        Quote {
            bid: 0.0,
            ask: -1.0,
        },
    )
    .unwrap();
    assert_eq!(t.len(), 300);
    // Entries sit on lines of their own.
    let a = t.get(0).unwrap() as *const SeqLock<Quote> as usize;
    let b = t.get(1).unwrap() as *const SeqLock<Quote> as usize;
    assert!(
        b - a >= 128 && a % 128 == 0 && b % 128 == 0,
        "{a:#x} {b:#x}"
    );
    assert!(t.get(300).is_none());
    let mut w = Running::spawn(role("table-write", &name));
    w.expect_line("written 300", HANG);
    assert!(w.wait_success(HANG));
    for (i, e) in t.iter().enumerate() {
        assert_eq!(
            e.read().unwrap(),
            Quote {
                bid: -(i as f64),
                ask: i as f64
            }
        );
    }
    // Another payload, or a single seqlock, is refused naming the types.
    let e = SeqLockTable::<[f64; 2]>::open(&name)
        .err()
        .expect("another payload");
    assert!(
        e.to_string()
            .contains("expected `CachePadded<SeqLock<[f64; 2]>>`"),
        "{e}"
    );
    assert!(Shared::<SeqLock<Quote>>::open(&name).is_err());
    // A length in the header the segment cannot hold is an error, not a wild read.
    let data = shm_core::HEADER_SIZE as u64;
    poke(&name, data, &u64::MAX.to_ne_bytes());
    let e = SeqLockTable::<Quote>::open(&name)
        .err()
        .expect("impossible length");
    assert!(e.to_string().contains("not a valid table"), "{e}");
    // (A length the page-rounded file still holds opens: every entry it names is mapped.)
    poke(&name, data, &1000u64.to_ne_bytes());
    let e = SeqLockTable::<Quote>::open(&name)
        .err()
        .expect("too long for the file");
    assert!(e.to_string().contains("1000 entries need"), "{e}");
    // Bad lengths at create.
    assert!(
        SeqLockTable::<Quote>::create(&unique_name("t0"), 0, Quote { bid: 0.0, ask: 0.0 }).is_err()
    );
}
