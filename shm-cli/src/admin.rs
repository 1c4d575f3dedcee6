//! `shmring ls`, `inspect` and `rm`: looking at and cleaning up segments from outside.

use shm_core::{RemoveErrorKind, SegmentInfo, SegmentState, StaleCheck, Staleness, MAGIC};
use shm_ring::{EndStatus, RingInfo};

/// A human size: bytes, KiB, MiB.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn alive(info: &SegmentInfo) -> &'static str {
    match info.creator_alive() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// `shmring ls`.
pub fn ls() -> Result<(), String> {
    let segs = shm_core::list().map_err(|e| e.to_string())?;
    if segs.is_empty() {
        say!("no shmring segments in /dev/shm");
        return Ok(());
    }
    let w = segs.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let ends: Vec<String> = segs.iter().map(|s| ends_summary(&s.name)).collect();
    let e = ends.iter().map(String::len).max().unwrap_or(4).max(4);
    say!(
        "{:<w$}  {:<5}  {:>10}  {:<12}  {:>8}  {:<5}  {:<e$}  STALE",
        "NAME",
        "KIND",
        "SIZE",
        "STATE",
        "CREATOR",
        "ALIVE",
        "ENDS"
    );
    let mut undecided = None;
    for (s, ends) in segs.iter().zip(&ends) {
        let h = s
            .header
            .expect("list returns only segments with a shmring header");
        let stale = match s.staleness() {
            Staleness::Stale => "stale",
            Staleness::Undecided { pid } => {
                undecided = Some(pid);
                "stale?"
            }
            Staleness::NotStale | Staleness::InUse { .. } => "",
        };
        let kind = h
            .kind()
            .map_or_else(|| format!("?{}", h.kind), |k| k.to_string());
        say!(
            "{:<w$}  {:<5}  {:>10}  {:<12}  {:>8}  {:<5}  {:<e$}  {}",
            s.name,
            kind,
            size(s.file_len),
            h.state.to_string(),
            h.creator.pid,
            alive(s),
            ends,
            stale
        );
    }
    say!(
        "ENDS: the processes holding each end now, P producers, C consumers (a creator may \
         be long gone while they run)"
    );
    if let Some(pid) = undecided {
        say!(
            "stale?: no shmring handle uses it, but process {pid} cannot be inspected and \
             might map it without shmring; `shmring rm --stale --trust-locks` removes it"
        );
    }
    Ok(())
}

/// One end for `ls`: `1234`, `1234(dead)`, `closed`, `never`.
pub fn end_word(e: &EndStatus) -> String {
    match e {
        EndStatus::Never => "never".to_owned(),
        EndStatus::Closed => "closed".to_owned(),
        EndStatus::Attached { pid, alive: true } => pid.to_string(),
        EndStatus::Attached { pid, alive: false } => format!("{pid}(dead)"),
    }
}

/// Up to four MPMC ends, then `+N`; `-` for none.
fn ends_words(ends: &[EndStatus]) -> String {
    if ends.is_empty() {
        return "-".to_owned();
    }
    let mut words: Vec<String> = ends.iter().take(4).map(end_word).collect();
    if ends.len() > 4 {
        words.push(format!("+{}", ends.len() - 4));
    }
    words.join(",")
}

/// The live ends of a ring for `ls`: `-` for a segment that is not a ring, or not ready,
/// or whose ends cannot be read.
fn ends_summary(name: &str) -> String {
    match shm_ring::inspect(name) {
        Ok(Some(info)) => ends_of(&info),
        _ => "-".to_owned(),
    }
}

/// A ring's ends as `ls` and `top` show them: `P:1234 C:5678(dead)`.
pub fn ends_of(info: &RingInfo) -> String {
    match info {
        RingInfo::Spsc(s) => {
            format!("P:{} C:{}", end_word(&s.producer), end_word(&s.consumer))
        }
        RingInfo::Mpmc(_, ends) => format!(
            "P:{} C:{}",
            ends_words(&ends.producers),
            ends_words(&ends.consumers)
        ),
        RingInfo::Broadcast(s) => {
            let subs: Vec<EndStatus> = s.subscribers.iter().map(|x| x.end).collect();
            format!("P:{} S:{}", end_word(&s.publisher), ends_words(&subs))
        }
        RingInfo::Log(s) => {
            format!("P:{} C:{}", ends_words(&s.producers), end_word(&s.consumer))
        }
    }
}

/// `shmring inspect NAME`.
pub fn inspect(name: &str) -> Result<(), String> {
    let info = shm_core::inspect(name).map_err(|e| e.to_string())?;
    let Some(h) = info.header else {
        return Err(format!(
            "{name} is {} bytes, too short for a shmring header: not a shmring segment \
             (or one whose creator died before writing it; see `shmring rm --stale`)",
            info.file_len
        ));
    };
    if h.magic != MAGIC {
        return Err(format!(
            "{name} is not a shmring segment (magic {:#018x}, expected {MAGIC:#018x})",
            h.magic
        ));
    }
    say!("name         {}", info.name);
    say!(
        "file         /dev/shm/{}, {} bytes, mode {:04o}, owner uid {}",
        &info.name[1..],
        info.file_len,
        info.mode,
        info.owner_uid
    );
    let kind = h
        .kind()
        .map_or_else(|| format!("unknown ({})", h.kind), |k| k.to_string());
    say!("kind         {kind}");
    say!("state        {}", h.state);
    say!(
        "creator      {} ({})",
        h.creator,
        match info.creator_alive() {
            Some(true) => "alive",
            Some(false) => "dead",
            None => "liveness unknown",
        }
    );
    say!(
        "format       header version {}, {} bytes in all, data at offset {}",
        h.version,
        h.total_len,
        h.data_offset
    );
    let f = h.fingerprint;
    say!(
        "payload      `{}`, size {}, align {}; identity {:#018x}; schema id {:#x}; layout \
         version {}",
        f.type_name,
        f.payload_size,
        f.payload_align,
        f.type_identity,
        f.schema_id,
        f.layout_version
    );
    let stale = match info.staleness() {
        Staleness::Stale => "yes (`shmring rm --stale` removes it)".to_owned(),
        Staleness::Undecided { pid } => format!(
            "by its in-use locks (no shmring handle uses it), but process {pid} cannot be \
             inspected and might map it without shmring; `shmring rm --stale --trust-locks` \
             removes it"
        ),
        Staleness::InUse { pid: Some(pid) } => {
            format!("no: its creator is dead, but process {pid} maps it")
        }
        Staleness::InUse { pid: None } => {
            "no: its creator is dead, but a live shmring handle uses it".to_owned()
        }
        Staleness::NotStale => "no".to_owned(),
    };
    say!("stale        {stale}");
    if h.state != SegmentState::Ready {
        return Ok(());
    }
    match shm_ring::inspect(name) {
        Ok(Some(RingInfo::Spsc(s))) => {
            say!(
                "ring         capacity {}, head {}, tail {}, occupancy {}",
                s.capacity,
                s.head,
                s.tail,
                s.len()
            );
            say!("counters     pushes {}, pops {}", s.pushes, s.pops);
            say!(
                "stalls       full {}, empty {}; wake-ups {}",
                s.full_stalls,
                s.empty_stalls,
                s.wakeups
            );
            say!("producer     {}", s.producer);
            say!("consumer     {}", s.consumer);
        }
        Ok(Some(RingInfo::Mpmc(s, ends))) => {
            say!(
                "ring         capacity {}, head {}, tail {}, occupancy {}",
                s.capacity,
                s.head,
                s.tail,
                s.tail.saturating_sub(s.head)
            );
            say!("counters     pushes {}, pops {}", s.pushes, s.pops);
            say!(
                "stalls       full {}, empty {}; wake-ups {}",
                s.full_stalls,
                s.empty_stalls,
                s.wakeups
            );
            say!(
                "claims       {} skipped, {} reclaimed (claim timeout {:?})",
                s.skipped,
                s.reclaimed,
                s.claim_timeout
            );
            say!(
                "endpoints    {} attached, {} attached",
                plural(u64::from(s.producers), "producer"),
                plural(u64::from(s.consumers), "consumer")
            );
            let list = |ends: &[EndStatus]| -> String {
                if ends.is_empty() {
                    "none".to_owned()
                } else {
                    ends.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            say!("producers    {}", list(&ends.producers));
            say!("consumers    {}", list(&ends.consumers));
        }
        Ok(Some(RingInfo::Broadcast(s))) => {
            let policy = s
                .policy
                .map_or_else(|| "impossible (corrupted)".to_owned(), |p| p.to_string());
            say!(
                "ring         capacity {}, tail {}, policy {policy}",
                s.capacity,
                s.tail
            );
            say!(
                "counters     published {}, full stalls {}, evictions {}; wake-ups {}",
                s.published,
                s.full_stalls,
                s.evictions,
                s.wakeups
            );
            say!("publisher    {}", s.publisher);
            say!("subscribers  {} attached", s.subscribers.len());
            for x in &s.subscribers {
                say!(
                    "  #{:<2}        {}: position {}, lag {}, received {}, lagged {}{}",
                    x.index,
                    x.end,
                    x.position,
                    x.lag,
                    x.received,
                    x.lagged,
                    if x.evicted { ", evicted" } else { "" }
                );
            }
        }
        Ok(Some(RingInfo::Log(s))) => {
            say!(
                "log          capacity {} bytes, messages up to {} bytes, records aligned to {}, \
                 head {}, tail {}, in use {} bytes",
                s.capacity,
                s.max_len,
                s.record_align,
                s.head,
                s.tail,
                s.tail.wrapping_sub(s.head)
            );
            say!(
                "counters     received {} ({} bytes)",
                plural(s.received, "message"),
                s.bytes
            );
            say!(
                "claims       {} skipped (unmarked past the claim timeout), {} abandoned (dead \
                 producers), {} aborted",
                s.skipped,
                s.abandoned,
                s.aborted
            );
            say!(
                "stalls       full {}, empty {}; wake-ups {}",
                s.full_stalls,
                s.empty_stalls,
                s.wakeups
            );
            say!("consumer     {}", s.consumer);
            let producers: Vec<String> = s.producers.iter().map(|e| e.to_string()).collect();
            say!(
                "producers    {}",
                if producers.is_empty() {
                    "none".to_owned()
                } else {
                    producers.join(", ")
                }
            );
        }
        Ok(None) => {}
        Err(e) => say!("ring         counters unavailable: {e}"),
    }
    Ok(())
}

/// `pid (comm)` for a message, or the bare pid if `/proc` does not say.
fn who(pid: u32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("{pid} ({})", comm.trim_end()),
        Err(_) => pid.to_string(),
    }
}

/// `shmring rm NAME...`: refuses a segment that live processes map, naming them, unless
/// `force`.
pub fn rm(names: &[String], force: bool) -> Result<(), String> {
    let mut failed = Vec::new();
    for n in names {
        let removed = if force {
            shm_core::remove(n).map_err(|e| e.to_string())
        } else {
            shm_core::remove_unused(n).map_err(|e| match e.kind() {
                RemoveErrorKind::InUseBy { pids, .. } if !pids.is_empty() => {
                    let list: Vec<String> = pids.iter().map(|&p| who(p)).collect();
                    format!(
                        "refusing to remove {n}: it is in use by {} {}; `shmring rm --force \
                         {n}` removes the name anyway (they keep their mapping, and a process \
                         that opens the name later finds nothing, or a segment created anew)",
                        if pids.len() == 1 {
                            "process"
                        } else {
                            "processes"
                        },
                        list.join(", ")
                    )
                }
                RemoveErrorKind::InUseBy { .. }
                | RemoveErrorKind::BeingCreated { .. }
                | RemoveErrorKind::Undecided { .. } => format!(
                    "refusing to remove {n}: {e}; `shmring rm --force {n}` removes the name anyway"
                ),
                _ => e.to_string(),
            })
        };
        match removed {
            Ok(()) => say!("removed {n}"),
            Err(e) => failed.push(e),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// `shmring rm --stale`: removes every stale segment (see `SegmentInfo::is_stale`, and
/// `check` for processes it cannot inspect), and says which segments whose creator died it
/// kept, and why (in use, or it cannot tell).
pub fn rm_stale(check: StaleCheck) -> Result<(), String> {
    let segs = shm_core::list().map_err(|e| e.to_string())?;
    let mut removed = 0;
    let mut failed = Vec::new();
    for s in &segs {
        match shm_core::remove_stale_by(&s.name, check) {
            Ok(info) => {
                removed += 1;
                let why = match info.header {
                    Some(h) if h.state == SegmentState::Poisoned => {
                        "its initialiser failed".to_owned()
                    }
                    Some(h) if h.state == SegmentState::Ready => {
                        format!("creator {} is dead and nothing maps it", h.creator)
                    }
                    Some(h) if h.state == SegmentState::Initializing => {
                        format!("creator {} died before finishing it", h.creator)
                    }
                    _ => "no header was ever written".to_owned(),
                };
                say!("removed {} ({why})", s.name);
            }
            Err(e) => match e.kind() {
                RemoveErrorKind::NotStale { .. }
                | RemoveErrorKind::NotShmring { .. }
                | RemoveErrorKind::NotFound
                | RemoveErrorKind::Replaced => {}
                RemoveErrorKind::InUse { .. } | RemoveErrorKind::Undecided { .. } => {
                    say!("kept {}: {e}", s.name)
                }
                _ => failed.push(e.to_string()),
            },
        }
    }
    say!(
        "{removed} stale segment{} removed",
        if removed == 1 { "" } else { "s" }
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// "1 producer", "2 producers".
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}
