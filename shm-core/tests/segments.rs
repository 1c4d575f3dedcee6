//! Segments across real processes: round trip, the open-or-create race, every bad input,
//! a creator killed mid-initialisation, permissions, and drop semantics.

mod common;

use std::fs::OpenOptions;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use shm_core::{
    CreateErrorKind, Fingerprint, Kind, Layout, OpenErrorKind, OpenOrCreateError, Region,
    RemoveErrorKind, SegmentBuilder, SegmentState, StaleCheck,
};

/// The layout every test here uses: an init counter, then 16 data words on their own line.
fn layout() -> (Layout, Region<AtomicU64>, Region<AtomicU64>) {
    let mut l = Layout::new();
    let inits = l.push::<AtomicU64>(1).unwrap();
    let data = l.push_aligned::<AtomicU64>(16, 128).unwrap();
    (l, inits, data)
}

const FP: Fingerprint = Fingerprint {
    payload_size: 8,
    payload_align: 8,
    schema_id: 0x5e6,
    layout_version: 1,
    type_identity: 0x1d,
    type_detail: 0,
    type_name: shm_core::TypeName::from_bytes(
        *b"u64\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ),
};

fn builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .fingerprint(FP)
        .layout(&layout().0)
}

/// Where a test asserts that a segment *is* stale, and removes it: by the in-use locks
/// (`StaleCheck::TrustLocks`), because on some machines not even root may read every
/// process's maps (in this project's sandbox, pid 1's), which makes the strict verdict
/// "cannot tell"; the strict verdict has its own test
/// (`remove_stale_across_users_refuses_what_it_cannot_rule_out`).
fn stale(info: &shm_core::SegmentInfo) -> bool {
    info.is_stale_by(StaleCheck::TrustLocks)
}

/// Whether `name` is (or within a second becomes) stale: another test thread between a
/// fork and an exec holds our in-use lock for a moment (see `remove_garbage`).
fn stale_soon(name: &str) -> bool {
    (0..100).any(|_| {
        let s = stale(&shm_core::inspect(name).unwrap());
        if !s {
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    })
}

fn remove_garbage(name: &str) -> shm_core::SegmentInfo {
    // Another test thread of this binary that spawns a process holds every open file of
    // ours, the in-use lock included, between its fork and its exec: that transient holder
    // is `InUse { pid: None }`. Try again for a while; a real holder stays.
    for _ in 0..100 {
        match shm_core::remove_stale_by(name, StaleCheck::TrustLocks) {
            Err(e) if matches!(e.kind(), RemoveErrorKind::InUse { pid: None }) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("{name} stayed in use for a second")
}

fn shm_file(name: &str) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap()
}

// ---------------------------------------------------------------- round trip

#[test]
fn round_trip_between_processes() {
    let (name, _c) = scratch("rt");
    let (_, _, data) = layout();
    let seg = builder(&name)
        .create_with(|s| {
            s.region(data)?[0].store(0xfeed, Ordering::Relaxed);
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap();
    let lines = run_child(child("child_round_trip", &name));
    assert_eq!(lines, vec!["read=0xfeed".to_owned()]);
    // The child wrote word 1; we see it through our own mapping.
    assert_eq!(seg.region(data).unwrap()[1].load(Ordering::Acquire), 0xbeef);
}

#[test]
#[ignore = "child process of round_trip_between_processes"]
fn child_round_trip() {
    let Some(name) = child_name() else { return };
    let (_, _, data) = layout();
    let seg = builder(&name).open().unwrap();
    assert!(!seg.is_creator());
    let words = seg.region(data).unwrap();
    println!("CHILD:read={:#x}", words[0].load(Ordering::Acquire));
    words[1].store(0xbeef, Ordering::Release);
}

// ---------------------------------------------------------------- open-or-create race

#[test]
fn eight_processes_race_open_or_create() {
    let (name, _c) = scratch("race");
    // Every child sleeps until the same instant, then calls open_or_create.
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + 300_000_000;
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = child("child_race", &name);
            c.env("SHMRING_START_AT", start_at.to_string());
            c.stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut reports = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let lines = child_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "{lines:?}");
        reports.push(lines[0].clone());
    }
    let created = reports
        .iter()
        .filter(|r| r.starts_with("created=true"))
        .count();
    assert_eq!(created, 1, "exactly one process initialises: {reports:#?}");
    // Everyone saw the same header (creator pid) and the same data.
    let seen: Vec<&str> = reports
        .iter()
        .map(|r| r.split_once(' ').unwrap().1)
        .collect();
    assert!(seen.iter().all(|s| *s == seen[0]), "{reports:#?}");
}

#[test]
#[ignore = "child process of eight_processes_race_open_or_create"]
fn child_race() {
    let Some(name) = child_name() else { return };
    let start_at: u128 = std::env::var("SHMRING_START_AT").unwrap().parse().unwrap();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        < start_at
    {
        std::hint::spin_loop();
    }
    let (_, inits, data) = layout();
    let seg = builder(&name)
        .unlink_on_drop(false)
        .open_or_create_with(|s| {
            s.get(inits)?.fetch_add(1, Ordering::Relaxed);
            for (i, w) in s.region(data)?.iter().enumerate() {
                w.store(
                    std::process::id() as u64 * 100 + i as u64,
                    Ordering::Relaxed,
                );
            }
            // Stay in INITIALIZING a while, so openers exercise the wait for READY.
            std::thread::sleep(Duration::from_millis(50));
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap();
    let h = seg.header();
    assert_eq!(h.state, SegmentState::Ready);
    let words: Vec<u64> = seg
        .region(data)
        .unwrap()
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .collect();
    println!(
        "CHILD:created={} creator={} inits={} data={:?}",
        seg.is_creator(),
        h.creator.pid,
        seg.get(inits).unwrap().load(Ordering::Relaxed),
        words
    );
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_names_are_typed_errors() {
    let long = format!("/{}", "n".repeat(256));
    for (bad, rule) in [
        ("", "at least one character"),
        ("/", "at least one character"),
        ("noslash", "must start with '/'"),
        ("/a/b", "only as the first character"),
        ("/nul\0", "NUL"),
        (long.as_str(), "NAME_MAX"),
        ("/..", "not allowed"),
    ] {
        let e = SegmentBuilder::new(bad).create().unwrap_err();
        assert!(matches!(e.kind(), CreateErrorKind::InvalidName(_)), "{e}");
        assert!(e.to_string().contains(rule), "{e}");
        let e = SegmentBuilder::new(bad).open().unwrap_err();
        assert!(matches!(e.kind(), OpenErrorKind::InvalidName(_)), "{e}");
        assert!(matches!(
            shm_core::remove(bad).unwrap_err().kind(),
            RemoveErrorKind::InvalidName(_)
        ));
    }
}

#[test]
fn missing_segment_is_not_found() {
    let name = unique_name("missing");
    let e = builder(&name).open().unwrap_err();
    assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(
        e.to_string().contains(&name),
        "message names the segment: {e}"
    );
    assert!(matches!(
        shm_core::remove(&name).unwrap_err().kind(),
        RemoveErrorKind::NotFound
    ));
}

#[test]
fn create_twice_is_already_exists() {
    let (name, _c) = scratch("twice");
    let _seg = builder(&name).create().unwrap();
    let e = builder(&name).create().unwrap_err();
    assert!(matches!(e.kind(), CreateErrorKind::AlreadyExists), "{e}");
}

#[test]
fn wrong_magic_version_kind_and_fingerprint() {
    let (name, _c) = scratch("mismatch");
    let _seg = builder(&name).create().unwrap();

    let e = builder(&name).kind(Kind::Spsc).open().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            OpenErrorKind::KindMismatch {
                expected: Kind::Spsc,
                found: 1
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("expected an SPSC segment, found a raw segment"),
        "{e}"
    );

    let other = Fingerprint {
        payload_size: 16,
        ..FP
    };
    let e = builder(&name).fingerprint(other).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::FingerprintMismatch { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("payload type expected `u64` (size 16, align 8), found `u64` (size 8, align 8): the sizes differ"),
        "{e}"
    );
    let e = builder(&name)
        .fingerprint(Fingerprint::of::<[u32; 3]>(0x5e6, 1))
        .open()
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "payload type expected `[u32; 3]` (size 12, align 4), found `u64` (size 8, align \
             8): the sizes and alignments differ"
        ),
        "{e}"
    );

    // Format version (offset 8).
    poke(&name, 8, &7u32.to_ne_bytes());
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            OpenErrorKind::VersionMismatch {
                expected: shm_core::FORMAT_VERSION,
                found: 7
            }
        ),
        "{e}"
    );

    // Magic (offset 0).
    poke(&name, 0, b"NOTSHMRG");
    let e = builder(&name).open().unwrap_err();
    assert!(matches!(e.kind(), OpenErrorKind::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a shmring segment"), "{e}");
}

#[test]
fn corrupted_state_and_data_offset() {
    let (name, _c) = scratch("state");
    let _seg = builder(&name).create().unwrap();
    poke(&name, 40, &64u64.to_ne_bytes());
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::BadDataOffset { found: 64 }),
        "{e}"
    );
    poke(&name, 16, &99u32.to_ne_bytes());
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::InvalidState { found: 99 }),
        "{e}"
    );
}

#[test]
fn truncated_or_grown_segment_is_a_length_error_not_sigbus() {
    let (name, _c) = scratch("trunc");
    let seg = builder(&name).size(3 * 4096).create().unwrap();
    let full = seg.len() as u64;
    shm_file(&name).set_len(4096).unwrap();
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::LengthMismatch { header, actual: 4096 } if *header == full),
        "{e}"
    );
    shm_file(&name).set_len(full + 4096).unwrap();
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::LengthMismatch { .. }),
        "{e}"
    );
    // Shorter than a header: an immediate error, no waiting.
    shm_file(&name).set_len(100).unwrap();
    let t = Instant::now();
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::TooShort { len: 100 }),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    // The creator's own mapping must not be touched past the new end: just drop it.
    drop(seg);
}

#[test]
fn empty_file_never_initialised_is_stale_after_the_timeout() {
    let (name, _c) = scratch("empty");
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap();
    std::fs::set_permissions(format!("/dev/shm{name}"), PermissionsExt::from_mode(0o600)).unwrap();
    drop(f);
    let e = builder(&name)
        .open_timeout(Duration::from_millis(50))
        .open()
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            OpenErrorKind::Stale {
                creator: None,
                len: 0
            }
        ),
        "{e}"
    );
}

#[test]
fn failed_initialiser_removes_the_segment() {
    let name = unique_name("poison");
    let e = builder(&name)
        .create_with(|_| Err("checksum table did not fit"))
        .unwrap_err();
    assert!(matches!(e.kind(), CreateErrorKind::Init(_)), "{e}");
    assert!(e.to_string().contains("checksum table did not fit"), "{e}");
    let e = builder(&name).open().unwrap_err();
    assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}");
}

#[test]
fn too_large_is_refused_before_anything_is_created() {
    let name = unique_name("huge-size");
    let e = builder(&name).size(u64::MAX - 10).create().unwrap_err();
    assert!(matches!(e.kind(), CreateErrorKind::TooLarge { .. }), "{e}");
    assert!(matches!(
        builder(&name).open().unwrap_err().kind(),
        OpenErrorKind::NotFound
    ));
}

#[test]
fn symlink_is_refused() {
    let name = unique_name("link");
    let target = unique_name("link-target");
    let _c = Cleanup(name.clone());
    let _t = Cleanup(target.clone());
    let _seg = builder(&target).create().unwrap();
    std::os::unix::fs::symlink(format!("/dev/shm{target}"), format!("/dev/shm{name}")).unwrap();
    let e = builder(&name).open().unwrap_err();
    assert!(matches!(e.kind(), OpenErrorKind::Symlink), "{e}");
}

// ---------------------------------------------------------------- creator killed mid-init

#[test]
fn creator_killed_before_ready_is_stale() {
    let (name, _c) = scratch("stuck");
    let mut creator = Running::spawn(child("child_stuck_in_init", &name));
    creator.expect_line("initializing", Duration::from_secs(30));
    let pid = creator.child.id();

    // Alive but slow: a timeout that names the creator.
    let e = builder(&name)
        .open_timeout(Duration::from_millis(100))
        .open()
        .unwrap_err();
    match e.kind() {
        OpenErrorKind::InitTimeout {
            creator: Some(c), ..
        } => assert_eq!(c.pid, pid),
        _ => panic!("expected InitTimeout, got {e}"),
    }
    assert!(matches!(
        shm_core::remove_stale(&name).unwrap_err().kind(),
        RemoveErrorKind::NotStale { .. }
    ));

    creator.kill9();
    // Dead: stale at once (no wait for the timeout), naming the dead creator.
    let t = Instant::now();
    let e = builder(&name)
        .open_timeout(Duration::from_secs(10))
        .open()
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    match e.kind() {
        OpenErrorKind::Stale {
            creator: Some(c), ..
        } => assert_eq!(c.pid, pid),
        _ => panic!("expected Stale, got {e}"),
    }
    assert!(e.to_string().contains(&format!("pid {pid}")), "{e}");
    // open_or_create does not replace a stale segment either.
    assert!(matches!(
        builder(&name).open_or_create(),
        Err(OpenOrCreateError::Open(ref o)) if matches!(o.kind(), OpenErrorKind::Stale { .. })
    ));

    let listed = shm_core::list().unwrap();
    let mine = listed.iter().find(|i| i.name == name).expect("listed");
    assert!(stale(mine));
    assert_eq!(mine.creator_alive(), Some(false));

    // One call removes it, and the name works again.
    let info = remove_garbage(&name);
    assert_eq!(info.header.unwrap().state, SegmentState::Initializing);
    let again = builder(&name).create().unwrap();
    assert!(again.is_creator());
}

/// A creator dies after sizing the file and before marking it INITIALIZING: either the
/// header is all zeros, or its fields are written and `state` is still 0 (UNWRITTEN). Such a
/// file carries no live creator to check, so it is stale only once it is older than the
/// open timeout (a creator may still be on its way before that).
#[test]
fn creator_dead_between_sizing_and_initializing_is_stale_once_old() {
    for fields_written in [false, true] {
        let (name, _c) = scratch("sized");
        if fields_written {
            drop(builder(&name).unlink_on_drop(false).create().unwrap());
            poke(&name, 16, &0u32.to_ne_bytes()); // state = UNWRITTEN
        } else {
            let f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(format!("/dev/shm{name}"))
                .unwrap();
            std::fs::set_permissions(format!("/dev/shm{name}"), PermissionsExt::from_mode(0o600))
                .unwrap();
            f.set_len(4096).unwrap();
        }
        let what = if fields_written {
            "fields written"
        } else {
            "zeros"
        };
        let t = Instant::now();
        let e = builder(&name)
            .open_timeout(Duration::from_millis(50))
            .open()
            .unwrap_err();
        assert!(
            matches!(e.kind(), OpenErrorKind::Stale { creator: None, .. }),
            "{what}: {e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            t.elapsed()
        );
        // Young: not removed, as its creator may still be writing it.
        assert!(
            matches!(
                shm_core::remove_stale(&name).unwrap_err().kind(),
                RemoveErrorKind::NotStale { .. }
            ),
            "{what}"
        );
        // Young to the nanosecond: a modification time just before a second boundary is
        // not taken for a whole second older (ages once came from whole seconds).
        let now = loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            if now.subsec_millis() < 200 {
                break now;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let just_before = Duration::from_secs(now.as_secs() - 1) + Duration::from_millis(999);
        shm_file(&name)
            .set_modified(std::time::UNIX_EPOCH + just_before)
            .unwrap();
        assert!(!shm_core::inspect(&name).unwrap().is_stale(), "{what}");
        // Unchanged for longer than the open timeout: garbage. Removed, and the name works.
        shm_file(&name)
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        assert!(stale_soon(&name), "{what}");
        remove_garbage(&name);
        let again = builder(&name).create().unwrap();
        assert!(again.is_creator(), "{what}");
    }
}

/// The creator is SIGKILLed after READY while another process maps the segment: the
/// contents stay valid, the name stays, and it is not stale while mapped.
#[test]
fn a_mapper_outlives_a_creator_killed_after_ready() {
    let (name, _c) = scratch("killed-creator");
    let (_, _, data) = layout();
    let mut creator = Running::spawn(child("child_create_and_hold", &name));
    creator.expect_line("ready", Duration::from_secs(30));
    let seg = builder(&name).open().unwrap();
    creator.kill9();
    let words = seg.region(data).unwrap();
    assert_eq!(words[0].load(Ordering::Acquire), 0xc0ffee);
    words[1].store(7, Ordering::Release);
    let info = shm_core::inspect(&name).unwrap();
    assert_eq!(info.creator_alive(), Some(false));
    assert!(!info.is_stale(), "a mapped segment is never stale");
    assert!(matches!(
        shm_core::remove_stale(&name).unwrap_err().kind(),
        RemoveErrorKind::InUse { .. }
    ));
    // A second mapper sees the same contents.
    let again = builder(&name).open().unwrap();
    assert_eq!(again.region(data).unwrap()[1].load(Ordering::Acquire), 7);
    drop(again);
    drop(seg);
    // Nobody maps it now: stale, removed, and the name can be created again.
    assert!(stale_soon(&name));
    remove_garbage(&name);
    assert!(builder(&name).create().unwrap().is_creator());
}

#[test]
#[ignore = "child process of a_mapper_outlives_a_creator_killed_after_ready"]
fn child_create_and_hold() {
    let Some(name) = child_name() else { return };
    let (_, _, data) = layout();
    let _seg = builder(&name)
        .create_with(|s| {
            s.region(data)?[0].store(0xc0ffee, Ordering::Relaxed);
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap();
    println!("CHILD:ready");
    std::thread::sleep(Duration::from_secs(60)); // killed by the parent
}

#[test]
#[ignore = "child process of creator_killed_before_ready_is_stale"]
fn child_stuck_in_init() {
    let Some(name) = child_name() else { return };
    let _seg = builder(&name).create_with(|_| {
        println!("CHILD:initializing");
        // Never finishes: the parent kills us with SIGKILL. Bounded all the same.
        std::thread::sleep(Duration::from_secs(120));
        Ok::<_, std::convert::Infallible>(())
    });
}

// ---------------------------------------------------------------- permissions

#[test]
fn mode_is_exact_whatever_the_umask() {
    let (name, _c) = scratch("umask");
    let _d = Cleanup(format!("{name}-640"));
    // umask is process-wide: change it in a child, not in this multi-threaded test process.
    run_child(child("child_umask", &name));
    let mode = |n: &str| {
        std::fs::metadata(format!("/dev/shm{n}"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&name), 0o600);
    assert_eq!(mode(&format!("{name}-640")), 0o640);
}

#[test]
#[ignore = "child process of mode_is_exact_whatever_the_umask"]
fn child_umask() {
    let Some(name) = child_name() else { return };
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
    builder(&name).unlink_on_drop(false).create().unwrap();
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    builder(&format!("{name}-640"))
        .mode(0o640)
        .unlink_on_drop(false)
        .create()
        .unwrap();
}

#[test]
fn permission_denied_and_foreign_owner_seen_by_an_unprivileged_child() {
    if !is_root() {
        // Without root we cannot make a second uid; the errno mapping is still covered by
        // running as whoever we are against a 0000 segment.
        let (name, _c) = scratch("perm");
        let _seg = builder(&name).mode(0).create().unwrap();
        let e = builder(&name).open().unwrap_err();
        assert!(
            matches!(e.kind(), OpenErrorKind::PermissionDenied(_)),
            "{e}"
        );
        return;
    }
    let closed = unique_name("perm-closed");
    let open = unique_name("perm-open");
    let _c1 = Cleanup(closed.clone());
    let _c2 = Cleanup(open.clone());
    let _a = builder(&closed).mode(0).create().unwrap();
    let _b = builder(&open).mode(0o666).create().unwrap();
    let mut cmd = child("child_unprivileged", &closed);
    cmd.env("SHMRING_OPEN_NAME", &open);
    let lines = run_child(cmd);
    assert_eq!(
        lines,
        vec![
            "closed=PermissionDenied errno=13".to_owned(),
            "open=ForeignOwner owner=0 us=65534".to_owned(),
            "allowed=ok".to_owned(),
            "mlock=refused RLIMIT_MEMLOCK".to_owned(),
        ]
    );
}

#[test]
#[ignore = "child process of permission_denied_and_foreign_owner_seen_by_an_unprivileged_child"]
fn child_unprivileged() {
    let Some(closed) = child_name() else { return };
    let open = std::env::var("SHMRING_OPEN_NAME").unwrap();
    become_nobody();
    let e = builder(&closed).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::PermissionDenied(_)),
        "{e}"
    );
    println!(
        "CHILD:closed=PermissionDenied errno={}",
        e.raw_os_error().unwrap()
    );
    let e = builder(&open).open().unwrap_err();
    match e.kind() {
        OpenErrorKind::ForeignOwner { owner_uid, our_uid } => {
            println!("CHILD:open=ForeignOwner owner={owner_uid} us={our_uid}")
        }
        _ => panic!("expected ForeignOwner, got {e}"),
    }
    builder(&open).allow_foreign_owner(true).open().unwrap();
    println!("CHILD:allowed=ok");
    // Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at 0, mlock must fail with an error that
    // names the limit.
    let rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) }, 0);
    let mine = format!("{closed}-nobody");
    let e = builder(&mine).mlock(true).create().unwrap_err();
    assert!(matches!(e.kind(), CreateErrorKind::Mlock(_)), "{e}");
    assert!(e.to_string().contains("RLIMIT_MEMLOCK is 0 bytes"), "{e}");
    // The failed create left nothing behind.
    assert!(matches!(
        builder(&mine).open().unwrap_err().kind(),
        OpenErrorKind::NotFound
    ));
    println!("CHILD:mlock=refused RLIMIT_MEMLOCK");
}

// ---------------------------------------------------------------- options

#[test]
fn prefault_and_mlock_work_with_headroom() {
    let (name, _c) = scratch("mlock");
    let vm_locked = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmLck:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    // 16 KiB (plus the header page) stays inside even a 64 KiB RLIMIT_MEMLOCK.
    let before = vm_locked();
    let seg = builder(&name).size(16 << 10).mlock(true).create().unwrap();
    assert!(seg.data_len() >= 16 << 10);
    let after = vm_locked();
    assert!(
        after >= before + seg.len() as u64 / 1024,
        "VmLck went from {before} kB to {after} kB for a {}-byte segment",
        seg.len()
    );
    let opened = builder(&name).mlock(true).prefault(true).open().unwrap();
    assert_eq!(opened.len(), seg.len());
}

#[test]
fn huge_pages_succeed_or_say_why() {
    let (name, _c) = scratch("huge");
    let knob = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let shm_huge = mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/dev/shm")
            && ["huge=always", "huge=within_size", "huge=advise"]
                .iter()
                .any(|o| l.contains(o))
    });
    let expect_ok = knob.contains("[force]") || (shm_huge && !knob.contains("[deny]"));
    match builder(&name).huge_pages(true).create() {
        Ok(seg) => {
            assert!(
                expect_ok,
                "huge pages worked though {knob:?} / {mounts:?} say no"
            );
            assert_eq!(seg.len() % (2 << 20), 0);
        }
        Err(e) => {
            assert!(!expect_ok, "{e}");
            assert!(matches!(e.kind(), CreateErrorKind::HugePages(_)), "{e}");
            assert!(
                e.to_string().contains("/dev/shm") || e.to_string().contains("deny"),
                "{e}"
            );
            // Nothing was created.
            assert!(matches!(
                builder(&name).open().unwrap_err().kind(),
                OpenErrorKind::NotFound
            ));
        }
    }
}

// ---------------------------------------------------------------- drop semantics

#[test]
fn creator_unlinks_on_drop_openers_do_not() {
    let (name, _c) = scratch("drop");
    let (_, _, data) = layout();
    let creator = builder(&name).create().unwrap();
    let opener = builder(&name).open().unwrap();
    drop(builder(&name).open().unwrap());
    assert!(
        builder(&name).open().is_ok(),
        "an opener's drop keeps the name"
    );
    drop(creator);
    assert!(matches!(
        builder(&name).open().unwrap_err().kind(),
        OpenErrorKind::NotFound
    ));
    // The opener's mapping outlives the name.
    opener.region(data).unwrap()[3].store(7, Ordering::Relaxed);
    assert_eq!(opener.region(data).unwrap()[3].load(Ordering::Relaxed), 7);
}

#[test]
fn segment_can_outlive_its_creator() {
    let (name, _c) = scratch("persist");
    // The creator is another process, which exits after creating (keeping the name).
    run_child(child("child_create_and_exit", &name));
    let info = shm_core::inspect(&name).unwrap();
    assert_eq!(info.creator_alive(), Some(false));
    // A complete segment whose creator exited still opens...
    let mut seg = builder(&name).open().unwrap();
    assert!(!seg.is_creator());
    // ...and while we map it, it is not stale: `rm --stale` must leave it alone.
    assert!(!shm_core::inspect(&name).unwrap().is_stale());
    assert!(matches!(
        shm_core::remove_stale(&name).unwrap_err().kind(),
        RemoveErrorKind::InUse { pid: None }
    ));
    drop(seg);
    // Nobody maps it and its creator is dead: now it is garbage.
    assert!(stale_soon(&name));
    remove_garbage(&name);
    assert!(matches!(
        builder(&name).open().unwrap_err().kind(),
        OpenErrorKind::NotFound
    ));
    // An opener may take over removal explicitly.
    let creator = builder(&name).create().unwrap();
    seg = builder(&name).unlink_on_drop(true).open().unwrap();
    drop(seg);
    assert!(builder(&name).open().is_err());
    drop(creator);
}

#[test]
#[ignore = "child process of segment_can_outlive_its_creator"]
fn child_create_and_exit() {
    let Some(name) = child_name() else { return };
    builder(&name).unlink_on_drop(false).create().unwrap();
}

#[test]
fn fifo_at_the_name_is_refused_without_blocking() {
    let (name, _c) = scratch("fifo");
    let path = std::ffi::CString::new(format!("/dev/shm{name}")).unwrap();
    // SAFETY: `path` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    let e = builder(&name).open().unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::NotRegularFile { .. }),
        "{e}"
    );
    let e = shm_core::inspect(&name).unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::NotRegularFile { .. }),
        "{e}"
    );
    assert!(shm_core::remove_stale(&name).is_err());
    assert!(!shm_core::list().unwrap().iter().any(|i| i.name == name));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn dropping_an_old_creator_never_removes_a_successor() {
    let (name, _c) = scratch("succ");
    let old = builder(&name).create().unwrap();
    shm_core::remove(&name).unwrap();
    let new = builder(&name).create().unwrap();
    drop(old);
    assert!(builder(&name).open().is_ok(), "the successor survives");
    drop(new);
}

#[test]
fn inspect_reads_the_header_without_joining() {
    let (name, _c) = scratch("inspect");
    let seg = builder(&name).kind(Kind::Sync).create().unwrap();
    let info = shm_core::inspect(&name).unwrap();
    let h = info.header.unwrap();
    assert_eq!(h.kind(), Some(Kind::Sync));
    assert_eq!(h.state, SegmentState::Ready);
    assert_eq!(h.fingerprint, FP);
    assert_eq!(h.creator.pid, std::process::id());
    assert_eq!(info.file_len, seg.len() as u64);
    assert_eq!(info.mode, 0o600);
    assert_eq!(info.creator_alive(), Some(true));
    assert!(!info.is_stale());
    assert!(shm_core::list().unwrap().iter().any(|i| i.name == name));
    // Our creator is alive, so remove_stale refuses.
    assert!(matches!(
        shm_core::remove_stale(&name).unwrap_err().kind(),
        RemoveErrorKind::NotStale { .. }
    ));
}

#[test]
fn regions_are_bounds_checked() {
    use shm_core::RegionError;
    let (name, _c) = scratch("regions");
    let seg = builder(&name).create().unwrap();
    let len = seg.len() as u64;
    assert!(seg
        .region(Region::<AtomicU64>::from_raw(len - 8, 1))
        .is_ok());
    assert!(matches!(
        seg.region(Region::<AtomicU64>::from_raw(len, 1)),
        Err(RegionError::OutOfBounds { .. })
    ));
    assert!(matches!(
        seg.region(Region::<AtomicU64>::from_raw(128, u64::MAX / 4)),
        Err(RegionError::OutOfBounds { len: None, .. })
    ));
    assert!(matches!(
        seg.region(Region::<AtomicU64>::from_raw(0, 1)),
        Err(RegionError::OverlapsHeader { offset: 0 })
    ));
    assert!(matches!(
        seg.region(Region::<AtomicU64>::from_raw(129, 1)),
        Err(RegionError::Misaligned {
            offset: 129,
            align: 8
        })
    ));
    assert!(matches!(
        seg.get(Region::<AtomicU64>::from_raw(128, 0)),
        Err(RegionError::OutOfBounds { len: Some(0), .. })
    ));
    assert!(matches!(
        seg.region_ptr(Region::<u64>::from_raw(len - 4, 1)),
        Err(RegionError::Misaligned { .. })
    ));
    assert!(matches!(
        seg.region_ptr(Region::<u64>::from_raw(len, 1)),
        Err(RegionError::OutOfBounds { .. })
    ));
}

/// Every duration a user passes saturates: a huge open timeout means "wait as long as it
/// takes", never an `Instant` overflow panic (issue 12, defect 9).
#[test]
fn a_huge_open_timeout_saturates_instead_of_panicking() {
    let (name, _c) = scratch("huge-timeout");
    let _seg = builder(&name).create().unwrap();
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let seg = builder(&name).open_timeout(timeout).open().unwrap();
        assert_eq!(seg.header().state, SegmentState::Ready);
        let e = builder(&unique_name("huge-missing"))
            .open_timeout(timeout)
            .open()
            .unwrap_err();
        assert!(matches!(e.kind(), OpenErrorKind::NotFound), "{e}");
        let raced = builder(&name)
            .open_timeout(timeout)
            .open_or_create()
            .unwrap();
        assert!(!raced.is_creator());
    }
}

/// `remove_stale` on a complete segment whose creator died: never while a live process maps
/// it, whatever its name holds (a space made `/proc/*/maps` matching miss the mapper), and
/// whoever the mapper runs as (issue 12, defect 5).
#[test]
fn remove_stale_never_removes_a_segment_a_live_process_maps() {
    let (name, _c) = scratch("stale map 1");
    run_child(child("child_create_and_exit", &name));
    let seg = builder(&name).open().unwrap();
    assert!(!shm_core::inspect(&name).unwrap().is_stale());
    let e = shm_core::remove_stale(&name).unwrap_err();
    assert!(matches!(e.kind(), RemoveErrorKind::InUse { .. }), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(builder(&name).open().is_ok(), "the name is still there");
    drop(seg);
    remove_garbage(&name);
}

/// As above, across users: a segment owned by `nobody`, mapped by a root process, and the
/// removal asked for by `nobody`, who cannot read root's `/proc/<pid>/maps`. Mapped through
/// shm-core, the segment's lock shows it in use; mapped by a raw `mmap` (no lock), the
/// process that cannot be inspected makes the removal refuse, saying why.
#[test]
fn remove_stale_across_users_refuses_what_it_cannot_rule_out() {
    if !is_root() {
        eprintln!("skipped: needs root to make a second uid");
        return;
    }
    let (name, _c) = scratch("stale-foreign");
    let mut make = child("child_foreign_stale", &name);
    make.env("SHMRING_STEP", "create");
    run_child(make);
    let info = shm_core::inspect(&name).unwrap();
    assert_eq!(info.owner_uid, 65534);
    assert_eq!(info.creator_alive(), Some(false));
    // Root maps it through shm-core.
    let seg = builder(&name).allow_foreign_owner(true).open().unwrap();
    let mut rm = child("child_foreign_stale", &name);
    rm.env("SHMRING_STEP", "remove");
    let lines = run_child(rm);
    assert!(lines[0].starts_with("refused: "), "{lines:?}");
    assert!(lines[0].contains("in use"), "{lines:?}");
    drop(seg);
    // Root maps it with a raw mmap: no shm-core lock, only /proc shows it.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of a file we opened; unmapped below, never dereferenced.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(raw, libc::MAP_FAILED);
    drop(f);
    let mut rm = child("child_foreign_stale", &name);
    rm.env("SHMRING_STEP", "remove");
    let lines = run_child(rm);
    assert!(lines[0].starts_with("refused: "), "{lines:?}");
    assert!(lines[0].contains("cannot tell"), "{lines:?}");
    // Root, who can inspect every process, sees the raw mapping too.
    let e = shm_core::remove_stale(&name).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    // SAFETY: the mapping made above, of `len` bytes, never used.
    unsafe { libc::munmap(raw, len) };
    // Unmapped: stale, and nobody (its owner) may remove it, trusting the in-use locks
    // (strictly, root's processes stay uninspectable to nobody).
    let mut rm = child("child_foreign_stale", &name);
    rm.env("SHMRING_STEP", "remove-trusting-locks");
    assert_eq!(run_child(rm), vec!["removed".to_owned()]);
}

#[test]
#[ignore = "child process of remove_stale_across_users_refuses_what_it_cannot_rule_out"]
fn child_foreign_stale() {
    let Some(name) = child_name() else { return };
    become_nobody();
    match std::env::var("SHMRING_STEP").unwrap().as_str() {
        "create" => {
            builder(&name)
                .mode(0o666)
                .unlink_on_drop(false)
                .create()
                .unwrap();
        }
        step => {
            let check = match step {
                "remove" => StaleCheck::Strict,
                _ => StaleCheck::TrustLocks,
            };
            match shm_core::remove_stale_by(&name, check) {
                Ok(_) => println!("CHILD:removed"),
                Err(e) => println!("CHILD:refused: {e}"),
            }
        }
    }
}

/// An open that fails its checks never removes the name, even when asked to unlink on drop
/// (the failed handle is dropped on the way out), and a child that inherited a creator's
/// handle through `fork` and drops it leaves the parent's name alone.
#[test]
fn neither_a_failed_open_nor_a_forked_childs_drop_removes_the_name() {
    let (name, _c) = scratch("keep-name");
    let seg = builder(&name).create().unwrap();
    // A layout far larger than the segment: UnexpectedLength, after the mapping was made.
    let e = builder(&name)
        .size(64 << 20)
        .unlink_on_drop(true)
        .open()
        .unwrap_err();
    assert!(
        matches!(e.kind(), OpenErrorKind::UnexpectedLength { .. }),
        "{e}"
    );
    assert!(
        builder(&name).open().is_ok(),
        "a failed open removed the name"
    );
    // SAFETY: fork has no preconditions; the child only drops its copy of `seg` (munmap,
    // close, an lstat and no unlink) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(seg);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert!(
        builder(&name).open().is_ok(),
        "a forked child's drop removed the name"
    );
    drop(seg);
    assert!(
        builder(&name).open().is_err(),
        "the creator's own drop removes it"
    );
}

#[test]
fn users_names_the_processes_mapping_a_segment_and_remove_unused_refuses_them() {
    let (name, _c) = scratch("users");
    let seg = builder(&name).unlink_on_drop(false).create().unwrap();
    let u = shm_core::users(&name).unwrap();
    assert!(u.locked && u.any(), "{u:?}");
    assert!(u.pids.contains(&std::process::id()), "{u:?}");
    let e = shm_core::remove_unused(&name).unwrap_err();
    match e.kind() {
        shm_core::RemoveErrorKind::InUseBy { pids, locked } => {
            assert!(*locked && pids.contains(&std::process::id()), "{e}")
        }
        _ => panic!("{e}"),
    }
    assert!(e.to_string().contains("it is in use: process"), "{e}");
    assert!(seg.is_current());
    drop(seg);
    // A sibling test's child holds our descriptors (and so the lock) between its fork and
    // its exec: retry that transient case for up to a second.
    let t = std::time::Instant::now();
    loop {
        let u = shm_core::users(&name).unwrap();
        if !u.any() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{u:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    shm_core::remove_unused(&name).unwrap();
    assert!(matches!(
        shm_core::remove_unused(&name).unwrap_err().kind(),
        shm_core::RemoveErrorKind::NotFound
    ));
}

#[test]
fn creates_survive_a_checker_looking_at_the_same_name() {
    let (name, _c) = scratch("checked");
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the checker however the loop below ends (a panic included).
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = shm_core::users(&name);
                let _ = shm_core::remove_unused(&name);
            }
        });
        let _stop = Stop(&stop);
        for round in 0..3000 {
            let seg = builder(&name)
                .create()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(seg.is_current(), "round {round}: removed while in use");
            drop(seg);
        }
    });
}
