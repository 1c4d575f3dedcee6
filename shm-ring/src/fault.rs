//! Test-only fault points (feature `fault-injection`): a process started with
//! `SHMRING_FAULT=<point>:<n>` kills itself with SIGABRT the `n`-th time it reaches
//! `<point>`, i.e. mid-protocol, as `kill -9` at the worst moment would.
//!
//! Points: `mpmc-producer-claimed` (slot claimed, nothing written),
//! `mpmc-producer-written` (value written, not published), `mpmc-consumer-read` (value
//! read, slot not released), `spsc-producer-written` (slot written, tail not published).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Dies here if this is the armed point's `n`-th hit.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("SHMRING_FAULT").ok()?;
        let (p, n) = v.split_once(':').unwrap_or((&v, "1"));
        Some((p.to_owned(), n.parse().unwrap_or(1)))
    });
    if let Some((p, n)) = armed {
        if p == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            std::process::abort();
        }
    }
}
