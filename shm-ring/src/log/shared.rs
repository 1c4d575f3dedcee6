//! Named log segments: the builder, create, open and open-or-create.

use super::*;
use crate::named::{Named, NewSlots, Options};
use shm_core::Kind;

/// Options for creating or opening a log segment.
pub struct Builder {
    opts: Options,
    max_len: u64,
    align: u64,
    claim_timeout: Duration,
}

/// The payload identity of every log: bytes (a schema id tells logs of different message
/// sets apart).
type T = u8;

impl Builder {
    /// Options for the log `name` (1 MiB, messages of up to [`DEFAULT_MAX_LEN`] bytes,
    /// claim timeout [`DEFAULT_CLAIM_TIMEOUT`], schema id 0).
    pub fn new(name: &str) -> Builder {
        let mut opts = Options::new(name);
        opts.capacity = (1 << 20) / 8;
        Builder {
            opts,
            max_len: DEFAULT_MAX_LEN,
            align: 8,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
        }
    }

    /// The largest message, in bytes (at most a little under half the capacity: a record
    /// must fit in half the log). Recorded in the segment.
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    /// Where records start: at multiples of `align` bytes (made a power of two in
    /// 8 ..= 4096; default 8). A larger alignment wastes up to `align - 8` bytes per record
    /// but makes the consumer's release rewrite one word per `align` bytes instead of
    /// every word: 64 suits messages of a few KiB. Recorded in the segment.
    pub fn record_align(mut self, align: u64) -> Self {
        self.align = round_align(align);
        self
    }

    /// How long a claim may stay unmarked, or marked by a dead producer, before the
    /// consumer gives it up (clamped to 1 ms ..= 60 s). Recorded in the segment.
    pub fn claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(60));
        self
    }

    crate::named::builder_options!(Kind::Log, LOG_LAYOUT_VERSION, bytes, |b: &Self| {
        check_max_len(&b.opts.name, b.opts.capacity, b.max_len, b.align)
    });

    /// A new segment's control block, and every word `FREE` for its first lap.
    fn init(&self) -> impl Fn(&Control, NewSlots<Word>, u64) {
        let align = self.align;
        let initial = self.opts.initial_position & !(align - 1);
        let (max_len, timeout) = (self.max_len, self.claim_timeout);
        move |c, words, cap| {
            c.config.capacity.store(cap, Ordering::Relaxed);
            c.config.initial.store(initial, Ordering::Relaxed);
            c.config.max_len.store(max_len, Ordering::Relaxed);
            c.config.align.store(align, Ordering::Relaxed);
            c.config
                .claim_timeout_ns
                .store(timeout.as_nanos() as u64, Ordering::Relaxed);
            c.config.consumer_since.store(initial, Ordering::Relaxed);
            c.tail.pos.store(initial, Ordering::Relaxed);
            c.head.pos.store(initial, Ordering::Relaxed);
            c.head.consumed.store(initial, Ordering::Relaxed);
            c.given_up.below.store(initial, Ordering::Relaxed);
            words.each_from(initial / 8, |w: &Word, i| {
                w.store(free_word(i.wrapping_mul(8)), Ordering::Relaxed)
            });
        }
    }
}

/// Creates the log `name` of at least `capacity` bytes (the builder's other defaults).
///
/// # Errors
///
/// See [`Builder::create`].
pub fn create(name: &str, capacity: u64) -> Result<Ring, RingError> {
    Builder::new(name).capacity(capacity).create()
}

/// Opens the log `name` if it exists, else creates it with at least `capacity` bytes;
/// exactly one of many racing processes creates it.
///
/// # Errors
///
/// See [`Builder::open_or_create`].
pub fn open_or_create(name: &str, capacity: u64) -> Result<Ring, RingError> {
    Builder::new(name).capacity(capacity).open_or_create()
}

/// Opens the log `name`.
///
/// # Errors
///
/// See [`Builder::open`].
pub fn open(name: &str) -> Result<Ring, RingError> {
    Builder::new(name).open()
}
