//! `shmring record` and `shmring replay`: a ring's messages written to a file with their
//! times, and published again from it.
//!
//! # The file format (version 1)
//!
//! Little-endian throughout. A header, then records until the end of the file.
//!
//! Header (`HEADER_LEN` + name bytes + 4):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `SHMRREC\0` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | ring kind (shm-core's `Kind`: 5 broadcast, 6 log) |
//! | 16 | 8 | payload size (broadcast; 1 for a log's bytes) |
//! | 24 | 8 | payload alignment |
//! | 32 | 8 | schema id |
//! | 40 | 8 | layout version of the ring |
//! | 48 | 8 | type identity (shm-core's structural hash of the payload type) |
//! | 56 | 8 | type detail (what a mismatch message uses) |
//! | 64 | 32 | type name, UTF-8, zero-padded |
//! | 96 | 8 | when recording started, ns since the Unix epoch |
//! | 104 | 8 | the ring's capacity (slots; bytes for a log) |
//! | 112 | 8 | the log's largest message (0 for broadcast) |
//! | 120 | 2 | length `n` of the ring's name |
//! | 122 | n | the ring's name |
//! | 122 + n | 4 | FNV-1a (32-bit) of every header byte before it |
//!
//! Record (16 + `len` + 4 bytes):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | `len`: payload bytes |
//! | 4 | 2 | message type (log; 0 for broadcast) |
//! | 6 | 1 | flags (log; 0 for broadcast) |
//! | 7 | 1 | what: 0 a message, 1 a gap (the payload is a u64: messages the recorder missed) |
//! | 8 | 8 | ns since recording started (monotonic clock) when the message was received |
//! | 16 | len | the payload |
//! | 16 + len | 4 | FNV-1a (32-bit) of the record's bytes before it |
//!
//! A recorder writes whole records and flushes at least every `FLUSH_EVERY`; one killed
//! mid-write leaves a file whose last record is cut short, which `replay` stops before,
//! saying where, and succeeds. A whole record that is wrong (checksum, length, kind) is
//! damage: `replay` stops before it and fails. Missed messages between two that were read
//! are one gap record, written before the second.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use shm_core::{Fingerprint, Kind, TypeName};
use shm_ring::{broadcast, log, PopError, PublishError, RecvError, SendError};

use crate::term::{self, Progress};

const MAGIC: [u8; 8] = *b"SHMRREC\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 122;
const RECORD_HEAD: usize = 16;
/// The most a recorder buffers before it writes: a killed recorder loses at most this
/// much, or `FLUSH_EVERY` of messages.
const BUFFER: usize = 1 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Broadcast payloads are viewed as `[u64; W]`, W up to this (512 bytes).
const MAX_WORDS: usize = 64;
/// How often a `--wait` recorder looks for a writer while the ring has none.
const NO_WRITER_POLL: Duration = Duration::from_millis(20);
const WHAT_MESSAGE: u8 = 0;
const WHAT_GAP: u8 = 1;

/// FNV-1a, 32-bit: the checksum of a header and of each record.
fn fnv(bytes: &[u8], mut h: u32) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
const FNV_START: u32 = 0x811c_9dc5;

/// What a file's header says.
#[derive(Debug, Clone)]
pub struct Header {
    pub kind: Kind,
    pub fingerprint: Fingerprint,
    pub started_unix_ns: u64,
    pub capacity: u64,
    pub max_len: u64,
    pub ring: String,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let f = &self.fingerprint;
        let mut b = Vec::with_capacity(HEADER_LEN + self.ring.len() + 4);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.kind.as_raw().to_le_bytes());
        for v in [
            f.payload_size,
            f.payload_align,
            f.schema_id,
            f.layout_version,
            f.type_identity,
            f.type_detail,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&f.type_name.to_bytes());
        for v in [self.started_unix_ns, self.capacity, self.max_len] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.ring.len() as u16).to_le_bytes());
        b.extend_from_slice(self.ring.as_bytes());
        let sum = fnv(&b, FNV_START);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Reads and checks a header; returns it and its length.
    fn decode(r: &mut impl Read, path: &Path) -> Result<(Header, u64), String> {
        let bad = |what: &str| format!("{} is not a shmring recording: {what}", path.display());
        let mut b = vec![0u8; HEADER_LEN];
        r.read_exact(&mut b)
            .map_err(|_| bad("it is shorter than a header"))?;
        if b[..8] != MAGIC {
            return Err(bad("no SHMRREC magic at its start"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!(
                "{}: recording format version {version}; this shmring reads version {VERSION}",
                path.display()
            ));
        }
        let kind = match Kind::from_raw(u32_at(12)) {
            Some(k @ (Kind::Broadcast | Kind::Log)) => k,
            _ => {
                return Err(bad(&format!(
                    "ring kind {} is neither broadcast nor log",
                    u32_at(12)
                )))
            }
        };
        let name_bytes: [u8; 32] = b[64..96].try_into().expect("32 bytes");
        let fingerprint = Fingerprint {
            payload_size: u64_at(16),
            payload_align: u64_at(24),
            schema_id: u64_at(32),
            layout_version: u64_at(40),
            type_identity: u64_at(48),
            type_detail: u64_at(56),
            type_name: TypeName::from_bytes(name_bytes),
        };
        let (started_unix_ns, capacity, max_len) = (u64_at(96), u64_at(104), u64_at(112));
        let n = usize::from(u16::from_le_bytes([b[120], b[121]]));
        let mut rest = vec![0u8; n + 4];
        r.read_exact(&mut rest)
            .map_err(|_| bad("its header is cut short"))?;
        b.extend_from_slice(&rest[..n]);
        let sum = u32::from_le_bytes(rest[n..].try_into().expect("4 bytes"));
        if fnv(&b, FNV_START) != sum {
            return Err(bad("its header's checksum is wrong"));
        }
        let ring = String::from_utf8(rest[..n].to_vec()).map_err(|_| bad("ring name"))?;
        Ok((
            Header {
                kind,
                fingerprint,
                started_unix_ns,
                capacity,
                max_len,
                ring,
            },
            (HEADER_LEN + n + 4) as u64,
        ))
    }
}

/// Says a fingerprint's payload type as people read it.
fn type_of(f: &Fingerprint) -> String {
    format!(
        "`{}` (size {}, align {}, identity {:#018x}, schema id {:#x})",
        f.type_name, f.payload_size, f.payload_align, f.type_identity, f.schema_id
    )
}

/// When to stop recording.
pub struct Until {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// `--wait`: the ring having no writer does not end the recording.
    pub wait: bool,
}

/// The file being written and what went into it.
struct Writer {
    out: BufWriter<File>,
    start: Instant,
    last_flush: Instant,
    messages: u64,
    bytes: u64,
    missed: u64,
    /// Messages missed since the last record, written as one gap record before the next
    /// message (or at the end): a recorder a ring behind a busy overwrite ring is told
    /// `Lagged` many times between two messages it reads.
    gap: u64,
    buf: Vec<u8>,
}

impl Writer {
    fn message(&mut self, msg_type: u16, flags: u8, payload: &[u8]) -> io::Result<()> {
        self.end_gap()?;
        self.record(WHAT_MESSAGE, msg_type, flags, payload)
    }

    fn record(&mut self, what: u8, msg_type: u16, flags: u8, payload: &[u8]) -> io::Result<()> {
        let t = self.start.elapsed().as_nanos() as u64;
        self.buf.clear();
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&msg_type.to_le_bytes());
        self.buf.push(flags);
        self.buf.push(what);
        self.buf.extend_from_slice(&t.to_le_bytes());
        self.buf.extend_from_slice(payload);
        let sum = fnv(&self.buf, FNV_START);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        self.out.write_all(&self.buf)?;
        if what == WHAT_MESSAGE {
            self.messages += 1;
            self.bytes += payload.len() as u64;
        }
        Ok(())
    }

    fn gap(&mut self, n: u64) {
        self.missed = self.missed.saturating_add(n);
        self.gap = self.gap.saturating_add(n);
    }

    /// Writes the gap counted since the last message, if any.
    fn end_gap(&mut self) -> io::Result<()> {
        match std::mem::take(&mut self.gap) {
            0 => Ok(()),
            n => self.record(WHAT_GAP, 0, 0, &n.to_le_bytes()),
        }
    }

    /// Flushes if `FLUSH_EVERY` passed since the last time.
    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.out.flush()?;
            self.last_flush = Instant::now();
        }
        Ok(())
    }
}

/// Why a recording ended.
enum End {
    Stopped,
    Count,
    Duration,
    Source(String),
}

/// Whether to stop now: a signal, or the count or duration reached.
fn done(w: &Writer, until: &Until) -> Option<End> {
    if term::stopped() {
        return Some(End::Stopped);
    }
    if until.count.is_some_and(|c| w.messages >= c) {
        return Some(End::Count);
    }
    if until.duration.is_some_and(|d| w.start.elapsed() >= d) {
        return Some(End::Duration);
    }
    None
}

/// `shmring record NAME FILE`.
pub fn record(name: &str, path: &Path, until: &Until, force: bool) -> Result<(), String> {
    let info = shm_core::inspect(name).map_err(|e| e.to_string())?;
    let h = info
        .header
        .ok_or_else(|| format!("{name} has no shmring header (too short)"))?;
    let kind = match h.kind() {
        Some(k @ (Kind::Broadcast | Kind::Log)) => k,
        Some(k @ (Kind::Spsc | Kind::Mpmc)) => {
            return Err(format!(
                "{name} is {} ring: record reads broadcast and log rings only (each of its \
                 messages goes to one consumer, so a recorder would take them from it)",
                k.with_article()
            ))
        }
        Some(k) => {
            return Err(format!(
                "{name} is {} segment, not a ring: record reads broadcast and log rings only",
                k.with_article()
            ))
        }
        None => return Err(format!("{name} is not a ring (kind {})", h.kind)),
    };
    let (capacity, max_len, words) = match kind {
        Kind::Broadcast => {
            let f = h.fingerprint;
            let words = f.payload_size.div_ceil(8) as usize;
            if f.payload_align > 8 || words == 0 || words > MAX_WORDS {
                return Err(format!(
                    "{name}'s payload {} is not one record can carry: payloads of up to \
                     {} bytes aligned to at most 8 are",
                    type_of(&f),
                    MAX_WORDS * 8
                ));
            }
            let cap = match shm_ring::inspect(name) {
                Ok(Some(shm_ring::RingInfo::Broadcast(s))) => s.capacity,
                Ok(_) => 0,
                Err(e) => return Err(e.to_string()),
            };
            (cap, 0, words)
        }
        _ => match shm_ring::inspect(name) {
            Ok(Some(shm_ring::RingInfo::Log(s))) => (s.capacity, s.max_len, 0),
            Ok(_) => (0, 0, 0),
            Err(e) => return Err(e.to_string()),
        },
    };
    let mut opts = File::options();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let file = opts.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => format!(
            "{} exists; record refuses to overwrite it without --force",
            path.display()
        ),
        _ => format!("cannot create {}: {e}", path.display()),
    })?;
    let header = Header {
        kind,
        fingerprint: h.fingerprint,
        started_unix_ns: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        capacity,
        max_len,
        ring: name.to_owned(),
    };
    let mut out = BufWriter::with_capacity(BUFFER, file);
    out.write_all(&header.encode())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    term::catch_stop();
    let now = Instant::now();
    let mut w = Writer {
        out,
        start: now,
        last_flush: now,
        messages: 0,
        bytes: 0,
        missed: 0,
        gap: 0,
        buf: Vec::with_capacity(64 * 1024),
    };
    let mut progress = Progress::new();
    let ended = match kind {
        Kind::Broadcast => {
            macro_rules! by_words {
                ($($w:literal)*) => {
                    match words {
                        $($w => record_broadcast::<$w>(name, h.fingerprint, &mut w, until, &mut progress),)*
                        _ => unreachable!("checked above"),
                    }
                };
            }
            by_words!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
                29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55
                56 57 58 59 60 61 62 63 64)
        }
        _ => record_log(name, h.fingerprint.schema_id, &mut w, until, &mut progress),
    };
    progress.clear();
    let flushed = w
        .end_gap()
        .and_then(|()| w.out.flush())
        .and_then(|()| w.out.get_ref().sync_data());
    let ended = match ended {
        // Refused before any message (the log's consumer is taken, the type does not
        // open): no file of only a header is left behind to block the next try.
        Err(e) if w.messages == 0 && w.missed == 0 => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        r => r?,
    };
    flushed.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let on_disk = w.out.get_ref().metadata().map_or(0, |m| m.len());
    let secs = w.start.elapsed().as_secs_f64();
    let why = match ended {
        End::Stopped => "stopped by a signal".to_owned(),
        End::Count => "the count was reached".to_owned(),
        End::Duration => "the duration passed".to_owned(),
        End::Source(s) => s,
    };
    say!(
        "recorded {} ({} of payload, a file of {}) from {name} into {} in {secs:.2} s \
         ({why}){}",
        plural(w.messages, "message", "messages"),
        term::bytes(w.bytes),
        term::bytes(on_disk),
        path.display(),
        if w.missed > 0 {
            format!(
                "; {} missed (the recorder fell a ring behind)",
                plural(w.missed, "message was", "messages were")
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `1 message`, `2 messages`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn progress_line(w: &Writer, verb: &str) -> String {
    format!(
        "{verb} {} messages, {}, {:.1} s",
        w.messages,
        term::bytes(w.bytes),
        w.start.elapsed().as_secs_f64()
    )
}

fn io_err(e: io::Error) -> String {
    format!("cannot write the recording: {e}")
}

fn record_broadcast<const W: usize>(
    name: &str,
    fingerprint: Fingerprint,
    w: &mut Writer,
    until: &Until,
    progress: &mut Progress,
) -> Result<End, String>
where
    [u64; W]: bytemuck::Pod,
{
    let ring =
        broadcast::open_declared::<[u64; W]>(name, fingerprint).map_err(|e| e.to_string())?;
    let mut sub = ring.subscribe().map_err(|e| e.to_string())?;
    let size = fingerprint.payload_size as usize;
    loop {
        if let Some(end) = done(w, until) {
            return Ok(end);
        }
        match sub.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                w.message(0, 0, &bytemuck::bytes_of(&v)[..size])
                    .map_err(io_err)?;
                // Whatever else is ready, without the signal and duration checks per message.
                for _ in 0..1024 {
                    match sub.try_recv() {
                        Ok(v) => w
                            .message(0, 0, &bytemuck::bytes_of(&v)[..size])
                            .map_err(io_err)?,
                        Err(RecvError::Lagged(n)) => w.gap(n),
                        Err(_) => break,
                    }
                    if until.count.is_some_and(|c| w.messages >= c) {
                        break;
                    }
                }
            }
            Err(RecvError::Timeout | RecvError::Empty) => {}
            Err(RecvError::Lagged(n)) => w.gap(n),
            // --wait: a publisher may come (a replay, a restart), and go on from where the
            // ring is, so this subscriber reads on.
            Err(RecvError::Disconnected | RecvError::PeerDied) if until.wait => {
                term::sleep(NO_WRITER_POLL);
            }
            Err(RecvError::Disconnected) => {
                return Ok(End::Source("the publisher closed the ring".into()))
            }
            Err(RecvError::PeerDied) => return Ok(End::Source("the publisher died".into())),
            Err(RecvError::Evicted) => {
                return Ok(End::Source(
                    "the publisher evicted the recorder (it fell behind past the untether \
                     timeout)"
                        .into(),
                ))
            }
            Err(RecvError::Interrupted) => return Ok(End::Stopped),
            Err(e) => return Err(format!("{name}: {e}")),
        }
        w.maybe_flush().map_err(io_err)?;
        progress.tick(|| progress_line(w, "recording"));
    }
}

fn record_log(
    name: &str,
    schema_id: u64,
    w: &mut Writer,
    until: &Until,
    progress: &mut Progress,
) -> Result<End, String> {
    let ring = log::Builder::new(name)
        .schema_id(schema_id)
        .open()
        .map_err(|e| e.to_string())?;
    let mut rx = ring.consumer().map_err(|e| match e {
        shm_ring::RingError::RoleTaken { pid, .. } => format!(
            "{name}'s consumer is process {pid}: a log has one consumer, so record can read it \
             only while that consumer is gone"
        ),
        e => e.to_string(),
    })?;
    loop {
        if let Some(end) = done(w, until) {
            return Ok(end);
        }
        let got = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(f) => w.message(f.msg_type(), f.flags(), &f).map_err(io_err),
            Err(PopError::Timeout | PopError::Empty | PopError::InFlight) => Ok(()),
            // --wait: a producer may come (a replay, a restart); what it sends waits in
            // the log until this consumer reads it, so a poll loses nothing.
            Err(PopError::Disconnected | PopError::PeerDied) if until.wait => {
                term::sleep(NO_WRITER_POLL);
                Ok(())
            }
            Err(PopError::Disconnected) => {
                return Ok(End::Source("every producer closed the log".into()))
            }
            Err(PopError::PeerDied) => return Ok(End::Source("the last producer died".into())),
            Err(PopError::Interrupted) => return Ok(End::Stopped),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        got?;
        w.maybe_flush().map_err(io_err)?;
        progress.tick(|| progress_line(w, "recording"));
    }
}

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the ring takes them.
    Max,
    /// The recorded pace times this (1.0: as recorded).
    Times(f64),
}

/// `--speed`: `max`, or a positive factor.
pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(x) if (1e-3..=1e6).contains(&x) => Ok(Speed::Times(x)),
        _ => Err(format!(
            "{s:?}: expected `max` or a factor from 0.001 to 1e6 (1 is the recorded pace)"
        )),
    }
}

/// One record, as read.
struct Rec {
    what: u8,
    msg_type: u16,
    flags: u8,
    t_ns: u64,
}

/// Reads records from a file, checking each; stops at the first that is cut short or
/// damaged and says where.
struct Records {
    r: BufReader<File>,
    at: u64,
    whole: u64,
    max_len: usize,
    /// The longest payload the target ring takes: a longer (undamaged) record stops reading
    /// before its payload, into `too_long`.
    fits: usize,
    too_long: Option<usize>,
    payload: Vec<u8>,
    /// Why reading stopped before the end of the file.
    stopped: Option<String>,
    /// Whether that was a damaged record rather than a file cut short.
    damaged: bool,
}

impl Records {
    /// The next whole record (its payload in `self.payload`), or `None` at the end (or at
    /// a bad record: `stopped` says).
    fn next(&mut self) -> Option<Rec> {
        let mut head = [0u8; RECORD_HEAD];
        match read_full(&mut self.r, &mut head) {
            Ok(0) => return None,
            Ok(n) if n == RECORD_HEAD => {}
            Ok(n) => {
                return self.stop(format!(
                    "its last record is cut short ({n} bytes of a record's 16-byte head)"
                ))
            }
            Err(e) => return self.damaged(format!("reading failed: {e}")),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let what = head[7];
        if len > self.max_len || (what == WHAT_GAP && len != 8) || what > WHAT_GAP {
            return self.damaged(format!(
                "a record there is damaged (length {len}, kind {what})"
            ));
        }
        if len > self.fits {
            self.too_long = Some(len);
            return None;
        }
        self.payload.resize(len + 4, 0);
        match read_full(&mut self.r, &mut self.payload) {
            Ok(n) if n == len + 4 => {}
            Ok(n) => {
                return self.stop(format!(
                    "its last record is cut short ({} of its {} bytes)",
                    RECORD_HEAD + n,
                    RECORD_HEAD + len + 4
                ))
            }
            Err(e) => return self.damaged(format!("reading failed: {e}")),
        }
        let sum = u32::from_le_bytes(self.payload[len..].try_into().expect("4 bytes"));
        if fnv(&self.payload[..len], fnv(&head, FNV_START)) != sum {
            return self.damaged("a record there has a wrong checksum".to_owned());
        }
        self.payload.truncate(len);
        self.at += (RECORD_HEAD + len + 4) as u64;
        self.whole += 1;
        Some(Rec {
            what,
            msg_type: u16::from_le_bytes([head[4], head[5]]),
            flags: head[6],
            t_ns: u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")),
        })
    }

    /// The file ends inside a record: what a recorder killed mid-write leaves, so
    /// replay reports it and succeeds.
    fn stop(&mut self, why: String) -> Option<Rec> {
        self.stopped = Some(format!(
            "{}: {why} (a recorder killed mid-write leaves this)",
            self.where_()
        ));
        None
    }

    /// A record that is whole but wrong, or a failed read: the file is damaged (or is not
    /// what its header says), so replay ends with an error after what it published.
    fn damaged(&mut self, why: String) -> Option<Rec> {
        self.stopped = Some(format!("{}: {why}; the file is damaged", self.where_()));
        self.damaged = true;
        None
    }

    fn where_(&self) -> String {
        format!(
            "stopped at byte {} after {}",
            self.at,
            plural(self.whole, "whole record", "whole records")
        )
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What replaying did.
struct Replayed {
    messages: u64,
    bytes: u64,
    missed: u64,
    /// A signal ended the replay before the file's end.
    stopped: bool,
}

/// Waits until `t_ns` of the recording, scaled by `speed`, has passed since `start`:
/// sleeps to within 100 us of it (in slices, so that Ctrl-C ends a long quiet stretch at
/// once), then spins. Returns false if a signal ended the wait.
fn pace(start: Instant, t_ns: u64, speed: Speed) -> bool {
    let Speed::Times(x) = speed else { return true };
    // Saturating: a time far in the future (a factor of 0.001 on a long recording) waits
    // until Ctrl-C rather than overflowing.
    let Some(target) = start
        .checked_add(Duration::try_from_secs_f64(t_ns as f64 / x / 1e9).unwrap_or(Duration::MAX))
    else {
        return term::sleep(Duration::MAX);
    };
    loop {
        let now = Instant::now();
        if now >= target {
            return true;
        }
        let left = target - now;
        if left > Duration::from_micros(200) {
            if !term::sleep(left - Duration::from_micros(100)) {
                return false;
            }
        } else {
            std::hint::spin_loop();
        }
    }
}

/// `shmring replay FILE NAME`.
pub fn replay(path: &Path, name: &str, speed: Speed) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "{} is a directory, not a recording",
            path.display()
        ));
    }
    let mut r = BufReader::with_capacity(BUFFER, file);
    let (header, at) = Header::decode(&mut r, path)?;
    // The target ring's own header, compared with the recorded one before anything else,
    // so that a mismatch names both.
    let found = shm_core::inspect(name).map_err(|e| e.to_string())?;
    let fh = found
        .header
        .ok_or_else(|| format!("{name} has no shmring header (too short)"))?;
    if fh.kind() != Some(header.kind) {
        return Err(format!(
            "{} holds a {} recording; {name} is {}",
            path.display(),
            header.kind,
            fh.kind().map_or_else(
                || format!("of kind {}", fh.kind),
                |k| format!(
                    "{} {}",
                    k.with_article(),
                    if matches!(k, Kind::Raw | Kind::Sync) {
                        "segment"
                    } else {
                        "ring"
                    }
                )
            )
        ));
    }
    let (rf, ff) = (&header.fingerprint, &fh.fingerprint);
    if !rf.matches(ff) {
        return Err(format!(
            "{} holds messages of {} (recorded from {}); {name} carries {}: replay refuses \
             a ring of another payload type",
            path.display(),
            type_of(rf),
            header.ring,
            type_of(ff)
        ));
    }
    let max_len = match header.kind {
        Kind::Broadcast => rf.payload_size as usize,
        _ => header.max_len.max(1) as usize,
    }
    .min(u32::MAX as usize);
    let mut recs = Records {
        r,
        at,
        whole: 0,
        max_len: max_len.max(8),
        fits: usize::MAX,
        too_long: None,
        payload: Vec::new(),
        stopped: None,
        damaged: false,
    };
    term::catch_stop();
    let mut progress = Progress::new();
    let start = Instant::now();
    let done = match header.kind {
        Kind::Broadcast => {
            let words = rf.payload_size.div_ceil(8) as usize;
            macro_rules! by_words {
                ($($w:literal)*) => {
                    match words {
                        $($w => replay_broadcast::<$w>(name, *rf, &mut recs, speed, start, &mut progress),)*
                        _ => Err(format!("{} records payloads of {} bytes: more than replay carries ({})",
                                 path.display(), rf.payload_size, MAX_WORDS * 8)),
                    }
                };
            }
            by_words!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
                29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55
                56 57 58 59 60 61 62 63 64)
        }
        _ => replay_log(name, rf.schema_id, &mut recs, speed, start, &mut progress),
    };
    progress.clear();
    let done = done?;
    let secs = start.elapsed().as_secs_f64();
    say!(
        "replayed {} ({}) from {} into {name} in {secs:.3} s{}{}{}",
        plural(done.messages, "message", "messages"),
        term::bytes(done.bytes),
        path.display(),
        match speed {
            Speed::Max => " (as fast as the ring took them)".to_owned(),
            Speed::Times(x) => format!(" (speed {x})"),
        },
        if done.stopped {
            "; stopped by a signal before the file's end"
        } else {
            ""
        },
        if done.missed > 0 {
            format!(
                "; the recording marks {} its recorder missed",
                plural(done.missed, "message", "messages")
            )
        } else {
            String::new()
        }
    );
    match recs.stopped {
        Some(why) if recs.damaged => Err(format!("{}: {why}", path.display())),
        Some(why) => {
            eprintln!("shmring: {}: {why}", path.display());
            Ok(())
        }
        None => Ok(()),
    }
}

/// What one message's publishing came to.
enum Sent {
    Done,
    /// A signal: stop, keeping what was published.
    Stop,
    /// The record cannot be published: replay stops before it, saying why.
    Bad(String),
}

/// Publishes every whole record with `send`, each at its time (`pace`), counting what went
/// out and the gaps the recorder marked.
fn replay_each(
    recs: &mut Records,
    speed: Speed,
    start: Instant,
    progress: &mut Progress,
    mut send: impl FnMut(&Rec, &[u8]) -> Result<Sent, String>,
) -> Result<Replayed, String> {
    let mut done = Replayed {
        messages: 0,
        bytes: 0,
        missed: 0,
        stopped: false,
    };
    while let Some(rec) = recs.next() {
        if term::stopped() {
            done.stopped = true;
            break;
        }
        if rec.what == WHAT_GAP {
            done.missed += u64::from_le_bytes(recs.payload[..8].try_into().expect("8 bytes"));
            continue;
        }
        if !pace(start, rec.t_ns, speed) {
            done.stopped = true;
            break;
        }
        match send(&rec, &recs.payload)? {
            Sent::Done => {}
            Sent::Stop => {
                done.stopped = true;
                break;
            }
            Sent::Bad(why) => {
                recs.damaged(why);
                break;
            }
        }
        done.messages += 1;
        done.bytes += recs.payload.len() as u64;
        progress.tick(|| replay_line(&done, start, recs));
    }
    Ok(done)
}

fn replay_broadcast<const W: usize>(
    name: &str,
    fingerprint: Fingerprint,
    recs: &mut Records,
    speed: Speed,
    start: Instant,
    progress: &mut Progress,
) -> Result<Replayed, String>
where
    [u64; W]: bytemuck::Pod,
{
    let ring =
        broadcast::open_declared::<[u64; W]>(name, fingerprint).map_err(|e| e.to_string())?;
    let mut tx = ring.publisher().map_err(|e| e.to_string())?;
    let size = fingerprint.payload_size as usize;
    replay_each(recs, speed, start, progress, |_, payload| {
        if payload.len() != size {
            return Ok(Sent::Bad(format!(
                "a record there holds {} bytes, not the payload's {size}",
                payload.len()
            )));
        }
        let mut v = [0u64; W];
        bytemuck::bytes_of_mut(&mut v)[..size].copy_from_slice(payload);
        match tx.publish(v) {
            Ok(()) => Ok(Sent::Done),
            Err(PublishError::Interrupted(_)) => Ok(Sent::Stop),
            Err(e) => Err(format!("{name}: {e}")),
        }
    })
}

fn replay_line(done: &Replayed, start: Instant, recs: &Records) -> String {
    format!(
        "replaying: {} messages, {}, byte {} of the file, {:.1} s",
        done.messages,
        term::bytes(done.bytes),
        recs.at,
        start.elapsed().as_secs_f64()
    )
}

fn replay_log(
    name: &str,
    schema_id: u64,
    recs: &mut Records,
    speed: Speed,
    start: Instant,
    progress: &mut Progress,
) -> Result<Replayed, String> {
    let ring = log::Builder::new(name)
        .schema_id(schema_id)
        .open()
        .map_err(|e| e.to_string())?;
    let mut tx = ring.producer().map_err(|e| e.to_string())?;
    // The header's max_len is the file's word, up to 4 GiB: a record longer than this ring
    // takes ends the replay before its payload is read, so no record makes replay allocate
    // more than the ring's own maximum.
    recs.fits = tx.max_len().max(8);
    replay_each(recs, speed, start, progress, |rec, payload| {
        let len = payload.len();
        let sent = tx.claim(len).and_then(|mut c| {
            c.buf()[..len].copy_from_slice(payload);
            c.set_type(rec.msg_type);
            c.set_flags(rec.flags);
            c.commit(len)
        });
        match sent {
            Ok(()) => Ok(Sent::Done),
            Err(SendError::Interrupted) => Ok(Sent::Stop),
            Err(SendError::TooLong { .. }) => Err(too_long(name, tx.max_len(), len)),
            Err(e) => Err(format!("{name}: {e}")),
        }
    })
    .and_then(|done| match recs.too_long {
        Some(len) => Err(too_long(name, tx.max_len(), len)),
        None => Ok(done),
    })
}

fn too_long(name: &str, max_len: usize, len: usize) -> String {
    format!("{name} takes messages of up to {max_len} bytes; the recording holds one of {len}")
}
