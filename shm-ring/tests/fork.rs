//! Ring handles across `fork`: a child inherits copies of its parent's handles, which name
//! the parent's ends. Used or dropped in the child, they must not touch those ends (issue
//! 12, defect 10): every operation fails with `Forked` and dropping does nothing, so the
//! parent's ring goes on as if the child had never been.
#![cfg(not(shm_loom))] // real processes and segments: nothing here runs under loom

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use common::*;
use shm_ring::{
    broadcast, mpmc, spsc, ChunkError, EndStatus, PopError, PublishError, PushError, RecvError,
};

/// Forks; in the child runs `f` (which must not allocate, print or take locks: other
/// threads of the parent may have held them at the fork) and exits with its code at once,
/// running no destructor. Returns the child's exit code.
fn in_forked_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork has no preconditions; the child only runs `f` (async-signal-safe work on
    // memory it inherited: atomics and futex calls) and then `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child at once, without running atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-parameter.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// In a re-launched child test process: a ring of kind `$kind` with one item pushed; a forked
/// child takes the inherited handles, runs `$chunks` (extra checks, bits 2 and 8) and the
/// push and pop checks, and drops them; then the parent's handles still work, with the
/// ring exactly as it was. Expands to the body's `(ring, tx, rx)` for the caller's checks.
macro_rules! forked_child_leaves_the_ends_alone {
    ($kind:ident, $name:expr, $chunks:expr) => {{
        let ring = $kind::create::<u64>($name, 8).unwrap();
        let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.push(1).unwrap();
        // The child takes (and drops) its copies; the parent's stay where they are.
        let (mut tx, mut rx) = (Some(tx), Some(rx));
        let code = in_forked_child(|| {
            let (mut tx, mut rx) = (tx.take().unwrap(), rx.take().unwrap());
            let mut bad = $chunks(&mut tx, &mut rx);
            if !matches!(tx.try_push(2), Err(PushError::Forked(2))) {
                bad |= 1;
            }
            if rx.try_pop() != Err(PopError::Forked) || rx.pop() != Err(PopError::Forked) {
                bad |= 4;
            }
            drop(tx);
            drop(rx);
            bad
        });
        assert_eq!(
            code, 0,
            "a forked child's handles acted on the ring (bits {code:#b})"
        );
        let (mut tx, mut rx) = (tx.unwrap(), rx.unwrap());
        assert_eq!(ring.stats().pushes, 1);
        tx.push(3).unwrap();
        assert_eq!(rx.try_pop(), Ok(1));
        assert_eq!(rx.try_pop(), Ok(3));
        assert_eq!(rx.try_pop(), Err(PopError::Empty));
        (ring, tx, rx)
    }};
}

#[test]
fn spsc_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone() {
    let lines = run_child(child("child_fork_spsc", &unique_name("fork-spsc")));
    assert_eq!(lines, vec!["ok".to_owned()]);
}

#[test]
#[ignore = "child process of spsc_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone"]
fn child_fork_spsc() {
    let Some(name) = child_name() else { return };
    let _c = Cleanup(name.clone());
    let chunks = |tx: &mut spsc::Producer<u64>, rx: &mut spsc::Consumer<u64>| {
        let mut bad = 0;
        if !matches!(tx.write_chunk_uninit(1).err(), Some(ChunkError::Forked)) {
            bad |= 2;
        }
        if !matches!(rx.read_chunk(1).err(), Some(ChunkError::Forked)) {
            bad |= 8;
        }
        bad
    };
    let (ring, _tx, _rx) = forked_child_leaves_the_ends_alone!(spsc, &name, chunks);
    // The parent's ends are still attached by us.
    let me = std::process::id();
    let stats = ring.stats();
    let ours = EndStatus::Attached {
        pid: me,
        alive: true,
    };
    assert_eq!((stats.producer, stats.consumer), (ours, ours));
    println!("CHILD:ok");
}

#[test]
fn broadcast_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone() {
    let lines = run_child(child("child_fork_broadcast", &unique_name("fork-bcast")));
    assert_eq!(lines, vec!["ok".to_owned()]);
}

#[test]
#[ignore = "child process of broadcast_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone"]
fn child_fork_broadcast() {
    let Some(name) = child_name() else { return };
    let _c = Cleanup(name.clone());
    let ring = broadcast::create::<u64>(&name, 8).unwrap();
    let (tx, rx) = (ring.publisher().unwrap(), ring.subscribe().unwrap());
    let (mut tx, mut rx) = (Some(tx), Some(rx));
    tx.as_mut().unwrap().publish(1).unwrap();
    let code = in_forked_child(|| {
        let (mut tx, mut rx) = (tx.take().unwrap(), rx.take().unwrap());
        let mut bad = 0;
        if !matches!(tx.try_publish(2), Err(PublishError::Forked(2))) {
            bad |= 1;
        }
        if !matches!(tx.publish_slice(&[2, 3]), Err(PublishError::Forked(()))) {
            bad |= 2;
        }
        if rx.try_recv() != Err(RecvError::Forked) || rx.recv() != Err(RecvError::Forked) {
            bad |= 4;
        }
        if rx.recv_slice(&mut [0; 2]) != Err(RecvError::Forked) {
            bad |= 8;
        }
        drop(tx);
        drop(rx);
        bad
    });
    assert_eq!(code, 0, "the child's handles acted (bits: {code:#b})");
    // The parent's ends are as they were: still ours, the message still there.
    let (mut tx, mut rx) = (tx.unwrap(), rx.unwrap());
    let me = std::process::id();
    let stats = ring.stats();
    let ours = EndStatus::Attached {
        pid: me,
        alive: true,
    };
    assert_eq!(stats.publisher, ours);
    assert_eq!(stats.subscribers.len(), 1);
    assert_eq!(stats.published, 1);
    tx.publish(3).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(3));
    println!("CHILD:ok");
}

#[test]
fn mpmc_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone() {
    let lines = run_child(child("child_fork_mpmc", &unique_name("fork-mpmc")));
    assert_eq!(lines, vec!["ok".to_owned()]);
}

#[test]
#[ignore = "child process of mpmc_handles_used_or_dropped_in_a_forked_child_leave_the_parents_ends_alone"]
fn child_fork_mpmc() {
    let Some(name) = child_name() else { return };
    let _c = Cleanup(name.clone());
    let no_chunks = |_: &mut mpmc::Producer<u64>, _: &mut mpmc::Consumer<u64>| 0;
    let (ring, mut tx, rx) = forked_child_leaves_the_ends_alone!(mpmc, &name, no_chunks);
    let stats = ring.stats();
    assert_eq!((stats.producers, stats.consumers), (1, 1));
    // Dropping our consumer now, the last one, is a clean close for our producer.
    drop(rx);
    assert!(matches!(
        tx.try_push(4),
        Ok(()) | Err(PushError::Disconnected(4))
    ));
    println!("CHILD:ok");
}

#[test]
fn chunks_taken_before_a_fork_are_inert_in_the_child() {
    let lines = run_child(child("child_fork_chunks", &unique_name("fork-chunks")));
    assert_eq!(lines, vec!["ok".to_owned()]);
}

#[test]
#[ignore = "child process of chunks_taken_before_a_fork_are_inert_in_the_child"]
fn child_fork_chunks() {
    let Some(name) = child_name() else { return };
    // SPSC: the child writes and commits its copy of the parent's chunk; nothing of it may
    // reach the ring, and the parent's own commit is what the consumer gets.
    {
        let _c = Cleanup(name.clone());
        let ring = spsc::create::<u64>(&name, 8).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let mut chunk = Some(tx.write_chunk_uninit(2).unwrap());
        chunk.as_mut().unwrap().set(0, 10);
        let code = in_forked_child(|| {
            let mut c = chunk.take().unwrap();
            c.set(1, 99);
            c.copy_from(&[98]);
            let empty = {
                let (a, b) = c.as_mut_slices();
                a.is_empty() && b.is_empty()
            };
            c.commit_all();
            i32::from(!empty)
        });
        assert_eq!(code, 0, "the child was lent the parent's slots");
        assert_eq!(ring.stats().pushes, 0, "the child's commit published");
        let mut chunk = chunk.unwrap();
        chunk.set(1, 11);
        chunk.commit_all();
        // A read chunk's commit in the child frees nothing of the parent's.
        let mut read = Some(rx.read_chunk(1).unwrap());
        let code = in_forked_child(|| {
            read.take().unwrap().commit_all();
            0
        });
        assert_eq!(code, 0);
        assert_eq!(
            ring.stats().pops,
            0,
            "the child's read commit freed an item"
        );
        let read = read.unwrap();
        assert_eq!(read.get(0), 10);
        read.commit_all();
        assert_eq!(rx.try_pop(), Ok(11));
        assert_eq!(rx.try_pop(), Err(PopError::Empty));
    }
    // MPMC: the same, and the child's `commit` says it published nothing.
    {
        let name = format!("{name}-m");
        let _c = Cleanup(name.clone());
        let ring = mpmc::create::<u64>(&name, 8).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let mut chunk = Some(tx.write_chunk(2).unwrap());
        chunk.as_mut().unwrap().set(0, 10);
        let code = in_forked_child(|| {
            let mut c = chunk.take().unwrap();
            c.set(1, 99);
            c.copy_from(&[98]);
            c.commit_all() as i32
        });
        assert_eq!(code, 0, "the child's commit published {code} slots");
        let mut chunk = chunk.unwrap();
        chunk.set(1, 11);
        assert_eq!(chunk.commit_all(), 2);
        assert_eq!((rx.try_pop(), rx.try_pop()), (Ok(10), Ok(11)));
        assert_eq!(rx.try_pop(), Err(PopError::Empty));
    }
    println!("CHILD:ok");
}

#[test]
fn log_handles_claims_and_frames_in_a_forked_child_leave_the_parents_log_alone() {
    let lines = run_child(child("child_fork_log", &unique_name("fork-log")));
    assert_eq!(lines, vec!["ok".to_owned()]);
}

#[test]
#[ignore = "child process of log_handles_claims_and_frames_in_a_forked_child_leave_the_parents_log_alone"]
fn child_fork_log() {
    use shm_ring::log;
    use shm_ring::{PopError, SendError};
    let Some(name) = child_name() else { return };
    let _c = Cleanup(name.clone());
    let ring = log::Builder::new(&name)
        .capacity(1024)
        .max_len(100)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(b"one").unwrap();
    tx.try_send(b"two").unwrap();
    let before = ring.stats();
    // The parent holds a claim and a frame across the fork.
    let mut claim = Some(tx.try_claim(8).unwrap());
    let mut frame = Some(rx.try_recv().unwrap());
    let code = in_forked_child(|| {
        let mut bad = 0;
        let mut c = claim.take().unwrap();
        if !c.buf().is_empty() {
            bad |= 1;
        }
        if c.commit(3) != Err(SendError::Forked) {
            bad |= 2;
        }
        drop(frame.take()); // frees nothing of the parent's
        bad
    });
    assert_eq!(
        code, 0,
        "the child's claim or frame acted (bits: {code:#b})"
    );
    assert_eq!(
        ring.stats().consumed,
        before.consumed,
        "the child's copy of the frame marked it read"
    );
    assert_eq!(&frame.take().unwrap()[..], b"one");
    let mut c = claim.take().unwrap();
    c.buf()[..5].copy_from_slice(b"three");
    c.commit(5).unwrap();
    drop((claim, frame));
    let after = ring.stats();
    assert_eq!((after.head, after.aborted), (before.head, 0));
    let code = in_forked_child(|| {
        let mut bad = 0;
        if tx.try_send(b"x") != Err(SendError::Forked) {
            bad |= 1;
        }
        if rx.try_recv().map(|f| f.len()) != Err(PopError::Forked) {
            bad |= 2;
        }
        bad
    });
    assert_eq!(code, 0, "the child's handles acted (bits: {code:#b})");
    assert_eq!(&rx.try_recv().unwrap()[..], b"two");
    assert_eq!(&rx.try_recv().unwrap()[..], b"three");
    assert_eq!(rx.try_recv().unwrap_err(), PopError::Empty);
    println!("CHILD:ok");
}
