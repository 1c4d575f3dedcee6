//! A process dies at each named step of the lock and wake-up protocols (feature
//! `fault-injection`: `SHMRING_FAULT=<point>:1` aborts the child there, as a SIGKILL at that
//! instruction would). The survivor must learn of it within the documented bound, never
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

/// Runs the child to its death; fails unless it died by SIGABRT at the fault point.
fn run_to_death(cmd: std::process::Command) {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = cmd;
    let out = cmd.output().expect("spawn child");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
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
        "seqlock-write" => {
            let s = Shared::<SeqLock<[u64; 8]>>::open(&name).unwrap();
            s.write([9; 8]).unwrap(); // dies inside
        }
        other => panic!("unknown role {other}"),
    }
    unreachable!("the fault point should have killed this process");
}

fn mutex_dies_at(point: &str, role: &str, protocol: Protocol) -> (Duration, [u64; 2]) {
    let name = unique_name("fault-mutex");
    let _c = Cleanup(name.clone());
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
    let name = unique_name("fault-spin");
    let _c = Cleanup(name.clone());
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
    eprintln!("spin-unlocking: OwnerDied after {took:?}");
    assert!(took < SPIN_LIVENESS_INTERVAL * 500, "{took:?}");
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
    let name = unique_name("fault-sem");
    let _c = Cleanup(name.clone());
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
    let name = unique_name("fault-event");
    let _c = Cleanup(name.clone());
    let e = Shared::<Event>::create(&name, Reset::Manual).unwrap();
    let e2 = Shared::<Event>::open(&name).unwrap();
    let took = wake_survives(
        move || e2.wait_timeout(HANG).is_ok(),
        dying("event-set", &name, "event-set"),
    );
    eprintln!("event-set: the sleeper woke {took:?} after the death");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(e.try_wait());
}

#[test]
fn condvar_notifier_dies_before_waking() {
    let name = unique_name("fault-cv");
    let _c = Cleanup(name.clone());
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
        let name = unique_name("fault-seq");
        let _c = Cleanup(name.clone());
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
