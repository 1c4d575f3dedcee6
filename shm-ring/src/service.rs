//! Request/reply on top of the log: one server, any number of client processes, each
//! request answered to the client that sent it.
//!
//! ```
//! use std::time::Duration;
//! use shm_ring::service::{Client, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = format!("/shm-ring-doc-svc-{}", std::process::id());
//! let mut server = Server::create(&name)?;
//! // A client process connects by name and asks.
//! let mut client = Client::connect(&name)?;
//! let id = client.send_request(b"PRICE 7")?;
//! // The server answers whoever asked.
//! let req = server.recv_timeout(Duration::from_secs(1))?;
//! assert_eq!(req.bytes(), b"PRICE 7");
//! req.reply(b"99.5")?;
//! let reply = client.wait_reply(id, Duration::from_secs(1))?;
//! assert_eq!(&reply[..], b"99.5");
//! # Ok(()) }
//! ```
//!
//! # How
//!
//! Requests travel on one log, `NAME` (clients produce, the server consumes). Each client
//! owns a reply log, `NAME.reply.K`, where `K` is its producer endpoint on the request log:
//! it creates that log anew when it connects, with a random session number as the log's
//! schema id, and removes it when it disconnects. A request carries the client's endpoint,
//! its session and a correlation id (24 bytes before the request's own); the server opens
//! the reply log of that endpoint *with that session*, so a reply meant for a client that
//! has since been replaced by another process at the same endpoint finds a log of another
//! session (a fingerprint mismatch) and is dropped, never delivered to the successor. A
//! reply carries the correlation id of its request.
//!
//! # When a peer dies
//!
//! - A client killed mid-request: the server's reply finds the reply log's consumer gone
//!   and removes that log (`ServerStats::reclaimed`); a server that is idle checks the
//!   clients it answered once per liveness interval and reclaims the dead ones' logs too.
//!   The next client at that endpoint replaces the log in any case.
//! - The server killed: a client waiting for a reply gets `PeerDied` (its reply log's
//!   producer, or the request log's consumer, is dead), within the liveness interval.
//! - A reply that comes after its call gave up (`Timeout`) is skipped by the next call
//!   that waits for another id (`ClientStats::stale`).

use std::time::{Duration, Instant};

use crate::error::{PopError, RingError, SendError};
use crate::log;

/// Bytes a request carries before its own: the client's endpoint (8), its session (8),
/// the correlation id (8).
pub const REQUEST_HEADER: usize = 24;
/// Bytes a reply carries before its own: the correlation id.
pub const REPLY_HEADER: usize = 8;

/// Why a service call did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Creating or opening a log failed.
    Ring(RingError),
    /// Sending a request or a reply failed.
    Send(SendError),
    /// Receiving failed.
    Recv(PopError),
    /// Nothing arrived in time.
    Timeout,
    /// The other side is gone: the server (for a client), or the client a reply was for
    /// (for the server; its reply log is removed).
    PeerDied,
    /// A request too short to carry its header, or a reply log of a client that is no
    /// longer the one that asked (the reply is dropped).
    ClientGone,
    /// A request or reply with an impossible header.
    Corrupted,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Ring(e) => e.fmt(f),
            ServiceError::Send(e) => e.fmt(f),
            ServiceError::Recv(e) => e.fmt(f),
            ServiceError::Timeout => f.write_str("timed out waiting for the service"),
            ServiceError::PeerDied => f.write_str("the other side of the service is gone"),
            ServiceError::ClientGone => f.write_str(
                "the client that sent the request is gone (or was replaced): reply dropped",
            ),
            ServiceError::Corrupted => f.write_str("a request or reply with an impossible header"),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<RingError> for ServiceError {
    fn from(e: RingError) -> Self {
        ServiceError::Ring(e)
    }
}

impl From<SendError> for ServiceError {
    fn from(e: SendError) -> Self {
        ServiceError::Send(e)
    }
}

/// Sizes of a service's logs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The request log's bytes.
    pub request_capacity: u64,
    /// Each client's reply log's bytes.
    pub reply_capacity: u64,
    /// The largest request or reply, headers included.
    pub max_len: u64,
}

impl Default for Options {
    /// 1 MiB of requests, 64 KiB of replies per client, messages of up to 1 KiB.
    fn default() -> Self {
        Options {
            request_capacity: 1 << 20,
            reply_capacity: 64 << 10,
            max_len: 1024 - 8,
        }
    }
}

/// The reply log of endpoint `k` of service `name`.
pub fn reply_log_name(name: &str, k: usize) -> String {
    format!("{name}.reply.{k}")
}

fn recv_err(e: PopError) -> ServiceError {
    match e {
        PopError::Timeout => ServiceError::Timeout,
        PopError::PeerDied | PopError::Disconnected => ServiceError::PeerDied,
        e => ServiceError::Recv(e),
    }
}

/// Counters of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests received.
    pub requests: u64,
    /// Replies sent.
    pub replies: u64,
    /// Replies dropped because their client had gone or been replaced.
    pub orphaned: u64,
    /// Reply logs of dead clients removed.
    pub reclaimed: u64,
}

/// Per endpoint (`log::MAX_PRODUCERS` of them): its client's session and reply log.
type Replies = Vec<Option<(u64, log::Producer)>>;

/// The server: receives every client's requests and answers each.
pub struct Server {
    name: String,
    requests: log::Consumer,
    _ring: log::Ring,
    /// The reply log of each endpoint the server answered, with its session (indexed by
    /// endpoint: no hashing on the reply path).
    replies: Replies,
    stats: ServerStats,
    last_sweep: Instant,
    strategy: crate::WaitStrategy,
}

impl Server {
    /// Creates the service `name` (its request log) with the default [`Options`], and
    /// serves it.
    ///
    /// # Errors
    ///
    /// The request log's creation errors.
    pub fn create(name: &str) -> Result<Server, ServiceError> {
        Self::create_with(name, Options::default())
    }

    /// [`create`](Self::create) with its own sizes.
    ///
    /// # Errors
    ///
    /// As `create`.
    pub fn create_with(name: &str, opts: Options) -> Result<Server, ServiceError> {
        let ring = log::Builder::new(name)
            .capacity(opts.request_capacity)
            .max_len(opts.max_len)
            .create()?;
        Self::serve(ring)
    }

    /// Serves the existing service `name` (a restarted server takes the request log over;
    /// requests already in it are answered).
    ///
    /// # Errors
    ///
    /// The request log's open errors; `RoleTaken` while another server lives.
    pub fn open(name: &str) -> Result<Server, ServiceError> {
        Self::serve(log::open(name)?)
    }

    fn serve(ring: log::Ring) -> Result<Server, ServiceError> {
        Ok(Server {
            name: ring.name().to_owned(),
            requests: ring.consumer()?,
            _ring: ring,
            replies: (0..log::MAX_PRODUCERS).map(|_| None).collect(),
            stats: ServerStats::default(),
            last_sweep: Instant::now(),
            strategy: crate::WaitStrategy::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Sets how receives of requests wait (and replies, when a reply log is full).
    pub fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
        self.requests.set_wait_strategy(strategy);
        self.strategy = strategy;
        for (_, tx) in self.replies.iter_mut().flatten() {
            tx.set_wait_strategy(strategy);
        }
    }

    /// The next request, if one is ready.
    ///
    /// # Errors
    ///
    /// `Recv(Empty)` (also while no client is attached) or `Recv(InFlight)`; `Corrupted`
    /// for a request too short for its header.
    pub fn try_recv(&mut self) -> Result<Request<'_>, ServiceError> {
        match self.requests.peek() {
            Ok(_) => {}
            Err(e @ (PopError::Empty | PopError::InFlight)) => {
                self.sweep();
                return Err(ServiceError::Recv(e));
            }
            // No client attached now (the last one left or died): nothing to serve yet.
            Err(PopError::Disconnected | PopError::PeerDied) => {
                self.sweep();
                return Err(ServiceError::Recv(PopError::Empty));
            }
            Err(e) => return Err(recv_err(e)),
        }
        self.request()
    }

    /// The next request, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), `Timeout` instead of `Empty`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Request<'_>, ServiceError> {
        // A request ready now costs no clock read.
        if self.requests.peek().is_ok() {
            return self.request();
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = slice_until(deadline);
            match self.requests.ready_timeout(left) {
                Ok(()) => break,
                Err(PopError::Timeout) => {
                    self.sweep();
                    if passed(deadline) {
                        return Err(ServiceError::Timeout);
                    }
                }
                // No client attached now: sleep until one attaches (its attach wakes us).
                Err(PopError::Disconnected | PopError::PeerDied) => {
                    self.sweep();
                    match self.requests.wait_for_producers(left) {
                        Ok(()) | Err(PopError::Timeout) => {}
                        Err(e) => return Err(recv_err(e)),
                    }
                    if passed(deadline) {
                        return Err(ServiceError::Timeout);
                    }
                }
                Err(e) => return Err(recv_err(e)),
            }
        }
        self.request()
    }

    /// The request at the head of the log (which `try_recv`/`recv_timeout` found ready).
    fn request(&mut self) -> Result<Request<'_>, ServiceError> {
        self.stats.requests += 1;
        let Server {
            requests,
            replies,
            stats,
            name,
            strategy,
            ..
        } = self;
        let frame = requests.try_recv().map_err(recv_err)?;
        if frame.len() < REQUEST_HEADER {
            return Err(ServiceError::Corrupted);
        }
        let word = |i: usize| u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().unwrap());
        let (k, session, id) = (word(0), word(1), word(2));
        if k >= log::MAX_PRODUCERS as u64 {
            return Err(ServiceError::Corrupted);
        }
        Ok(Request {
            frame,
            client: k as usize,
            session,
            id,
            replies,
            stats,
            name,
            strategy: *strategy,
        })
    }

    /// Once per liveness interval while idle: removes the reply logs of clients that died.
    fn sweep(&mut self) {
        if self.last_sweep.elapsed() < crate::LIVENESS_INTERVAL {
            return;
        }
        self.last_sweep = Instant::now();
        let stats = &mut self.stats;
        for slot in &mut self.replies {
            if slot.as_mut().is_some_and(|(_, tx)| tx.is_abandoned()) {
                // Only that client's log: a successor at the endpoint may have made its
                // own under the name since.
                if let Some((_, tx)) = slot.take() {
                    tx.unlink_log();
                }
                stats.reclaimed += 1;
            }
        }
    }
}

/// A request, lent in place until it is answered or dropped.
pub struct Request<'a> {
    frame: log::Frame<'a>,
    client: usize,
    session: u64,
    id: u64,
    replies: &'a mut Replies,
    stats: &'a mut ServerStats,
    name: &'a str,
    strategy: crate::WaitStrategy,
}

impl Request<'_> {
    /// The request's bytes (after its header).
    pub fn bytes(&self) -> &[u8] {
        &self.frame[REQUEST_HEADER..]
    }

    /// Its correlation id (the client's numbering).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The endpoint of the client that sent it.
    pub fn client(&self) -> usize {
        self.client
    }

    /// Answers the client that sent it with `reply`.
    ///
    /// # Errors
    ///
    /// `ClientGone` (the client left or was replaced: the reply is dropped), `PeerDied`
    /// (the client died: its reply log is removed), `Send` (the reply log is full past the
    /// liveness interval, or the reply is too long).
    pub fn reply(self, reply: &[u8]) -> Result<(), ServiceError> {
        self.reply_with(reply.len(), |_, buf| {
            buf.copy_from_slice(reply);
            reply.len()
        })
    }

    /// Answers with a reply written in place: `write` gets the request's bytes and room
    /// for up to `max` reply bytes, and returns how many it wrote (no copy of either).
    ///
    /// # Errors
    ///
    /// As [`reply`](Self::reply); `Send(TooLong)` if `write` says it wrote more than `max`
    /// (nothing is sent).
    pub fn reply_with(
        self,
        max: usize,
        write: impl FnOnce(&[u8], &mut [u8]) -> usize,
    ) -> Result<(), ServiceError> {
        let Request {
            frame,
            client,
            session,
            id,
            replies,
            stats,
            name,
            strategy,
            ..
        } = self;
        let fresh = !matches!(&replies[client], Some((s, _)) if *s == session);
        if fresh {
            replies[client] = None;
            let opened = log::Builder::new(&reply_log_name(name, client))
                .schema_id(session)
                .open()
                .and_then(|r| r.producer());
            match opened {
                Ok(mut tx) => {
                    tx.set_wait_strategy(strategy);
                    replies[client] = Some((session, tx));
                }
                Err(_) => {
                    stats.orphaned += 1;
                    return Err(ServiceError::ClientGone);
                }
            }
        }
        let Some((_, tx)) = replies[client].as_mut() else {
            unreachable!("set above");
        };
        let r = (|| {
            let mut c = tx.claim_timeout(REPLY_HEADER + max, crate::LIVENESS_INTERVAL)?;
            let buf = c.buf();
            buf[..REPLY_HEADER].copy_from_slice(&id.to_le_bytes());
            let n = write(&frame[REQUEST_HEADER..], &mut buf[REPLY_HEADER..]);
            c.commit(REPLY_HEADER.saturating_add(n))
        })();
        drop(frame);
        match r {
            Ok(()) => {
                stats.replies += 1;
                Ok(())
            }
            Err(SendError::PeerDied | SendError::Disconnected) => {
                // Only that client's log, as in `sweep`.
                if let Some((_, tx)) = replies[client].take() {
                    tx.unlink_log();
                }
                stats.reclaimed += 1;
                Err(ServiceError::PeerDied)
            }
            Err(SendError::Timeout) => Err(ServiceError::Send(SendError::Full)),
            Err(SendError::TooLong { len, .. }) => Err(ServiceError::Send(SendError::TooLong {
                len: len - REPLY_HEADER,
                max,
            })),
            Err(e) => Err(ServiceError::Send(e)),
        }
    }
}

/// Counters of a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent.
    pub requests: u64,
    /// Replies received for the id waited for.
    pub replies: u64,
    /// Replies skipped: for an earlier call that had given up.
    pub stale: u64,
}

/// A client of a service: sends requests, waits for their replies.
pub struct Client {
    requests: log::Producer,
    replies: log::Consumer,
    _reply_ring: log::Ring,
    endpoint: usize,
    session: u64,
    next_id: u64,
    stats: ClientStats,
}

impl Client {
    /// Connects to the service `name`, with a reply log of the default size.
    ///
    /// # Errors
    ///
    /// The logs' open and create errors (`TooManyEndpoints` past
    /// [`log::MAX_PRODUCERS`] clients).
    pub fn connect(name: &str) -> Result<Client, ServiceError> {
        Self::connect_with(name, Options::default().reply_capacity)
    }

    /// [`connect`](Self::connect) with a reply log of `reply_capacity` bytes.
    ///
    /// # Errors
    ///
    /// As `connect`.
    pub fn connect_with(name: &str, reply_capacity: u64) -> Result<Client, ServiceError> {
        let ring = log::open(name)?;
        let requests = ring.producer()?;
        let endpoint = requests.attachment().endpoint;
        let session = session_number();
        let reply_name = reply_log_name(name, endpoint);
        // The endpoint is ours: a log left under its name belongs to a predecessor that is
        // gone. Replace it, so that no reply meant for that one reaches us.
        let _ = shm_core::remove(&reply_name);
        let reply_ring = log::Builder::new(&reply_name)
            .capacity(reply_capacity)
            .max_len(ring.max_len().min((reply_capacity / 2).saturating_sub(16)))
            .schema_id(session)
            .create()?;
        let replies = reply_ring.consumer()?;
        Ok(Client {
            requests,
            replies,
            _reply_ring: reply_ring,
            endpoint,
            session,
            next_id: 1,
            stats: ClientStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Sets how waits for replies (and sends on a full request log) wait.
    pub fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
        self.requests.set_wait_strategy(strategy);
        self.replies.set_wait_strategy(strategy);
    }

    /// This client's endpoint on the request log.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// Sends a request; returns its correlation id, for [`wait_reply`](Self::wait_reply).
    ///
    /// # Errors
    ///
    /// `Send` (the request log is full past the liveness interval, the request is too
    /// long), `PeerDied` (the server closed or died).
    pub fn send_request(&mut self, request: &[u8]) -> Result<u64, ServiceError> {
        let id = self.next_id;
        let len = REQUEST_HEADER + request.len();
        let r = (|| {
            let mut c = self.requests.claim_timeout(len, crate::LIVENESS_INTERVAL)?;
            let buf = c.buf();
            buf[..8].copy_from_slice(&(self.endpoint as u64).to_le_bytes());
            buf[8..16].copy_from_slice(&self.session.to_le_bytes());
            buf[16..24].copy_from_slice(&id.to_le_bytes());
            buf[24..len].copy_from_slice(request);
            c.commit(len)
        })();
        match r {
            Ok(()) => {}
            Err(SendError::PeerDied | SendError::Disconnected) => {
                return Err(ServiceError::PeerDied)
            }
            Err(e) => return Err(ServiceError::Send(e)),
        }
        self.next_id += 1;
        self.stats.requests += 1;
        Ok(id)
    }

    /// Waits up to `timeout` for the reply to request `id`; a reply to an earlier request
    /// whose wait gave up is skipped (counted in `stale`).
    ///
    /// The server answers in the order the requests came (one log each way), so with
    /// several requests outstanding, wait for them in the order they were sent: a wait for
    /// a later id skips (as stale) the replies to the earlier ones, and a later wait for
    /// one of those then finds a newer reply, `Corrupted`.
    ///
    /// # Errors
    ///
    /// `Timeout`; `PeerDied` when the server died or closed; `Corrupted`.
    pub fn wait_reply(&mut self, id: u64, timeout: Duration) -> Result<Reply<'_>, ServiceError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.replies.ready_timeout(slice_until(deadline)) {
                Ok(()) => {
                    let got = match self.replies.peek() {
                        Ok(m) if m.bytes.len() >= REPLY_HEADER => {
                            u64::from_le_bytes(m.bytes[..8].try_into().unwrap())
                        }
                        Ok(_) => return Err(ServiceError::Corrupted),
                        Err(e) => return Err(recv_err(e)),
                    };
                    if got < id {
                        // The reply to a call that gave up: skip it.
                        drop(self.replies.try_recv());
                        self.stats.stale += 1;
                        continue;
                    }
                    if got > id {
                        return Err(ServiceError::Corrupted);
                    }
                    break;
                }
                Err(PopError::Timeout) => {
                    if self.requests.is_abandoned() {
                        return Err(ServiceError::PeerDied);
                    }
                    if passed(deadline) {
                        return Err(ServiceError::Timeout);
                    }
                }
                Err(e) => return Err(recv_err(e)),
            }
        }
        self.stats.replies += 1;
        let frame = self.replies.try_recv().map_err(recv_err)?;
        Ok(Reply { frame })
    }

    /// [`send_request`](Self::send_request), then [`wait_reply`](Self::wait_reply).
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn call(&mut self, request: &[u8], timeout: Duration) -> Result<Reply<'_>, ServiceError> {
        let id = self.send_request(request)?;
        self.wait_reply(id, timeout)
    }
}

/// A reply, lent in place until dropped.
pub struct Reply<'a> {
    frame: log::Frame<'a>,
}

impl std::ops::Deref for Reply<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.frame[REPLY_HEADER..]
    }
}

/// What a wait of the service waits next: until `deadline` (`None`: none), at most a
/// liveness interval, so that it checks its peers between slices.
fn slice_until(deadline: Option<Instant>) -> Duration {
    deadline
        .map_or(crate::LIVENESS_INTERVAL, |d| {
            d.saturating_duration_since(Instant::now())
        })
        .min(crate::LIVENESS_INTERVAL)
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// A number no other connection of this or another process is likely to pick: the
/// monotonic clock's nanoseconds mixed with the pid and a per-process counter.
fn session_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = t
        ^ (u64::from(std::process::id()) << 32)
        ^ N.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // A final mix (splitmix64), and never 0 (the default schema id).
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}
