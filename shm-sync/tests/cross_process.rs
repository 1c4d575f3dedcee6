//! shm-sync primitives across real processes: mutual exclusion, SIGKILL of a holder with
//! waiters blocked, condvar ping-pong, seqlock tearing, semaphores, events, and garbage in
//! the lock words.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::*;
use shm_core::{Fingerprint, Kind, Layout, Region, Segment, SegmentBuilder};
use shm_sync::{
    Condvar, Event, LockError, Mutex, Protocol, Reset, Semaphore, SeqLock, SeqLockError, Shared,
    SpinLock, WaitError,
};

const ROLE: &str = "SHMRING_ROLE";
/// Longer than any lock or wait here should take: one still blocked after this has hung, and
/// the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(30);

fn role(role: &str, name: &str) -> std::process::Command {
    let mut c = child("child_sync", name);
    c.env(ROLE, role);
    c
}

/// Every child process of this file starts here and dispatches on its role.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_sync() {
    let Some(name) = child_name() else { return };
    match std::env::var(ROLE).unwrap().as_str() {
        "mutex-inc" => mutex_increments(&name),
        "spin-inc" => spin_increments(&name),
        "mutex-hold" => hold_mutex_forever(&name),
        "pi-hold" => hold_holder_forever(&name),
        "spin-hold" => hold_spin_forever(&name),
        "mutex-wait" => wait_for_mutex(&name),
        "spin-wait" => wait_for_spin(&name),
        "mutex-inherit" => inherit_mutex_death(&name),
        "spin-inherit" => inherit_spin_death(&name),
        "cv-sleep" => sleep_on_condvar(&name),
        "sem-sleep" => sleep_on_semaphore(&name),
        "event-sleep" => sleep_on_event(&name),
        "pingpong" => ping_pong(&name, 1),
        "seq-writer" => seq_writer(&name),
        "seq-reader" => seq_reader(&name),
        "sem-worker" => sem_worker(&name),
        "event-echo" => event_echo(&name),
        "pi-queue" => pi_contender(&name, false),
        "pi-spin" => pi_contender(&name, true),
        "no-pi2" => without_lock_pi2(&name),
        "waitv-waker" => waitv_waker(&name),
        other => panic!("unknown role {other}"),
    }
}

// ------------------------------------------------------------ mutual exclusion

const INCREMENTS: u64 = 100_000;

/// A counter that is *not* atomic: only mutual exclusion keeps it exact.
#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Counter {
    value: u64,
    /// Written in two halves, to make torn critical sections visible.
    check: u64,
}

fn mutex_increments(name: &str) {
    let m = Shared::<Mutex<Counter>>::open(name).unwrap();
    for _ in 0..INCREMENTS {
        let mut g = m.lock().unwrap();
        // The previous holder left both halves equal; a second holder inside the critical
        // section at the same time would be caught between the two writes below.
        assert_eq!(g.check, g.value, "two holders at once");
        let v = g.value + 1;
        g.check = v;
        std::hint::black_box(&mut *g);
        g.value = v;
    }
}

fn spin_increments(name: &str) {
    let s = Shared::<SpinLock<Counter>>::open(name).unwrap();
    for _ in 0..INCREMENTS {
        let mut g = s.lock().unwrap();
        assert_eq!(g.check, g.value, "two holders at once");
        let v = g.value + 1;
        g.check = v;
        std::hint::black_box(&mut *g);
        g.value = v;
    }
}

fn exclusion_run(role_name: &str, name: &str) {
    let kids: Vec<_> = (0..4)
        .map(|_| Running::spawn(role(role_name, name)))
        .collect();
    for mut k in kids {
        assert!(
            k.wait_success(Duration::from_secs(120)),
            "{role_name} child failed"
        );
    }
}

#[test]
fn mutex_four_processes_exact_total() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        let (name, _c) = scratch("mutex-x");
        let m = Shared::<Mutex<Counter>>::create(&name, (Counter::zeroed(), protocol)).unwrap();
        assert_eq!(m.protocol(), protocol);
        exclusion_run("mutex-inc", &name);
        assert_eq!(m.lock().unwrap().value, 4 * INCREMENTS, "{protocol:?}");
        assert!(!m.is_locked());
    }
}

#[test]
fn spinlock_four_processes_exact_total() {
    let (name, _c) = scratch("spin-x");
    let s = Shared::<SpinLock<Counter>>::create(&name, Counter::zeroed()).unwrap();
    exclusion_run("spin-inc", &name);
    assert_eq!(s.lock().unwrap().value, 4 * INCREMENTS);
}

// ------------------------------------------------------------ kill -9 the holder

#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Ledger {
    /// Set to 1 by the holder, which then dies "mid-update".
    dirty: u64,
    /// How many waiters got through.
    passed: u64,
    /// How many repairs were made.
    repairs: u64,
}

fn hold_mutex_forever(name: &str) {
    let m = Shared::<Mutex<Ledger>>::open(name).unwrap();
    let mut g = m.lock().unwrap();
    g.dirty = 1;
    println!("CHILD:locked");
    // SAFETY: `gettid` has no preconditions.
    println!("CHILD:tid {}", unsafe { libc::syscall(libc::SYS_gettid) });
    std::thread::sleep(Duration::from_secs(60));
}

/// `hold_mutex_forever` for the PI race's `Mutex<Holder>`. (That test used to open its
/// segment as a `Mutex<Ledger>` here, which the type identity now refuses.)
fn hold_holder_forever(name: &str) {
    let m = Shared::<Mutex<Holder>>::open(name).unwrap();
    let mut g = m.lock().unwrap();
    g.dirty = 1;
    println!("CHILD:locked");
    std::thread::sleep(Duration::from_secs(60));
}

fn hold_spin_forever(name: &str) {
    let s = Shared::<SpinLock<Ledger>>::open(name).unwrap();
    let mut g = s.lock().unwrap();
    g.dirty = 1;
    println!("CHILD:locked");
    std::thread::sleep(Duration::from_secs(60));
}

/// Takes the lock (bounded), repairs if the holder died, and reports when it learnt it.
fn wait_for_mutex(name: &str) {
    let m = Shared::<Mutex<Ledger>>::open(name).unwrap();
    println!("CHILD:waiting");
    match m.lock_timeout(Duration::from_secs(20)) {
        Ok(mut g) => {
            assert_eq!(g.dirty, 0, "a plain guard must see repaired data");
            g.passed += 1;
            println!("CHILD:ok");
        }
        Err(LockError::OwnerDied(mut g)) => {
            let at = mono_ns();
            assert_eq!(g.dirty, 1);
            g.dirty = 0;
            g.repairs += 1;
            g.passed += 1;
            g.mark_consistent();
            println!("CHILD:owner-died {at}");
        }
        Err(e) => panic!("lock failed: {e}"),
    };
}

fn wait_for_spin(name: &str) {
    let s = Shared::<SpinLock<Ledger>>::open(name).unwrap();
    println!("CHILD:waiting");
    match s.lock_timeout(Duration::from_secs(20)) {
        Ok(mut g) => {
            assert_eq!(g.dirty, 0);
            g.passed += 1;
            println!("CHILD:ok");
        }
        Err(LockError::OwnerDied(mut g)) => {
            let at = mono_ns();
            g.dirty = 0;
            g.repairs += 1;
            g.passed += 1;
            g.mark_consistent();
            println!("CHILD:owner-died {at}");
        }
        Err(e) => panic!("lock failed: {e}"),
    };
}

/// Kills the holder with 3 waiters blocked; returns the detection delay in µs.
fn kill_holder(hold: &str, wait: &str, name: &str) -> u64 {
    let mut holder = Running::spawn(role(hold, name));
    holder.expect_line("locked", Duration::from_secs(30));
    let mut waiters: Vec<_> = (0..3).map(|_| Running::spawn(role(wait, name))).collect();
    for w in &mut waiters {
        w.expect_line("waiting", Duration::from_secs(30));
    }
    // Let them block in the lock.
    std::thread::sleep(Duration::from_millis(100));
    let killed_at = mono_ns();
    holder.kill9();
    let mut died = Vec::new();
    let mut ok = 0;
    for w in &mut waiters {
        let line = w.next_line(Duration::from_secs(30));
        if let Some(at) = line.strip_prefix("owner-died ") {
            died.push(at.parse::<u64>().unwrap());
        } else {
            assert_eq!(line, "ok");
            ok += 1;
        }
        assert!(w.wait_success(Duration::from_secs(30)));
    }
    assert_eq!(died.len(), 1, "exactly one waiter learns OwnerDied");
    assert_eq!(ok, 2);
    (died[0].saturating_sub(killed_at)) / 1000
}

#[test]
fn mutex_holder_killed_with_three_waiters() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        let (name, _c) = scratch("mutex-kill");
        let zero = Ledger::zeroed();
        let m = Shared::<Mutex<Ledger>>::create(&name, (zero, protocol)).unwrap();
        let us = kill_holder("mutex-hold", "mutex-wait", &name);
        println!("mutex ({protocol:?}): OwnerDied seen {us} µs after SIGKILL");
        assert!(us < 5_000_000, "{us} µs");
        let g = m.lock_timeout(HANG).unwrap();
        assert_eq!((g.dirty, g.passed, g.repairs), (0, 3, 1));
    }
}

#[test]
fn spinlock_holder_killed_with_three_waiters() {
    let (name, _c) = scratch("spin-kill");
    let s = Shared::<SpinLock<Ledger>>::create(&name, Ledger::zeroed()).unwrap();
    let us = kill_holder("spin-hold", "spin-wait", &name);
    println!("spinlock: OwnerDied seen {us} µs after SIGKILL");
    assert!(us < 5_000_000, "{us} µs");
    let g = s.lock().unwrap();
    assert_eq!((g.dirty, g.passed, g.repairs), (0, 3, 1));
}

/// Who holds the PI mutex of the race below: each holder writes its pid, holds the lock for
/// 30 ms, and checks that nobody overwrote it meanwhile.
#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Holder {
    dirty: u64,
    pid: u64,
    holders: u64,
}

/// Takes the PI mutex (queued in the kernel with `lock`, or spinning on `try_lock`) after
/// its holder is killed, and reports whether it held it alone.
fn pi_contender(name: &str, spin: bool) {
    let m = Shared::<Mutex<Holder>>::open(name).unwrap();
    println!("CHILD:ready");
    let t = Instant::now();
    let mut g = loop {
        let r = if spin {
            m.try_lock()
        } else {
            m.lock_timeout(HANG)
        };
        match r {
            Ok(g) => break g,
            Err(LockError::OwnerDied(mut g)) => {
                g.mark_consistent();
                break g;
            }
            Err(LockError::WouldBlock) if t.elapsed() < HANG => std::hint::spin_loop(),
            Err(e) => panic!("lock failed: {e}"),
        }
    };
    let me = u64::from(std::process::id());
    g.pid = me;
    g.holders += 1;
    std::thread::sleep(Duration::from_millis(30));
    let alone = g.pid == me;
    drop(g);
    println!("CHILD:{}", if alone { "alone" } else { "shared" });
}

/// A PI holder is SIGKILLed while one waiter is queued in the kernel and another process
/// spins on `try_lock`: the kernel hands the lock to the queued waiter, so a `try_lock`
/// that recovered the dead holder's word in user space made two holders at once. Each
/// contender must hold the lock alone (issue 12, defect 2).
#[test]
fn pi_try_lock_never_races_the_kernel_hand_off_of_a_dead_holder() {
    const ROUNDS: usize = 40;
    let mut shared = 0;
    for _ in 0..ROUNDS {
        let (name, _c) = scratch("pi-race");
        let m = Shared::<Mutex<Holder>>::create(
            &name,
            (Holder::zeroed(), Protocol::PriorityInheritance),
        )
        .unwrap();
        let mut holder = Running::spawn(role("pi-hold", &name));
        holder.expect_line("locked", HANG);
        let mut queued = Running::spawn(role("pi-queue", &name));
        queued.expect_line("ready", HANG);
        // Queued in the kernel: the word's FUTEX_WAITERS bit is set.
        until_word(&name, 128, "a PI waiter queued", |w| w & 0x8000_0000 != 0);
        let mut spinner = Running::spawn(role("pi-spin", &name));
        spinner.expect_line("ready", HANG);
        std::thread::sleep(Duration::from_millis(5));
        holder.kill9();
        for c in [&mut queued, &mut spinner] {
            if c.next_line(HANG) == "shared" {
                shared += 1;
            }
            assert!(c.wait_success(HANG));
        }
        let g = m.lock_timeout(HANG).unwrap();
        assert_eq!(g.holders, 2);
    }
    assert_eq!(
        shared, 0,
        "two holders at once in {shared} contenders of {ROUNDS} rounds"
    );
}

/// A raw segment holding one `Mutex<Ledger>`, initialised in place (not through `Shared`).
fn raw_pi_mutex(name: &str) -> (SegmentBuilder, Region<Mutex<Ledger>>) {
    let mut l = Layout::new();
    let m = l.push_aligned::<Mutex<Ledger>>(1, 128).unwrap();
    let b = SegmentBuilder::new(name)
        .fingerprint(Fingerprint::untyped(0x9172))
        .layout(&l);
    (b, m)
}

/// In a process that plays a kernel without `FUTEX_LOCK_PI2` (before Linux 5.14).
fn without_lock_pi2(name: &str) {
    assert!(!shm_sync::pi_supported());
    match std::env::var("SHMRING_STEP").unwrap().as_str() {
        "api" => {
            // Creating a PI mutex is refused, saying why, and leaves nothing behind.
            let new = format!("{name}-new");
            let e = Shared::<Mutex<u64>>::create(&new, (0, Protocol::PriorityInheritance))
                .err()
                .expect("a PI mutex was created without FUTEX_LOCK_PI2");
            assert!(e.to_string().contains("FUTEX_LOCK_PI2"), "{e}");
            assert!(Shared::<Mutex<u64>>::open(&new).is_err());
            // Opening one (made where PI works) is refused too.
            let e = Shared::<Mutex<Ledger>>::open(name)
                .err()
                .expect("a PI mutex was opened without FUTEX_LOCK_PI2");
            assert!(e.to_string().contains("FUTEX_LOCK_PI2"), "{e}");
            // One built by hand runs the normal protocol, which notices a re-lock.
            let m = Mutex::with_protocol(0u64, Protocol::PriorityInheritance);
            assert_eq!(m.protocol(), Protocol::Normal);
            let g = m.lock().unwrap();
            assert!(matches!(
                m.lock_timeout(Duration::from_millis(100)),
                Err(LockError::WouldDeadlock)
            ));
            drop(g);
            println!("CHILD:refused");
        }
        "hold" => {
            let (b, r) = raw_pi_mutex(name);
            let seg = b.open().unwrap();
            let m = seg.get(r).unwrap();
            let mut g = m.lock().unwrap();
            g.dirty = 1;
            println!("CHILD:locked");
            std::thread::sleep(Duration::from_secs(60));
        }
        _ => {
            let (b, r) = raw_pi_mutex(name);
            let seg = b.open().unwrap();
            let m = seg.get(r).unwrap();
            match m.lock_timeout(Duration::from_secs(5)) {
                Err(LockError::OwnerDied(g)) => {
                    assert_eq!(g.dirty, 1);
                    println!("CHILD:owner-died");
                }
                Ok(_) => println!("CHILD:plain guard"),
                Err(e) => println!("CHILD:{e}"),
            };
        }
    }
}

/// A kernel without `FUTEX_LOCK_PI2` (played through the fault-injection switch): a PI
/// mutex is refused at create and open with a clear error, and one initialised in place
/// runs the normal protocol, so a dead holder is noticed and a re-lock is `WouldDeadlock`,
/// where before `lock` could hang (issue 12, defect 8).
#[test]
fn without_lock_pi2_pi_is_refused_or_runs_the_normal_protocol() {
    let (name, _c) = scratch("no-pi2");
    let _m =
        Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), Protocol::PriorityInheritance))
            .unwrap();
    let step = |s: &str, n: &str| {
        let mut c = role("no-pi2", n);
        c.env("SHMRING_FAULT_NO_LOCK_PI2", "1")
            .env("SHMRING_STEP", s);
        c
    };
    assert_eq!(run_child(step("api", &name)), vec!["refused".to_owned()]);
    let raw = unique_name("no-pi2-raw");
    let _r = Cleanup(raw.clone());
    let (b, r) = raw_pi_mutex(&raw);
    let _seg = b
        .create_with(|seg| {
            // SAFETY: inside create_with nobody else can see the segment.
            unsafe {
                seg.get(r)?
                    .init_in_place(Ledger::zeroed(), Protocol::PriorityInheritance)
            };
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap();
    let mut holder = Running::spawn(step("hold", &raw));
    holder.expect_line("locked", HANG);
    holder.kill9();
    assert_eq!(run_child(step("wait", &raw)), vec!["owner-died".to_owned()]);
}

/// A holder (child role `$role`) of the lock `$lock` is SIGKILLed; the next locker gets
/// `OwnerDied` and drops it unrepaired; from then on every lock is `NotRecoverable`.
macro_rules! unrepaired_death_is_not_recoverable {
    ($lock:expr, $role:literal, $name:expr) => {{
        let l = $lock;
        let mut holder = Running::spawn(role($role, $name));
        holder.expect_line("locked", Duration::from_secs(30));
        holder.kill9();
        let g = l
            .lock_timeout(HANG)
            .unwrap_err()
            .into_owner_died()
            .expect("OwnerDied");
        assert_eq!(g.dirty, 1);
        drop(g); // not marked consistent
        assert!(matches!(
            l.lock_timeout(HANG),
            Err(LockError::NotRecoverable)
        ));
        assert!(matches!(l.try_lock(), Err(LockError::NotRecoverable)));
        assert!(l.is_not_recoverable());
    }};
}

#[test]
fn unrepaired_owner_death_makes_the_mutex_not_recoverable() {
    let (name, _c) = scratch("mutex-nr");
    let m = Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), Protocol::Normal)).unwrap();
    unrepaired_death_is_not_recoverable!(m, "mutex-hold", &name);
}

#[test]
fn spinlock_owner_death_left_unrepaired_makes_it_not_recoverable() {
    let (name, _c) = scratch("spin-nr");
    let s = Shared::<SpinLock<Ledger>>::create(&name, Ledger::zeroed()).unwrap();
    unrepaired_death_is_not_recoverable!(s, "spin-hold", &name);
}

/// Locks, expects to inherit a dead holder's lock, and dies holding it *unrepaired*.
fn inherit_mutex_death(name: &str) {
    let m = Shared::<Mutex<Ledger>>::open(name).unwrap();
    let g = m.lock().unwrap_err().into_owner_died().expect("OwnerDied");
    assert_eq!(g.dirty, 1);
    println!("CHILD:inherited");
    std::thread::sleep(Duration::from_secs(60));
    drop(g);
}

fn inherit_spin_death(name: &str) {
    let s = Shared::<SpinLock<Ledger>>::open(name).unwrap();
    let g = s.lock().unwrap_err().into_owner_died().expect("OwnerDied");
    assert_eq!(g.dirty, 1);
    println!("CHILD:inherited");
    std::thread::sleep(Duration::from_secs(60));
    drop(g);
}

/// A holder dies; the next one learns it (OwnerDied) and dies too before repairing: the
/// obligation passes on to the third, which repairs; after that, plain guards.
#[test]
fn owner_death_is_reported_again_until_someone_repairs() {
    for kind in ["mutex", "mutex-pi", "spin"] {
        let (name, _c) = scratch("inherit");
        let (hold, inherit) = if kind == "spin" {
            ("spin-hold", "spin-inherit")
        } else {
            ("mutex-hold", "mutex-inherit")
        };
        // Takes the lock: `Ok(dirty)` for a plain guard; for OwnerDied, repairs when
        // `repair` and says so in the `Err`; any other outcome as its message.
        macro_rules! taker {
            ($shared:expr) => {{
                let l = $shared;
                Box::new(move |repair: bool| match l.lock_timeout(HANG) {
                    Ok(g) => Ok(g.dirty),
                    Err(LockError::OwnerDied(mut g)) if repair => {
                        let d = g.dirty;
                        g.dirty = 0;
                        g.mark_consistent();
                        Err(format!("OwnerDied dirty={d}"))
                    }
                    Err(e) => Err(e.to_string()),
                }) as Box<dyn Fn(bool) -> Result<u64, String>>
            }};
        }
        let lock = |name: &str| {
            if kind == "spin" {
                taker!(Shared::<SpinLock<Ledger>>::open(name).unwrap())
            } else {
                taker!(Shared::<Mutex<Ledger>>::open(name).unwrap())
            }
        };
        let _keep: Box<dyn std::any::Any> = match kind {
            "spin" => {
                Box::new(Shared::<SpinLock<Ledger>>::create(&name, Ledger::zeroed()).unwrap())
            }
            "mutex" => Box::new(
                Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), Protocol::Normal))
                    .unwrap(),
            ),
            _ => Box::new(
                Shared::<Mutex<Ledger>>::create(
                    &name,
                    (Ledger::zeroed(), Protocol::PriorityInheritance),
                )
                .unwrap(),
            ),
        };
        let mut first = Running::spawn(role(hold, &name));
        first.expect_line("locked", Duration::from_secs(30));
        first.kill9();
        let mut second = Running::spawn(role(inherit, &name));
        second.expect_line("inherited", Duration::from_secs(30));
        second.kill9();
        let take = lock(&name);
        assert_eq!(take(true), Err("OwnerDied dirty=1".to_owned()), "{kind}");
        assert_eq!(take(false), Ok(0), "{kind}: repaired, then plain guards");
    }
}

// ------------------------------------------------------------ condvar ping-pong

#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct Turn {
    /// Whose turn: 0 (the parent) or 1 (the child).
    turn: u32,
    /// Completed hand-overs.
    passes: u32,
}

const ROUND_TRIPS: u32 = 100_000;

fn pingpong_layout() -> (Layout, Region<Mutex<Turn>>, Region<Condvar>) {
    let mut l = Layout::new();
    let m = l.push_aligned::<Mutex<Turn>>(1, 128).unwrap();
    let c = l.push_aligned::<Condvar>(1, 128).unwrap();
    (l, m, c)
}

fn pingpong_builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .kind(Kind::Sync)
        .fingerprint(Fingerprint::of::<Turn>(0x9090, 1))
        .layout(&pingpong_layout().0)
}

/// Creates the mutex + condvar segment, the mutex initialised in place.
fn create_pingpong(name: &str) -> Segment {
    let (_, mr, cr) = pingpong_layout();
    pingpong_builder(name)
        .create_with(|s| {
            // SAFETY: inside create_with nobody else can reach the segment.
            unsafe {
                s.get(mr)?.init_in_place(Turn::zeroed(), Protocol::Normal);
            }
            let _ = s.get(cr)?;
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap()
}

/// Plays side `me` for ROUND_TRIPS turns; a wait that times out is a lost wake-up.
fn ping_pong_on(seg: &Segment, me: u32) {
    let (_, mr, cr) = pingpong_layout();
    let (m, cv) = (seg.get(mr).unwrap(), seg.get(cr).unwrap());
    for _ in 0..ROUND_TRIPS {
        let g = m.lock_timeout(HANG).unwrap();
        let (g, timed_out) = cv.wait_timeout_while(g, Duration::from_secs(10), |t| t.turn != me);
        assert!(
            !timed_out,
            "lost wake-up: side {me} waited 10 s for its turn"
        );
        let mut g = g.unwrap();
        g.turn = 1 - me;
        g.passes += 1;
        drop(g);
        cv.notify_all();
    }
}

fn ping_pong(name: &str, me: u32) {
    let seg = pingpong_builder(name).open().unwrap();
    ping_pong_on(&seg, me);
}

#[test]
fn condvar_ping_pong_100k_round_trips_between_processes() {
    let (name, _c) = scratch("cv");
    let (_, mr, _) = pingpong_layout();
    let seg = create_pingpong(&name);
    let mut other = Running::spawn(role("pingpong", &name));
    let t = Instant::now();
    ping_pong_on(&seg, 0);
    assert!(other.wait_success(Duration::from_secs(120)));
    let elapsed = t.elapsed();
    let m = seg.get(mr).unwrap();
    assert_eq!(m.lock().unwrap().passes, 2 * ROUND_TRIPS);
    println!(
        "condvar ping-pong: {ROUND_TRIPS} round trips in {elapsed:?} ({:.1} µs each)",
        elapsed.as_secs_f64() * 1e6 / ROUND_TRIPS as f64
    );
}

#[test]
fn condvar_wait_timeout_returns_on_time() {
    let m = Mutex::new(0u32);
    let cv = Condvar::new();
    for ms in [1u64, 20, 100] {
        let t = Instant::now();
        let (g, timed_out) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(ms));
        let took = t.elapsed();
        assert!(timed_out);
        assert!(g.is_ok());
        assert!(took >= Duration::from_millis(ms), "{took:?} < {ms} ms");
        assert!(took < Duration::from_millis(ms + 1000), "{took:?}");
    }
}

/// Another party holds the mutex across the waiter's deadline: `wait_timeout` and
/// `wait_timeout_while` still hand the guard back (re-locking once the holder lets go), with
/// the timeout as a flag, as std's condvar does (issue 12, defect 3).
#[test]
fn a_condvar_timeout_while_another_holds_the_mutex_still_returns_the_guard() {
    let m = Mutex::new(0u32);
    let cv = Condvar::new();
    let holding = std::sync::Barrier::new(2);
    for use_while in [false, true] {
        std::thread::scope(|s| {
            let g = m.lock().unwrap();
            s.spawn(|| {
                holding.wait(); // the waiter is asleep on the condvar, the mutex free
                std::thread::sleep(Duration::from_millis(20));
                let mut g = m.lock().unwrap();
                // Hold it well past the waiter's 50 ms deadline.
                std::thread::sleep(Duration::from_millis(300));
                *g += 1;
            });
            // Wake the helper only once we sleep: it waits for the barrier, we pass it
            // from the condition closure, which runs before the first sleep.
            let mut first = true;
            let t = Instant::now();
            let (g, timed_out) = if use_while {
                cv.wait_timeout_while(g, Duration::from_millis(50), |_| {
                    if first {
                        first = false;
                        holding.wait();
                    }
                    true
                })
            } else {
                holding.wait();
                cv.wait_timeout(g, Duration::from_millis(50))
            };
            let g = g.unwrap_or_else(|e| panic!("no guard back (while: {use_while}): {e}"));
            assert!(timed_out, "while: {use_while}");
            assert_eq!(*g, u32::from(use_while) + 1, "re-locked after the holder");
            assert!(
                t.elapsed() >= Duration::from_millis(300),
                "{:?}",
                t.elapsed()
            );
        });
    }
}

// ------------------------------------------------------------ seqlock

/// 64 bytes whose fields must always be equal: any difference is a torn read.
type Block = [u64; 8];
const SEQ_SECONDS: u64 = 3;

fn seq_writer(name: &str) {
    let s = Shared::<SeqLock<Block>>::open(name).unwrap();
    let end = Instant::now() + Duration::from_secs(SEQ_SECONDS);
    let mut i = 1u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            s.write([i; 8]).unwrap();
            i += 1;
        }
    }
    println!("CHILD:writes {i}");
}

fn seq_reader(name: &str) {
    let s = Shared::<SeqLock<Block>>::open(name).unwrap();
    let end = Instant::now() + Duration::from_secs(SEQ_SECONDS);
    let (mut reads, mut distinct, mut last) = (0u64, 0u64, u64::MAX);
    while Instant::now() < end {
        let v = s.read_timeout(Duration::from_secs(5)).unwrap();
        assert!(v.iter().all(|&x| x == v[0]), "torn read: {v:?}");
        assert!(
            last == u64::MAX || v[0] >= last,
            "went backwards: {last} -> {}",
            v[0]
        );
        if v[0] != last {
            distinct += 1;
            last = v[0];
        }
        reads += 1;
    }
    println!("CHILD:reads {reads} distinct {distinct}");
}

#[test]
fn seqlock_readers_never_see_a_torn_value() {
    let (name, _c) = scratch("seq");
    let _s = Shared::<SeqLock<Block>>::create(&name, [0; 8]).unwrap();
    let mut writer = Running::spawn(role("seq-writer", &name));
    let mut readers: Vec<_> = (0..2)
        .map(|_| Running::spawn(role("seq-reader", &name)))
        .collect();
    let w = writer.next_line(Duration::from_secs(60));
    for r in &mut readers {
        let line = r.next_line(Duration::from_secs(60));
        let distinct: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(distinct > 1, "the reader saw the value change: {line}");
        println!("seqlock reader: {line}");
        assert!(r.wait_success(Duration::from_secs(30)));
    }
    println!("seqlock writer: {w}");
    assert!(writer.wait_success(Duration::from_secs(30)));
}

#[test]
fn seqlock_reports_a_writer_that_died_mid_update() {
    let (name, _c) = scratch("seq-dead");
    let s = Shared::<SeqLock<Block>>::create(&name, [7; 8]).unwrap();
    assert_eq!(s.read().unwrap(), [7; 8]);
    // Forge "a writer died mid-update": seq odd (offset 0 of the primitive) and the writer
    // spinlock held by a thread id that cannot exist.
    let base = 128u64;
    poke(&name, base, &1u64.to_ne_bytes());
    poke(
        &name,
        base + 16,
        &((0x3fff_fff0u64 << 32) | 1).to_ne_bytes(),
    );
    assert_eq!(s.read(), Err(SeqLockError::WriterDied));
    assert_eq!(s.try_read(), None);
    // The next write replaces the dead writer and makes the value consistent again.
    s.write([9; 8]).unwrap();
    assert_eq!(s.read().unwrap(), [9; 8]);
}

// ------------------------------------------------------------ futex_waitv

fn waitv_layout() -> (Layout, Region<AtomicU32>) {
    let mut l = Layout::new();
    let words = l.push_aligned::<AtomicU32>(4, 128).unwrap();
    (l, words)
}

fn waitv_builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .kind(Kind::Sync)
        .fingerprint(Fingerprint::untyped(0xfa17))
        .layout(&waitv_layout().0)
}

/// Bumps word 2 and wakes it (as a ring's waker bumps an epoch), 100 ms after it is ready.
fn waitv_waker(name: &str) {
    let seg = waitv_builder(name).open().unwrap();
    let words = seg.region(waitv_layout().1).unwrap();
    println!("CHILD:ready");
    std::thread::sleep(Duration::from_millis(100));
    words[2].fetch_add(1, Ordering::Release);
    shm_sync::futex::wake(&words[2], 1);
}

/// `futex::wait_any` sleeps on four words at once and is woken by another process's wake
/// of one of them; it says which. A word that already changed: `ValueChanged` at once; none
/// woken: `TimedOut` after about the timeout.
#[test]
fn wait_any_sleeps_on_several_words_and_a_wake_of_any_from_another_process_ends_it() {
    use shm_sync::futex::{wait_any, WaitAnyOutcome};
    let (name, _c) = scratch("waitv");
    let seg = waitv_builder(&name).create().unwrap();
    let words = seg.region(waitv_layout().1).unwrap();
    let set: Vec<(&AtomicU32, u32)> = words.iter().map(|w| (w, 0)).collect();
    let t = Instant::now();
    let r = wait_any(&set, Some(Duration::from_millis(30)));
    if r == WaitAnyOutcome::Unsupported {
        println!("futex_waitv is not available here: nothing more to check");
        return;
    }
    assert_eq!(r, WaitAnyOutcome::TimedOut);
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "{:?}",
        t.elapsed()
    );
    words[1].store(5, Ordering::Relaxed);
    assert_eq!(wait_any(&set, Some(HANG)), WaitAnyOutcome::ValueChanged);
    words[1].store(0, Ordering::Relaxed);
    let mut kid = Running::spawn(role("waitv-waker", &name));
    kid.expect_line("ready", HANG);
    let t = Instant::now();
    loop {
        match wait_any(&set, Some(HANG)) {
            WaitAnyOutcome::Woken(i) => {
                assert_eq!(i, 2, "woken on the wrong word");
                break;
            }
            // Bumped before we slept: as good as a wake.
            WaitAnyOutcome::ValueChanged if words[2].load(Ordering::Acquire) == 1 => break,
            WaitAnyOutcome::Interrupted => continue,
            other => panic!("{other:?} after {:?}", t.elapsed()),
        }
    }
    assert_eq!(words[2].load(Ordering::Acquire), 1);
    assert!(kid.wait_success(HANG));
    println!(
        "woken by the other process {:?} after it was ready (it waits 100 ms)",
        t.elapsed()
    );
}

// ------------------------------------------------------------ semaphore and event

fn sem_layout() -> (Layout, Region<Semaphore>, Region<AtomicU32>) {
    let mut l = Layout::new();
    let s = l.push_aligned::<Semaphore>(1, 128).unwrap();
    let inside = l.push_aligned::<AtomicU32>(2, 128).unwrap();
    (l, s, inside)
}

fn sem_builder(name: &str) -> SegmentBuilder {
    SegmentBuilder::new(name)
        .kind(Kind::Sync)
        .fingerprint(Fingerprint::untyped(0x5e3a))
        .layout(&sem_layout().0)
}

const SEM_PERMITS: u32 = 2;
const SEM_ROUNDS: u32 = 20_000;

fn sem_worker(name: &str) {
    let seg = sem_builder(name).open().unwrap();
    let (_, sr, ir) = sem_layout();
    let sem = seg.get(sr).unwrap();
    let words = seg.region(ir).unwrap();
    let (inside, max_seen) = (&words[0], &words[1]);
    for _ in 0..SEM_ROUNDS {
        sem.acquire_timeout(Duration::from_secs(20)).unwrap();
        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
        max_seen.fetch_max(now, Ordering::SeqCst);
        assert!(now <= SEM_PERMITS, "{now} holders of {SEM_PERMITS} permits");
        inside.fetch_sub(1, Ordering::SeqCst);
        sem.release(1).unwrap();
    }
}

#[test]
fn semaphore_bounds_holders_across_four_processes() {
    let (name, _c) = scratch("sem");
    let (_, sr, ir) = sem_layout();
    let seg = sem_builder(&name)
        .create_with(|s| s.get(sr).map(|sem| sem.release(SEM_PERMITS).unwrap()))
        .unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| Running::spawn(role("sem-worker", &name)))
        .collect();
    for mut k in kids {
        assert!(k.wait_success(Duration::from_secs(120)));
    }
    let sem = seg.get(sr).unwrap();
    assert_eq!(sem.available(), SEM_PERMITS, "no permit lost or created");
    let words = seg.region(ir).unwrap();
    assert_eq!(words[0].load(Ordering::SeqCst), 0);
    // Never more holders than permits (each worker also asserts it on every entry).
    assert!((1..=SEM_PERMITS).contains(&words[1].load(Ordering::SeqCst)));
}

#[test]
fn semaphore_timeouts_and_overflow() {
    let s = Semaphore::new(0);
    assert_eq!(s.try_acquire(), Err(WaitError::WouldBlock));
    let t = Instant::now();
    assert_eq!(
        s.acquire_timeout(Duration::from_millis(30)),
        Err(WaitError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
    s.release(Semaphore::MAX).unwrap();
    let e = s.release(1).unwrap_err();
    assert_eq!(e.count, Semaphore::MAX);
    assert!(e.to_string().contains("past"));
    assert_eq!(s.available(), Semaphore::MAX);
}

fn event_echo(name: &str) {
    let seg = SegmentBuilder::new(name)
        .kind(Kind::Sync)
        .fingerprint(Fingerprint::untyped(0xe7))
        .layout(&event_layout().0)
        .open()
        .unwrap();
    let (_, ping, pong) = event_layout();
    let (ping, pong) = (seg.get(ping).unwrap(), seg.get(pong).unwrap());
    for _ in 0..1000 {
        ping.wait_timeout(Duration::from_secs(10)).unwrap();
        pong.set();
    }
}

fn event_layout() -> (Layout, Region<Event>, Region<Event>) {
    let mut l = Layout::new();
    let a = l.push_aligned::<Event>(1, 128).unwrap();
    let b = l.push_aligned::<Event>(1, 128).unwrap();
    (l, a, b)
}

#[test]
fn auto_reset_events_ping_pong_between_processes() {
    let (name, _c) = scratch("event");
    let (l, pr, qr) = event_layout();
    let seg = SegmentBuilder::new(&name)
        .kind(Kind::Sync)
        .fingerprint(Fingerprint::untyped(0xe7))
        .layout(&l)
        .create_with(|s| {
            // SAFETY: inside create_with nobody else can reach the segment.
            unsafe {
                s.get(pr)?.init_in_place(Reset::Auto);
                s.get(qr)?.init_in_place(Reset::Auto);
            }
            Ok::<_, shm_core::RegionError>(())
        })
        .unwrap();
    let (ping, pong) = (seg.get(pr).unwrap(), seg.get(qr).unwrap());
    let mut echo = Running::spawn(role("event-echo", &name));
    for _ in 0..1000 {
        ping.set();
        pong.wait_timeout(Duration::from_secs(10)).unwrap();
    }
    assert!(echo.wait_success(Duration::from_secs(30)));
    // Auto reset: consumed.
    assert!(!pong.try_wait());
    let manual = Event::new(Reset::Manual);
    manual.set();
    assert!(manual.try_wait() && manual.try_wait(), "manual stays set");
    manual.reset();
    assert_eq!(
        manual.wait_timeout(Duration::from_millis(5)),
        Err(WaitError::Timeout)
    );
}

// ------------------------------------------------------------ garbage in lock words

#[test]
fn garbage_in_the_mutex_word_never_hangs() {
    let (name, _c) = scratch("garbage-m");
    let m = Shared::<Mutex<u64>>::create(&name, (5, Protocol::Normal)).unwrap();
    let word_at = 128;
    // A live "holder" (pid 1 always runs): lock_timeout returns Timeout on time.
    poke(&name, word_at, &1u32.to_ne_bytes());
    let t = Instant::now();
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(100)),
        Err(LockError::Timeout)
    ));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A holder that cannot exist (tid above PID_MAX_LIMIT), with the waiters bit: OwnerDied.
    poke(&name, word_at, &0xbfff_fff7u32.to_ne_bytes());
    let mut g = m
        .lock_timeout(Duration::from_secs(5))
        .unwrap_err()
        .into_owner_died()
        .unwrap();
    assert_eq!(*g, 5);
    g.mark_consistent();
    drop(g);
    assert_eq!(*m.lock().unwrap(), 5);
    // A state word no shmring writes: not recoverable, at once.
    poke(&name, word_at + 4, &0xdead_beefu32.to_ne_bytes());
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(100)),
        Err(LockError::NotRecoverable)
    ));
}

/// A PI mutex whose word names this very thread's tid without its record: a dead holder
/// whose tid the calling thread now reuses. The kernel calls that a self-deadlock
/// (`EDEADLK`), so the word is freed through the kernel (`FUTEX_UNLOCK_PI`, which refuses
/// while it hands a dead holder's lock to a queued waiter), never in user space, and the
/// locker gets `OwnerDied`; `try_lock` does the same over two calls.
#[test]
fn a_pi_word_naming_our_reused_tid_is_freed_by_the_kernel() {
    if !shm_sync::pi_supported() {
        eprintln!("skipped: this kernel has no FUTEX_LOCK_PI2");
        return;
    }
    let (name, _c) = scratch("pi-reused-tid");
    let m = Shared::<Mutex<u64>>::create(&name, (5, Protocol::PriorityInheritance)).unwrap();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let forge = || {
        poke(&name, 128, &tid.to_ne_bytes());
        // A record naming our tid with a start time that is not ours.
        poke(
            &name,
            128 + 16,
            &((u64::from(tid) << 32) | 0x7fff_fff1).to_ne_bytes(),
        );
    };
    forge();
    let mut g = m.lock_timeout(HANG).unwrap_err().into_owner_died().unwrap();
    assert_eq!(*g, 5);
    g.mark_consistent();
    drop(g);
    forge();
    let t = Instant::now();
    let g = loop {
        match m.try_lock() {
            Err(LockError::OwnerDied(g)) => break g,
            Err(LockError::WouldBlock) if t.elapsed() < HANG => {}
            other => panic!("{:?}", other.map(drop)),
        }
    };
    drop(g);
}

#[test]
fn garbage_in_the_spinlock_word_never_hangs() {
    let (name, _c) = scratch("garbage-s");
    let s = Shared::<SpinLock<u64>>::create(&name, 5).unwrap();
    // pid 1 with a start time it does not have: a dead holder.
    poke(&name, 128, &((1u64 << 32) | 0xffff_fffe).to_ne_bytes());
    let mut g = s
        .lock_timeout(Duration::from_secs(5))
        .unwrap_err()
        .into_owner_died()
        .unwrap();
    g.mark_consistent();
    drop(g);
    // pid 1 with its real start time: alive, so Timeout within the timeout.
    let init = shm_core::ProcessId::of_pid(1).expect("pid 1 exists");
    poke(
        &name,
        128,
        &((1u64 << 32) | (init.start_time & 0xffff_ffff)).to_ne_bytes(),
    );
    let t = Instant::now();
    assert!(matches!(
        s.lock_timeout(Duration::from_millis(100)),
        Err(LockError::Timeout)
    ));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn relocking_from_the_same_thread_is_an_error_not_a_hang() {
    let m = Mutex::new(0u32);
    let g = m.lock().unwrap();
    assert!(matches!(m.try_lock(), Err(LockError::WouldDeadlock)));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(10)),
        Err(LockError::WouldDeadlock)
    ));
    drop(g);
    let s = SpinLock::new(0u32);
    let g = s.lock().unwrap();
    assert!(matches!(s.lock(), Err(LockError::WouldDeadlock)));
    drop(g);
    assert!(s.try_lock().is_ok());
}

#[test]
fn opening_the_wrong_primitive_is_a_fingerprint_error() {
    let (name, _c) = scratch("wrong-prim");
    let _m = Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal)).unwrap();
    let e = Shared::<SpinLock<u64>>::open(&name).err().unwrap();
    assert!(
        matches!(
            e.kind(),
            shm_core::OpenErrorKind::FingerprintMismatch { .. }
        ),
        "{e}"
    );
}

// ------------------------------------------------------------ sleepers killed

/// Sleeps on the condvar (the mutex released while it sleeps) until killed.
fn sleep_on_condvar(name: &str) {
    let seg = pingpong_builder(name).open().unwrap();
    let (_, mr, cr) = pingpong_layout();
    let (m, cv) = (seg.get(mr).unwrap(), seg.get(cr).unwrap());
    let g = m.lock().unwrap();
    println!("CHILD:waiting");
    let _ = cv.wait_timeout_while(g, Duration::from_secs(60), |_| true);
}

/// Sleeps in `acquire` on an empty semaphore until killed.
fn sleep_on_semaphore(name: &str) {
    let seg = sem_builder(name).open().unwrap();
    let sem = seg.get(sem_layout().1).unwrap();
    println!("CHILD:waiting");
    let _ = sem.acquire_timeout(Duration::from_secs(60));
}

/// Sleeps in `wait` on a clear event until killed.
fn sleep_on_event(name: &str) {
    let e = Shared::<Event>::open(name).unwrap();
    println!("CHILD:waiting");
    let _ = e.wait_timeout(Duration::from_secs(60));
}

/// Gives a child that said "waiting" time to reach its futex wait, then kills it.
fn kill_once_asleep(child: &mut Running) {
    child.expect_line("waiting", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    child.kill9();
}

#[test]
fn a_waiter_killed_in_its_sleep_leaves_each_primitive_working() {
    // Mutex: a process blocked in lock() is killed; it never held the lock, so the next
    // lockers get plain guards (no OwnerDied), and the lock keeps working.
    let (name, _c) = scratch("sleep-mutex");
    let m = Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), Protocol::Normal)).unwrap();
    let held = m.lock().unwrap();
    let mut waiter = Running::spawn(role("mutex-wait", &name));
    kill_once_asleep(&mut waiter);
    drop(held);
    for _ in 0..100 {
        let mut g = m
            .lock_timeout(Duration::from_secs(5))
            .expect("a plain guard");
        g.passed += 1;
    }
    assert!(m.try_lock().is_ok());

    // Condvar: a waiter killed asleep leaves its count behind, which costs later notifies
    // a syscall, and nothing else: the mutex is free and a live waiter is still woken.
    let (name, _c) = scratch("sleep-cv");
    let (_, mr, cr) = pingpong_layout();
    let seg = create_pingpong(&name);
    let mut waiter = Running::spawn(role("cv-sleep", &name));
    kill_once_asleep(&mut waiter);
    let seg = std::sync::Arc::new(seg);
    let (m, cv) = (seg.get(mr).unwrap(), seg.get(cr).unwrap());
    assert!(
        m.try_lock().is_ok(),
        "the killed waiter did not hold the mutex"
    );
    cv.notify_all();
    let seg2 = seg.clone();
    let live = std::thread::spawn(move || {
        let (m, cv) = (seg2.get(mr).unwrap(), seg2.get(cr).unwrap());
        let g = m.lock_timeout(HANG).unwrap();
        let (g, timed_out) = cv.wait_timeout_while(g, Duration::from_secs(10), |t| t.turn == 0);
        assert!(g.is_ok());
        timed_out
    });
    std::thread::sleep(Duration::from_millis(50));
    m.lock_timeout(HANG).unwrap().turn = 1;
    cv.notify_one();
    assert!(!live.join().unwrap(), "a live waiter was not woken");

    // Semaphore: a sleeper killed in acquire takes no permit; releases still count.
    let (name, _c) = scratch("sleep-sem");
    let seg = sem_builder(&name).create().unwrap();
    let sem = seg.get(sem_layout().1).unwrap();
    let mut waiter = Running::spawn(role("sem-sleep", &name));
    kill_once_asleep(&mut waiter);
    sem.release(2).unwrap();
    assert_eq!(sem.available(), 2);
    assert!(sem.try_acquire().is_ok());
    assert!(sem.acquire_timeout(Duration::from_secs(5)).is_ok());
    assert_eq!(sem.try_acquire(), Err(WaitError::WouldBlock));

    // Event: a sleeper killed in `wait` leaves its count behind and takes nothing: an
    // auto-reset set stays for the next live waiter (exactly once), a manual one for all.
    for reset in [Reset::Auto, Reset::Manual] {
        let (name, _c) = scratch("sleep-event");
        let e = Shared::<Event>::create(&name, reset).unwrap();
        let mut waiter = Running::spawn(role("event-sleep", &name));
        kill_once_asleep(&mut waiter);
        e.set();
        assert!(e.try_wait(), "{reset:?}: the dead sleeper took the set");
        assert_eq!(e.try_wait(), reset == Reset::Manual, "{reset:?}");
        e.reset();
        let e2 = Shared::<Event>::open(&name).unwrap();
        let live = std::thread::spawn(move || e2.wait_timeout(Duration::from_secs(10)).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        e.set();
        assert!(
            live.join().unwrap(),
            "{reset:?}: a live sleeper was not woken"
        );
    }
}

/// A forged `Sync` segment with a valid header and fingerprint but too short for its
/// primitive (128-159 bytes for a `Mutex<u64>`, whose data starts at byte 128): `open` is an
/// error naming both lengths, never a panic (issue 12, defect 4).
#[test]
fn a_forged_segment_too_short_for_its_primitive_is_an_error_not_a_panic() {
    fn forge<P: shm_sync::InPlace>(name: &str, config: P::Config, lens: std::ops::Range<u64>) {
        let _c = Cleanup(name.to_owned());
        let mut created = Shared::<P>::create(name, config).unwrap();
        created.segment_mut().set_unlink_on_drop(false);
        drop(created);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm{name}"))
            .unwrap();
        for len in lens {
            file.set_len(len).unwrap();
            // The header's own length field agrees with the file, as a forger would make it.
            poke(name, 32, &len.to_ne_bytes());
            let opened = std::panic::catch_unwind(|| Shared::<P>::open(name).map(drop));
            let e = opened
                .unwrap_or_else(|_| panic!("open panicked on a {len}-byte segment"))
                .unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{len} bytes")), "{len}: {msg}");
        }
    }
    forge::<Mutex<u64>>(&unique_name("forged-m"), (0, Protocol::Normal), 128..160);
    forge::<SpinLock<u64>>(&unique_name("forged-s"), 0, 128..152);
    forge::<Condvar>(&unique_name("forged-c"), (), 128..136);
    forge::<SeqLock<[u64; 4]>>(&unique_name("forged-q"), [0; 4], 128..200);
    forge::<Semaphore>(&unique_name("forged-sem"), 1, 128..136);
}

#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct PriceA {
    bid: f64,
    ask: f64,
}

#[derive(Clone, Copy, Pod, Zeroable, shm_core::TypeIdentity)]
#[repr(C)]
struct PriceB {
    last: f64,
    volume: u64,
}

#[test]
fn shared_of_another_payload_or_primitive_is_refused_naming_both() {
    let (name, _c) = scratch("shared-identity");
    let _a = Shared::<SeqLock<PriceA>>::create(&name, PriceA { bid: 1.0, ask: 2.0 }).unwrap();
    let e = Shared::<SeqLock<PriceB>>::open(&name)
        .err()
        .expect("another payload");
    assert!(
        e.to_string().contains(
            "payload type expected `SeqLock<PriceB>` (size 80, align 8), found \
             `SeqLock<PriceA>` (size 80, align 8): the same size and alignment, but field \
             names and field types or offsets differ"
        ),
        "{e}"
    );
    let e = Shared::<SpinLock<[u64; 2]>>::open(&name)
        .err()
        .expect("another primitive");
    assert!(e.to_string().contains("found `SeqLock<PriceA>`"), "{e}");
    assert_eq!(
        Shared::<SeqLock<PriceA>>::open(&name)
            .unwrap()
            .read()
            .unwrap()
            .ask,
        2.0
    );
}

#[test]
fn owner_died_names_the_thread_that_died() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        if protocol == Protocol::PriorityInheritance && !shm_sync::pi_supported() {
            continue;
        }
        let (name, _c) = scratch("mutex-who");
        let m = Shared::<Mutex<Ledger>>::create(&name, (Ledger::zeroed(), protocol)).unwrap();
        let mut holder = Running::spawn(role("mutex-hold", &name));
        holder.expect_line("locked", HANG);
        let line = holder.next_line(HANG);
        let tid: u32 = line.strip_prefix("tid ").unwrap().parse().unwrap();
        holder.kill9();
        match m.lock_timeout(HANG) {
            Err(LockError::OwnerDied(mut g)) => {
                assert_eq!(g.dead_owner(), Some(tid), "{protocol:?}");
                g.mark_consistent();
            }
            other => panic!("{protocol:?}: {:?}", other.map(|_| ())),
        }
        // A plain guard names nobody.
        assert_eq!(m.lock_timeout(HANG).unwrap().dead_owner(), None);
    }
}
