//! `shmring`: measure shmring against the hardware floor and the kernel (`bench`), list,
//! inspect and remove shared-memory segments (`ls`, `inspect`, `rm`), watch rings live
//! (`top`, `hz`), and record and replay them (`record`, `replay`).

/// `println!` for stdout, without its panic when the reader went away ([`term::out`]).
macro_rules! say {
    () => {
        $crate::term::out(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::term::out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `print!` for stdout, as [`say!`].
macro_rules! say_part {
    ($($t:tt)*) => {
        $crate::term::out(format_args!($($t)*))
    };
}

mod admin;
mod bench;
#[cfg(feature = "peers")]
mod peers;
mod plot;
mod record;
mod sys;
mod term;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shmring",
    version,
    about = "Lock-free shared-memory IPC: benchmark it, and look after its segments",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Round trips and throughput between two processes: shmring rings next to the hardware
    /// floor (a cache-line ping-pong), a pipe and a Unix socket.
    Bench(BenchArgs),
    /// List the shmring segments on this machine.
    Ls,
    /// Show a segment's header, fingerprint and, for rings, its live counters (read without
    /// joining the ring).
    Inspect {
        /// Segment name, e.g. /my-ring.
        name: String,
    },
    /// Remove segments by name (refusing any that live processes map, unless --force), or
    /// every stale one (whose creator is dead and that nothing uses any more).
    #[command(
        override_usage = "shmring rm [--force] <NAMES>...\n       shmring rm --stale [--trust-locks]"
    )]
    Rm {
        /// Segment names, e.g. /my-ring.
        #[arg(required_unless_present = "stale", conflicts_with = "stale")]
        names: Vec<String>,
        /// Remove the names even while live processes map them (they keep their mapping).
        #[arg(long, conflicts_with = "stale")]
        force: bool,
        /// Remove every stale segment instead.
        #[arg(long)]
        stale: bool,
        /// With --stale: also remove segments that no shmring handle uses when some process
        /// cannot be inspected (its /proc/PID/maps is unreadable to this user) and so might
        /// map them without shmring.
        #[arg(long, requires = "stale")]
        trust_locks: bool,
    },
    /// A live view of every ring (or those whose names match PATTERN): ends, rates in and
    /// out, occupancy, lag per subscriber, stalls, wake-ups, drops. Reads counters without
    /// joining any ring. `q` quits.
    Top {
        /// Only segments whose names match: `*` and `?` as in a shell, else a substring.
        pattern: Option<String>,
        /// Refresh interval, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
        /// Print one table (rates over one interval) and exit: the form for scripts.
        #[arg(long)]
        once: bool,
        /// Print JSON instead of the table: an array of segments per interval (with
        /// --once, one).
        #[arg(long)]
        json: bool,
    },
    /// Messages per second of one ring, each interval, with min / max / mean over a window.
    Hz {
        /// Ring name, e.g. /my-ring.
        name: String,
        /// Sampling interval, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
        /// Samples the min / max / mean are taken over.
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=100_000))]
        window: u64,
        /// Stop after N samples (default: until Ctrl-C).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Record a broadcast ring (as one more subscriber) or a log (as its consumer) into
    /// FILE: every message with the time it came; until Ctrl-C, --count, --duration-ms or
    /// (without --wait) the ring's writers leave.
    Record {
        /// Ring name, e.g. /ticks.
        name: String,
        /// The recording to write (its format: the README's "Recording format").
        file: PathBuf,
        /// Stop after N messages.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Stop after this many milliseconds.
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
        duration_ms: Option<u64>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Keep recording while the ring has no writer: wait for the first, and for the
        /// next after one leaves (a `shmring replay` into a log needs its consumer there
        /// first: this recorder can be it).
        #[arg(long)]
        wait: bool,
    },
    /// Publish a recording into a ring of the same payload type (a broadcast ring as its
    /// publisher, a log as one producer), at the recorded pace or faster.
    Replay {
        /// The recording.
        file: PathBuf,
        /// Ring name, e.g. /ticks (it must exist).
        name: String,
        /// `1` for the recorded pace, `2` for twice as fast, `0.5` for half as fast
        /// (0.001 to 1e6), `max` for as fast as the ring takes them.
        #[arg(long, default_value = "1", value_parser = record::parse_speed)]
        speed: record::Speed,
    },
    /// (internal) The peer process of `bench`.
    #[command(name = "__peer", hide = true)]
    Peer {
        role: String,
        name: String,
        #[arg(long)]
        cpu: Option<usize>,
        #[arg(long, default_value_t = 0)]
        arg: u64,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// Also write the rows as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// CPUs to pin to, first for this process, then for its peers (e.g. `2,3` or `0-7`).
    /// Default: the CPUs this process may use, if there are at least two.
    #[arg(long, value_name = "LIST", conflicts_with = "no_pin")]
    cpus: Option<String>,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Measured time per row, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    duration_ms: u64,
    /// Unmeasured warm-up per row, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    warmup_ms: u64,
    /// Run only these rows (comma-separated), named as the table names them (`floor`,
    /// `spsc-spin`, `spsc-throughput-8B-try`, `rtrb-8B`, `arrayqueue-1p1c`, ...); an unknown
    /// name is refused with the whole list.
    #[arg(long, value_name = "ROWS", value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the measurements after the rows: idle consumers' CPU, and a ring's throughput
    /// with and without `shmring top` watching it.
    #[arg(long)]
    no_idle: bool,
    /// Also draw each round-trip row's latency percentiles (p0 to p99.99) into an SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Parses `0,2,4-7` into CPU numbers.
fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--cpus {s:?}: expected a list like 0,1 or 2-5");
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| bad())?);
        }
    }
    let mut seen = out.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != out.len() {
        return Err(format!("--cpus {s:?} names a CPU twice"));
    }
    Ok(out)
}

fn bench_options(a: BenchArgs) -> Result<bench::Options, String> {
    for o in &a.only {
        if !bench::ROWS.contains(&o.as_str()) {
            return Err(format!(
                "--only: no row named {o:?} (rows: {})",
                bench::ROWS.join(", ")
            ));
        }
    }
    let allowed = sys::allowed_cpus().map_err(|e| format!("cannot read the CPU affinity: {e}"))?;
    let cpus = match (&a.cpus, a.no_pin) {
        (_, true) => Vec::new(),
        (Some(s), _) => {
            let c = parse_cpus(s)?;
            if let Some(x) = c.iter().find(|x| !allowed.contains(x)) {
                return Err(format!(
                    "--cpus: CPU {x} is not one this process may use ({})",
                    allowed
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            c
        }
        (None, false) if allowed.len() >= 2 => allowed,
        (None, false) => Vec::new(),
    };
    Ok(bench::Options {
        duration: Duration::from_millis(a.duration_ms),
        warmup: Duration::from_millis(a.warmup_ms),
        cpus,
        json: a.json,
        only: a.only,
        skip_idle: a.no_idle,
        plot: a.plot,
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's whole message: what is wrong, the arguments it names, and the usage.
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Bench(a) => bench_options(a).and_then(|o| bench::run(&o)),
        Cmd::Ls => admin::ls(),
        Cmd::Inspect { name } => admin::inspect(&name),
        Cmd::Rm {
            names,
            stale: true,
            trust_locks,
            ..
        } if names.is_empty() => admin::rm_stale(if trust_locks {
            shm_core::StaleCheck::TrustLocks
        } else {
            shm_core::StaleCheck::Strict
        }),
        Cmd::Rm { names, force, .. } => admin::rm(&names, force),
        Cmd::Top {
            pattern,
            interval_ms,
            once,
            json,
        } => top::top(
            pattern.as_deref(),
            Duration::from_millis(interval_ms),
            once,
            json,
        ),
        Cmd::Hz {
            name,
            interval_ms,
            window,
            count,
        } => top::hz(
            &name,
            Duration::from_millis(interval_ms),
            window as usize,
            count,
        ),
        Cmd::Record {
            name,
            file,
            count,
            duration_ms,
            force,
            wait,
        } => record::record(
            &name,
            &file,
            &record::Until {
                count,
                duration: duration_ms.map(Duration::from_millis),
                wait,
            },
            force,
        ),
        Cmd::Replay { file, name, speed } => record::replay(&file, &name, speed),
        Cmd::Peer {
            role,
            name,
            cpu,
            arg,
        } => bench::peer(&role, &name, cpu, arg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmring: {e}");
            ExitCode::FAILURE
        }
    }
}
