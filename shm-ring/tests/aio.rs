//! The `async` forms (feature `async`) under a hand-written executor (the offline registry
//! has no tokio; the futures use nothing but std's `Waker`): woken by another process's
//! push, send and publish; a future dropped mid-wait leaves no registration and loses no
//! message; a publisher SIGKILLed while two tasks wait wakes both with `PeerDied`; 200
//! rings waited on at once spread over two waiter threads.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::*;
use shm_ring::{broadcast, log, mpmc, spsc, PopError, RecvError};

const ROLE: &str = "SHMRING_ROLE";
const HANG: Duration = Duration::from_secs(30);

/// The waiter threads are per process and the tests of this file share them: each test
/// takes this lock, so that the registrations a test counts are its own.
static COUNTS: Mutex<()> = Mutex::new(());

fn role(r: &str, name: &str) -> std::process::Command {
    let mut c = child("child_aio", name);
    c.env(ROLE, r);
    c
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_aio() {
    let Some(name) = child_name() else { return };
    match std::env::var(ROLE).unwrap().as_str() {
        // Attaches to the SPSC ring `name`, then after 100 ms pushes 7 and exits cleanly.
        "spsc-push-later" => {
            let mut tx = spsc::open::<u64>(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.try_push(7).unwrap();
        }
        // Attaches to the log `name`, then after 100 ms sends "late" and exits cleanly.
        "log-send-later" => {
            let mut tx = log::open(&name).unwrap().producer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.try_send(b"late").unwrap();
        }
        // Publishes 9 on the broadcast ring `name` 100 ms after attaching, then holds its
        // end until killed (or 60 s).
        "bcast-publish-hold" => {
            let mut tx = broadcast::open::<u64>(&name).unwrap().publisher().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            tx.publish(9).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        // Pops one item from the (full) SPSC ring `name` 100 ms after attaching, then
        // holds its end until killed (or 60 s).
        "spsc-pop-later" => {
            let mut rx = spsc::open::<u64>(&name).unwrap().consumer().unwrap();
            println!("CHILD:attached");
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(rx.try_pop(), Ok(1));
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Wakes the executor's thread; counts the wakes.
struct Unpark {
    thread: std::thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.thread.unpark();
    }
}

fn waker() -> (Waker, Arc<Unpark>) {
    let u = Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    (Waker::from(u.clone()), u)
}

/// A future as `run_all` takes it.
type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs the futures on this thread until all are done, polling each only after its waker
/// fired (so a missed wake-up hangs, and `HANG` turns it into a failure); returns their
/// outputs in order.
fn run_all<T>(mut futs: Vec<Task<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    let wakers: Vec<(Waker, Arc<Unpark>)> = futs.iter().map(|_| waker()).collect();
    let mut seen: Vec<usize> = vec![usize::MAX; futs.len()];
    let t0 = Instant::now();
    while out.iter().any(Option::is_none) {
        for (k, f) in futs.iter_mut().enumerate() {
            let wakes = wakers[k].1.wakes.load(Ordering::Relaxed);
            if out[k].is_some() || seen[k] == wakes {
                continue;
            }
            seen[k] = wakes;
            if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&wakers[k].0)) {
                out[k] = Some(v);
            }
        }
        if out.iter().all(Option::is_some) {
            break;
        }
        assert!(t0.elapsed() < HANG, "a future was never woken");
        std::thread::park_timeout(Duration::from_millis(100));
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    run_all(vec![Box::pin(f)]).pop().unwrap()
}

#[test]
fn async_calls_wake_on_another_process_push_send_and_pop() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    // pop_async: the child pushes after 100 ms.
    let (n, _c) = scratch("aio-spsc");
    let ring = spsc::create::<u64>(&n, 8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Running::spawn(role("spsc-push-later", &n));
    kid.expect_line("attached", HANG);
    let t = Instant::now();
    assert_eq!(block_on(rx.pop_async()), Ok(7));
    println!("pop_async: woken {:?} after it began", t.elapsed());
    assert!(kid.wait_success(HANG));
    // The producer closed: the next call reports it without waiting.
    assert_eq!(block_on(rx.pop_async()), Err(PopError::Disconnected));

    // recv_async on the log.
    let (n, _c) = scratch("aio-log");
    let ring = log::Builder::new(&n)
        .capacity(4096)
        .max_len(64)
        .create()
        .unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut kid = Running::spawn(role("log-send-later", &n));
    kid.expect_line("attached", HANG);
    let t = Instant::now();
    let got = block_on(async { rx.recv_async().await.map(|f| f.to_vec()) });
    println!("recv_async: woken {:?} after it began", t.elapsed());
    assert_eq!(got.as_deref(), Ok(&b"late"[..]));
    assert!(kid.wait_success(HANG));

    // push_async on a full ring: the child pops one after 100 ms.
    let (n, _c) = scratch("aio-full");
    let ring = spsc::create::<u64>(&n, 2).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.try_push(1).unwrap();
    tx.try_push(2).unwrap();
    let mut kid = Running::spawn(role("spsc-pop-later", &n));
    kid.expect_line("attached", HANG);
    let t = Instant::now();
    assert_eq!(block_on(tx.push_async(3)), Ok(()));
    println!("push_async: woken {:?} after it began", t.elapsed());
    kid.kill9();
}

#[test]
fn a_dropped_future_leaves_no_registration_and_loses_no_message() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let ring = spsc::Ring::<u64>::in_process(8).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let before = shm_ring::aio::waiters().1;
    {
        let (w, _) = waker();
        let mut f = Box::pin(rx.pop_async());
        assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
        assert_eq!(
            shm_ring::aio::waiters().1,
            before + 1,
            "registered while pending"
        );
        // Dropped here, as a task aborted mid-wait (or a timeout around it) drops it.
    }
    assert_eq!(
        shm_ring::aio::waiters().1,
        before,
        "the drop removed its registration"
    );
    tx.try_push(5).unwrap();
    assert_eq!(rx.try_pop(), Ok(5), "the message after the drop is there");
    // A publish with nobody counted in costs the publisher no wake: the sleeper count went
    // back to 0 (seen through the next wait, which registers and completes normally).
    tx.try_push(6).unwrap();
    assert_eq!(block_on(rx.pop_async()), Ok(6));
    assert_eq!(shm_ring::aio::waiters().1, before);
}

#[test]
fn a_publisher_killed_while_two_tasks_wait_wakes_both_with_peer_died() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let (n, _c) = scratch("aio-kill");
    let ring = broadcast::create::<u64>(&n, 8).unwrap();
    let mut a = ring.subscribe().unwrap();
    let mut b = ring.subscribe().unwrap();
    let mut kid = Running::spawn(role("bcast-publish-hold", &n));
    kid.expect_line("attached", HANG);
    // Both receive the publish, then wait again while the child is SIGKILLed.
    let first = run_all(vec![Box::pin(a.recv_async()), Box::pin(b.recv_async())]);
    assert_eq!(first, vec![Ok(9), Ok(9)]);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        kid.kill9();
        t
    });
    let second = run_all(vec![Box::pin(a.recv_async()), Box::pin(b.recv_async())]);
    let woke = Instant::now();
    let killed = killer.join().unwrap();
    assert_eq!(
        second,
        vec![Err(RecvError::PeerDied), Err(RecvError::PeerDied)]
    );
    println!(
        "both tasks woken {:?} after the SIGKILL",
        woke.duration_since(killed)
    );
}

#[test]
fn two_hundred_rings_waited_on_at_once_spread_over_two_waiters() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    const N: usize = 200;
    let rings: Vec<spsc::Ring<u64>> = (0..N)
        .map(|_| spsc::Ring::<u64>::in_process(4).unwrap())
        .collect();
    let mut txs: Vec<spsc::Producer<u64>> = rings.iter().map(|r| r.producer().unwrap()).collect();
    let mut rxs: Vec<spsc::Consumer<u64>> = rings.iter().map(|r| r.consumer().unwrap()).collect();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        for (k, tx) in txs.iter_mut().enumerate().rev() {
            tx.try_push(k as u64).unwrap();
        }
        txs
    });
    let futs: Vec<Task<'_, Result<u64, PopError>>> = rxs
        .iter_mut()
        .map(|rx| Box::pin(rx.pop_async()) as Task<'_, _>)
        .collect();
    let got = run_all(futs);
    let _txs = pusher.join().unwrap();
    assert_eq!(got, (0..N as u64).map(Ok).collect::<Vec<_>>());
    let (threads, regs) = shm_ring::aio::waiters();
    assert!(
        threads >= 2,
        "{N} distinct words need two waiters (127 each): {threads}"
    );
    assert_eq!(regs, 0, "every registration fired and was removed");
}

/// Two consumer tasks on one MPMC ring each get one of two items pushed by another
/// thread; a producer task on a full ring gets room from a pop; a consumer task whose
/// producers all close gets `Disconnected`.
#[test]
fn mpmc_tasks_share_the_items_and_wait_for_room() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let ring = mpmc::Ring::<u64>::in_process(2).unwrap();
    let (mut a, mut b) = (ring.consumer().unwrap(), ring.consumer().unwrap());
    let mut tx = ring.producer().unwrap();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        tx
    });
    let got = run_all(vec![Box::pin(a.pop_async()), Box::pin(b.pop_async())]);
    let mut got: Vec<u64> = got.into_iter().map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2]);
    let mut tx = pusher.join().unwrap();
    tx.try_push(3).unwrap();
    tx.try_push(4).unwrap();
    let popper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let v = a.try_pop();
        (a, v)
    });
    assert_eq!(block_on(tx.push_async(5)), Ok(()));
    let (mut a, v) = popper.join().unwrap();
    assert_eq!(v, Ok(3));
    assert_eq!((a.try_pop(), b.try_pop()), (Ok(4), Ok(5)));
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(tx);
    });
    assert_eq!(block_on(a.pop_async()), Err(PopError::Disconnected));
    closer.join().unwrap();
}

/// `send_async` on a full log and `publish_async` under back-pressure each wait for the
/// reader (another thread) to make room; a select over a log producer and a publisher
/// says which got room.
#[test]
fn writers_wait_for_room_on_a_full_log_and_under_back_pressure() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    // The log: 256 bytes, messages of up to 56 (a record of 64): full after 4.
    let ring = log::Ring::in_process(256, 56).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let mut sent = 0;
    while tx.try_send(&[7; 56]).is_ok() {
        sent += 1;
    }
    assert!(sent >= 2, "{sent}");
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let n = rx.try_recv().map(|f| f.len());
        (rx, n)
    });
    assert_eq!(block_on(tx.send_async(b"after room")), Ok(()));
    let (mut rx, n) = reader.join().unwrap();
    assert_eq!(n, Ok(56));
    for _ in 1..sent {
        assert_eq!(rx.try_recv().map(|f| f.len()), Ok(56));
    }
    assert_eq!(
        rx.try_recv().map(|f| f.to_vec()),
        Ok(b"after room".to_vec())
    );

    // Broadcast under back-pressure: a subscriber a ring behind blocks the publisher.
    let bring =
        broadcast::Ring::<u64>::in_process(4, broadcast::Policy::BackPressure, None).unwrap();
    let mut sub = bring.subscribe().unwrap();
    let mut publ = bring.publisher().unwrap();
    for v in 0..4 {
        publ.try_publish(v).unwrap();
    }
    assert!(publ.try_publish(4).is_err(), "full under back-pressure");
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let v = sub.try_recv();
        (sub, v)
    });
    assert_eq!(block_on(publ.publish_async(4)), Ok(()));
    let (mut sub, v) = reader.join().unwrap();
    assert_eq!(v, Ok(0));
    for want in 1..=4 {
        assert_eq!(sub.try_recv(), Ok(want));
    }

    // select: both full again; the subscriber makes room, so the publisher (end 1) is the
    // one ready, not the log producer (end 0), whose consumer reads nothing.
    while tx.try_send(&[7; 56]).is_ok() {}
    for v in 5..9 {
        publ.try_publish(v).unwrap();
    }
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let v = sub.try_recv();
        (sub, v)
    });
    let mut room = tx.room_for(56);
    let i = shm_ring::select::select(&mut [&mut room, &mut publ], Some(HANG)).unwrap();
    assert_eq!(i, 1);
    let (_sub, v) = reader.join().unwrap();
    assert_eq!(v, Ok(5));
    assert_eq!(publ.try_publish(9), Ok(()));
    // The log's consumer reads one: now the producer's room is there.
    assert_eq!(rx.try_recv().map(|f| f.len()), Ok(56));
    let i = shm_ring::select::select(&mut [&mut tx.room_for(56)], Some(HANG)).unwrap();
    assert_eq!(i, 0);
}

/// Whether `fd` is readable within `timeout` (poll(2)).
fn readable(fd: &impl std::os::fd::AsRawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) == 1 }
}

/// `ReadyFd`: armed on two ends, unreadable while they are empty, readable once another
/// process pushes; arming an armed end adds nothing; arming a ready end signals at once;
/// its drop removes its registrations; a producer SIGKILLed signals it too.
#[test]
fn a_ready_fd_is_signalled_by_another_process_push_and_by_a_death() {
    let _g = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let before = shm_ring::aio::waiters().1;
    let (n, _c) = scratch("aio-fd");
    let ring = spsc::create::<u64>(&n, 8).unwrap();
    let quiet = spsc::Ring::<u64>::in_process(8).unwrap();
    let mut rx = ring.consumer().unwrap();
    let (_qtx, mut qrx) = (quiet.producer().unwrap(), quiet.consumer().unwrap());
    let mut fd = shm_ring::aio::ReadyFd::new().unwrap();
    assert_eq!(fd.arm(&mut rx), Ok(false));
    assert_eq!(fd.arm(&mut qrx), Ok(false));
    assert_eq!(fd.arm(&mut rx), Ok(false), "armed again");
    assert_eq!(fd.armed(), 2, "the second arm of rx added nothing");
    assert_eq!(shm_ring::aio::waiters().1, before + 2);
    assert!(!readable(&fd, Duration::from_millis(20)), "nothing yet");
    let mut kid = Running::spawn(role("spsc-push-later", &n));
    kid.expect_line("attached", HANG);
    // The loop the docs give: readable is a hint (the producer's attach signals too).
    let t = Instant::now();
    let mut hints = 0;
    let v = loop {
        assert!(readable(&fd, HANG), "the push signals the fd");
        assert!(fd.clear());
        assert!(!readable(&fd, Duration::ZERO), "cleared");
        match rx.try_pop() {
            Err(PopError::Empty) => {
                hints += 1;
                assert!(hints < 100, "signalled over and over with nothing to pop");
                assert_eq!(fd.arm(&mut rx), Ok(false));
            }
            r => break r,
        }
    };
    assert_eq!(v, Ok(7));
    println!(
        "ReadyFd: the push read {:?} after the wait began, after {hints} empty signals",
        t.elapsed()
    );
    assert_eq!(
        fd.armed(),
        1,
        "rx signalled and was forgotten; qrx still armed"
    );
    assert!(kid.wait_success(HANG));
    // rx's producer has left: arming it finds it ready (to report Disconnected) at once.
    assert_eq!(fd.arm(&mut rx), Ok(true));
    assert!(readable(&fd, Duration::ZERO));
    assert!(fd.clear());
    assert_eq!(rx.try_pop(), Err(PopError::Disconnected));
    drop(fd);
    assert_eq!(
        shm_ring::aio::waiters().1,
        before,
        "the drop removed qrx's registration"
    );

    // A producer killed while its consumer is armed signals the fd.
    let (n, _c) = scratch("aio-fd-kill");
    let bring = broadcast::create::<u64>(&n, 8).unwrap();
    let mut sub = bring.subscribe().unwrap();
    let mut kid = Running::spawn(role("bcast-publish-hold", &n));
    kid.expect_line("attached", HANG);
    let mut fd = shm_ring::aio::ReadyFd::new().unwrap();
    // Drains with the docs' loop until `want` comes (each signal a hint).
    let mut until = |fd: &mut shm_ring::aio::ReadyFd, want: Result<u64, RecvError>| {
        let mut hints = 0;
        loop {
            match sub.try_recv() {
                Err(RecvError::Empty) => {}
                r => {
                    assert_eq!(r, want);
                    return;
                }
            }
            if fd.arm(&mut sub) == Ok(false) {
                assert!(readable(fd, HANG), "never signalled");
            }
            fd.clear();
            hints += 1;
            assert!(
                hints < 100,
                "signalled over and over with nothing to receive"
            );
        }
    };
    until(&mut fd, Ok(9));
    kid.kill9();
    until(&mut fd, Err(RecvError::PeerDied));
}
