//! Request/reply across processes: many clients, one server; a client killed mid-request,
//! a client restarted at the same endpoint, the server killed while clients wait, replies
//! that come after their call gave up.
#![cfg(not(shm_loom))] // real processes and segments

#[path = "../../shm-core/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_ring::service::{reply_log_name, Client, Server, ServiceError};

const ROLE: &str = "SHMRING_ROLE";
const ARG: &str = "SHMRING_ARG";
const HANG: Duration = Duration::from_secs(30);

fn role(r: &str, name: &str, arg: u64) -> std::process::Command {
    let mut c = child("child_service", name);
    c.env(ROLE, r).env(ARG, arg.to_string());
    c
}

/// A request of client `who`, number `n`: 1 to 300 bytes that follow from both.
fn request(who: u64, n: u64) -> Vec<u8> {
    let len = 1 + ((who * 7919 + n * 104_729) % 300) as usize;
    (0..len)
        .map(|k| (who as usize * 13 + n as usize + k) as u8)
        .collect()
}

/// What the server answers: the request reversed.
fn answer(req: &[u8]) -> Vec<u8> {
    req.iter().rev().copied().collect()
}

#[test]
#[ignore = "child process of the tests in this file"]
fn child_service() {
    let Some(name) = child_name() else { return };
    let arg: u64 = std::env::var(ARG).unwrap().parse().unwrap();
    match std::env::var(ROLE).unwrap().as_str() {
        // `arg` calls, each reply checked.
        "client" => {
            let mut c = Client::connect(&name).unwrap();
            let who = c.endpoint() as u64;
            println!("CHILD:connected {who}");
            for n in 0..arg {
                let req = request(who, n);
                let reply = c.call(&req, HANG).unwrap();
                assert_eq!(&reply[..], &answer(&req)[..], "client {who} call {n}");
            }
            println!("CHILD:done");
        }
        // Sends one request and waits to be killed.
        "ask-and-hang" => {
            let mut c = Client::connect(&name).unwrap();
            c.send_request(b"from the predecessor").unwrap();
            println!("CHILD:asked {}", c.endpoint());
            std::thread::sleep(Duration::from_secs(60));
        }
        // Serves: takes one request and waits to be killed without answering.
        "serve-and-hang" => {
            let mut s = Server::create(&name).unwrap();
            println!("CHILD:serving");
            let req = s.recv_timeout(HANG).unwrap();
            println!("CHILD:got {}", req.id());
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn three_client_processes_each_get_the_answer_to_each_of_their_calls() {
    const CALLS: u64 = 300;
    let (name, _c) = scratch("svc-3c");
    let mut server = Server::create(&name).unwrap();
    let mut kids: Vec<_> = (0..3)
        .map(|_| Running::spawn(role("client", &name, CALLS)))
        .collect();
    let t = Instant::now();
    let mut served = 0;
    while served < 3 * CALLS {
        let req = server.recv_timeout(HANG).unwrap();
        let a = answer(req.bytes());
        req.reply(&a).unwrap();
        served += 1;
    }
    for k in &mut kids {
        k.expect_line("done", HANG);
        assert!(k.wait_success(HANG));
    }
    let s = server.stats();
    assert_eq!(
        (s.requests, s.replies, s.orphaned),
        (3 * CALLS, 3 * CALLS, 0)
    );
    println!(
        "service 3 clients: {served} calls in {:?} (debug build)",
        t.elapsed()
    );
    // Their reply logs went with them.
    for k in 0..3 {
        assert!(shm_ring::log::open(&reply_log_name(&name, k)).is_err());
    }
}

#[test]
fn a_killed_clients_reply_log_is_reclaimed_and_its_successor_never_gets_its_reply() {
    let (name, _c) = scratch("svc-kill");
    let mut server = Server::create(&name).unwrap();
    let mut a = Running::spawn(role("ask-and-hang", &name, 0));
    a.expect_line("asked 0", HANG);
    a.kill9();
    // A new client takes the dead one's endpoint and replaces its reply log.
    let mut b = Client::connect(&name).unwrap();
    assert_eq!(b.endpoint(), 0, "the dead client's endpoint is taken over");
    // The predecessor's request is still answered by the server, and its reply dropped:
    // the reply log at that endpoint is of another session now.
    let req = server.recv_timeout(HANG).unwrap();
    assert_eq!(req.bytes(), b"from the predecessor");
    assert!(matches!(req.reply(b"for A"), Err(ServiceError::ClientGone)));
    assert_eq!(server.stats().orphaned, 1);
    // The successor's own call gets its own reply, and only that.
    let id = b.send_request(b"from B").unwrap();
    let req = server.recv_timeout(HANG).unwrap();
    assert_eq!(req.bytes(), b"from B");
    req.reply(b"for B").unwrap();
    assert_eq!(&b.wait_reply(id, HANG).unwrap()[..], b"for B");
    assert_eq!(b.stats().stale, 0);
    drop(b);

    // A client killed with its reply log in the server's cache: the idle server removes it.
    let mut c = Running::spawn(role("ask-and-hang", &name, 0));
    c.expect_line("asked 0", HANG);
    let req = server.recv_timeout(HANG).unwrap();
    req.reply(b"for C").unwrap(); // buffered: the client is alive
    c.kill9();
    let t = Instant::now();
    while server.stats().reclaimed == 0 {
        assert!(
            t.elapsed() < HANG,
            "the dead client's reply log was never reclaimed"
        );
        let _ = server.try_recv().map(|r| r.id());
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "a killed client's reply log reclaimed {:?} after the kill",
        t.elapsed()
    );
    assert!(shm_ring::log::open(&reply_log_name(&name, 0)).is_err());
}

#[test]
fn a_killed_server_gives_waiting_clients_peer_died() {
    let (name, _c) = scratch("svc-sdeath");
    let mut s = Running::spawn(role("serve-and-hang", &name, 0));
    s.expect_line("serving", HANG);
    let mut c = Client::connect(&name).unwrap();
    let id = c.send_request(b"anyone?").unwrap();
    s.expect_line(&format!("got {id}"), HANG);
    s.kill9();
    let t = Instant::now();
    let r = c.wait_reply(id, HANG).map(|r| r.len());
    assert!(matches!(r, Err(ServiceError::PeerDied)), "{r:?}");
    println!(
        "a waiting client heard the server's death in {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_reply_after_its_call_gave_up_is_skipped_by_the_next_call() {
    let (name, _c) = scratch("svc-stale");
    let mut server = Server::create(&name).unwrap();
    let mut c = Client::connect(&name).unwrap();
    let first = c.send_request(b"slow").unwrap();
    assert!(matches!(
        c.wait_reply(first, Duration::from_millis(5)),
        Err(ServiceError::Timeout)
    ));
    let req = server.recv_timeout(HANG).unwrap();
    req.reply(b"late").unwrap();
    let second = c.send_request(b"fast").unwrap();
    let req = server.recv_timeout(HANG).unwrap();
    assert_eq!(req.id(), second);
    req.reply(b"on time").unwrap();
    assert_eq!(&c.wait_reply(second, HANG).unwrap()[..], b"on time");
    assert_eq!(c.stats().stale, 1);
    // Not too long: a request past the log's largest message is refused, not truncated.
    assert!(matches!(
        c.send_request(&vec![0; 2000]),
        Err(ServiceError::Send(shm_ring::SendError::TooLong { .. }))
    ));
}
