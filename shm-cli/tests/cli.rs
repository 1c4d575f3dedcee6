//! The `shmring` command as a user runs it: one-line errors with a non-zero exit, `ls` /
//! `inspect` on live rings, `rm --stale` after both ends of a ring were SIGKILLed, and a
//! short `bench` whose JSON has every row.

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{child, child_name, scratch, unique_name, Cleanup, Running};
use shm_ring::{mpmc, spsc};

fn shmring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmring"))
        .args(args)
        .output()
        .expect("run shmring")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails unless the command failed with `code` and said one line, containing `want`, on
/// stderr (and did not panic).
fn one_line_error(args: &[&str], code: i32, want: &str) {
    let out = shmring(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?} printed more than a line: {err}"
    );
    assert!(err.starts_with("shmring: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Fails unless the command failed with 2 and printed clap's whole message on stderr: the
/// error with `want` in it and, where clap prints one (`Some`), the usage line that says
/// what to type, with `usage` in it.
fn usage_error(args: &[&str], want: &str, usage: Option<&str>) {
    let out = shmring(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    assert!(err.contains("try '--help'"), "{args:?}: {err}");
    if let Some(usage) = usage {
        let usage_line = err
            .lines()
            .find(|l| l.starts_with("Usage: "))
            .unwrap_or_else(|| panic!("{args:?}: no usage line in {err}"));
        assert!(usage_line.contains(usage), "{args:?}: {usage_line}");
    }
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn bad_arguments_print_the_whole_usage_and_unknown_segments_one_line() {
    usage_error(
        &["frobnicate"],
        "unrecognized subcommand",
        Some("shmring <COMMAND>"),
    );
    // The argument names clap lists under "required arguments" stay in the message.
    usage_error(
        &["rm"],
        "<NAMES>...",
        Some("shmring rm [--force] <NAMES>..."),
    );
    usage_error(
        &["rm", "/x", "--stale"],
        "cannot be used with",
        Some("shmring rm"),
    );
    usage_error(
        &["bench", "--duration-ms", "abc"],
        "'--duration-ms <MS>'",
        None,
    );
    usage_error(&["bench", "--duration-ms", "0"], "invalid value", None);
    one_line_error(&["bench", "--only", "nope"], 1, "no row named \"nope\"");
    one_line_error(&["bench", "--cpus", "1-0"], 1, "--cpus");
    one_line_error(
        &["bench", "--cpus", "100000"],
        1,
        "not one this process may use",
    );
    one_line_error(&["inspect", "no-slash"], 1, "must start with '/'");
    let missing = unique_name("missing");
    one_line_error(&["inspect", &missing], 1, "no segment of that name exists");
    one_line_error(&["rm", &missing], 1, "no segment of that name exists");
    let ok = shmring(&["--help"]);
    assert!(ok.status.success() && text(&ok.stdout).contains("bench"));
}

#[test]
fn ls_and_inspect_show_live_ring_counters_without_joining() {
    let (name, _c) = scratch("cli-spsc");
    let ring = spsc::create::<[u32; 3]>(&name, 8).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    for i in 0..3 {
        tx.push([i; 3]).unwrap();
    }
    rx.pop().unwrap();
    let out = shmring(&["inspect", &name]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    for want in [
        "kind         spsc",
        "state        ready",
        "payload      `[u32; 3]`, size 12, align 4; identity 0x",
        "capacity 8, head 1, tail 3, occupancy 2",
        "pushes 3, pops 1",
        &format!("producer     pid {}", std::process::id()),
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    // Inspecting did not take an end: ours still work.
    tx.push([9; 3]).unwrap();
    assert_eq!(rx.pop().unwrap(), [1; 3]);

    let mname = unique_name("cli-mpmc");
    let _c2 = Cleanup(mname.clone());
    let m = mpmc::create::<u64>(&mname, 16).unwrap();
    let (mut mtx, _mrx) = (m.producer().unwrap(), m.consumer().unwrap());
    mtx.push(5).unwrap();
    let out = shmring(&["inspect", &mname]);
    let s = text(&out.stdout);
    assert!(s.contains("kind         mpmc"), "{s}");
    assert!(s.contains("pushes 1, pops 0"), "{s}");
    assert!(
        s.contains("1 producer attached, 1 consumer attached"),
        "{s}"
    );

    let out = shmring(&["ls"]);
    let s = text(&out.stdout);
    assert!(out.status.success());
    let line = s
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("ls lists the ring");
    assert!(
        line.contains("spsc") && line.contains("ready") && line.contains("yes"),
        "{line}"
    );
    assert!(!line.ends_with("stale"), "{line}");
}

/// Child: creates an SPSC ring (creator unlinks on drop, which a SIGKILL prevents), joins
/// it as producer, and waits to be killed.
#[test]
#[ignore]
fn child_creates_ring_and_hangs() {
    let Some(name) = child_name() else { return };
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let _tx = ring.producer().unwrap();
    println!("CHILD:ready");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn rm_stale_removes_a_ring_whose_ends_died_and_the_name_can_be_reused() {
    let (name, _c) = scratch("cli-stale");
    let mut creator = Running::spawn(child("child_creates_ring_and_hangs", &name));
    creator.expect_line("ready", Duration::from_secs(10));
    // A consumer in another process, killed too: both ends dead.
    let alive = shmring(&["ls"]);
    let line = text(&alive.stdout)
        .lines()
        .find(|l| l.starts_with(&name))
        .map(str::to_owned)
        .expect("listed");
    assert!(
        !line.ends_with("stale"),
        "a ring in use is not stale: {line}"
    );
    // While its creator lives, rm --stale leaves it.
    let out = shmring(&["rm", "--stale"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shm_core::inspect(&name).is_ok(), "removed a live ring");
    creator.kill9();

    let out = shmring(&["ls"]);
    let s = text(&out.stdout);
    let line = s
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("still listed");
    // Where every process can be inspected, it is stale outright; where some cannot (in this
    // project's sandbox not even root may read pid 1's maps), stale by its in-use locks.
    let strict = shm_core::inspect(&name).unwrap().is_stale();
    let mark = if strict { "stale" } else { "stale?" };
    assert!(line.contains(" no ") && line.ends_with(mark), "{line}");
    let out = shmring(&["inspect", &name]);
    let want = if strict {
        "stale        yes"
    } else {
        "stale        by its in-use locks"
    };
    assert!(text(&out.stdout).contains(want), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("producer     pid"),
        "{}",
        text(&out.stdout)
    );

    let mut out = shmring(&["rm", "--stale"]);
    if !strict {
        let s = text(&out.stdout);
        assert!(
            s.contains(&format!("kept {name}: ")) && s.contains("cannot tell"),
            "{s}"
        );
        assert!(shm_core::inspect(&name).is_ok(), "removed while undecided");
        out = shmring(&["rm", "--stale", "--trust-locks"]);
    }
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(
        s.contains(&format!("removed {name} (creator pid")),
        "rm --stale did not report {name}:\n{s}"
    );
    assert!(
        shm_core::inspect(&name).is_err(),
        "still there after rm --stale"
    );

    // The name works again.
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.push(3).unwrap();
    assert_eq!(rx.pop().unwrap(), 3);
}

/// Child: opens the ring `name` (SPSC or MPMC as `SHMRING_KIND` says) and joins it as a
/// consumer, says so, and waits to be killed.
#[test]
#[ignore]
fn child_joins_ring_and_hangs() {
    let Some(name) = child_name() else { return };
    let _held: Box<dyn std::any::Any> = match std::env::var("SHMRING_KIND").as_deref() {
        Ok("mpmc") => {
            let r = mpmc::open::<u64>(&name).unwrap();
            let rx = r.consumer().unwrap();
            Box::new((r, rx))
        }
        _ => {
            let r = spsc::open::<u64>(&name).unwrap();
            let rx = r.consumer().unwrap();
            Box::new((r, rx))
        }
    };
    println!("CHILD:ready");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn rm_refuses_a_segment_in_live_use_naming_its_processes_unless_forced() {
    let (name, _c) = scratch("cli-rm");
    let ring = spsc::create::<u64>(&name, 4).unwrap();
    let _tx = ring.producer().unwrap();
    let mut reader = Running::spawn(child("child_joins_ring_and_hangs", &name));
    reader.expect_line("ready", Duration::from_secs(10));
    let reader_pid = reader.child.id();

    let out = shmring(&["rm", &name]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let me = std::process::id();
    let (first, second) = (me.min(reader_pid), me.max(reader_pid));
    assert!(
        err.contains(&format!(
            "refusing to remove {name}: it is in use by processes {first} ("
        )) && err.contains(&format!(", {second} ("))
            && err.contains("`shmring rm --force"),
        "{err}"
    );
    assert!(shm_core::inspect(&name).is_ok(), "removed a ring in use");

    // Forced: the name goes, the processes keep their mapping.
    let out = shmring(&["rm", "--force", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("removed {name}"));
    assert!(shm_core::inspect(&name).is_err());
    assert!(!ring.is_current());
    reader.kill9();

    // A segment nothing uses is removed without --force.
    let kept = unique_name("cli-rm-unused");
    let _c2 = Cleanup(kept.clone());
    drop(
        spsc::Builder::<u64>::new(&kept)
            .segment(shm_core::SegmentBuilder::new(&kept).unlink_on_drop(false))
            .create()
            .unwrap(),
    );
    let out = shmring(&["rm", &kept]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("removed {kept}"));
    assert!(shm_core::inspect(&kept).is_err());
}

#[test]
fn ls_and_inspect_show_the_live_ends_not_only_the_creator() {
    for kind in ["spsc", "mpmc"] {
        let (name, _c) = scratch(&format!("cli-ends-{kind}"));
        let me = std::process::id();
        let held: Box<dyn std::any::Any> = if kind == "spsc" {
            let r = spsc::create::<u64>(&name, 4).unwrap();
            let tx = r.producer().unwrap();
            Box::new((r, tx))
        } else {
            let r = mpmc::create::<u64>(&name, 4).unwrap();
            let tx = r.producer().unwrap();
            Box::new((r, tx))
        };
        let mut c = child("child_joins_ring_and_hangs", &name);
        c.env("SHMRING_KIND", kind);
        let mut reader = Running::spawn(c);
        reader.expect_line("ready", Duration::from_secs(10));
        let pid = reader.child.id();
        let ls_line = || {
            let out = shmring(&["ls"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
                .lines()
                .find(|l| l.starts_with(&name))
                .expect("ls lists the ring")
                .to_owned()
        };
        let line = ls_line();
        assert!(line.contains(&format!("P:{me} C:{pid} ")), "{kind}: {line}");
        // SIGKILLed: ls says the consumer's process is dead.
        reader.kill9();
        let line = ls_line();
        assert!(
            line.contains(&format!("P:{me} C:{pid}(dead) ")),
            "{kind}: {line}"
        );
        let out = shmring(&["inspect", &name]);
        let s = text(&out.stdout);
        let want = if kind == "spsc" {
            format!("consumer     pid {pid} (dead)")
        } else {
            format!("consumers    pid {pid} (dead)")
        };
        assert!(s.contains(&want), "{kind}: {s}");
        drop(held);
    }
}

#[test]
fn a_short_bench_fills_every_row_and_writes_json() {
    let json = std::env::temp_dir().join(format!("shmring-bench-{}.json", std::process::id()));
    let out = shmring(&[
        "bench",
        "--duration-ms",
        "30",
        "--warmup-ms",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}\n{se}");
    let j = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let lines: Vec<&str> = j.lines().filter(|l| l.contains("\"name\"")).collect();
    assert_eq!(lines.len(), 35, "{j}");
    for row in [
        "floor",
        "spsc-spin",
        "spsc-park",
        "mpmc",
        "broadcast",
        "service",
        "select-1",
        "select-8",
        "pipe",
        "unix-socket",
    ] {
        let l = lines
            .iter()
            .find(|l| l.contains(&format!("\"name\": \"{row}\"")))
            .unwrap_or_else(|| panic!("{row} missing: {j}"));
        assert!(
            l.contains("\"p50\": ") && l.contains("\"msgs_per_sec\": null"),
            "{l}"
        );
        // Every round trip but the floor's own carries the floor measured just before it.
        let floor: Option<u64> = l
            .split("\"floor_p50_ns\": ")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|t| t.trim_end_matches(['}', ' ']).parse().ok());
        assert_eq!(floor.is_some(), row != "floor", "{l}");
    }
    for row in [
        "spsc-throughput-8B-try",
        "spsc-throughput-8B",
        "spsc-throughput-8B-park",
        "spsc-throughput-64B",
        "spsc-throughput-8B-chunk64",
        "rtrb-8B",
        "rtrb-64B",
        "rtrb-4KiB",
        "mpmc-throughput",
        "mpmc-throughput-2p2c",
        "arrayqueue-1p1c",
        "arrayqueue-2p2c",
        "broadcast-throughput-8B",
        "broadcast-fanout-1",
        "broadcast-fanout-2",
        "broadcast-fanout-8",
        "log-64B",
        "memcpy-4KiB",
        "log-4KiB",
    ] {
        let l = lines
            .iter()
            .find(|l| l.contains(&format!("\"name\": \"{row}\"")))
            .unwrap_or_else(|| panic!("{row} missing: {j}"));
        assert!(l.contains("\"rtt_ns\": null"), "{l}");
        let v: f64 = l
            .split("\"msgs_per_sec\": ")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|t| t.trim_end_matches(['}', ' ']).parse().ok())
            .unwrap_or_else(|| panic!("no rate in {l}"));
        assert!(v > 0.0, "{l}");
    }
    // 4 producers and 4 consumers run only with 4 CPUs or more; else the row says why.
    for row in ["mpmc-throughput-4p4c", "arrayqueue-4p4c"] {
        let l = lines
            .iter()
            .find(|l| l.contains(&format!("\"name\": \"{row}\"")))
            .unwrap_or_else(|| panic!("{row} missing: {j}"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 4 {
            assert!(l.contains("\"note\": \"skipped: needs 8 CPUs"), "{l}");
        } else {
            assert!(!l.contains("\"msgs_per_sec\": null"), "{l}");
        }
    }
    // The bursty feeds: latency percentiles, wakes per push, the consumer's CPU.
    for row in [
        "spsc-bursty-spin",
        "spsc-bursty-park",
        "spsc-wake-park",
        "spsc-wake-async",
    ] {
        let l = lines
            .iter()
            .find(|l| l.contains(&format!("\"name\": \"{row}\"")))
            .unwrap_or_else(|| panic!("{row} missing: {j}"));
        assert!(
            l.contains("\"bursty\": {\"p50_ns\": ") && l.contains("\"wakes_per_push\": "),
            "{l}"
        );
    }
    assert!(so.contains("x rtrb") && so.contains("x AQ"), "{so}");
    assert!(se.contains("[38/38]"), "progress lines missing: {se}");
    for kind in ["spsc", "mpmc"] {
        assert!(
            so.contains(&format!("idle {kind} consumer blocked in pop")),
            "{so}"
        );
    }
    assert!(so.contains("1000 idle async subscribers"), "{so}");
    // Nothing left behind in /dev/shm.
    let tag = "/shmring-bench-";
    assert!(
        !shm_core::list()
            .unwrap()
            .iter()
            .any(|s| s.name.starts_with(tag) && s.creator_alive() == Some(false)),
        "bench left segments behind"
    );
}

#[test]
fn ls_and_inspect_show_a_broadcast_ring_with_each_subscriber_and_its_lag() {
    use shm_ring::broadcast;
    let (name, _c) = scratch("cli-bcast");
    let me = std::process::id();
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(16)
        .policy(broadcast::Policy::BackPressure)
        .create()
        .unwrap();
    let mut tx = ring.publisher().unwrap();
    let mut fast = ring.subscribe().unwrap();
    let _slow = ring.subscribe().unwrap();
    for i in 0..5 {
        tx.publish(i).unwrap();
    }
    for _ in 0..3 {
        fast.try_recv().unwrap();
    }
    let out = shmring(&["ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ls = text(&out.stdout);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("ls lists the ring");
    assert!(line.contains("broadcast"), "{line}");
    assert!(line.contains(&format!("P:{me} S:{me},{me} ")), "{line}");
    let out = shmring(&["inspect", &name]);
    let s = text(&out.stdout);
    assert!(s.contains("kind         broadcast"), "{s}");
    assert!(
        s.contains("capacity 16, tail 5, policy back-pressure"),
        "{s}"
    );
    assert!(s.contains("published 5"), "{s}");
    assert!(s.contains("subscribers  2 attached"), "{s}");
    assert!(s.contains("position 3, lag 2, received 3, lagged 0"), "{s}");
    assert!(s.contains("position 0, lag 5, received 0, lagged 0"), "{s}");
}

#[test]
fn ls_and_inspect_show_a_log_with_its_ends_and_counters() {
    use shm_ring::log;
    let (name, _c) = scratch("cli-log");
    let me = std::process::id();
    let ring = log::Builder::new(&name)
        .capacity(4096)
        .max_len(100)
        .create()
        .unwrap();
    let (mut a, mut b) = (ring.producer().unwrap(), ring.producer().unwrap());
    let mut rx = ring.consumer().unwrap();
    a.try_send(b"hello").unwrap();
    b.try_send(b"world!").unwrap();
    drop(a.try_claim(10).unwrap()); // aborted: padding
                                    // Read, not yet freed: the consumer frees in batches (head stays 0).
    assert_eq!(rx.try_recv().unwrap().len(), 5);
    let out = shmring(&["ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ls = text(&out.stdout);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("ls lists the log");
    assert!(line.contains("log"), "{line}");
    assert!(line.contains(&format!("P:{me},{me} C:{me}")), "{line}");
    let out = shmring(&["inspect", &name]);
    let s = text(&out.stdout);
    assert!(s.contains("kind         log"), "{s}");
    assert!(
        s.contains(
            "capacity 4096 bytes, messages up to 100 bytes, records aligned to 8, head 0, tail 56, in use 56 bytes"
        ),
        "{s}"
    );
    assert!(s.contains("received 1 message (5 bytes)"), "{s}");
    assert!(
        s.contains(
            "0 skipped (unmarked past the claim timeout), 0 abandoned (dead producers), 1 aborted"
        ),
        "{s}"
    );
    assert!(
        s.contains(&format!("producers    pid {me}, pid {me}")),
        "{s}"
    );
}
