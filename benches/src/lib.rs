//! Helpers shared by shmring's criterion benches (in `benches/benches/`): unique segment
//! names and re-launching the bench binary as a peer process.

use std::process::{Child, Command, Stdio};

/// Env var that tells a re-launched bench binary to act as a peer process, and which role.
pub const CHILD_ROLE: &str = "SHMRING_BENCH_CHILD";
/// Env var carrying the segment name to a peer.
pub const CHILD_NAME: &str = "SHMRING_BENCH_NAME";

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
