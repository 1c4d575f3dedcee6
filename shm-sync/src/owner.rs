//! Who holds a lock: the calling thread's kernel thread id and start time, and whether a
//! recorded holder still runs.
//!
//! Thread ids are reused quickly, so a holder is identified by tid + thread start time
//! (`/proc/<tid>/stat`, field 22). A tid that names no task is certainly dead; a tid that
//! names a task with another start time belongs to a newer thread, so the holder is dead.

#[cfg(not(shm_loom))]
use std::cell::Cell;

/// Largest thread id the kernel hands out (`PID_MAX_LIMIT` = 2^22) fits in these bits.
pub(crate) const TID_MASK: u32 = 0x3fff_ffff;

/// The calling thread's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Me {
    pub tid: u32,
    /// Thread start time; 0 if `/proc` could not tell.
    pub start: u64,
}

impl Me {
    /// `tid << 32 | low 32 bits of the start time`, as lock words and records name their
    /// holder: the low bits as [`shm_core::ProcessId::start_low32`] gives them (never 0 for
    /// a known start time, so a recorded 0 always means "unknown").
    pub fn word(&self) -> u64 {
        let low = shm_core::ProcessId {
            pid: self.tid,
            start_time: self.start,
        }
        .start_low32();
        (u64::from(self.tid) << 32) | u64::from(low)
    }
}

#[cfg(not(shm_loom))]
thread_local! {
    /// This thread's identity; tid 0 until first computed.
    static CACHE: Cell<Me> = const { Cell::new(Me { tid: 0, start: 0 }) };
    /// This process's identity word (`pid << 32 | start low 32`), as this thread cached it;
    /// 0 until first computed.
    static PROCESS_WORD: Cell<u64> = const { Cell::new(0) };
    /// Whether this process registered for heavy barriers (`barrier::register`), as this
    /// thread cached it: 0 unknown, 1 yes, 2 no.
    static BARRIER: Cell<u8> = const { Cell::new(0) };
}

/// [`crate::barrier::register`], cached per thread (a fork clears it: registration belongs
/// to the address space, and the child must register anew).
#[cfg(not(shm_loom))]
#[inline]
pub(crate) fn barrier_registered() -> bool {
    match BARRIER.with(Cell::get) {
        1 => true,
        2 => false,
        _ => barrier_registered_slow(),
    }
}

#[cfg(not(shm_loom))]
#[cold]
fn barrier_registered_slow() -> bool {
    // Registers the fork handler, as `me` does.
    let _ = me();
    let ok = crate::barrier::register();
    BARRIER.with(|c| c.set(if ok { 1 } else { 2 }));
    ok
}

/// This process's identity word, `pid << 32 | low 32 bits of its start time` (0 in the
/// low half if `/proc` could not tell): one thread-local load after the first call in a
/// thread, and a fork clears it (the child is another process).
#[cfg(not(shm_loom))]
#[inline]
pub(crate) fn process_word() -> u64 {
    let w = PROCESS_WORD.with(Cell::get);
    if w != 0 {
        return w;
    }
    process_word_slow()
}

#[cfg(not(shm_loom))]
#[cold]
fn process_word_slow() -> u64 {
    // Registers the fork handler, as `me` does.
    let _ = me();
    let p = shm_core::ProcessId::current();
    let w = (u64::from(p.pid) << 32) | u64::from(p.start_low32());
    PROCESS_WORD.with(|c| c.set(w));
    w
}

/// Runs in the child of a `fork`, on the one thread the child has (the forking thread's
/// copy): its cached identity is the parent thread's, so clear it.
#[cfg(not(shm_loom))]
extern "C" fn after_fork_in_child() {
    let _ = CACHE.try_with(|c| c.set(Me { tid: 0, start: 0 }));
    let _ = PROCESS_WORD.try_with(|c| c.set(0));
    let _ = BARRIER.try_with(|c| c.set(0));
}

/// The calling thread. Cached per thread (one `/proc` read per thread, ever); a fork
/// clears the cache, since the child's thread has a new tid.
#[cfg(not(shm_loom))]
#[inline]
pub(crate) fn me() -> Me {
    let me = CACHE.with(Cell::get);
    if me.tid != 0 {
        return me;
    }
    me_slow()
}

#[cfg(not(shm_loom))]
#[cold]
fn me_slow() -> Me {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| crate::sys::at_fork_child(after_fork_in_child));
    let tid = crate::sys::gettid();
    let start = match shm_core::ProcessId::lookup(tid) {
        shm_core::Lookup::Running(p) => p.start_time,
        _ => 0,
    };
    let me = Me { tid, start };
    CACHE.with(|c| c.set(me));
    me
}

/// How much of the holder's start time was recorded.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(shm_loom, allow(dead_code))]
pub(crate) enum Start {
    /// Its low 32 bits.
    Low32(u32),
    /// Not recorded (yet): only "no such task" proves death.
    Unknown,
}

/// Whether the thread `tid` that started at `start` is certainly gone. `false` when in
/// doubt: a lock is never taken from a holder that might be alive.
#[cfg(not(shm_loom))]
pub(crate) fn is_dead(tid: u32, start: Start) -> bool {
    // Miri's thread ids are its own, not the kernel's: `/proc` knows nothing true of them
    // (one may even name an unrelated task), so under Miri no holder is ever judged dead.
    if cfg!(miri) {
        return false;
    }
    match shm_core::ProcessId::lookup(tid) {
        shm_core::Lookup::Gone => true,
        shm_core::Lookup::Unknown => false,
        shm_core::Lookup::Running(p) => match start {
            // A recorded 0 means the holder could not read its own start time.
            Start::Low32(lo) => lo != 0 && p.start_low32() != lo,
            Start::Unknown => false,
        },
    }
}

// Under loom, threads are loom threads (all on one OS thread): each gets an identity from
// `primitive::world`, and a model "kills" one by calling `loom_die` (it then forgets its
// guards and returns). Whether a check sees the death yet is loom's choice.
#[cfg(shm_loom)]
mod model {
    use super::*;

    loom::thread_local! {
        static ID: u32 = crate::primitive::world::new_identity() as u32 & TID_MASK;
    }

    pub(crate) fn me() -> Me {
        Me {
            tid: ID.with(|id| *id),
            start: 1,
        }
    }

    pub(crate) fn is_dead(tid: u32, _start: Start) -> bool {
        tid == 0 || crate::primitive::world::is_dead(u64::from(tid))
    }

    /// Under loom nothing registers: `barrier::light` is a real fence.
    pub(crate) fn barrier_registered() -> bool {
        false
    }

    /// Under loom each thread stands for a process: its identity, in the high half.
    pub(crate) fn process_word() -> u64 {
        (u64::from(me().tid) << 32) | 1
    }

    /// Marks the calling loom thread dead: holders of its locks may now be recovered.
    pub fn loom_die() {
        crate::primitive::world::die(u64::from(me().tid));
    }
}

#[cfg(shm_loom)]
pub use model::loom_die;
#[cfg(shm_loom)]
pub(crate) use model::{barrier_registered, is_dead, me, process_word};
