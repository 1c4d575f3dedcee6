//! Asymmetric barriers for the "set a flag, then check the other side's word" handshake
//! (Dekker's pattern) that parking needs, without a full fence on the fast path.
//!
//! A sleeper announces itself (`waiting = 1`), then re-checks the position it waits on; a
//! publisher stores its position, then checks `waiting` to decide whether to wake. Both
//! orders are store-then-load, so each side needs a StoreLoad barrier, or a sleeper can
//! miss the publish while the publisher misses the flag. The publisher runs on the hot
//! path, the sleeper is about to make a syscall anyway: so the sleeper pays for both with
//! [`heavy`] (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes every running
//! thread of every registered process pass a full barrier) and the publisher's [`light`]
//! is only a compiler fence, provided its process [`register`]ed. If registration failed,
//! [`light`] is a real `SeqCst` fence. If the heavy barrier fails, [`heavy`] says so and the
//! sleeper must sleep in short slices (a wake may have been missed).
//!
//! Under `cfg(shm_loom)` both sides are plain `SeqCst` fences (loom cannot model membarrier).

use crate::primitive::{fence, Ordering};

/// Registers this process for other processes' heavy barriers (once per process). Returns
/// whether [`light`] may be a compiler fence.
#[cfg(not(shm_loom))]
pub fn register() -> bool {
    use std::sync::Mutex;
    static DONE: Mutex<Option<(u32, bool)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    match *done {
        // Registration belongs to the address space; a forked child registers again.
        Some((p, ok)) if p == pid => ok,
        _ => {
            let ok = crate::sys::membarrier_register().is_ok();
            *done = Some((pid, ok));
            ok
        }
    }
}

/// Under loom: never registered, so [`light`] is a real fence.
#[cfg(shm_loom)]
pub fn register() -> bool {
    false
}

/// The publisher's side: between its store and its load of the sleeper's flag.
#[inline]
pub fn light(registered: bool) {
    if registered && cfg!(not(shm_loom)) {
        // Compiler-only: the sleeper's membarrier in `heavy` stands in for our half of the
        // StoreLoad barrier.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        // SeqCst fence: pairs with the SeqCst fence in `heavy`.
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's side: between setting its flag and re-checking the publisher's word.
/// Returns `false` if the membarrier failed (then a registered publisher may not have
/// been ordered: sleep in short slices).
#[must_use]
pub fn heavy() -> bool {
    // SeqCst fence: pairs with the SeqCst fence in `light` (unregistered publishers); the
    // membarrier below covers registered ones.
    fence(Ordering::SeqCst);
    #[cfg(not(shm_loom))]
    return crate::sys::membarrier_global().is_ok();
    #[cfg(shm_loom)]
    return true;
}
