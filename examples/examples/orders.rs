//! Gateways send variable-length orders to a matcher, which answers each: three gateway
//! processes (this same executable, re-launched) and the matcher, over
//! `shm_ring::service` (a byte log of requests, a reply log per gateway).
//!
//! Each order is text of 20 to 300 bytes (`NEW <id> <side> <qty> @ <price> <note>`); the
//! matcher parses it, keeps a book of resting orders per side, and replies `FILLED`,
//! `RESTING` or `REJECTED`. Every gateway checks that each reply answers its own order.
//!
//! Run: `cargo run --release -p shmring-examples --example orders` (it starts the gateways
//! itself).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shm_ring::service::{Client, Server};

const GATEWAYS: u64 = 3;
const ORDERS: u64 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "gateway" {
        return gateway(&args[2]);
    }
    let name = format!("/shmring-orders-{}", std::process::id());
    let mut matcher = Server::create(&name)?;
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for _ in 0..GATEWAYS {
        kids.push(
            Command::new(&exe)
                .args(["gateway", &name])
                .stdin(Stdio::null())
                .spawn()?,
        );
    }
    // Resting orders: price -> quantity, per side.
    let (mut bids, mut asks) = (BTreeMap::<u64, u64>::new(), BTreeMap::<u64, u64>::new());
    let (mut filled, mut resting, mut rejected) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    for _ in 0..GATEWAYS * ORDERS {
        let req = matcher.recv_timeout(Duration::from_secs(30))?;
        let reply = match parse(req.bytes()) {
            Some((buy, qty, price)) => {
                // Cross against the best price of the other side, if it meets ours.
                let (book, other) = if buy {
                    (&mut bids, &mut asks)
                } else {
                    (&mut asks, &mut bids)
                };
                let best = if buy {
                    other.keys().next().copied().filter(|&p| p <= price)
                } else {
                    other.keys().next_back().copied().filter(|&p| p >= price)
                };
                match best {
                    Some(p) => {
                        let left = other.get_mut(&p).expect("a price in the book");
                        *left = left.saturating_sub(qty);
                        if *left == 0 {
                            other.remove(&p);
                        }
                        filled += 1;
                        format!("FILLED {qty} @ {p}")
                    }
                    None => {
                        *book.entry(price).or_insert(0) += qty;
                        resting += 1;
                        "RESTING".to_owned()
                    }
                }
            }
            None => {
                rejected += 1;
                "REJECTED".to_owned()
            }
        };
        req.reply(reply.as_bytes())?;
    }
    let secs = t.elapsed().as_secs_f64();
    for mut k in kids {
        assert!(k.wait()?.success(), "a gateway failed");
    }
    println!(
        "matched {} orders from {GATEWAYS} gateways in {secs:.2} s ({:.0} orders/s): \
         {filled} filled, {resting} resting, {rejected} rejected",
        GATEWAYS * ORDERS,
        (GATEWAYS * ORDERS) as f64 / secs
    );
    Ok(())
}

/// `NEW <id> <BUY|SELL> <qty> @ <price> <note...>` -> (buy, qty, price).
fn parse(order: &[u8]) -> Option<(bool, u64, u64)> {
    let text = std::str::from_utf8(order).ok()?;
    let mut f = text.split_whitespace();
    if f.next()? != "NEW" {
        return None;
    }
    let _id = f.next()?;
    let buy = match f.next()? {
        "BUY" => true,
        "SELL" => false,
        _ => return None,
    };
    let qty = f.next()?.parse().ok()?;
    if f.next()? != "@" {
        return None;
    }
    Some((buy, qty, f.next()?.parse().ok()?))
}

fn gateway(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::connect(name)?;
    let me = client.endpoint() as u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ me;
    for n in 0..ORDERS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let note = "x".repeat((x % 240) as usize);
        let side = if x & 1 == 0 { "BUY" } else { "SELL" };
        let order = if n % 1000 == 999 {
            format!("GARBAGE {me}/{n}") // the matcher rejects these
        } else {
            format!(
                "NEW {me}/{n} {side} {} @ {} {note}",
                1 + x % 100,
                990 + (x >> 8) % 20
            )
        };
        let reply = client.call(order.as_bytes(), Duration::from_secs(30))?;
        let text = std::str::from_utf8(&reply)?;
        let expect_reject = n % 1000 == 999;
        assert_eq!(text == "REJECTED", expect_reject, "order {n}: {text}");
    }
    Ok(())
}
