//! An epoll loop that waits on ring ends and an ordinary file descriptor together: a
//! market-data SPSC ring and an order log from a feed process, and a pipe (standing for
//! a socket the loop also serves), through one `ReadyFd` (an eventfd this process's waiter
//! signals when an armed end may be ready).
//!
//! Run: `cargo run --release -p shmring-examples --example epoll` (it starts the feed
//! process itself).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shm_ring::aio::ReadyFd;
use shm_ring::{log, spsc, PopError};

const TICKS: u64 = 1_000;
const ORDERS: u64 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "feed" {
        return feed(&args[2]);
    }
    event_loop()
}

/// The feed: a tick every 100 µs, an order every 10th tick, then a clean exit.
fn feed(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut ticks = spsc::open::<u64>(&format!("{name}-ticks"))?.producer()?;
    let mut orders = log::open(&format!("{name}-orders"))?.producer()?;
    println!("ready");
    std::io::stdout().flush()?;
    for i in 0..TICKS {
        ticks.push(i)?;
        if i % (TICKS / ORDERS) == 0 {
            orders.send(format!("BUY {} @ {}", i % 7 + 1, 100 + i % 13).as_bytes())?;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

fn add(ep: RawFd, fd: RawFd, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a valid epoll_event; `ep` and `fd` are open descriptors.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn event_loop() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("/shmring-example-epoll-{}", std::process::id());
    let tick_ring = spsc::create::<u64>(&format!("{name}-ticks"), 1024)?;
    let order_log = log::Builder::new(&format!("{name}-orders"))
        .capacity(16 << 10)
        .max_len(256)
        .create()?;
    let (mut ticks, mut orders) = (tick_ring.consumer()?, order_log.consumer()?);
    let mut feed = Command::new(std::env::current_exe()?)
        .args(["feed", &name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(feed.stdout.take().ok_or("no feed stdout")?).lines();
    if lines.next().transpose()?.as_deref() != Some("ready") {
        return Err("the feed did not start".into());
    }

    // The loop's own fd: a pipe another thread writes a "tick of the clock" to.
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let clock = std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: writes one byte from a live local to the pipe's write end.
            unsafe { libc::write(pipe[1], b"!".as_ptr().cast(), 1) };
        }
    });

    let mut ready = ReadyFd::new()?;
    // SAFETY: plain syscall with an integer argument.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    add(ep, ready.as_raw_fd(), 1)?;
    add(ep, pipe[0], 2)?;

    let t0 = Instant::now();
    let (mut n_ticks, mut n_orders, mut clock_ticks, mut wakeups) = (0u64, 0u64, 0u64, 0u64);
    let (mut ticks_done, mut orders_done) = (false, false);
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    while !(ticks_done && orders_done) {
        // Drain every end, then arm those that came up empty (arming an end that has
        // something signals the fd at once, so nothing is missed between the two).
        loop {
            match ticks.try_pop() {
                Ok(v) => {
                    assert_eq!(v, n_ticks, "ticks in order");
                    n_ticks += 1;
                }
                Err(PopError::Empty) => break,
                Err(PopError::Disconnected) => {
                    ticks_done = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            match orders.try_recv() {
                Ok(m) => {
                    if n_orders % 25 == 0 {
                        println!("order {n_orders}: {}", String::from_utf8_lossy(&m));
                    }
                    n_orders += 1;
                }
                Err(PopError::Empty | PopError::InFlight) => break,
                Err(PopError::Disconnected) => {
                    orders_done = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !ticks_done {
            ready.arm(&mut ticks)?;
        }
        if !orders_done {
            ready.arm(&mut orders)?;
        }
        if ticks_done && orders_done {
            break;
        }
        // SAFETY: `events` has room for 8 entries; `ep` is an open epoll descriptor.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 8, 10_000) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err("nothing for 10 s".into());
        }
        for ev in &events[..n as usize] {
            match ev.u64 {
                1 => {
                    ready.clear();
                    wakeups += 1;
                }
                _ => {
                    let mut buf = [0u8; 16];
                    // SAFETY: reads into a live local buffer from the pipe's read end.
                    let got = unsafe { libc::read(pipe[0], buf.as_mut_ptr().cast(), 16) };
                    clock_ticks += got.max(0) as u64;
                }
            }
        }
    }
    clock.join().map_err(|_| "the clock thread panicked")?;
    let status = feed.wait()?;
    // SAFETY: closes descriptors this function opened and no longer uses.
    unsafe {
        libc::close(ep);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    println!(
        "{n_ticks} ticks and {n_orders} orders in {:?}, {wakeups} wake-ups of the ring fd, \
         {clock_ticks} clock ticks on the pipe; feed {status}",
        t0.elapsed()
    );
    if n_ticks != TICKS || n_orders != ORDERS || !status.success() {
        return Err("messages missing".into());
    }
    Ok(())
}
