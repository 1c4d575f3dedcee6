//! The in-process peers `shmring bench` measures in the same run (feature `peers`): rtrb,
//! the fastest SPSC queue in Rust, and crossbeam's `ArrayQueue`, the MPMC queue most Rust
//! code uses. Both stop at the process boundary, so their rows are threads of this process,
//! pinned to the same CPUs as the process rows they are compared with. Neither has a
//! blocking call: their rows are the plain retry loops a user writes around `push`/`pop`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// What a peer row measured.
pub struct Figures {
    pub msgs_per_sec: f64,
    pub count: u64,
}

/// Set when a thread of a peer row stops early (an error or a panic), so that the others,
/// spinning on a full or empty queue, stop too instead of waiting forever.
struct Abort<'a> {
    flag: &'a AtomicBool,
    armed: bool,
}

impl<'a> Abort<'a> {
    fn new(flag: &'a AtomicBool) -> Self {
        Abort { flag, armed: true }
    }

    /// This thread finished its part: its exit stops nobody.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Abort<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Relaxed: a stop request; no data rides on it.
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

fn pin(cpu: Option<usize>) -> Result<(), String> {
    match cpu {
        Some(c) => sys::pin_to(c).map_err(|e| format!("cannot pin to CPU {c}: {e}")),
        None => Ok(()),
    }
}

/// rtrb between two threads: `Producer::push` / `Consumer::pop` retried while full /
/// empty, capacity 4096 like the shmring rows, every message checked in sequence.
pub fn rtrb<T: Copy + Send>(
    cpus: [Option<usize>; 2],
    warmup: Duration,
    duration: Duration,
    make: impl Fn(u64) -> T + Sync,
    seq: impl Fn(&T) -> u64 + Sync,
) -> Result<Figures, String> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<T>::new(4096);
    let done = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| -> Result<Instant, String> {
            let guard = Abort::new(&abort);
            pin(cpus[1])?;
            let mut got = 0u64;
            loop {
                match rx.pop() {
                    Ok(v) => {
                        if seq(&v) != got {
                            return Err(format!("rtrb: message {got} came as {}", seq(&v)));
                        }
                        got += 1;
                    }
                    // Acquire: pairs with the Release store of `done` below, so `sent`
                    // is final once `done` reads true.
                    Err(_)
                        if done.load(Ordering::Acquire) && got == sent.load(Ordering::Relaxed) =>
                    {
                        guard.disarm();
                        return Ok(Instant::now());
                    }
                    // Relaxed: a stop request.
                    Err(_) if abort.load(Ordering::Relaxed) => {
                        return Err("the rtrb producer stopped".into());
                    }
                    Err(_) => {}
                }
            }
        });
        let producer = s.spawn(|| -> Result<(u64, Instant), String> {
            let guard = Abort::new(&abort);
            pin(cpus[0])?;
            let mut i = 0u64;
            let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
                let t0 = Instant::now();
                while t0.elapsed() < d {
                    for _ in 0..1024 {
                        let v = make(*i);
                        // A plain retry loop, as `benches/examples/loops.rs` (the
                        // cross-check) and the shmring try rows write it, but for the stop
                        // check (Relaxed: a stop request).
                        while tx.push(v).is_err() {
                            if abort.load(Ordering::Relaxed) {
                                return Err("the rtrb consumer stopped".into());
                            }
                        }
                        *i += 1;
                    }
                }
                Ok(())
            };
            run(warmup, &mut i)?;
            let (before, t0) = (i, Instant::now());
            run(duration, &mut i)?;
            sent.store(i, Ordering::Relaxed);
            // Release: pairs with the consumer's Acquire load of `done`.
            done.store(true, Ordering::Release);
            guard.disarm();
            Ok((i - before, t0))
        });
        let (count, t0) = producer
            .join()
            .map_err(|_| "the rtrb producer panicked")??;
        let end = consumer
            .join()
            .map_err(|_| "the rtrb consumer panicked")??;
        Ok(Figures {
            msgs_per_sec: count as f64 / (end - t0).as_secs_f64(),
            count,
        })
    })
}

/// A counter on a cache line of its own.
#[repr(align(128))]
struct Padded(AtomicU64);

/// `ArrayQueue` (capacity 4096) with `n` producer and `n` consumer threads: `push` retried
/// while full, `pop` while empty; producer `k` on `cpu(k)`, consumer `k` on `cpu(n + k)`, as
/// in the `mpmc-throughput` rows. Timed like them: producers run warm-up plus measured time,
/// and the rate is what consumers popped from the end of the warm-up until drained.
pub fn array_queue(
    n: usize,
    cpu: &(dyn Fn(usize) -> Option<usize> + Sync),
    warmup: Duration,
    duration: Duration,
) -> Result<Figures, String> {
    let q = crossbeam_queue::ArrayQueue::<u64>::new(4096);
    let popped: Vec<Padded> = (0..n).map(|_| Padded(AtomicU64::new(0))).collect();
    let finished = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let total = warmup + duration;
    let sum = |p: &[Padded]| p.iter().map(|c| c.0.load(Ordering::Relaxed)).sum::<u64>();
    std::thread::scope(|s| {
        let mut consumers = Vec::new();
        for (k, count) in popped.iter().enumerate() {
            let (q, finished, abort) = (&q, &finished, &abort);
            consumers.push(s.spawn(move || -> Result<u64, String> {
                let guard = Abort::new(abort);
                pin(cpu(n + k))?;
                let mut next = vec![0u64; n];
                let mut got = 0u64;
                loop {
                    match q.pop() {
                        Some(v) => {
                            let (id, sq) = ((v >> 48) as usize, v & ((1 << 48) - 1));
                            if id >= n || sq < next[id] {
                                return Err("ArrayQueue: a producer's messages out of order".into());
                            }
                            next[id] = sq + 1;
                            got += 1;
                            if got % 256 == 0 {
                                count.0.store(got, Ordering::Relaxed);
                            }
                        }
                        // Acquire: pairs with each producer's Release increment, so its
                        // pushes are visible once it counts as finished.
                        None if finished.load(Ordering::Acquire) == n && q.is_empty() => {
                            count.0.store(got, Ordering::Relaxed);
                            guard.disarm();
                            return Ok(got);
                        }
                        // Relaxed: a stop request.
                        None if abort.load(Ordering::Relaxed) => {
                            return Err("an ArrayQueue peer thread stopped".into());
                        }
                        None => {}
                    }
                }
            }));
        }
        let mut producers = Vec::new();
        for k in 0..n {
            let (q, finished, abort) = (&q, &finished, &abort);
            producers.push(s.spawn(move || -> Result<u64, String> {
                let guard = Abort::new(abort);
                pin(cpu(k))?;
                let t0 = Instant::now();
                let mut sq = 0u64;
                while t0.elapsed() < total {
                    for _ in 0..256 {
                        let mut v = (k as u64) << 48 | sq;
                        while let Err(back) = q.push(v) {
                            v = back;
                            // Relaxed: a stop request.
                            if abort.load(Ordering::Relaxed) {
                                return Err("an ArrayQueue peer thread stopped".into());
                            }
                        }
                        sq += 1;
                    }
                }
                // Release: pairs with the consumers' Acquire load of `finished`.
                finished.fetch_add(1, Ordering::Release);
                guard.disarm();
                Ok(sq)
            }));
        }
        std::thread::sleep(warmup);
        let (at0, t0) = (sum(&popped), Instant::now());
        let mut pushed = 0;
        for p in producers {
            pushed += p.join().map_err(|_| "an ArrayQueue producer panicked")??;
        }
        let mut got = 0;
        for c in consumers {
            got += c.join().map_err(|_| "an ArrayQueue consumer panicked")??;
        }
        let secs = t0.elapsed().as_secs_f64();
        if got != pushed {
            return Err(format!("ArrayQueue: {pushed} pushed but {got} popped"));
        }
        Ok(Figures {
            msgs_per_sec: (got - at0) as f64 / secs,
            count: got - at0,
        })
    })
}

/// rtrb as a byte ring between two threads, the plainest way to move `len`-byte messages
/// across cores: a 1 MiB `RingBuffer<u8>` (the `log-4KiB` row's capacity); the producer
/// takes `write_chunk_uninit(len)` (retried while full), copies the message in from a 1 MiB
/// source and commits; the consumer takes `read_chunk(len)` (retried while empty), copies it
/// out and commits. Each message carries its number in its first 8 bytes, checked.
pub fn rtrb_bytes(
    cpus: [Option<usize>; 2],
    warmup: Duration,
    duration: Duration,
    len: usize,
) -> Result<Figures, String> {
    const RING: usize = 1 << 20;
    if !(8..=RING / 2).contains(&len) {
        return Err(format!("rtrb byte ring: a message of {len} bytes"));
    }
    let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(RING);
    let src: Vec<u8> = (0..RING + len).map(|k| k as u8).collect();
    let done = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| -> Result<Instant, String> {
            let guard = Abort::new(&abort);
            pin(cpus[1])?;
            let mut out = vec![0u8; len];
            let mut got = 0u64;
            loop {
                match rx.read_chunk(len) {
                    Ok(chunk) => {
                        let (a, b) = chunk.as_slices();
                        out[..a.len()].copy_from_slice(a);
                        out[a.len()..].copy_from_slice(b);
                        chunk.commit_all();
                        let seq = u64::from_le_bytes(out[..8].try_into().unwrap_or_default());
                        if seq != got {
                            return Err(format!("rtrb byte ring: message {got} came as {seq}"));
                        }
                        got += 1;
                    }
                    // Acquire: pairs with the Release store of `done` below, so `sent`
                    // is final once `done` reads true.
                    Err(_)
                        if done.load(Ordering::Acquire) && got == sent.load(Ordering::Relaxed) =>
                    {
                        guard.disarm();
                        return Ok(Instant::now());
                    }
                    // Relaxed: a stop request.
                    Err(_) if abort.load(Ordering::Relaxed) => {
                        return Err("the rtrb byte-ring producer stopped".into());
                    }
                    Err(_) => {}
                }
            }
        });
        let producer = s.spawn(|| -> Result<(u64, Instant), String> {
            let guard = Abort::new(&abort);
            pin(cpus[0])?;
            let mut i = 0u64;
            let mut run = |d: Duration, i: &mut u64| -> Result<(), String> {
                let t0 = Instant::now();
                while t0.elapsed() < d {
                    for _ in 0..64 {
                        let at = (*i as usize * len) % RING;
                        let mut chunk = loop {
                            match tx.write_chunk_uninit(len) {
                                Ok(c) => break c,
                                // Relaxed: a stop request.
                                Err(_) if abort.load(Ordering::Relaxed) => {
                                    return Err("the rtrb byte-ring consumer stopped".into());
                                }
                                Err(_) => {}
                            }
                        };
                        let (a, b) = chunk.as_mut_slices();
                        let n = a.len();
                        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; `a` and `b` are
                        // the chunk's slots (`n` and `len - n` long), `src[at..at + len]`
                        // is in bounds (`src` is `RING + len` long, `at < RING`), and the
                        // ring's memory is not `src`'s.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src[at..].as_ptr(),
                                a.as_mut_ptr().cast::<u8>(),
                                n,
                            );
                            std::ptr::copy_nonoverlapping(
                                src[at + n..].as_ptr(),
                                b.as_mut_ptr().cast::<u8>(),
                                len - n,
                            );
                        }
                        for (slot, byte) in a.iter_mut().chain(b.iter_mut()).zip(i.to_le_bytes()) {
                            slot.write(byte);
                        }
                        // SAFETY: the copies above wrote every one of the chunk's `len`
                        // slots (`a` and `b` together are exactly `len` long).
                        unsafe { chunk.commit_all() };
                        *i += 1;
                    }
                }
                Ok(())
            };
            run(warmup, &mut i)?;
            let (before, t0) = (i, Instant::now());
            run(duration, &mut i)?;
            sent.store(i, Ordering::Relaxed);
            // Release: pairs with the consumer's Acquire load of `done`.
            done.store(true, Ordering::Release);
            guard.disarm();
            Ok((i - before, t0))
        });
        let (count, t0) = producer
            .join()
            .map_err(|_| "the rtrb byte-ring producer panicked")??;
        let end = consumer
            .join()
            .map_err(|_| "the rtrb byte-ring consumer panicked")??;
        Ok(Figures {
            msgs_per_sec: count as f64 / (end - t0).as_secs_f64(),
            count,
        })
    })
}
