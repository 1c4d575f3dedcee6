//! Helpers shared by shmring's criterion benches (in `benches/benches/`): unique segment
//! names and re-launching the bench binary as a peer process.

use std::process::{Child, Command, Stdio};

/// Env var that tells a re-launched bench binary to act as a peer process, and which role.
pub const CHILD_ROLE: &str = "SHMRING_BENCH_CHILD";
/// Env var carrying the segment name to a peer.
pub const CHILD_NAME: &str = "SHMRING_BENCH_NAME";
/// Env var carrying the bench process's allowed CPUs to a peer, which inherits only the
/// CPU its spawning thread was pinned to.
pub const CHILD_CPUS: &str = "SHMRING_BENCH_CPUS";

/// A segment name no other run uses.
pub fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("/shmring-bench-{tag}-{}-{nanos:x}", std::process::id())
}

/// If this process was launched as a peer, its role and segment name.
pub fn child_role() -> Option<(String, String)> {
    Some((
        std::env::var(CHILD_ROLE).ok()?,
        std::env::var(CHILD_NAME).ok()?,
    ))
}

/// Starts this same executable as a peer process with `role` on segment `name`.
///
/// # Panics
///
/// If the executable cannot be found or started (a bench cannot go on without its peer).
pub fn spawn_peer(role: &str, name: &str) -> PeerProcess {
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ROLE, role)
        .env(CHILD_NAME, name)
        .env(
            CHILD_CPUS,
            allowed_cpus()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn peer process");
    PeerProcess(child)
}

/// A peer process, killed and reaped on drop.
pub struct PeerProcess(pub Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPUs this process could run on when first asked (call it before pinning anything:
/// threads inherit their creator's pinning). A peer process gets its parent's list.
pub fn allowed_cpus() -> Vec<usize> {
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| {
        let inherited: Option<Vec<usize>> = std::env::var(CHILD_CPUS)
            .ok()
            .and_then(|v| v.split(',').map(|c| c.parse().ok()).collect());
        // Only CPUs a `cpu_set_t` can hold (`CPU_SET` indexes its bit array with them).
        match inherited {
            Some(cpus)
                if !cpus.is_empty() && cpus.iter().all(|&c| c < libc::CPU_SETSIZE as usize) =>
            {
                cpus
            }
            _ => read_affinity(),
        }
    })
    .clone()
}

fn read_affinity() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `CPU_ISSET` reads bit `c < max` of `set`.
    (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to the `k`-th allowed CPU (round robin), so that two-thread
/// benches compare peers on distinct cores; does nothing on a one-CPU machine.
pub fn pin_thread(k: usize) {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return;
    }
    let cpu = cpus[k % cpus.len()];
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the set's own range.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; 0 is this thread. A failure
    // only leaves the thread unpinned.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Unpins the calling thread (any allowed CPU).
pub fn unpin_thread() {
    let cpus = allowed_cpus();
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        // SAFETY: `c` came from the set's own range.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: as in `pin_thread`.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}
