//! A process dies at each named step of the lock and wake-up protocols (feature
//! `fault-injection`: `SHMRING_FAULT=<point>:1` SIGKILLs the child there). The survivor must learn of it within the documented bound, never
//! hang, and never lose a wake-up.
#![cfg(not(shm_loom))]

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_sync::{
    Condvar, Event, LockError, Mutex, Protocol, Reset, Semaphore, SeqLock, SeqLockError, Shared,
    SpinLock, MUTEX_LIVENESS_INTERVAL, SPIN_LIVENESS_INTERVAL,
};

const ROLE: &str = "SHMRING_ROLE";
/// Longer than any documented bound: a survivor still blocked after this has hung.
const HANG: Duration = Duration::from_secs(5);

/// A child of this file, dying at `point`.
fn dying(role: &str, name: &str, point: &str) -> std::process::Command {
    let mut c = child("child_fault", name);
    c.env(ROLE, role).env("SHMRING_FAULT", format!("{point}:1"));
    c
}

/// Runs the child to its death; fails unless it died by SIGKILL at the fault point.
fn run_to_death(cmd: std::process::Command) {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = cmd;
    let out = cmd.output().expect("spawn child");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "the child should have died at its fault point: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_fault() {
    let Some(name) = child_name() else { return };
    match std::env::var(ROLE).unwrap().as_str() {
        "mutex-lock" => {
            let m = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
            let _g = m.lock().unwrap(); // dies inside
        }
        "mutex-lock-unlock" => {
            let m = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
            let mut g = m.lock().unwrap();
            g[0] += 1;
            g[1] += 1;
            drop(g); // dies inside
        }
        "spin-lock-unlock" => {
            let s = Shared::<SpinLock<[u64; 2]>>::open(&name).unwrap();
            let mut g = s.lock().unwrap();
            g[0] += 1;
            g[1] += 1;
            drop(g); // dies inside
        }
        "semaphore-release" => {
            let s = Shared::<Semaphore>::open(&name).unwrap();
            s.release(1).unwrap(); // dies between the count and the wake
        }
        "event-set" => {
            let e = Shared::<Event>::open(&name).unwrap();
            e.set(); // dies between the state and the wake
        }
        "condvar-notify" => {
            let m = Shared::<Mutex<u32>>::open(&format!("{name}-m")).unwrap();
            let c = Shared::<Condvar>::open(&name).unwrap();
            *m.lock().unwrap() = 1;
            c.notify_one(); // dies between the sequence bump and the wake
        }
        "mutex-abandon" => {
            // Inherits a dead holder's lock, and drops the guard without repairing: the
            // unlock stores NOT_RECOVERABLE, then dies before releasing the word.
            let m = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
            match m.lock() {
                Err(LockError::OwnerDied(g)) => {
                    println!("CHILD:inherited");
                    until_a_waiter_queues(&name);
                    drop(g); // dies inside
                }
                Ok(_) => panic!("expected OwnerDied, got a plain guard"),
                Err(e) => panic!("expected OwnerDied, got {e}"),
            };
        }
        "mutex-hold-release" => {
            let m = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
            let mut g = m.lock().unwrap();
            g[0] += 1;
            g[1] += 1;
            println!("CHILD:locked");
            until_a_waiter_queues(&name);
            drop(g); // dies between releasing the word and waking the waiter
        }
        "spin-abandon" => {
            let s = Shared::<SpinLock<[u64; 2]>>::open(&name).unwrap();
            match s.lock() {
                Err(LockError::OwnerDied(g)) => drop(g), // dies inside
                Ok(_) => panic!("expected OwnerDied, got a plain guard"),
                Err(e) => panic!("expected OwnerDied, got {e}"),
            };
        }
        "condvar-wait" => {
            let m = Shared::<Mutex<u32>>::open(&format!("{name}-m")).unwrap();
            let c = Shared::<Condvar>::open(&name).unwrap();
            let g = m.lock().unwrap();
            println!("CHILD:waiting");
            // Woken, a doomed one dies before re-locking the mutex and acting.
            let (r, timed_out) = c.wait_timeout_while(g, Duration::from_secs(30), |f| *f == 0);
            assert!(r.is_ok() && !timed_out);
            println!("CHILD:woke");
            return;
        }
        "seqlock-write" => {
            let s = Shared::<SeqLock<[u64; 8]>>::open(&name).unwrap();
            s.write([9; 8]).unwrap(); // dies inside
        }
        other => panic!("unknown role {other}"),
    }
    unreachable!("the fault point should have killed this process");
}

/// Waits (bounded) until the `Mutex` at the start of segment `name`'s data (offset 128) has
/// its waiters bit set: someone sleeps on it (a `Normal` sleeper sets it before sleeping; the
/// kernel sets it for a PI waiter it queued).
fn until_a_waiter_queues(name: &str) {
    until_word(name, 128, "a waiter queued", |w| w & 0x8000_0000 != 0);
}

/// What a waiter queued behind a holder gets when the holder, stalled at `point`, is
/// SIGKILLed: (whether it was `OwnerDied`, the data it found, how long after the death).
fn killed_with_a_waiter_queued(
    point: &str,
    role: &str,
    protocol: Protocol,
) -> (bool, [u64; 2], Duration) {
    let (name, _c) = scratch("fault-queued");
    let m = Shared::<Mutex<[u64; 2]>>::create(&name, ([0; 2], protocol)).unwrap();
    let mut c = child("child_fault", &name);
    c.env(ROLE, role)
        .env("SHMRING_FAULT", format!("{point}:1:60000"));
    let mut holder = Running::spawn(c);
    let t = Instant::now();
    while !m.is_locked() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the child never locked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // From taking the word to the point is microseconds of work; then it stalls there.
    std::thread::sleep(Duration::from_millis(300));
    let (n, p) = (name.clone(), point.to_owned());
    let waiter = std::thread::spawn(move || {
        let m = Shared::<Mutex<[u64; 2]>>::open(&n).unwrap();
        let r = match m.lock_timeout(HANG) {
            Ok(g) => (false, *g),
            Err(LockError::OwnerDied(mut g)) => {
                let data = *g;
                g.mark_consistent();
                (true, data)
            }
            Err(e) => panic!("{p} ({protocol:?}): {e}"),
        };
        (r, Instant::now())
    });
    // Queued: in the kernel's PI queue, or asleep on the word (Normal). Either way the
    // lock word then carries its waiters bit.
    until_a_waiter_queues(&name);
    holder.kill9();
    let died = Instant::now();
    let ((owner_died, data), got) = waiter.join().unwrap();
    assert!(!m.is_not_recoverable(), "{point} ({protocol:?})");
    assert!(m.lock_timeout(HANG).is_ok(), "{point} ({protocol:?})");
    (owner_died, data, got.saturating_duration_since(died))
}

#[test]
fn a_holder_killed_at_each_step_with_a_waiter_queued() {
    for (point, role, left) in [
        // Word taken, not recorded: the critical section never began.
        ("mutex-locked-unrecorded", "mutex-lock", [0, 0]),
        // Record cleared, word not released: the critical section was finished.
        ("mutex-unlocking", "mutex-lock-unlock", [1, 1]),
    ] {
        for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
            let (owner_died, data, took) = killed_with_a_waiter_queued(point, role, protocol);
            println!(
                "{point} ({protocol:?}, a waiter queued): owner_died {owner_died} after {took:?}"
            );
            // Normal: the waiter finds the word's task gone and recovers: `OwnerDied`. PI: the
            // kernel hands the lock to the queued waiter, which finds no record: a plain
            // guard, and rightly so, as the data is consistent at both points.
            assert_eq!(
                owner_died,
                protocol == Protocol::Normal,
                "{point} ({protocol:?})"
            );
            assert_eq!(data, left, "{point} ({protocol:?})");
            assert!(took < HANG, "{point} ({protocol:?}): {took:?}");
        }
    }
}

#[test]
fn an_unrepaired_holder_killed_mid_unlock_leaves_the_mutex_not_recoverable() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        let (name, _c) = scratch("fault-abandon");
        let m = Shared::<Mutex<[u64; 2]>>::create(&name, ([0; 2], protocol)).unwrap();
        // One holder dies holding the lock; the next inherits it (`OwnerDied`), does not
        // repair, and dies in its unlock after storing NOT_RECOVERABLE.
        run_to_death(dying("mutex-lock", &name, "mutex-locked-unrecorded"));
        let mut heir = Running::spawn(dying("mutex-abandon", &name, "mutex-unlocking"));
        heir.expect_line("inherited", Duration::from_secs(30));
        // A sleeper queues behind the heir before the verdict is stored.
        let m2 = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
        let sleeper = std::thread::spawn(move || {
            let r = match m2.lock_timeout(HANG) {
                Err(LockError::NotRecoverable) => Ok(()),
                Ok(_) => Err("a plain guard".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            (r, Instant::now())
        });
        assert!(!heir.wait_success(Duration::from_secs(30)), "it died");
        let died = Instant::now();
        let (got, woke) = sleeper.join().unwrap();
        assert_eq!(
            got,
            Ok(()),
            "{protocol:?}: the sleeper got no NotRecoverable"
        );
        println!(
            "mutex-unlocking, NOT_RECOVERABLE stored ({protocol:?}): the sleeper heard {:?} after the death",
            woke.saturating_duration_since(died)
        );
        let t = Instant::now();
        assert!(
            matches!(m.try_lock(), Err(LockError::NotRecoverable)),
            "{protocol:?}"
        );
        assert!(
            matches!(m.lock_timeout(HANG), Err(LockError::NotRecoverable)),
            "{protocol:?}"
        );
        println!(
            "mutex-unlocking, NOT_RECOVERABLE stored ({protocol:?}): seen in {:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}

#[test]
fn a_holder_killed_between_releasing_and_waking_loses_no_wake_up() {
    let (name, _c) = scratch("fault-released");
    let m = Shared::<Mutex<[u64; 2]>>::create(&name, ([0; 2], Protocol::Normal)).unwrap();
    let mut c = child("child_fault", &name);
    c.env(ROLE, "mutex-hold-release")
        .env("SHMRING_FAULT", "mutex-released:1");
    let mut holder = Running::spawn(c);
    holder.expect_line("locked", Duration::from_secs(30));
    let m2 = Shared::<Mutex<[u64; 2]>>::open(&name).unwrap();
    let sleeper = std::thread::spawn(move || {
        let r = match m2.lock_timeout(HANG) {
            Ok(g) => Ok(*g),
            Err(LockError::OwnerDied(g)) => Err(*g),
            Err(e) => panic!("{e}"),
        };
        (r, Instant::now())
    });
    // It releases the word 300 ms after locking, and dies before the FUTEX_WAKE.
    assert!(!holder.wait_success(Duration::from_secs(30)));
    let died = Instant::now();
    let (r, got) = sleeper.join().unwrap();
    // The critical section was complete and the word free: a plain guard, no OwnerDied.
    assert_eq!(r, Ok([1, 1]));
    let took = got.saturating_duration_since(died);
    println!("mutex-released: the sleeper had the lock {took:?} after the death");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(m.try_lock().is_ok());
}

#[test]
fn an_unrepaired_spinlock_holder_killed_mid_unlock_leaves_it_not_recoverable() {
    let (name, _c) = scratch("fault-spin-abandon");
    let s = Shared::<SpinLock<[u64; 2]>>::create(&name, [0; 2]).unwrap();
    // One holder dies mid-unlock; the inheritor gets `OwnerDied`, drops it unrepaired
    // (storing NOT_RECOVERABLE), and dies before freeing the word. Its death does not turn
    // the verdict back into a repair obligation: the next locker, taking the dead word
    // over, hears `NotRecoverable`, and so does everyone after.
    run_to_death(dying("spin-lock-unlock", &name, "spin-unlocking"));
    run_to_death(dying("spin-abandon", &name, "spin-unlocking"));
    let t = Instant::now();
    assert!(
        matches!(s.lock_timeout(HANG), Err(LockError::NotRecoverable)),
        "the verdict did not stand"
    );
    println!(
        "spin-unlocking, NOT_RECOVERABLE stored: NotRecoverable after {:?}",
        t.elapsed()
    );
    assert!(matches!(s.try_lock(), Err(LockError::NotRecoverable)));
    assert!(!s.is_locked(), "the dead word was freed on the way");
}

#[test]
fn a_condvar_waiter_killed_after_its_wake_up_does_not_swallow_it() {
    let name = unique_name("fault-cv-woken");
    let mname = format!("{name}-m");
    let (_c, _c2) = (Cleanup(name.clone()), Cleanup(mname.clone()));
    let m = Shared::<Mutex<u32>>::create(&mname, (0, Protocol::Normal)).unwrap();
    let cv = Shared::<Condvar>::create(&name, ()).unwrap();
    let mut doomed = child("child_fault", &name);
    doomed
        .env(ROLE, "condvar-wait")
        .env("SHMRING_FAULT", "condvar-woken:1");
    let mut doomed = Running::spawn(doomed);
    doomed.expect_line("waiting", Duration::from_secs(30));
    let mut live = child("child_fault", &name);
    live.env(ROLE, "condvar-wait");
    let mut live = Running::spawn(live);
    live.expect_line("waiting", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    // Stop the live waiter: a stopped task is off the futex queue, so the one wake of
    // `notify_one` can only go to the doomed waiter, which dies before it acts.
    let live_pid = live.child.id() as libc::pid_t;
    // SAFETY: plain syscall on our own child, which is not yet reaped.
    assert_eq!(unsafe { libc::kill(live_pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(50));
    *m.lock_timeout(HANG).unwrap() = 1;
    cv.notify_one();
    let out = doomed.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.signal(),
        Some(libc::SIGKILL),
        "the woken waiter died at the point"
    );
    // The live waiter, counted before the notify, still sees it once it runs again.
    let resumed = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(live_pid, libc::SIGCONT) }, 0);
    live.expect_line("woke", HANG);
    let took = resumed.elapsed();
    println!("condvar-woken: the live waiter left its wait {took:?} after it resumed");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(live.wait_success(HANG));
    assert!(m.try_lock().is_ok(), "the dead waiter never re-locked");
}

fn mutex_dies_at(point: &str, role: &str, protocol: Protocol) -> (Duration, [u64; 2]) {
    let (name, _c) = scratch("fault-mutex");
    let m = Shared::<Mutex<[u64; 2]>>::create(&name, ([0; 2], protocol)).unwrap();
    run_to_death(dying(role, &name, point));
    let t = Instant::now();
    let (took, data) = match m.lock_timeout(HANG) {
        Err(LockError::OwnerDied(mut g)) => {
            let took = t.elapsed();
            let data = *g;
            g.mark_consistent();
            (took, data)
        }
        Ok(_) => panic!("{point} ({protocol:?}): the holder's death went unnoticed"),
        Err(e) => panic!("{point} ({protocol:?}): {e}"),
    };
    // Repaired: the next locker gets a plain guard.
    assert!(m.lock_timeout(HANG).is_ok());
    (took, data)
}

#[test]
fn mutex_holder_dies_between_taking_the_word_and_recording_itself() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        let (took, data) = mutex_dies_at("mutex-locked-unrecorded", "mutex-lock", protocol);
        assert_eq!(data, [0, 0]);
        eprintln!("mutex-locked-unrecorded ({protocol:?}): OwnerDied after {took:?}");
        assert!(took < HANG, "{took:?}");
    }
}

#[test]
fn mutex_holder_dies_mid_unlock() {
    for protocol in [Protocol::Normal, Protocol::PriorityInheritance] {
        let (took, data) = mutex_dies_at("mutex-unlocking", "mutex-lock-unlock", protocol);
        // It finished its critical section; the next holder still hears of the death, as
        // it cannot tell (conservative, never silent).
        assert_eq!(data, [1, 1]);
        eprintln!("mutex-unlocking ({protocol:?}): OwnerDied after {took:?}");
        assert!(took < MUTEX_LIVENESS_INTERVAL * 50, "{took:?}");
    }
}

#[test]
fn spinlock_holder_dies_mid_unlock() {
    let (name, _c) = scratch("fault-spin");
    let s = Shared::<SpinLock<[u64; 2]>>::create(&name, [0; 2]).unwrap();
    run_to_death(dying("spin-lock-unlock", &name, "spin-unlocking"));
    let t = Instant::now();
    match s.lock_timeout(HANG) {
        Err(LockError::OwnerDied(mut g)) => {
            assert_eq!(*g, [1, 1]);
            g.mark_consistent();
        }
        Ok(_) => panic!("the holder's death went unnoticed"),
        Err(e) => panic!("{e}"),
    }
    let took = t.elapsed();
    println!("spin-unlocking: OwnerDied after {took:?}");
    assert!(took < SPIN_LIVENESS_INTERVAL * 500, "{took:?}");
    assert!(s.try_lock().is_ok(), "repaired");
}

/// Starts `wait` on a thread, gives it time to fall asleep, lets the child die between
/// its store and its wake, and returns how long the sleeper took to notice after the death.
fn wake_survives(
    wait: impl FnOnce() -> bool + Send + 'static,
    kill: std::process::Command,
) -> Duration {
    let sleeper = std::thread::spawn(move || {
        let ok = wait();
        (ok, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100)); // let it sleep on the futex
    run_to_death(kill);
    let died = Instant::now();
    let (ok, woke) = sleeper.join().unwrap();
    assert!(ok, "the sleeper timed out: the wake-up was lost");
    woke.saturating_duration_since(died)
}

#[test]
fn semaphore_releaser_dies_before_waking() {
    let (name, _c) = scratch("fault-sem");
    let s = Shared::<Semaphore>::create(&name, 0).unwrap();
    let s2 = Shared::<Semaphore>::open(&name).unwrap();
    let took = wake_survives(
        move || s2.acquire_timeout(HANG).is_ok(),
        dying("semaphore-release", &name, "semaphore-released"),
    );
    eprintln!("semaphore-released: the sleeper got the permit {took:?} after the death");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(s.available(), 0);
}

#[test]
fn event_setter_dies_before_waking() {
    for reset in [Reset::Manual, Reset::Auto] {
        let (name, _c) = scratch("fault-event");
        let e = Shared::<Event>::create(&name, reset).unwrap();
        let e2 = Shared::<Event>::open(&name).unwrap();
        let took = wake_survives(
            move || e2.wait_timeout(HANG).is_ok(),
            dying("event-set", &name, "event-set"),
        );
        println!("event-set ({reset:?}): the sleeper woke {took:?} after the death");
        assert!(took < Duration::from_secs(1), "{reset:?}: {took:?}");
        // A manual event stays set; an auto one was consumed by the sleeper it woke.
        assert_eq!(e.try_wait(), reset == Reset::Manual);
    }
}

#[test]
fn condvar_notifier_dies_before_waking() {
    let (name, _c) = scratch("fault-cv");
    let _c2 = Cleanup(format!("{name}-m"));
    let _m = Shared::<Mutex<u32>>::create(&format!("{name}-m"), (0, Protocol::Normal)).unwrap();
    let _cv = Shared::<Condvar>::create(&name, ()).unwrap();
    let (n1, n2) = (name.clone(), format!("{name}-m"));
    let took = wake_survives(
        move || {
            let m = Shared::<Mutex<u32>>::open(&n2).unwrap();
            let cv = Shared::<Condvar>::open(&n1).unwrap();
            let g = m.lock().unwrap();
            let (r, timed_out) = cv.wait_timeout_while(g, HANG, |flag| *flag == 0);
            r.is_ok() && !timed_out
        },
        dying("condvar-notify", &name, "condvar-notified"),
    );
    eprintln!("condvar-notified: the waiter woke {took:?} after the death");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A SeqLock writer dies at each step of a write of `[9; 8]` over `[7; 8]`: readers never
/// see a torn value, and the next write takes the dead writer's lock over.
#[test]
fn seqlock_writer_dies_at_each_step() {
    for (point, readers_see) in [
        // Lock taken, `seq` still even: the old value stands.
        ("seqlock-locked", Ok([7u64; 8])),
        // `seq` odd, the new value stored but not published: the death is reported.
        ("seqlock-written", Err(SeqLockError::WriterDied)),
        // Published, lock not yet released: the new value stands.
        ("seqlock-published", Ok([9u64; 8])),
    ] {
        let (name, _c) = scratch("fault-seq");
        let s = Shared::<SeqLock<[u64; 8]>>::create(&name, [7; 8]).unwrap();
        run_to_death(dying("seqlock-write", &name, point));
        let t = Instant::now();
        assert_eq!(s.read(), readers_see, "{point}");
        assert!(t.elapsed() < HANG, "{point}: {:?}", t.elapsed());
        if readers_see.is_err() {
            assert_eq!(s.try_read(), None, "{point}");
        }
        // The next writer takes the dead one's lock over; its value is what readers see.
        let t = Instant::now();
        s.write_timeout([11; 8], HANG).unwrap();
        println!(
            "{point}: the next write took the lock over in {:?}",
            t.elapsed()
        );
        assert_eq!(s.read(), Ok([11; 8]), "{point}");
    }
}
