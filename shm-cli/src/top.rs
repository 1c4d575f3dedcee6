//! `shmring top` and `shmring hz`: every ring's counters read from outside (never joining
//! a ring, never writing to one), turned into rates between two looks.

use std::time::{Duration, Instant};

use shm_core::{SegmentState, Staleness};
use shm_ring::{EndStatus, RingInfo};

use crate::admin;
use crate::term::{self, Input, Screen};

/// One segment as one look saw it.
pub struct Sample {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub file_len: u64,
    pub creator: u32,
    pub stale: bool,
    pub at: Instant,
    /// The ring's counters (`None`: not a ring, not ready, or unreadable: `error` says).
    pub info: Option<RingInfo>,
    pub error: Option<String>,
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` one; without either,
/// a substring match.
pub fn matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return name.contains(pattern);
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative glob with one backtrack point per `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Looks at every shmring segment whose name matches `pattern` (all without one).
pub fn look(pattern: Option<&str>) -> Result<Vec<Sample>, String> {
    let segs = shm_core::list().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for s in segs {
        if pattern.is_some_and(|p| !matches(p, &s.name)) {
            continue;
        }
        let Some(h) = s.header else { continue };
        let (info, error) = if h.state == SegmentState::Ready {
            match shm_ring::inspect(&s.name) {
                Ok(i) => (i, None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        out.push(Sample {
            kind: h
                .kind()
                .map_or_else(|| format!("?{}", h.kind), |k| k.to_string()),
            state: h.state.to_string(),
            file_len: s.file_len,
            creator: h.creator.pid,
            stale: matches!(s.staleness(), Staleness::Stale),
            at: Instant::now(),
            info,
            error,
            name: s.name,
        });
    }
    Ok(out)
}

/// A ring's figures from one look, and the counters rates are taken from.
#[derive(Default, Clone, Copy)]
struct Figures {
    capacity: u64,
    /// Messages in (pushed / published); `None` for a log, which counts bytes claimed.
    input: Option<u64>,
    /// Messages out (popped / received by all subscribers / received by the consumer).
    output: u64,
    /// Bytes out (log) or messages out times the payload's size.
    bytes_out: Option<u64>,
    occupancy: u64,
    lag: u64,
    stalls: u64,
    wakeups: u64,
    drops: u64,
}

fn figures(info: &RingInfo) -> Figures {
    match info {
        RingInfo::Spsc(s) => Figures {
            capacity: s.capacity,
            input: Some(s.pushes),
            output: s.pops,
            bytes_out: None,
            occupancy: s.len(),
            lag: s.len(),
            stalls: s.full_stalls + s.empty_stalls,
            wakeups: s.wakeups,
            drops: 0,
        },
        RingInfo::Mpmc(s, _) => Figures {
            capacity: s.capacity,
            input: Some(s.pushes),
            output: s.pops,
            bytes_out: None,
            occupancy: s.tail.saturating_sub(s.head),
            lag: s.tail.saturating_sub(s.head),
            stalls: s.full_stalls + s.empty_stalls,
            wakeups: s.wakeups,
            drops: s.skipped + s.reclaimed,
        },
        RingInfo::Broadcast(s) => Figures {
            capacity: s.capacity,
            input: Some(s.published),
            output: s.subscribers.iter().map(|x| x.received).sum(),
            bytes_out: None,
            occupancy: s
                .subscribers
                .iter()
                .map(|x| x.lag)
                .max()
                .unwrap_or(0)
                .min(s.capacity),
            lag: s.subscribers.iter().map(|x| x.lag).max().unwrap_or(0),
            stalls: s.full_stalls,
            wakeups: s.wakeups,
            drops: s.subscribers.iter().map(|x| x.lagged).sum::<u64>() + s.evictions,
        },
        RingInfo::Log(s) => Figures {
            capacity: s.capacity,
            input: None,
            output: s.received,
            bytes_out: Some(s.bytes),
            occupancy: s.tail.wrapping_sub(s.head).min(s.capacity),
            lag: s.tail.wrapping_sub(s.consumed),
            stalls: s.full_stalls + s.empty_stalls,
            wakeups: s.wakeups,
            drops: s.skipped + s.abandoned + s.aborted,
        },
    }
}

/// Per second, from counters `a` then `b` taken `secs` apart (0 if a counter went back:
/// the ring was made anew).
fn rate(a: u64, b: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    b.saturating_sub(a) as f64 / secs
}

/// The rates of one segment between two looks.
struct Rates {
    input: Option<f64>,
    output: f64,
    bytes_out: Option<f64>,
    stalls: f64,
    wakeups: f64,
    /// Log: bytes claimed per second.
    claimed: Option<f64>,
}

/// A broadcast subscriber's messages received per second since the look before (`None`
/// on the first look, or for a subscriber that look did not see).
fn sub_rate(
    before: Option<&Sample>,
    now: &Sample,
    sub: &shm_ring::broadcast::SubscriberStats,
) -> Option<f64> {
    let b = before?;
    let Some(RingInfo::Broadcast(y)) = &b.info else {
        return None;
    };
    let p = y.subscribers.iter().find(|p| p.index == sub.index)?;
    Some(rate(
        p.received,
        sub.received,
        now.at.duration_since(b.at).as_secs_f64(),
    ))
}

fn rates(before: Option<&Sample>, now: &Sample) -> Option<Rates> {
    let (b, n) = (before?.info.as_ref()?, now.info.as_ref()?);
    let secs = now.at.duration_since(before?.at).as_secs_f64();
    let (fb, fnow) = (figures(b), figures(n));
    let claimed = match (b, n) {
        (RingInfo::Log(x), RingInfo::Log(y)) => Some(rate(x.tail, y.tail, secs)),
        _ => None,
    };
    Some(Rates {
        input: fb.input.zip(fnow.input).map(|(x, y)| rate(x, y, secs)),
        output: rate(fb.output, fnow.output, secs),
        bytes_out: fb
            .bytes_out
            .zip(fnow.bytes_out)
            .map(|(x, y)| rate(x, y, secs)),
        stalls: rate(fb.stalls, fnow.stalls, secs),
        wakeups: rate(fb.wakeups, fnow.wakeups, secs),
        claimed,
    })
}

/// `12.3M`, `4.5k`, `17`.
fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn end_json(e: &EndStatus) -> String {
    match e {
        EndStatus::Never => "{\"state\": \"never\"}".to_owned(),
        EndStatus::Closed => "{\"state\": \"closed\"}".to_owned(),
        EndStatus::Attached { pid, alive } => {
            format!("{{\"state\": \"attached\", \"pid\": {pid}, \"alive\": {alive}}}")
        }
    }
}

fn list_json(ends: &[EndStatus]) -> String {
    format!(
        "[{}]",
        ends.iter().map(end_json).collect::<Vec<_>>().join(", ")
    )
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |x| format!("{x:.1}"))
}

/// One segment as a JSON object (one line): its counters as read, and rates since the
/// look before (`null` on the first look).
fn json_of(before: Option<&Sample>, s: &Sample) -> String {
    let mut o = format!(
        "{{\"name\": {:?}, \"kind\": {:?}, \"state\": {:?}, \"file_len\": {}, \"creator\": {}, \
         \"stale\": {}",
        s.name, s.kind, s.state, s.file_len, s.creator, s.stale
    );
    if let Some(e) = &s.error {
        o.push_str(&format!(", \"error\": {e:?}"));
    }
    if let Some(info) = &s.info {
        let f = figures(info);
        o.push_str(&format!(
            ", \"capacity\": {}, \"occupancy\": {}, \"lag\": {}, \"drops\": {}",
            f.capacity, f.occupancy, f.lag, f.drops
        ));
        let counters = match info {
            RingInfo::Spsc(x) => format!(
                "\"head\": {}, \"tail\": {}, \"pushes\": {}, \"pops\": {}, \"full_stalls\": {}, \
                 \"empty_stalls\": {}, \"wakeups\": {}, \"producer\": {}, \"consumer\": {}",
                x.head,
                x.tail,
                x.pushes,
                x.pops,
                x.full_stalls,
                x.empty_stalls,
                x.wakeups,
                end_json(&x.producer),
                end_json(&x.consumer)
            ),
            RingInfo::Mpmc(x, ends) => format!(
                "\"head\": {}, \"tail\": {}, \"pushes\": {}, \"pops\": {}, \"full_stalls\": {}, \
                 \"empty_stalls\": {}, \"wakeups\": {}, \"skipped\": {}, \"reclaimed\": {}, \
                 \"producers\": {}, \"consumers\": {}",
                x.head,
                x.tail,
                x.pushes,
                x.pops,
                x.full_stalls,
                x.empty_stalls,
                x.wakeups,
                x.skipped,
                x.reclaimed,
                list_json(&ends.producers),
                list_json(&ends.consumers)
            ),
            RingInfo::Broadcast(x) => {
                let subs: Vec<String> = x
                    .subscribers
                    .iter()
                    .map(|sub| {
                        let r = sub_rate(before, s, sub);
                        format!(
                            "{{\"index\": {}, \"end\": {}, \"position\": {}, \"lag\": {}, \
                             \"received\": {}, \"lagged\": {}, \"evicted\": {}, \
                             \"received_per_s\": {}}}",
                            sub.index,
                            end_json(&sub.end),
                            sub.position,
                            sub.lag,
                            sub.received,
                            sub.lagged,
                            sub.evicted,
                            opt(r)
                        )
                    })
                    .collect();
                format!(
                    "\"tail\": {}, \"published\": {}, \"full_stalls\": {}, \"evictions\": {}, \
                     \"wakeups\": {}, \"publisher\": {}, \"subscribers\": [{}]",
                    x.tail,
                    x.published,
                    x.full_stalls,
                    x.evictions,
                    x.wakeups,
                    end_json(&x.publisher),
                    subs.join(", ")
                )
            }
            RingInfo::Log(x) => format!(
                "\"head\": {}, \"consumed\": {}, \"tail\": {}, \"max_len\": {}, \"received\": {}, \
                 \"bytes\": {}, \"skipped\": {}, \"abandoned\": {}, \"aborted\": {}, \
                 \"full_stalls\": {}, \"empty_stalls\": {}, \"wakeups\": {}, \"consumer\": {}, \
                 \"producers\": {}",
                x.head,
                x.consumed,
                x.tail,
                x.max_len,
                x.received,
                x.bytes,
                x.skipped,
                x.abandoned,
                x.aborted,
                x.full_stalls,
                x.empty_stalls,
                x.wakeups,
                end_json(&x.consumer),
                list_json(&x.producers)
            ),
        };
        o.push_str(&format!(", \"counters\": {{{counters}}}"));
        match rates(before, s) {
            Some(r) => o.push_str(&format!(
                ", \"rates\": {{\"in_per_s\": {}, \"out_per_s\": {:.1}, \"bytes_out_per_s\": {}, \
                 \"bytes_in_per_s\": {}, \"stalls_per_s\": {:.1}, \"wakeups_per_s\": {:.1}}}",
                opt(r.input),
                r.output,
                opt(r.bytes_out),
                opt(r.claimed),
                r.stalls,
                r.wakeups
            )),
            None => o.push_str(", \"rates\": null"),
        }
    }
    o.push('}');
    o
}

/// The widths of the ten columns after NAME, and the ten spaces before them.
const FIXED: usize = 9 + 24 + 9 + 9 + 10 + 6 + 9 + 8 + 8 + 9 + 10;

/// The table `top` draws: a line per segment, and one per broadcast subscriber. `width`: the live view's terminal columns (its names are then
/// cut to leave room for the numbers, keeping their distinct ends, and the header says
/// `q quits`); `None` for `--once`, whose names are whole.
fn table(
    before: &[Sample],
    now: &[Sample],
    interval: Duration,
    watching: Option<&str>,
    width: Option<usize>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "shmring top: {} segment{}{}, every {:.1} s{}\n",
        now.len(),
        if now.len() == 1 { "" } else { "s" },
        watching.map_or_else(String::new, |p| format!(" matching {p:?}")),
        interval.as_secs_f64(),
        if width.is_some() { " (q quits)" } else { "" }
    ));
    let longest = now
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(4);
    let w = match width {
        Some(cols) => longest.min(cols.saturating_sub(FIXED).max(16)),
        None => longest,
    }
    .max(4);
    let name = |n: &str| -> String {
        let len = n.chars().count();
        if len <= w {
            n.to_owned()
        } else {
            // The end of a name tells rings apart (`...-fanout-1`, `...-fanout-2`).
            std::iter::once('~')
                .chain(n.chars().skip(len - (w - 1)))
                .collect()
        }
    };
    out.push_str(&format!(
        "{:<w$} {:<9} {:<24} {:>9} {:>9} {:>10} {:>6} {:>9} {:>8} {:>8} {:>9}\n",
        "NAME", "KIND", "ENDS", "IN/s", "OUT/s", "B/s", "OCC%", "LAG", "STALL/s", "WAKE/s", "DROPS"
    ));
    for s in now {
        let prev = before.iter().find(|b| b.name == s.name);
        let Some(info) = &s.info else {
            let why = s.error.clone().unwrap_or_else(|| {
                if s.state == "ready" {
                    "(not a ring)".to_owned()
                } else {
                    format!("({})", s.state)
                }
            });
            out.push_str(&format!(
                "{:<w$} {:<9} {why}{}\n",
                name(&s.name),
                s.kind,
                if s.stale { " stale" } else { "" }
            ));
            continue;
        };
        let f = figures(info);
        let r = rates(prev, s);
        let dash = || "-".to_owned();
        let (inp, outp, bps, st, wk) = match &r {
            Some(r) => (
                r.input
                    .map(si)
                    .or_else(|| r.claimed.map(|c| format!("{}B", si(c))))
                    .unwrap_or_else(dash),
                si(r.output),
                r.bytes_out.map_or_else(dash, si),
                si(r.stalls),
                si(r.wakeups),
            ),
            None => (dash(), dash(), dash(), dash(), dash()),
        };
        let occ = if f.capacity > 0 {
            format!("{:.1}", f.occupancy as f64 * 100.0 / f.capacity as f64)
        } else {
            dash()
        };
        let mut ends = admin::ends_of(info);
        if ends.len() > 24 {
            ends.truncate(23);
            ends.push('+');
        }
        out.push_str(&format!(
            "{:<w$} {:<9} {:<24} {:>9} {:>9} {:>10} {:>6} {:>9} {:>8} {:>8} {:>9}\n",
            name(&s.name),
            s.kind,
            ends,
            inp,
            outp,
            bps,
            occ,
            f.lag,
            st,
            wk,
            f.drops
        ));
        if let RingInfo::Broadcast(b) = info {
            for sub in &b.subscribers {
                let r = sub_rate(prev, s, sub).map_or_else(dash, si);
                out.push_str(&format!(
                    "{:<w$} {:<9} {:<24} {:>9} {:>9} {:>10} {:>6} {:>9} {:>8} {:>8} {:>9}\n",
                    format!("  #{}", sub.index),
                    "sub",
                    admin::end_word(&sub.end),
                    "",
                    r,
                    "",
                    "",
                    sub.lag,
                    "",
                    "",
                    format!("{}{}", sub.lagged, if sub.evicted { " ev" } else { "" })
                ));
            }
        }
    }
    let legend = "IN/s OUT/s: messages (a log's IN: bytes claimed); OCC%: of capacity; LAG: \
                  behind the newest (slowest subscriber, beyond capacity once overwritten; a \
                  log's in bytes); DROPS: lagged + evicted, skipped + reclaimed, or skipped + \
                  abandoned + aborted";
    // The live view wraps the legend to its width; `--once` keeps it one line.
    let mut line = String::new();
    for word in legend.split(' ') {
        if width.is_some_and(|cols| !line.is_empty() && line.len() + 1 + word.len() > cols) {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `shmring top`.
pub fn top(
    pattern: Option<&str>,
    interval: Duration,
    once: bool,
    json: bool,
) -> Result<(), String> {
    let emit = |before: &[Sample], now: &[Sample]| {
        if json {
            let lines: Vec<String> = now
                .iter()
                .map(|s| json_of(before.iter().find(|b| b.name == s.name), s))
                .collect();
            say!("[{}]", lines.join(",\n "));
        } else {
            say_part!("{}", table(before, now, interval, pattern, None));
        }
    };
    if once || json {
        term::catch_stop();
        let mut before = look(pattern)?;
        loop {
            if !term::sleep(interval) {
                return Ok(());
            }
            let now = look(pattern)?;
            emit(&before, &now);
            if once || term::stopped() {
                return Ok(());
            }
            before = now;
        }
    }
    if !term::interactive() {
        return Err(
            "top's live view needs a terminal; `shmring top --once` (or `--json`) is the form \
             for scripts and pipes"
                .to_owned(),
        );
    }
    term::catch_stop();
    let screen = Screen::enter().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut before: Vec<Sample> = Vec::new();
    let mut now = look(pattern)?;
    loop {
        screen.draw(&table(
            &before,
            &now,
            interval,
            pattern,
            Some(screen.width()),
        ));
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match screen.wait(left.min(Duration::from_millis(100))) {
                Input::Quit => return Ok(()),
                // Redrawn at once, the counters as they were (rates need a whole interval).
                Input::Redraw => screen.draw(&table(
                    &before,
                    &now,
                    interval,
                    pattern,
                    Some(screen.width()),
                )),
                Input::None => {}
            }
            if term::stopped() {
                return Ok(());
            }
        }
        before = std::mem::replace(&mut now, look(pattern)?);
    }
}

/// The message count `hz` follows: what was put in (pushes, published), or for a log what
/// its consumer received.
fn count_of(info: &RingInfo) -> u64 {
    let f = figures(info);
    f.input.unwrap_or(f.output)
}

/// `shmring hz NAME`.
pub fn hz(name: &str, interval: Duration, window: usize, count: Option<u64>) -> Result<(), String> {
    if name.contains(['*', '?', '[']) {
        return Err(format!(
            "{name:?}: hz follows one ring, named exactly; `shmring top {name:?}` watches every \
             ring a pattern matches"
        ));
    }
    let read = || -> Result<(u64, Instant), String> {
        match shm_ring::inspect(name) {
            Ok(Some(info)) => Ok((count_of(&info), Instant::now())),
            Ok(None) => Err(format!("{name} is not a ring")),
            Err(e) => Err(e.to_string()),
        }
    };
    term::catch_stop();
    let (mut last, mut at) = read()?;
    let mut rates: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        if !term::sleep(interval) {
            break;
        }
        let (n, t) = read()?;
        let r = rate(last, n, t.duration_since(at).as_secs_f64());
        (last, at) = (n, t);
        rates.push_back(r);
        if rates.len() > window {
            rates.pop_front();
        }
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        say!(
            "{name}: {} msg/s   min {} max {} mean {} over the last {} sample{} ({:.1} s)",
            si(r),
            si(min),
            si(max),
            si(mean),
            rates.len(),
            if rates.len() == 1 { "" } else { "s" },
            interval.as_secs_f64() * rates.len() as f64
        );
        printed += 1;
    }
    Ok(())
}
