//! `shmring bench`: round trips and throughput between two real processes, side by side
//! with the hardware floor (a bare cache-line ping-pong) and the kernel (pipe, Unix socket).
//!
//! Every row spawns this same executable as a peer (`shmring __peer ROLE NAME`), pinned to a
//! core of its own where the machine has one. Round trips are timed one by one with the
//! monotonic clock into an HdrHistogram; the clock's own cost (measured at start) is
//! subtracted from each sample. Throughput rows count messages the consumer really received,
//! checked by sequence number.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shm_core::{Fingerprint, Kind, Layout, Region, SegmentBuilder};
use shm_ring::{broadcast, mpmc, spsc, ChunkError, PopError, PushError, RecvError, WaitStrategy};

use crate::sys;

/// The rows, in the order they run and print.
pub const ROWS: [&str; 35] = [
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
    "spsc-throughput-8B-try",
    "spsc-throughput-8B",
    "spsc-throughput-8B-park",
    "spsc-throughput-64B",
    "spsc-throughput-8B-chunk64",
    "rtrb-8B",
    "rtrb-64B",
    "mpmc-throughput",
    "mpmc-throughput-2p2c",
    "mpmc-throughput-4p4c",
    "arrayqueue-1p1c",
    "arrayqueue-2p2c",
    "arrayqueue-4p4c",
    "broadcast-throughput-8B",
    "broadcast-fanout-1",
    "broadcast-fanout-2",
    "broadcast-fanout-8",
    "log-64B",
    "memcpy-4KiB",
    "rtrb-4KiB",
    "log-4KiB",
    "spsc-bursty-spin",
    "spsc-bursty-park",
    "spsc-wake-park",
    "spsc-wake-async",
];

/// What each row's code calls, as the table prints it.
fn calls_of(row: &str) -> &'static str {
    match row {
        "floor" => "store / load of one cache line each way",
        "spsc-spin" => "push / pop, BusySpin, 2 rings",
        "spsc-park" => "push / pop, SpinThenPark, 2 rings",
        "mpmc" => "push / pop, BusySpin, 2 rings",
        "broadcast" => "publish / recv out, SPSC push / pop back",
        "broadcast-throughput-8B" => "publish / recv, back-pressure, BusySpin",
        "broadcast-fanout-1" | "broadcast-fanout-2" | "broadcast-fanout-8" => {
            "publish; subscribers drain each ms"
        }
        "service" => "Client::call of 64 bytes, server recv_timeout / reply_with, BusySpin",
        "log-64B" => "send / recv, 64-byte messages, BusySpin",
        "memcpy-4KiB" => "copy_from_slice of 4 KiB through 1 MiB, one thread",
        "log-4KiB" => "claim / copy / commit, recv / copy out, 4 KiB, records aligned to 64",
        "select-1" | "select-8" => {
            "push into one of N rings in turn; peer select / try_pop, push back; pop BusySpin"
        }
        "pipe" => "write / read, 8 bytes",
        "unix-socket" => "write / read, 8 bytes",
        "spsc-throughput-8B-try" => "try_push / try_pop retry loops",
        "spsc-throughput-8B" | "spsc-throughput-64B" => "push / pop, BusySpin",
        "spsc-throughput-8B-park" => "push / pop, SpinThenPark",
        "spsc-throughput-8B-chunk64" => "write_chunk_uninit(64) / pop_slice(64)",
        "rtrb-8B" | "rtrb-64B" => "push / pop retry loops, 2 threads",
        "rtrb-4KiB" => "byte ring of 1 MiB: write_chunk_uninit / copy / commit, read_chunk / copy out, 2 threads",
        "mpmc-throughput" | "mpmc-throughput-2p2c" | "mpmc-throughput-4p4c" => {
            "push / pop, BusySpin"
        }
        "arrayqueue-1p1c" | "arrayqueue-2p2c" | "arrayqueue-4p4c" => {
            "push / pop retry loops, threads"
        }
        "spsc-bursty-spin" => "push / pop, BusySpin",
        "spsc-bursty-park" => "push / pop, SpinThenPark",
        "spsc-wake-park" => "push / pop, SpinThenPark",
        "spsc-wake-async" => "push / pop_async, block_on",
        _ => "",
    }
}

/// The peer row a throughput row is compared with, and the column it prints in.
fn reference_of(row: &str) -> Option<(&'static str, Column)> {
    Some(match row {
        "spsc-throughput-8B" | "spsc-throughput-8B-park" => ("spsc-throughput-8B-try", Column::Try),
        "broadcast-throughput-8B" => ("spsc-throughput-8B", Column::Try),
        "broadcast-fanout-2" | "broadcast-fanout-8" => ("broadcast-fanout-1", Column::Try),
        "log-64B" => ("spsc-throughput-64B", Column::Try),
        "log-4KiB" => ("memcpy-4KiB", Column::Try),
        _ => return None,
    })
}

/// The rtrb / ArrayQueue row a row is compared with.
fn peer_of(row: &str) -> Option<&'static str> {
    Some(match row {
        "spsc-throughput-8B-try"
        | "spsc-throughput-8B"
        | "spsc-throughput-8B-park"
        | "spsc-throughput-8B-chunk64" => "rtrb-8B",
        "spsc-throughput-64B" => "rtrb-64B",
        "log-4KiB" => "rtrb-4KiB",
        "mpmc-throughput" => "arrayqueue-1p1c",
        "mpmc-throughput-2p2c" => "arrayqueue-2p2c",
        "mpmc-throughput-4p4c" => "arrayqueue-4p4c",
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Column {
    Try,
}

/// Messages per burst, their spacing within a burst (200k msg/s), and the pause between
/// bursts, of the `spsc-bursty-*` rows.
const BURST: u32 = 200;
const BURST_SPACING: Duration = Duration::from_micros(5);
const BURST_PAUSE: Duration = Duration::from_millis(1);
/// The pause before each message of the `spsc-wake-*` rows: long enough that the
/// consumer is asleep (past its spin budget) when the message comes.
const WAKE_PAUSE: Duration = Duration::from_millis(1);

/// What `shmring bench` was asked for.
pub struct Options {
    /// Measured time per row.
    pub duration: Duration,
    /// Unmeasured time per row before it.
    pub warmup: Duration,
    /// CPUs to pin to, in order (parent first); empty: do not pin.
    pub cpus: Vec<usize>,
    /// Where to write the rows as JSON.
    pub json: Option<PathBuf>,
    /// Rows to run (all if empty).
    pub only: Vec<String>,
    /// Skip the idle-consumer CPU measurement.
    pub skip_idle: bool,
    /// Where to draw the round-trip rows' percentile curves (SVG).
    pub plot: Option<std::path::PathBuf>,
}

/// Round-trip percentiles, in nanoseconds.
#[derive(Clone, Copy)]
struct Rtt {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    /// At each of the plot's quantiles, p0 to p99.99.
    curve: [u64; crate::plot::STEPS],
}

struct Row {
    name: &'static str,
    rtt: Option<Rtt>,
    /// p50 of a short floor run made just before this round-trip row: its "x floor"
    /// divides by this, so a machine whose core-to-core latency changes during the run
    /// (a VM whose vCPUs move) still gives each row a fair ratio.
    floor_p50: Option<u64>,
    msgs_per_sec: Option<f64>,
    /// Samples (round trips) or messages behind the figure.
    count: u64,
    /// Why the row has no figure (it was skipped).
    note: Option<String>,
    /// What a bursty row measured.
    bursty: Option<Bursty>,
}

/// A bursty feed's figures: one-way latency (feed's push to consumer's pop), how many
/// pushes issued a `FUTEX_WAKE`, and the consumer's CPU.
#[derive(Clone, Copy)]
struct Bursty {
    p50: u64,
    p99: u64,
    wakes_per_push: f64,
    consumer_cpu: f64,
}

impl Row {
    fn rate(name: &'static str, msgs_per_sec: f64, count: u64) -> Row {
        Row {
            name,
            rtt: None,
            floor_p50: None,
            msgs_per_sec: Some(msgs_per_sec),
            count,
            note: None,
            bursty: None,
        }
    }

    fn skipped(name: &'static str, why: String) -> Row {
        Row {
            name,
            rtt: None,
            floor_p50: None,
            msgs_per_sec: None,
            count: 0,
            note: Some(why),
            bursty: None,
        }
    }
}

/// A message that kills the echo loops.
const STOP: u64 = u64::MAX;
/// A peer that has not answered for this long is taken as stuck.
const PEER_SILENCE: Duration = Duration::from_secs(10);
/// At most this many round trips are recorded per row.
const MAX_SAMPLES: u64 = 20_000_000;
const FLOOR_SCHEMA: u64 = 0x0066_6c6f_6f72; // "floor"

// ------------------------------------------------------------------------------------------
// Peers

/// A peer process: this executable run as `shmring __peer ROLE NAME`.
struct Peer {
    role: String,
    child: Child,
    out: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
}

impl Peer {
    fn spawn(role: &str, name: &str, cpu: Option<usize>, arg: u64) -> Result<Peer, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find shmring's own executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["__peer", role, name, "--arg", &arg.to_string()]);
        if let Some(c) = cpu {
            cmd.args(["--cpu", &c.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {role} peer: {e}"))?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        Ok(Peer {
            role: role.to_owned(),
            child,
            out,
            stdin,
        })
    }

    /// The next line the peer prints; an error if it exits first.
    fn line(&mut self) -> Result<String, String> {
        let mut s = String::new();
        match self.out.read_line(&mut s) {
            Ok(0) | Err(_) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("the {} peer exited early ({status})", self.role))
            }
            Ok(_) => Ok(s.trim_end().to_owned()),
        }
    }

    fn expect_ready(&mut self) -> Result<(), String> {
        let l = self.line()?;
        if l == "ready" {
            Ok(())
        } else {
            Err(format!(
                "the {} peer said {l:?} instead of ready",
                self.role
            ))
        }
    }

    fn send_line(&mut self, l: &str) -> Result<(), String> {
        let w = self.stdin.as_mut().expect("stdin kept");
        writeln!(w, "{l}").map_err(|e| format!("cannot talk to the {} peer: {e}", self.role))
    }

    /// Waits for the peer to exit successfully (killing it after `PEER_SILENCE`).
    fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let until = Instant::now() + PEER_SILENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("the {} peer failed ({s})", self.role)),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                _ => return Err(format!("the {} peer did not exit; killed it", self.role)),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn floor_layout() -> Result<(Layout, Region<AtomicU64>, Region<AtomicU64>), String> {
    let mut l = Layout::new();
    let e = |e: shm_core::RegionError| e.to_string();
    let ping = l.push_aligned::<AtomicU64>(1, 128).map_err(e)?;
    let pong = l.push_aligned::<AtomicU64>(1, 128).map_err(e)?;
    Ok((l, ping, pong))
}

fn floor_segment(name: &str) -> Result<SegmentBuilder, String> {
    Ok(SegmentBuilder::new(name)
        .kind(Kind::Raw)
        .fingerprint(Fingerprint::untyped(FLOOR_SCHEMA))
        .layout(&floor_layout()?.0))
}

fn ready() {
    say!("ready");
}

fn es<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The peer side: `shmring __peer ROLE NAME [--cpu N] [--arg X]`.
pub fn peer(role: &str, name: &str, cpu: Option<usize>, arg: u64) -> Result<(), String> {
    if let Some(c) = cpu {
        sys::pin_to(c).map_err(|e| format!("cannot pin to CPU {c}: {e}"))?;
    }
    match role {
        "floor-echo" => {
            let seg = floor_segment(name)?.open().map_err(es)?;
            let (_, ping, pong) = floor_layout()?;
            let (ping, pong) = (seg.get(ping).map_err(es)?, seg.get(pong).map_err(es)?);
            ready();
            let mut last = 0;
            loop {
                // Acquire/Release here only order the echo itself (no data rides on it);
                // they pair with the parent's Release store of `ping` / Acquire load of `pong`.
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    std::hint::spin_loop();
                    continue;
                }
                if v == STOP {
                    return Ok(());
                }
                last = v;
                pong.store(v, Ordering::Release);
            }
        }
        "select-echo" => {
            // Selects over `arg` rings and echoes each item on the pong ring.
            let mut rxs = (0..arg)
                .map(|k| {
                    spsc::open::<u64>(&format!("{name}-ping-{k}"))
                        .map_err(es)?
                        .consumer()
                        .map_err(es)
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut tx = spsc::open::<u64>(&format!("{name}-pong"))
                .map_err(es)?
                .producer()
                .map_err(es)?;
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            loop {
                let i = {
                    let mut ends: Vec<&mut dyn shm_ring::select::Selectable> = rxs
                        .iter_mut()
                        .map(|r| r as &mut dyn shm_ring::select::Selectable)
                        .collect();
                    match shm_ring::select::select(&mut ends, Some(Duration::from_secs(10))) {
                        Ok(i) => i,
                        Err(shm_ring::select::SelectError::Timeout) => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                };
                match rxs[i].try_pop() {
                    Ok(v) => {
                        if tx.push(v).is_err() {
                            break;
                        }
                    }
                    Err(shm_ring::PopError::Empty) => {}
                    // The bench closed its pings: done.
                    Err(_) => break,
                }
            }
            Ok(())
        }
        "spsc-echo-spin" | "spsc-echo-park" => {
            let strategy = if role.ends_with("spin") {
                WaitStrategy::BusySpin
            } else {
                WaitStrategy::SpinThenPark
            };
            let mut rx = spsc::open::<u64>(&format!("{name}-ping"))
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            let mut tx = spsc::open::<u64>(&format!("{name}-pong"))
                .map_err(es)?
                .producer()
                .map_err(es)?;
            rx.set_wait_strategy(strategy);
            tx.set_wait_strategy(strategy);
            ready();
            while let Ok(v) = rx.pop() {
                if tx.push(v).is_err() {
                    break;
                }
            }
            Ok(())
        }
        "broadcast-echo" => {
            let mut rx = broadcast::open::<u64>(&format!("{name}-ping"))
                .map_err(es)?
                .subscribe()
                .map_err(es)?;
            let mut tx = spsc::open::<u64>(&format!("{name}-pong"))
                .map_err(es)?
                .producer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            while let Ok(v) = rx.recv() {
                if tx.push(v).is_err() {
                    break;
                }
            }
            Ok(())
        }
        "broadcast-sink" => {
            let mut rx = broadcast::open::<u64>(name)
                .map_err(es)?
                .subscribe()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            let (mut expect, mut gaps) = (0u64, 0u64);
            loop {
                match rx.recv() {
                    Ok(v) => {
                        gaps += u64::from(v != expect);
                        expect = v.wrapping_add(1);
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            say!("received {expect} gaps {gaps}");
            Ok(())
        }
        "broadcast-lazy" => {
            let mut rx = broadcast::open::<u64>(name)
                .map_err(es)?
                .subscribe()
                .map_err(es)?;
            ready();
            let (mut received, mut lagged) = (0u64, 0u64);
            let mut buf = [0u64; 256];
            'outer: loop {
                std::thread::sleep(Duration::from_millis(1));
                loop {
                    match rx.recv_slice(&mut buf) {
                        Ok(n) => received += n as u64,
                        Err(RecvError::Lagged(n)) => lagged += n,
                        Err(RecvError::Empty) => break,
                        Err(RecvError::Disconnected) => break 'outer,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            say!("received {received} lagged {lagged}");
            Ok(())
        }
        "mpmc-echo" => {
            let mut rx = mpmc::open::<u64>(&format!("{name}-ping"))
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            let mut tx = mpmc::open::<u64>(&format!("{name}-pong"))
                .map_err(es)?
                .producer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            while let Ok(v) = rx.pop() {
                if tx.push(v).is_err() {
                    break;
                }
            }
            Ok(())
        }
        "pipe-echo" => {
            ready();
            let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
            let mut b = [0u8; 8];
            while i.read_exact(&mut b).is_ok() {
                o.write_all(&b).map_err(es)?;
                o.flush().map_err(es)?;
            }
            Ok(())
        }
        "socket-echo" => {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(es)?;
            let mut s =
                UnixStream::connect_addr(&addr).map_err(|e| format!("connect @{name}: {e}"))?;
            ready();
            let mut b = [0u8; 8];
            while s.read_exact(&mut b).is_ok() {
                s.write_all(&b).map_err(es)?;
            }
            Ok(())
        }
        "spsc-sink-8" => sink_one_at_a_time::<u64>(name, Some(WaitStrategy::BusySpin), |v| v),
        "spsc-sink-8-park" => {
            sink_one_at_a_time::<u64>(name, Some(WaitStrategy::SpinThenPark), |v| v)
        }
        "spsc-sink-8-try" => sink_one_at_a_time::<u64>(name, None, |v| v),
        "service-echo" => {
            let mut server = shm_ring::service::Server::create(name).map_err(es)?;
            server.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            // Answers each request with its own bytes until the bench's client leaves.
            let mut served = 0u64;
            loop {
                match server.recv_timeout(Duration::from_millis(100)) {
                    Ok(req) => {
                        // The echo written in place: no copy of the request to the heap.
                        let n = req.bytes().len();
                        req.reply_with(n, |request, reply| {
                            reply.copy_from_slice(request);
                            n
                        })
                        .map_err(es)?;
                        served += 1;
                    }
                    Err(shm_ring::service::ServiceError::Timeout) if served > 0 => break,
                    Err(shm_ring::service::ServiceError::Timeout) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }
        "log-sink" => {
            let mut rx = shm_ring::log::open(name)
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            let (mut expect, mut gaps) = (0u64, 0u64);
            let mut out = vec![0u8; 4096];
            loop {
                match rx.recv() {
                    Ok(f) => {
                        // What a user's code does with a message: copy it out.
                        out[..f.len()].copy_from_slice(&f);
                        let seq = u64::from_le_bytes(out[..8].try_into().unwrap_or_default());
                        gaps += u64::from(seq != expect);
                        expect = seq.wrapping_add(1);
                    }
                    Err(PopError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            say!("received {expect} gaps {gaps}");
            Ok(())
        }
        "spsc-sink-64" => {
            sink_one_at_a_time::<[u64; 8]>(name, Some(WaitStrategy::BusySpin), |v| v[0])
        }
        "spsc-bursty-spin" => bursty_sink(name, WaitStrategy::BusySpin),
        "spsc-bursty-park" | "spsc-wake-park" => bursty_sink(name, WaitStrategy::SpinThenPark),
        "spsc-wake-async" => wake_sink_async(name),
        "async-idle" => async_idle(name),
        "spsc-sink-chunk" => {
            let mut rx = spsc::open::<u64>(name)
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            let (mut expect, mut gaps) = (0u64, 0u64);
            let mut buf = [0u64; 64];
            loop {
                let n = rx.pop_slice(&mut buf);
                for &v in &buf[..n] {
                    gaps += u64::from(v != expect);
                    expect = v.wrapping_add(1);
                }
                if n == 0 {
                    match rx.pop() {
                        Ok(v) => {
                            gaps += u64::from(v != expect);
                            expect = v.wrapping_add(1);
                        }
                        Err(PopError::Disconnected) => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            say!("received {expect} gaps {gaps}");
            Ok(())
        }
        "mpmc-producer" => {
            let id = arg;
            let mut tx = mpmc::open::<u64>(name)
                .map_err(es)?
                .producer()
                .map_err(es)?;
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            let mut l = String::new();
            std::io::stdin().read_line(&mut l).map_err(es)?;
            let d: u64 = l
                .trim()
                .parse()
                .map_err(|_| format!("bad duration {l:?}"))?;
            let d = Duration::from_nanos(d);
            let t0 = Instant::now();
            let mut seq = 0u64;
            while t0.elapsed() < d {
                for _ in 0..256 {
                    tx.push(id << 48 | seq).map_err(es)?;
                    seq += 1;
                }
            }
            drop(tx);
            say!("pushed {seq}");
            Ok(())
        }
        "mpmc-consumer" => {
            let mut rx = mpmc::open::<u64>(name)
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            ready();
            // Items of one producer reach one consumer in the order they were pushed.
            let mut next = vec![0u64; 1 << 8];
            let (mut got, mut disorder) = (0u64, 0u64);
            loop {
                match rx.pop() {
                    Ok(v) => {
                        let (id, seq) = ((v >> 48) as usize & 0xff, v & ((1 << 48) - 1));
                        disorder += u64::from(seq < next[id]);
                        next[id] = seq + 1;
                        got += 1;
                    }
                    Err(PopError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            say!("popped {got} disorder {disorder}");
            Ok(())
        }
        "spsc-park-idle" => {
            let mut rx = spsc::open::<u64>(name)
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::SpinThenPark);
            idle_pop(|| rx.pop().map_err(es))
        }
        "mpmc-park-idle" => {
            let mut rx = mpmc::open::<u64>(name)
                .map_err(es)?
                .consumer()
                .map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::SpinThenPark);
            idle_pop(|| rx.pop().map_err(es))
        }
        other => Err(format!("unknown peer role {other:?}")),
    }
}

/// The consumer peer of a one-at-a-time row: blocking `pop` with `strategy`, or (`None`) a
/// `try_pop` retry loop.
fn sink_one_at_a_time<T: bytemuck::Pod + shm_ring::TypeIdentity>(
    name: &str,
    strategy: Option<WaitStrategy>,
    seq: impl Fn(T) -> u64,
) -> Result<(), String> {
    let mut rx = spsc::open::<T>(name).map_err(es)?.consumer().map_err(es)?;
    if let Some(s) = strategy {
        rx.set_wait_strategy(s);
    }
    ready();
    let (mut expect, mut gaps) = (0u64, 0u64);
    loop {
        let got = if strategy.is_some() {
            rx.pop()
        } else {
            loop {
                match rx.try_pop() {
                    Err(PopError::Empty) => {}
                    other => break other,
                }
            }
        };
        match got {
            Ok(v) => {
                let s = seq(v);
                gaps += u64::from(s != expect);
                expect = s.wrapping_add(1);
            }
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    say!("received {expect} gaps {gaps}");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The parent side

/// The cost of reading the clock twice, median of many tries: subtracted from each sample.
fn timer_overhead() -> u64 {
    let mut v: Vec<u64> = (0..10_001)
        .map(|_| {
            let t = Instant::now();
            Instant::now().duration_since(t).as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

struct Ctx<'a> {
    opts: &'a Options,
    overhead: u64,
    tag: String,
    /// Warm-up and measured time of a round-trip row (shorter for the adjacent floors).
    rtt_warmup: Duration,
    rtt_duration: Duration,
}

impl Ctx<'_> {
    fn name(&self, row: &str) -> String {
        format!("/shmring-bench-{}-{row}", self.tag)
    }

    fn cpu(&self, i: usize) -> Option<usize> {
        if self.opts.cpus.is_empty() {
            None
        } else {
            Some(self.opts.cpus[i % self.opts.cpus.len()])
        }
    }

    /// Warms up, then times `once` (one round trip) until the row's time is spent.
    fn rtt(&self, mut once: impl FnMut() -> Result<(), String>) -> Result<(Rtt, u64), String> {
        let warm = Instant::now();
        while warm.elapsed() < self.rtt_warmup {
            once()?;
        }
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).map_err(es)?;
        let start = Instant::now();
        let mut n = 0u64;
        loop {
            let t0 = Instant::now();
            once()?;
            let t1 = Instant::now();
            let ns = (t1 - t0).as_nanos() as u64;
            h.saturating_record(ns.saturating_sub(self.overhead).max(1));
            n += 1;
            if n >= MAX_SAMPLES || t1 - start >= self.rtt_duration {
                break;
            }
        }
        Ok((
            Rtt {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                curve: std::array::from_fn(|k| h.value_at_quantile(crate::plot::quantile(k))),
            },
            n,
        ))
    }
}

/// Spins until `cond`, failing if the peer stays silent for `PEER_SILENCE`.
#[inline]
fn spin_until(mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    while !cond() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % (1 << 16) == 0 {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() > PEER_SILENCE {
                return Err("the peer stopped answering".into());
            }
        }
    }
    Ok(())
}

fn run_row(ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    let rtt_row = |(rtt, n): (Rtt, u64)| Row {
        name: row,
        rtt: Some(rtt),
        floor_p50: None,
        msgs_per_sec: None,
        count: n,
        note: None,
        bursty: None,
    };
    let name = ctx.name(row);
    match row {
        "floor" => {
            let seg = floor_segment(&name)?.create().map_err(es)?;
            let (_, ping, pong) = floor_layout()?;
            let (ping, pong) = (seg.get(ping).map_err(es)?, seg.get(pong).map_err(es)?);
            let mut p = Peer::spawn("floor-echo", &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let mut seq = 0u64;
            let r = ctx.rtt(|| {
                seq += 1;
                // Release/Acquire: pair with the echo's Acquire load of `ping` and Release
                // store of `pong` (a round trip of one cache line each way).
                ping.store(seq, Ordering::Release);
                spin_until(|| pong.load(Ordering::Acquire) == seq)
            });
            ping.store(STOP, Ordering::Release);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "spsc-spin" | "spsc-park" => {
            let (strategy, role) = if row == "spsc-spin" {
                (WaitStrategy::BusySpin, "spsc-echo-spin")
            } else {
                (WaitStrategy::SpinThenPark, "spsc-echo-park")
            };
            let ping = spsc::create::<u64>(&format!("{name}-ping"), 64).map_err(es)?;
            let pong = spsc::create::<u64>(&format!("{name}-pong"), 64).map_err(es)?;
            let (mut tx, mut rx) = (ping.producer().map_err(es)?, pong.consumer().map_err(es)?);
            tx.set_wait_strategy(strategy);
            rx.set_wait_strategy(strategy);
            let mut p = Peer::spawn(role, &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let r = ctx.rtt(|| {
                tx.push(7).map_err(es)?;
                rx.pop().map(drop).map_err(es)
            });
            drop(tx);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "select-1" | "select-8" => {
            let n: u64 = if row == "select-1" { 1 } else { 8 };
            let pings = (0..n)
                .map(|k| spsc::create::<u64>(&format!("{name}-ping-{k}"), 64).map_err(es))
                .collect::<Result<Vec<_>, String>>()?;
            let pong = spsc::create::<u64>(&format!("{name}-pong"), 64).map_err(es)?;
            let mut txs = pings
                .iter()
                .map(|r| r.producer().map_err(es))
                .collect::<Result<Vec<_>, String>>()?;
            let mut rx = pong.consumer().map_err(es)?;
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let mut p = Peer::spawn("select-echo", &name, ctx.cpu(1), n)?;
            p.expect_ready()?;
            let mut k = 0usize;
            let r = ctx.rtt(|| {
                k = (k + 1) % txs.len();
                txs[k].try_push(7).map_err(es)?;
                rx.pop().map(drop).map_err(es)
            });
            drop(txs);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "mpmc" => {
            let ping = mpmc::create::<u64>(&format!("{name}-ping"), 64).map_err(es)?;
            let pong = mpmc::create::<u64>(&format!("{name}-pong"), 64).map_err(es)?;
            let (mut tx, mut rx) = (ping.producer().map_err(es)?, pong.consumer().map_err(es)?);
            tx.set_wait_strategy(WaitStrategy::BusySpin);
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let mut p = Peer::spawn("mpmc-echo", &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let r = ctx.rtt(|| {
                tx.push(7).map_err(es)?;
                rx.pop().map(drop).map_err(es)
            });
            drop(tx);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "broadcast" => {
            let ping = broadcast::create::<u64>(&format!("{name}-ping"), 64).map_err(es)?;
            let pong = spsc::create::<u64>(&format!("{name}-pong"), 64).map_err(es)?;
            let (mut tx, mut rx) = (ping.publisher().map_err(es)?, pong.consumer().map_err(es)?);
            rx.set_wait_strategy(WaitStrategy::BusySpin);
            let mut p = Peer::spawn("broadcast-echo", &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let r = ctx.rtt(|| {
                tx.publish(7).map_err(es)?;
                rx.pop().map(drop).map_err(es)
            });
            drop(tx);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "service" => {
            let mut server_name = name.clone();
            server_name.push_str("-svc");
            let mut p = Peer::spawn("service-echo", &server_name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let mut client = shm_ring::service::Client::connect(&server_name).map_err(es)?;
            client.set_wait_strategy(WaitStrategy::BusySpin);
            let req = [7u8; 64];
            let r = ctx.rtt(|| {
                let reply = client.call(&req, Duration::from_secs(10)).map_err(es)?;
                if reply.len() != req.len() {
                    return Err(format!("a reply of {} bytes to 64", reply.len()));
                }
                Ok(())
            });
            drop(client);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "broadcast-throughput-8B" => broadcast_throughput(ctx, row),
        "broadcast-fanout-1" => broadcast_fanout(ctx, row, 1),
        "broadcast-fanout-2" => broadcast_fanout(ctx, row, 2),
        "broadcast-fanout-8" => broadcast_fanout(ctx, row, 8),
        "pipe" => {
            let mut p = Peer::spawn("pipe-echo", &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let mut w = p.stdin.take().expect("stdin kept");
            let mut b = [7u8; 8];
            let r = {
                let r_out = p.out.get_mut();
                ctx.rtt(|| {
                    w.write_all(&b).map_err(es)?;
                    r_out.read_exact(&mut b).map_err(es)
                })
            };
            drop(w);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "unix-socket" => {
            // An abstract socket: no file to clean up.
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(es)?;
            let l = UnixListener::bind_addr(&addr).map_err(es)?;
            let mut p = Peer::spawn("socket-echo", &name, ctx.cpu(1), 0)?;
            let (mut s, _) = l.accept().map_err(es)?;
            p.expect_ready()?;
            let mut b = [7u8; 8];
            let r = ctx.rtt(|| {
                s.write_all(&b).map_err(es)?;
                s.read_exact(&mut b).map_err(es)
            });
            drop(s);
            p.finish()?;
            Ok(rtt_row(r?))
        }
        "spsc-throughput-8B-try" => throughput_one::<u64>(ctx, row, "spsc-sink-8-try", None, |i| i),
        "spsc-throughput-8B" => {
            throughput_one::<u64>(ctx, row, "spsc-sink-8", Some(WaitStrategy::BusySpin), |i| i)
        }
        "spsc-throughput-8B-park" => throughput_one::<u64>(
            ctx,
            row,
            "spsc-sink-8-park",
            Some(WaitStrategy::SpinThenPark),
            |i| i,
        ),
        "spsc-throughput-64B" => throughput_one::<[u64; 8]>(
            ctx,
            row,
            "spsc-sink-64",
            Some(WaitStrategy::BusySpin),
            |i| [i; 8],
        ),
        "rtrb-8B" | "rtrb-64B" | "rtrb-4KiB" => peer_row(ctx, row),
        "log-64B" => log_throughput(ctx, row, 64),
        "log-4KiB" => log_throughput(ctx, row, 4096),
        "memcpy-4KiB" => memcpy_rate(ctx, row),
        "arrayqueue-1p1c" | "arrayqueue-2p2c" | "arrayqueue-4p4c" => peer_row(ctx, row),
        "spsc-bursty-spin" | "spsc-bursty-park" | "spsc-wake-park" | "spsc-wake-async" => {
            bursty(ctx, row)
        }
        "spsc-throughput-8B-chunk64" => {
            let ring = spsc::create::<u64>(&name, 4096).map_err(es)?;
            let mut tx = ring.producer().map_err(es)?;
            let mut p = Peer::spawn("spsc-sink-chunk", &name, ctx.cpu(1), 0)?;
            p.expect_ready()?;
            let mut i = 0u64;
            let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
                let t0 = Instant::now();
                while t0.elapsed() < d {
                    let mut spins = 0u32;
                    for _ in 0..64 {
                        match tx.write_chunk_uninit(64) {
                            Ok(mut ch) => {
                                let (a, b) = ch.as_mut_slices();
                                for s in a.iter_mut().chain(b.iter_mut()) {
                                    *s = *i;
                                    *i += 1;
                                }
                                ch.commit_all();
                            }
                            Err(ChunkError::TooFewSlots { .. }) => {
                                spins += 1;
                                if spins % (1 << 20) == 0 && tx.is_abandoned() {
                                    return Err("the consumer left".into());
                                }
                                std::hint::spin_loop();
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
                Ok(())
            };
            run(ctx.opts.warmup, &mut i)?;
            let (before, t0) = (i, Instant::now());
            run(ctx.opts.duration, &mut i)?;
            spin_until(|| ring.stats().pops >= i)?;
            let secs = t0.elapsed().as_secs_f64();
            drop(tx);
            check_received(&mut p, i)?;
            p.finish()?;
            Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
        }
        "mpmc-throughput" | "mpmc-throughput-2p2c" | "mpmc-throughput-4p4c" => {
            let each = match row {
                "mpmc-throughput" => 1,
                "mpmc-throughput-2p2c" => 2,
                _ => 4,
            };
            if let Some(why) = too_few_cpus(ctx, each) {
                return Ok(Row::skipped(row, why));
            }
            let ring = mpmc::create::<u64>(&name, 4096).map_err(es)?;
            let mut consumers = Vec::new();
            for k in 0..each {
                let mut c = Peer::spawn("mpmc-consumer", &name, ctx.cpu(each + k), 0)?;
                c.expect_ready()?;
                consumers.push(c);
            }
            let mut producers = Vec::new();
            for k in 0..each {
                let mut pr = Peer::spawn("mpmc-producer", &name, ctx.cpu(k), k as u64)?;
                pr.expect_ready()?;
                producers.push(pr);
            }
            // Producers run warm-up + measured time; we time the measured part from the
            // ring's own counter of claimed pops.
            let total = ctx.opts.warmup + ctx.opts.duration;
            for pr in &mut producers {
                pr.send_line(&total.as_nanos().to_string())?;
            }
            std::thread::sleep(ctx.opts.warmup);
            let (pops0, t0) = (ring.stats().pops, Instant::now());
            let mut pushed = 0u64;
            for pr in &mut producers {
                let l = pr.line()?;
                pushed += l
                    .strip_prefix("pushed ")
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| format!("a producer said {l:?}"))?;
            }
            let silent = Instant::now();
            while ring.stats().pops < pushed {
                if silent.elapsed() > PEER_SILENCE {
                    return Err("the consumers stopped draining".into());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            let secs = t0.elapsed().as_secs_f64();
            let popped_measured = ring.stats().pops - pops0;
            for pr in producers {
                pr.finish()?;
            }
            let mut popped = 0u64;
            for mut c in consumers {
                let l = c.line()?;
                let mut f = l.split_whitespace();
                let (got, dis) = match (f.next(), f.next(), f.next(), f.next()) {
                    (Some("popped"), Some(g), Some("disorder"), Some(d)) => {
                        (g.parse::<u64>().map_err(es)?, d.parse::<u64>().map_err(es)?)
                    }
                    _ => return Err(format!("a consumer said {l:?}")),
                };
                if dis != 0 {
                    return Err(format!(
                        "a consumer saw {dis} items of one producer out of order"
                    ));
                }
                popped += got;
                c.finish()?;
            }
            if popped != pushed {
                return Err(format!("{pushed} pushed but {popped} popped"));
            }
            Ok(Row::rate(
                row,
                popped_measured as f64 / secs,
                popped_measured,
            ))
        }
        other => Err(format!("unknown row {other:?}")),
    }
}

fn check_received(p: &mut Peer, sent: u64) -> Result<(), String> {
    let l = p.line()?;
    let mut f = l.split_whitespace();
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some("received"), Some(n), Some("gaps"), Some("0")) if n.parse::<u64>() == Ok(sent) => {
            Ok(())
        }
        _ => Err(format!(
            "sent {sent} in sequence but the consumer said {l:?}"
        )),
    }
}

/// One producer (this process) and one consumer peer on an SPSC ring of 4096, one message
/// at a time: blocking `push` with `strategy`, or (`None`) a `try_push` retry loop, and
/// the consumer peer `role` doing the same on its side.
fn throughput_one<T: bytemuck::Pod + shm_ring::TypeIdentity>(
    ctx: &Ctx<'_>,
    row: &'static str,
    role: &str,
    strategy: Option<WaitStrategy>,
    make: impl Fn(u64) -> T,
) -> Result<Row, String> {
    let name = ctx.name(row);
    let ring = spsc::create::<T>(&name, 4096).map_err(es)?;
    let mut tx = ring.producer().map_err(es)?;
    if let Some(s) = strategy {
        tx.set_wait_strategy(s);
    }
    let mut p = Peer::spawn(role, &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    let mut i = 0u64;
    let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            for _ in 0..1024 {
                let mut v = make(*i);
                if strategy.is_some() {
                    tx.push(v).map_err(es)?;
                } else {
                    loop {
                        match tx.try_push(v) {
                            Ok(()) => break,
                            Err(PushError::Full(back)) => v = back,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
                *i += 1;
            }
        }
        Ok(())
    };
    run(ctx.opts.warmup, &mut i)?;
    let (before, t0) = (i, Instant::now());
    run(ctx.opts.duration, &mut i)?;
    spin_until(|| ring.stats().pops >= i)?;
    let secs = t0.elapsed().as_secs_f64();
    drop(tx);
    check_received(&mut p, i)?;
    p.finish()?;
    Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
}

/// One producer (this process) and the consumer peer `log-sink` on a 1 MiB log, one
/// message of `len` bytes at a time: 64 bytes with `send` (a claim, a copy, a commit),
/// larger ones written in place from a 1 MiB source (`claim`, `copy_from_slice`, `commit`)
/// into records aligned to 64 bytes (`Builder::record_align`);
/// the consumer copies each frame out (`recv`, `copy_from_slice`, drop). Each message
/// carries its number in its first 8 bytes, checked by the consumer.
fn log_throughput(ctx: &Ctx<'_>, row: &'static str, len: usize) -> Result<Row, String> {
    let name = ctx.name(row);
    let ring = shm_ring::log::Builder::new(&name)
        .capacity(1 << 20)
        .max_len(4096)
        .record_align(if len > 64 { 64 } else { 8 })
        .create()
        .map_err(es)?;
    let mut tx = ring.producer().map_err(es)?;
    tx.set_wait_strategy(WaitStrategy::BusySpin);
    let mut p = Peer::spawn("log-sink", &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    let src: Vec<u8> = (0..(1usize << 20) + 4096).map(|k| k as u8).collect();
    let mut i = 0u64;
    let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            for _ in 0..64 {
                let at = (*i as usize * len) % (1 << 20);
                if len <= 64 {
                    let mut m = [0u8; 64];
                    m[..8].copy_from_slice(&i.to_le_bytes());
                    tx.send(&m[..len]).map_err(es)?;
                } else {
                    let mut c = tx.claim(len).map_err(es)?;
                    let buf = c.buf();
                    buf.copy_from_slice(&src[at..at + len]);
                    buf[..8].copy_from_slice(&i.to_le_bytes());
                    c.commit(len).map_err(es)?;
                }
                *i += 1;
            }
        }
        Ok(())
    };
    run(ctx.opts.warmup, &mut i)?;
    let (before, t0) = (i, Instant::now());
    run(ctx.opts.duration, &mut i)?;
    spin_until(|| ring.stats().received >= i)?;
    let secs = t0.elapsed().as_secs_f64();
    drop(tx);
    check_received(&mut p, i)?;
    p.finish()?;
    Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
}

/// The copy a 4 KiB message costs without any ring: `copy_from_slice` of 4 KiB from a
/// 1 MiB source to a 1 MiB destination, going round both (the log row's footprint), in
/// this process; a rate of 4 KiB copies per second.
fn memcpy_rate(ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    const LEN: usize = 4096;
    let src: Vec<u8> = (0..1usize << 20).map(|k| k as u8).collect();
    let mut dst = vec![0u8; 1 << 20];
    let mut i = 0u64;
    let mut run = |d: Duration, i: &mut u64| {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            for _ in 0..64 {
                let at = (*i as usize * LEN) % (1 << 20);
                dst[at..at + LEN].copy_from_slice(&src[at..at + LEN]);
                *i += 1;
            }
            std::hint::black_box(&mut dst);
        }
    };
    run(ctx.opts.warmup, &mut i);
    let (before, t0) = (i, Instant::now());
    run(ctx.opts.duration, &mut i);
    let secs = t0.elapsed().as_secs_f64();
    Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
}

/// One publisher (this process, `publish` with `BusySpin`) and one busy subscriber peer
/// (`recv`, `BusySpin`) on a back-pressure broadcast ring of 4096, one message at a time:
/// the same shape as `spsc-throughput-8B`, which it is compared with.
fn broadcast_throughput(ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    let name = ctx.name(row);
    let ring = broadcast::Builder::<u64>::new(&name)
        .capacity(4096)
        .policy(broadcast::Policy::BackPressure)
        .create()
        .map_err(es)?;
    let mut tx = ring.publisher().map_err(es)?;
    tx.set_wait_strategy(WaitStrategy::BusySpin);
    let mut p = Peer::spawn("broadcast-sink", &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    let mut i = 0u64;
    let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            for _ in 0..1024 {
                tx.publish(*i).map_err(es)?;
                *i += 1;
            }
        }
        Ok(())
    };
    run(ctx.opts.warmup, &mut i)?;
    let (before, t0) = (i, Instant::now());
    run(ctx.opts.duration, &mut i)?;
    // Until the subscriber has read everything (its position is `i`).
    spin_until(|| {
        ring.stats()
            .subscribers
            .first()
            .is_some_and(|s| s.position >= i)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    drop(tx);
    check_received(&mut p, i)?;
    p.finish()?;
    Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
}

/// One publisher (this process, `publish` under overwrite) and `subs` subscriber peers that
/// sleep 1 ms, drain what the ring holds (`recv_slice`), and sleep again: the publisher's
/// rate with that many subscribers attached, which under overwrite should not depend on
/// how many. Each subscriber's received + lagged must equal what was published.
fn broadcast_fanout(ctx: &Ctx<'_>, row: &'static str, subs: usize) -> Result<Row, String> {
    let name = ctx.name(row);
    let ring = broadcast::create::<u64>(&name, 4096).map_err(es)?;
    let mut tx = ring.publisher().map_err(es)?;
    let mut peers = Vec::new();
    for _ in 0..subs {
        let mut p = Peer::spawn("broadcast-lazy", &name, ctx.cpu(1), 0)?;
        p.expect_ready()?;
        peers.push(p);
    }
    let mut i = 0u64;
    let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            for _ in 0..1024 {
                tx.publish(*i).map_err(es)?;
                *i += 1;
            }
        }
        Ok(())
    };
    run(ctx.opts.warmup, &mut i)?;
    let (before, t0) = (i, Instant::now());
    run(ctx.opts.duration, &mut i)?;
    let secs = t0.elapsed().as_secs_f64();
    drop(tx);
    for mut p in peers {
        let l = p.line()?;
        let mut f = l.split_whitespace();
        let got = match (f.next(), f.next(), f.next(), f.next()) {
            (Some("received"), Some(r), Some("lagged"), Some(g)) => r
                .parse::<u64>()
                .ok()
                .zip(g.parse::<u64>().ok())
                .map(|(r, g)| r + g),
            _ => None,
        };
        if got != Some(i) {
            return Err(format!("published {i} but a subscriber said {l:?}"));
        }
        p.finish()?;
    }
    Ok(Row::rate(row, (i - before) as f64 / secs, i - before))
}

/// Why an MPMC row with `each` producers and `each` consumers is skipped here: it would put
/// more than two spinning threads on a CPU, where it measures the scheduler.
fn too_few_cpus(ctx: &Ctx<'_>, each: usize) -> Option<String> {
    let cpus = match ctx.opts.cpus.len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    (each > cpus).then(|| format!("skipped: needs {} CPUs, has {cpus}", 2 * each))
}

/// A peer row (rtrb, ArrayQueue): threads of this process, pinned like the process rows.
#[cfg(feature = "peers")]
fn peer_row(ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    let (w, d) = (ctx.opts.warmup, ctx.opts.duration);
    let f = match row {
        "rtrb-8B" => crate::peers::rtrb::<u64>([ctx.cpu(0), ctx.cpu(1)], w, d, |i| i, |v| *v)?,
        "rtrb-64B" => {
            crate::peers::rtrb::<[u64; 8]>([ctx.cpu(0), ctx.cpu(1)], w, d, |i| [i; 8], |v| v[0])?
        }
        "rtrb-4KiB" => crate::peers::rtrb_bytes([ctx.cpu(0), ctx.cpu(1)], w, d, 4096)?,
        _ => {
            let each = match row {
                "arrayqueue-1p1c" => 1,
                "arrayqueue-2p2c" => 2,
                _ => 4,
            };
            if let Some(why) = too_few_cpus(ctx, each) {
                return Ok(Row::skipped(row, why));
            }
            crate::peers::array_queue(each, &|i| ctx.cpu(i), w, d)?
        }
    };
    Ok(Row::rate(row, f.msgs_per_sec, f.count))
}

#[cfg(not(feature = "peers"))]
fn peer_row(_ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    Ok(Row::skipped(
        row,
        "skipped: shmring was built without the `peers` feature".into(),
    ))
}

/// A market-data-like feed: bursts of [`BURST`] messages [`BURST_SPACING`] apart, a
/// [`BURST_PAUSE`] between bursts, each message the monotonic time of its push, into a
/// consumer peer that pops with the strategy the row names and records each latency.
fn bursty(ctx: &Ctx<'_>, row: &'static str) -> Result<Row, String> {
    let name = ctx.name(row);
    let ring = spsc::create::<u64>(&name, 4096).map_err(es)?;
    let mut tx = ring.producer().map_err(es)?;
    let mut p = Peer::spawn(row, &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    // Warm-up messages carry the top bit; the consumer does not record them.
    const WARM: u64 = 1 << 63;
    let mut pushes = 0u64;
    // The wake rows: one message at a time, each after the consumer has gone to sleep.
    let (burst, spacing, pause) = if row.starts_with("spsc-wake") {
        (1, Duration::ZERO, WAKE_PAUSE)
    } else {
        (BURST, BURST_SPACING, BURST_PAUSE)
    };
    let mut run = |d: Duration, flag: u64, pushes: &mut u64| -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            let start = sys::mono_ns();
            for k in 0..u64::from(burst) {
                let due = start + k * spacing.as_nanos() as u64;
                while sys::mono_ns() < due {
                    std::hint::spin_loop();
                }
                tx.push(sys::mono_ns() | flag).map_err(es)?;
                *pushes += 1;
            }
            let until = Instant::now() + pause;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Ok(())
    };
    run(ctx.opts.warmup, WARM, &mut pushes)?;
    let (wakes0, pushes0) = (ring.stats().wakeups, pushes);
    run(ctx.opts.duration, 0, &mut pushes)?;
    let wakes = ring.stats().wakeups - wakes0;
    let measured = pushes - pushes0;
    drop(tx);
    let l = p.line()?;
    p.finish()?;
    let v: Vec<u64> = l
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [p50, p99, n, cpu_us, wall_us] = v[..] else {
        return Err(format!("the bursty consumer said {l:?}"));
    };
    if n != measured {
        return Err(format!("{measured} messages pushed, {n} received"));
    }
    Ok(Row {
        name: row,
        rtt: None,
        floor_p50: None,
        msgs_per_sec: None,
        count: n,
        note: None,
        bursty: Some(Bursty {
            p50,
            p99,
            wakes_per_push: wakes as f64 / measured.max(1) as f64,
            consumer_cpu: cpu_us as f64 / wall_us.max(1) as f64,
        }),
    })
}

/// The consumer of a bursty row: pops with `strategy`, records each measured message's
/// latency, and prints `p50 p99 count cpu_us wall_us` once the feed leaves.
fn bursty_sink(name: &str, strategy: WaitStrategy) -> Result<(), String> {
    let mut rx = spsc::open::<u64>(name)
        .map_err(es)?
        .consumer()
        .map_err(es)?;
    rx.set_wait_strategy(strategy);
    record_latencies(|| rx.pop(), sys::thread_cpu_us)
}

/// The body of a bursty or wake consumer: takes messages with `pop` until `Disconnected`,
/// records each measured one's latency (its push's timestamp to now), and prints p50, p99,
/// the count, and the CPU (`cpu`, in µs) and wall time from the first measured message.
fn record_latencies(
    mut pop: impl FnMut() -> Result<u64, PopError>,
    cpu: fn() -> u64,
) -> Result<(), String> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).map_err(es)?;
    ready();
    let mut start: Option<(u64, Instant)> = None;
    loop {
        match pop() {
            Ok(v) if v >> 63 == 0 => {
                let now = sys::mono_ns();
                start.get_or_insert_with(|| (cpu(), Instant::now()));
                h.saturating_record(now.saturating_sub(v).max(1));
            }
            Ok(_) => {}
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let (c0, t0) = start.unwrap_or((cpu(), Instant::now()));
    say!(
        "{} {} {} {} {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.len(),
        cpu() - c0,
        t0.elapsed().as_micros()
    );
    Ok(())
}

/// A minimal executor, as a user without a runtime writes one: polls `f` on this thread,
/// parking between polls until its waker unparks it.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// The consumer of `spsc-wake-async`: `bursty_sink` with `pop_async` under `block_on`,
/// and the whole process's CPU (the waiter thread's as well as this one's).
fn wake_sink_async(name: &str) -> Result<(), String> {
    let mut rx = spsc::open::<u64>(name)
        .map_err(es)?
        .consumer()
        .map_err(es)?;
    record_latencies(|| block_on(rx.pop_async()), sys::process_cpu_us)
}

/// Idle async subscribers: how many, over how many broadcast rings.
const IDLE_TASKS: usize = 1000;
const IDLE_RINGS: usize = 16;
/// How long the idle async peer waits for a wake-up before it fails the row: longer than
/// any row's duration plus the spread safety nets of its tasks.
const IDLE_GIVE_UP: Duration = Duration::from_secs(120);

/// In a peer: `IDLE_TASKS` subscribers over the `IDLE_RINGS` broadcast rings `name-K`,
/// each a task blocked in `recv_async` on one executor thread (polled only when its waker
/// fires). Says it is ready once every task waits, and when the parent has published one
/// message on every ring (every task then completes) prints the process's CPU time, the
/// wall time and the task polls (wake-ups) between.
fn async_idle(name: &str) -> Result<(), String> {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    sys::raise_fd_limit();
    let rings: Vec<broadcast::Ring<u64>> = (0..IDLE_RINGS)
        .map(|k| broadcast::open::<u64>(&format!("{name}-{k}")).map_err(es))
        .collect::<Result<_, _>>()?;
    let mut subs: Vec<broadcast::Subscriber<u64>> = (0..IDLE_TASKS)
        .map(|i| rings[i % IDLE_RINGS].subscribe().map_err(es))
        .collect::<Result<_, _>>()?;
    /// A task's waker: queues its index and unparks the executor.
    struct Queue {
        ready: Mutex<Vec<usize>>,
        thread: std::thread::Thread,
    }
    struct TaskWake(usize, Arc<Queue>);
    impl Wake for TaskWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.1
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.0);
            self.1.thread.unpark();
        }
    }
    let queue = Arc::new(Queue {
        ready: Mutex::new((0..IDLE_TASKS).collect()),
        thread: std::thread::current(),
    });
    let wakers: Vec<Waker> = (0..IDLE_TASKS)
        .map(|i| Waker::from(Arc::new(TaskWake(i, queue.clone()))))
        .collect();
    type Task<'a> = Pin<Box<dyn Future<Output = Result<u64, RecvError>> + 'a>>;
    let mut tasks: Vec<Option<Task<'_>>> = subs
        .iter_mut()
        .map(|s| Some(Box::pin(s.recv_async()) as Task<'_>))
        .collect();
    let (mut left, mut polls, mut t0) = (IDLE_TASKS, 0u64, None);
    while left > 0 {
        let batch = std::mem::take(&mut *queue.ready.lock().unwrap_or_else(|p| p.into_inner()));
        for i in batch {
            let Some(f) = tasks[i].as_mut() else { continue };
            polls += 1;
            if let Poll::Ready(r) = f.as_mut().poll(&mut Context::from_waker(&wakers[i])) {
                r.map_err(es)?;
                tasks[i] = None;
                left -= 1;
            }
        }
        if t0.is_none() {
            // Every task has been polled once and waits: the idle time starts.
            ready();
            t0 = Some((sys::process_cpu_us(), Instant::now(), polls));
        }
        if left > 0
            && queue
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        {
            // A wake-up that never comes fails the row rather than hanging the bench.
            let parked = Instant::now();
            std::thread::park_timeout(IDLE_GIVE_UP);
            if parked.elapsed() >= IDLE_GIVE_UP
                && queue
                    .ready
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
            {
                return Err(format!(
                    "{left} idle async tasks never woke in {IDLE_GIVE_UP:?}"
                ));
            }
        }
    }
    let (c0, w0, p0) = t0.unwrap_or((0, Instant::now(), 0));
    // The polls that completed the tasks are the parent's publishes, not idle wake-ups.
    say!(
        "cpu_us {} wall_us {} wakeups {} waiters {}",
        sys::process_cpu_us() - c0,
        w0.elapsed().as_micros(),
        (polls - p0).saturating_sub(IDLE_TASKS as u64),
        shm_ring::aio::waiters().0
    );
    Ok(())
}

/// `IDLE_TASKS` idle async subscribers in a peer for the row's duration, then one publish
/// per ring: (CPU µs, wall µs, idle wake-ups, waiter threads).
fn idle_async(ctx: &Ctx<'_>) -> Result<(u64, u64, u64, u64), String> {
    let name = ctx.name("idle-async");
    let rings: Vec<broadcast::Ring<u64>> = (0..IDLE_RINGS)
        .map(|k| broadcast::create::<u64>(&format!("{name}-{k}"), 64).map_err(es))
        .collect::<Result<_, _>>()?;
    let mut pubs: Vec<broadcast::Publisher<u64>> = rings
        .iter()
        .map(|r| r.publisher().map_err(es))
        .collect::<Result<_, _>>()?;
    let mut p = Peer::spawn("async-idle", &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    std::thread::sleep(ctx.opts.duration);
    for tx in &mut pubs {
        tx.publish(1).map_err(es)?;
    }
    let l = p.line()?;
    p.finish()?;
    let v: Vec<u64> = l
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v[..] {
        [cpu, wall, wakeups, waiters] => Ok((cpu, wall, wakeups, waiters)),
        _ => Err(format!("the idle async peer said {l:?}")),
    }
}

/// In a peer: says it is ready, blocks in `pop` until the parent pushes, and prints the
/// CPU time, wall time and sleeps (voluntary context switches) that took.
fn idle_pop(mut pop: impl FnMut() -> Result<u64, String>) -> Result<(), String> {
    ready();
    let (c0, t0, s0) = (sys::thread_cpu_us(), Instant::now(), sys::thread_sleeps());
    pop()?;
    let (c1, t1, s1) = (sys::thread_cpu_us(), Instant::now(), sys::thread_sleeps());
    say!(
        "cpu_us {} wall_us {} sleeps {}",
        c1 - c0,
        (t1 - t0).as_micros(),
        s1 - s0
    );
    Ok(())
}

/// What `top_watch` measured: medians of the watched and unwatched windows, the window
/// pairs, and how many times `top` looked at the ring.
struct TopWatch {
    watched: f64,
    unwatched: f64,
    pairs: usize,
    looks: usize,
}

/// The watch window: `top` refreshes once in each.
const WATCH_WINDOW: Duration = Duration::from_millis(100);

/// Throughput of an SPSC ring of u64 (`push` / `pop`, BusySpin, to the `spsc-sink-8` peer)
/// in alternating 100 ms windows, with a `shmring top --json --interval-ms 100` process (10
/// times top's default refresh rate) watching it in one window (SIGCONT) and stopped in the
/// next (SIGSTOP): one run, the same ring and peers, so that the ratio of the medians is
/// top's cost and not the machine's drift.
fn top_watch(ctx: &Ctx<'_>) -> Result<TopWatch, String> {
    let name = ctx.name("top-watch");
    let ring = spsc::create::<u64>(&name, 4096).map_err(es)?;
    let mut tx = ring.producer().map_err(es)?;
    tx.set_wait_strategy(WaitStrategy::BusySpin);
    let mut p = Peer::spawn("spsc-sink-8", &name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    let seen = std::env::temp_dir().join(format!("{}.top.json", &name[1..]));
    let out = std::fs::File::create(&seen).map_err(|e| format!("{}: {e}", seen.display()))?;
    let exe = std::env::current_exe().map_err(es)?;
    let mut top = Command::new(exe)
        .args(["top", "--json", "--interval-ms", "100", &name])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start shmring top: {e}"))?;
    let pid = top.id() as libc::pid_t;
    let mut i = 0u64;
    let mut window = |d: Duration, i: &mut u64| -> Result<f64, String> {
        let (from, t0) = (*i, Instant::now());
        while t0.elapsed() < d {
            for _ in 0..1024 {
                tx.push(*i).map_err(es)?;
                *i += 1;
            }
        }
        Ok((*i - from) as f64 / t0.elapsed().as_secs_f64())
    };
    let measured = (|| {
        window(ctx.opts.warmup.max(WATCH_WINDOW), &mut i)?;
        let pairs = (ctx.opts.duration.as_millis() / (2 * WATCH_WINDOW.as_millis()))
            .clamp(10, 10_000) as usize;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for k in 0..2 * pairs {
            let watched = k % 2 == 0;
            // SAFETY: kill only sends a signal; `pid` is our own child, not yet reaped, so
            // the pid cannot name another process.
            unsafe {
                libc::kill(
                    pid,
                    if watched {
                        libc::SIGCONT
                    } else {
                        libc::SIGSTOP
                    },
                )
            };
            let r = window(WATCH_WINDOW, &mut i)?;
            if watched {
                on.push(r)
            } else {
                off.push(r)
            }
        }
        Ok::<_, String>((on, off, pairs))
    })();
    let alive = matches!(top.try_wait(), Ok(None));
    let _ = top.kill();
    let _ = top.wait();
    let looked = std::fs::read_to_string(&seen).unwrap_or_default();
    let _ = std::fs::remove_file(&seen);
    let (mut on, mut off, pairs) = measured?;
    if !alive {
        return Err("shmring top exited while it watched".to_owned());
    }
    spin_until(|| ring.stats().pops >= i)?;
    drop(tx);
    check_received(&mut p, i)?;
    p.finish()?;
    let looks = looked.matches(&format!("\"name\": {name:?}")).count();
    if looks == 0 {
        return Err("shmring top never printed the ring it watched".to_owned());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(TopWatch {
        watched: median(&mut on),
        unwatched: median(&mut off),
        pairs,
        looks,
    })
}

/// CPU used by a consumer blocked in `pop` (park mode) on an idle `kind` ring (`spsc` or
/// `mpmc`): (CPU µs, wall µs, sleeps).
fn idle_park(ctx: &Ctx<'_>, kind: &str) -> Result<(u64, u64, u64), String> {
    let name = ctx.name(&format!("idle-{kind}"));
    if kind == "mpmc" {
        let ring = mpmc::create::<u64>(&name, 64).map_err(es)?;
        let mut tx = ring.producer().map_err(es)?;
        idle_measure(ctx, kind, &name, || tx.push(1).map_err(es))
    } else {
        let ring = spsc::create::<u64>(&name, 64).map_err(es)?;
        let mut tx = ring.producer().map_err(es)?;
        idle_measure(ctx, kind, &name, || tx.push(1).map_err(es))
    }
}

/// Starts the idle consumer peer on ring `name`, leaves it blocked for the row's duration,
/// wakes it with `push`, and returns what it measured.
fn idle_measure(
    ctx: &Ctx<'_>,
    kind: &str,
    name: &str,
    mut push: impl FnMut() -> Result<(), String>,
) -> Result<(u64, u64, u64), String> {
    let mut p = Peer::spawn(&format!("{kind}-park-idle"), name, ctx.cpu(1), 0)?;
    p.expect_ready()?;
    std::thread::sleep(ctx.opts.duration);
    push()?;
    let l = p.line()?;
    p.finish()?;
    let v: Vec<u64> = l
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v[..] {
        [cpu, wall, sleeps] => Ok((cpu, wall, sleeps)),
        _ => Err(format!("the idle {kind} consumer said {l:?}")),
    }
}

fn fmt_ns(v: u64) -> String {
    v.to_string()
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn json(rows: &[Row]) -> String {
    let mut s = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let rtt = r.rtt.map_or_else(
            || "null".to_owned(),
            |t| {
                format!(
                    "{{\"p50\": {}, \"p99\": {}, \"p999\": {}, \"max\": {}}}",
                    t.p50, t.p99, t.p999, t.max
                )
            },
        );
        let mps = r
            .msgs_per_sec
            .map_or_else(|| "null".to_owned(), |v| format!("{v:.0}"));
        let floor = r
            .floor_p50
            .map_or_else(|| "null".to_owned(), |v| v.to_string());
        let bursty = r.bursty.map_or_else(
            || "null".to_owned(),
            |b| {
                format!(
                    "{{\"p50_ns\": {}, \"p99_ns\": {}, \"wakes_per_push\": {:.6}, \
                     \"consumer_cpu\": {:.6}}}",
                    b.p50, b.p99, b.wakes_per_push, b.consumer_cpu
                )
            },
        );
        let note = r
            .note
            .as_ref()
            .map_or_else(|| "null".to_owned(), |n| format!("{n:?}"));
        s.push_str(&format!(
            "  {{\"name\": \"{}\", \"calls\": \"{}\", \"rtt_ns\": {rtt}, \
             \"msgs_per_sec\": {mps}, \"floor_p50_ns\": {floor}, \"bursty\": {bursty}, \
             \"note\": {note}}}{}\n",
            r.name,
            calls_of(r.name),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    s.push(']');
    s.push('\n');
    s
}

/// `shmring bench`. Progress (rows done, the row running, time elapsed) goes to stderr
/// only when it is a terminal: piped or redirected, a bench prints its table and nothing
/// else (failures are in the error it returns).
pub fn run(opts: &Options) -> Result<(), String> {
    let rows: Vec<&'static str> = ROWS
        .iter()
        .copied()
        .filter(|r| opts.only.is_empty() || opts.only.iter().any(|o| o == r))
        .collect();
    if let Some(&c) = opts.cpus.first() {
        sys::pin_to(c).map_err(|e| format!("cannot pin to CPU {c}: {e}"))?;
    }
    let ctx = Ctx {
        opts,
        overhead: timer_overhead(),
        tag: std::process::id().to_string(),
        rtt_warmup: opts.warmup,
        rtt_duration: opts.duration,
    };
    // The floor measured again, briefly, right before each other round-trip row.
    let adjacent = Ctx {
        opts,
        overhead: ctx.overhead,
        tag: format!("{}-adj", ctx.tag),
        rtt_warmup: opts.warmup.min(Duration::from_millis(50)),
        rtt_duration: opts.duration.min(Duration::from_millis(300)),
    };
    let with_floor = rows.contains(&"floor");
    let pinning = match opts.cpus.len() {
        0 => "not pinned".to_owned(),
        _ => format!(
            "pinned to CPUs {}",
            opts.cpus
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    say!(
        "shmring bench: 2 processes, {pinning}; {:.1} s per row after {:.1} s warm-up; \
         the clock's own cost ({} ns) is subtracted from each round trip",
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        ctx.overhead
    );
    let mut done = Vec::new();
    let mut failures = Vec::new();
    let n = rows.len() + 4 * usize::from(!opts.skip_idle);
    let progress = crate::term::Progress::steps(n as u64);
    let finished = |what: &str, t: Instant, outcome: Result<(), &str>| {
        progress.step();
        progress.println(match outcome {
            Ok(()) => format!("{what}: {:.1} s", t.elapsed().as_secs_f64()),
            Err(e) => format!("{what}: failed: {e}"),
        });
    };
    for &row in &rows {
        progress.say(row.to_owned());
        let t = Instant::now();
        // Every row but the floor itself gets a short floor run just before it: round
        // trips divide by it, and the other rows print it, so that rows compared with
        // each other can be seen to have run in the same machine state.
        let floor_p50 = if with_floor && row != "floor" {
            match run_row(&adjacent, "floor") {
                Ok(f) => f.rtt.map(|r| r.p50),
                Err(e) => {
                    finished(row, t, Err(&format!("the floor before it: {e}")));
                    failures.push(format!("floor before {row}: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
        match run_row(&ctx, row).map(|r| Row { floor_p50, ..r }) {
            Ok(r) => {
                finished(row, t, Ok(()));
                done.push(r);
            }
            Err(e) => {
                finished(row, t, Err(&e));
                failures.push(format!("{row}: {e}"));
            }
        }
    }
    // The measurements after the rows: each shown as a step, its failure kept under `tag`.
    let mut after = |what: String, tag: &str, f: &mut dyn FnMut() -> Result<(), String>| {
        progress.say(what.clone());
        let t = Instant::now();
        match f() {
            Ok(()) => finished(&what, t, Ok(())),
            Err(e) => {
                finished(&what, t, Err(&e));
                failures.push(format!("{tag}: {e}"));
            }
        }
    };
    let mut idle = Vec::new();
    let mut idle_tasks = None;
    let mut watched = None;
    if !opts.skip_idle {
        for kind in ["spsc", "mpmc"] {
            after(
                format!("idle {kind} consumer in park mode"),
                &format!("idle {kind}"),
                &mut || idle_park(&ctx, kind).map(|v| idle.push((kind, v))),
            );
        }
        after(
            format!("{IDLE_TASKS} idle async subscribers"),
            "idle async",
            &mut || idle_async(&ctx).map(|v| idle_tasks = Some(v)),
        );
        after(
            "an SPSC ring with and without `shmring top` watching".to_owned(),
            "top watching",
            &mut || top_watch(&ctx).map(|v| watched = Some(v)),
        );
    }
    drop(progress);
    let floor = done
        .iter()
        .find(|r| r.name == "floor")
        .and_then(|r| r.rtt)
        .map(|r| r.p50);
    let rtts: Vec<&Row> = done.iter().filter(|r| r.rtt.is_some()).collect();
    if !rtts.is_empty() {
        say!();
        say!(
            "{:<14} {:<40} {:>9} {:>9} {:>9} {:>10} {:>8}",
            "round trip",
            "calls",
            "p50 ns",
            "p99 ns",
            "p99.9 ns",
            "max ns",
            "x floor"
        );
    }
    for r in &rtts {
        let Some(t) = r.rtt else { continue };
        let ratio = match r.floor_p50.or(floor) {
            Some(f) if f > 0 => format!("{:.2}", t.p50 as f64 / f as f64),
            _ => "-".into(),
        };
        say!(
            "{:<14} {:<40} {:>9} {:>9} {:>9} {:>10} {ratio:>8}",
            r.name,
            calls_of(r.name),
            fmt_ns(t.p50),
            fmt_ns(t.p99),
            fmt_ns(t.p999),
            fmt_ns(t.max)
        );
    }
    let rate_of = |name: &str| {
        done.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.msgs_per_sec)
    };
    let rates: Vec<&Row> = done
        .iter()
        .filter(|r| r.msgs_per_sec.is_some() || (r.note.is_some() && r.bursty.is_none()))
        .collect();
    if !rates.is_empty() {
        say!();
        say!(
            "{:<27} {:<39} {:>10} {:>6} {:>7} {:>6} {:>9}",
            "throughput",
            "calls",
            "msgs/s",
            "x ref",
            "x rtrb",
            "x AQ",
            "floor ns"
        );
    }
    for r in &rates {
        let Some(rate) = r.msgs_per_sec else {
            say!(
                "{:<27} {:<39} {}",
                r.name,
                calls_of(r.name),
                r.note.as_deref().unwrap_or("")
            );
            continue;
        };
        let x = |other: Option<f64>| {
            other
                .filter(|o| *o > 0.0)
                .map_or_else(|| "-".to_owned(), |o| format!("{:.2}", rate / o))
        };
        let x_try = x(reference_of(r.name).and_then(|(n, Column::Try)| rate_of(n)));
        let peer = peer_of(r.name);
        let x_rtrb = x(peer.filter(|p| p.starts_with("rtrb")).and_then(rate_of));
        let x_aq = x(peer
            .filter(|p| p.starts_with("arrayqueue"))
            .and_then(rate_of));
        let fl = r
            .floor_p50
            .map_or_else(|| "-".to_owned(), |f| f.to_string());
        say!(
            "{:<27} {:<39} {:>10} {x_try:>6} {x_rtrb:>7} {x_aq:>6} {fl:>9}",
            r.name,
            calls_of(r.name),
            fmt_rate(rate)
        );
    }
    let bursts: Vec<(&str, Bursty, Option<u64>)> = done
        .iter()
        .filter_map(|r| r.bursty.map(|b| (r.name, b, r.floor_p50)))
        .collect();
    if !bursts.is_empty() {
        let p50_of = |row: &str| {
            bursts
                .iter()
                .find(|(n, _, _)| *n == row)
                .map(|(_, b, _)| b.p50)
        };
        say!();
        say!(
            "bursty feed: bursts of {BURST} messages {} us apart ({} k msg/s), {} ms between bursts; \
             latency = the feed's push to the consumer's pop, one way",
            BURST_SPACING.as_micros(),
            1_000_000 / BURST_SPACING.as_micros().max(1) / 1000,
            BURST_PAUSE.as_millis()
        );
        say!(
            "wake rows: one message every {} ms (the consumer asleep when it comes); \
             x ref: bursty-park over bursty-spin, wake-async over wake-park",
            WAKE_PAUSE.as_millis()
        );
        say!(
            "{:<18} {:<28} {:>8} {:>8} {:>7} {:>11} {:>13} {:>9}",
            "bursty",
            "calls",
            "p50 ns",
            "p99 ns",
            "x ref",
            "wakes/push",
            "consumer CPU",
            "floor ns"
        );
        for (name, b, floor) in &bursts {
            let reference = match *name {
                "spsc-bursty-park" => Some("spsc-bursty-spin"),
                "spsc-wake-async" => Some("spsc-wake-park"),
                _ => None,
            };
            let x = reference.and_then(p50_of).filter(|s| *s > 0).map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2}", b.p50 as f64 / s as f64),
            );
            let fl = floor.map_or_else(|| "-".to_owned(), |f| f.to_string());
            say!(
                "{:<18} {:<28} {:>8} {:>8} {x:>7} {:>10.2}% {:>12.1}% {fl:>9}",
                name,
                calls_of(name),
                b.p50,
                b.p99,
                b.wakes_per_push * 100.0,
                b.consumer_cpu * 100.0
            );
        }
    }
    say!();
    let counts: Vec<String> = done
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| format!("{} {}", r.name, r.count))
        .collect();
    say!("(samples / messages per row: {})", counts.join(", "));
    let adjacent: Vec<u64> = done.iter().filter_map(|r| r.floor_p50).collect();
    if !adjacent.is_empty() {
        let (lo, hi) = (
            adjacent.iter().min().copied().unwrap_or(0),
            adjacent.iter().max().copied().unwrap_or(0),
        );
        say!(
            "x floor: each round trip over a floor measured just before it ({}); floors \
             seen: {lo}-{hi} ns{}",
            adjacent
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if hi > 2 * lo.max(1) {
                " (the core-to-core latency changed during the run: a VM whose vCPUs \
                 moved, or a busy machine)"
            } else {
                ""
            }
        );
    }
    say!(
        "x ref: spsc blocking rows over the try_push / try_pop loop on the same ring, \
         broadcast-throughput-8B over spsc-throughput-8B, broadcast-fanout-N over \
         broadcast-fanout-1; x rtrb, x AQ: over rtrb / crossbeam's ArrayQueue between \
         threads pinned to the same CPUs"
    );
    for (kind, (cpu, wall, sleeps)) in idle {
        let secs = wall.max(1) as f64 / 1e6;
        say!(
            "idle {kind} consumer blocked in pop (spin-then-park): {:.3}% of a core ({cpu} us \
             of CPU in {secs:.2} s), {:.1} wake-ups a second",
            cpu as f64 * 100.0 / wall.max(1) as f64,
            sleeps as f64 / secs
        );
    }
    if let Some((cpu, wall, wakeups, waiters)) = idle_tasks {
        let secs = wall.max(1) as f64 / 1e6;
        say!(
            "{IDLE_TASKS} idle async subscribers (recv_async on {IDLE_RINGS} broadcast rings, \
             one executor thread, {waiters} waiter thread(s)): {:.3}% of a core together \
             ({cpu} us of CPU in {secs:.2} s), {:.1} task wake-ups a second",
            cpu as f64 * 100.0 / wall.max(1) as f64,
            wakeups as f64 / secs
        );
    }
    if let Some(w) = watched {
        say!(
            "spsc push / pop (BusySpin) with `shmring top --json --interval-ms 100` watching: {:.1} M/s, \
             not watching: {:.1} M/s, x{:.3} (medians of {} alternating 100 ms windows each; \
             top looked {} times)",
            w.watched / 1e6,
            w.unwatched / 1e6,
            w.watched / w.unwatched,
            w.pairs,
            w.looks
        );
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, json(&done))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        say!("rows written to {}", path.display());
    }
    if let Some(path) = &opts.plot {
        let curves: Vec<crate::plot::Curve<'_>> = done
            .iter()
            .filter_map(|r| {
                r.rtt.map(|t| crate::plot::Curve {
                    name: r.name,
                    ns: t.curve,
                    p50: t.p50,
                })
            })
            .collect();
        if curves.is_empty() {
            return Err(format!(
                "--plot {}: no round-trip row ran, so there is nothing to draw",
                path.display()
            ));
        }
        let floors: Vec<u64> = done.iter().filter_map(|r| r.floor_p50).collect();
        let state = format!(
            "{pinning}; {} per row after {} warm-up; floor p50 {}{}; {}",
            crate::plot::span(opts.duration),
            crate::plot::span(opts.warmup),
            floor.map_or_else(|| "not measured".to_owned(), |f| format!("{f} ns")),
            match (floors.iter().min(), floors.iter().max()) {
                (Some(lo), Some(hi)) => format!(" (floors before each row {lo}-{hi} ns)"),
                _ => String::new(),
            },
            crate::plot::today()
        );
        let labels = crate::plot::Labels {
            machine: crate::plot::machine(),
            state,
        };
        let svg = crate::plot::svg(&curves, &labels)?;
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        say!("{} curves drawn in {}", curves.len(), path.display());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} row(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}
