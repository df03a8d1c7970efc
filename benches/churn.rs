//! Memory over join/leave cycles: rooms of 10 peers, each with two transports, one audio
//! producer and a consumer of every other peer's producer (the issue #12 shape). Prints the
//! server's RSS idle, with everyone in, and after everyone left, for each cycle, and the join
//! time, and what each stage of joining (connect, transports, producer, consumers) added per
//! peer. Run: `cargo bench --bench churn` (500 peers, 4 cycles).
//!
//! CHURN_PEERS and CHURN_CYCLES change the size; CHURN_SERVER_<NAME>=value sets <NAME> in the
//! server's environment (allocator experiments: CHURN_SERVER_LD_PRELOAD=...).
//!
//! Where the memory goes, by allocation site (jemalloc's heap profiler; `jeprof` is in Debian's
//! `libjemalloc-dev`):
//! ```text
//! CHURN_CYCLES=1 CHURN_SERVER_MALLOC_CONF=prof:true,lg_prof_sample:12,lg_prof_interval:25,prof_prefix:/tmp/churn \
//!   cargo bench --features heap-profile --bench churn
//! jeprof --text --cum --base=<first dump> target/release/mediasoup-server <largest dump>
//! ```
//! The server writes a profile every 32 MiB it allocates; the largest is the one with everyone
//! in. Profiles count allocated bytes, so they include zeroed pages that are never touched and
//! never resident (mediasoup's 64 KiB table of SCTP stream ids per transport).
//!
//! `cargo test` runs it small (20 peers, 2 cycles) as a check that every object is gone after
//! each cycle (the gauges back at 0).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{client_rtp_capabilities, raise_fd_limit, wait_until, Client, Server, DEADLINE};
use serde_json::json;

const ROOM_SIZE: usize = 10;

struct Size {
    peers: usize,
    cycles: usize,
}

const BENCH: Size = Size {
    peers: 500,
    cycles: 4,
};
const TEST: Size = Size {
    peers: 20,
    cycles: 2,
};

/// The server's resident set, from /proc (the worker threads are in the same process).
fn rss_mib(server: &Server) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read the server's /proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib / 1024.0
}

/// Waits until the RSS has not fallen for 2 s (freed memory handed back, if it ever is), at
/// most 20 s.
fn settled_rss(server: &Server) -> f64 {
    let until = Instant::now() + Duration::from_secs(20);
    let mut low = rss_mib(server);
    let mut low_since = Instant::now();
    while Instant::now() < until && low_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_mib(server);
        if now < low - 0.05 {
            low = now;
            low_since = Instant::now();
        }
    }
    rss_mib(server)
}

/// Server RSS added per peer by each stage of filling the rooms (KiB).
struct Stages {
    connect: f64,
    join: f64,
    produce: f64,
    consume: f64,
}

/// Every peer of every room connects, then every peer joins, produces audio, and consumes
/// the others, one stage after the other so that each stage's memory shows; returns the
/// clients, what each stage added and the time it all took.
async fn fill(server: &Server, peers: usize, cycle: usize) -> (Vec<Client>, Stages, Duration) {
    let started = Instant::now();
    let per_peer = |from: f64| (rss_mib(server) - from) * 1024.0 / peers as f64;
    let mut rss = rss_mib(server);
    let mut clients = Vec::with_capacity(peers);
    for n in 0..peers {
        let room = format!("/churn-{}", n / ROOM_SIZE);
        clients.push(Client::connect(&server.url(&room), &format!("user-{cycle}-{n}")).await);
    }
    let connect = per_peer(rss);
    rss = rss_mib(server);
    let mut joined = Vec::with_capacity(peers);
    for client in &mut clients {
        joined.push(client.join().await);
    }
    let join = per_peer(rss);
    rss = rss_mib(server);
    let mut producers = Vec::with_capacity(peers);
    for (client, joined) in clients.iter_mut().zip(&joined) {
        producers.push(client.produce(&joined.send, "audio", "mic").await);
    }
    let produce = per_peer(rss);
    rss = rss_mib(server);
    let caps = client_rtp_capabilities();
    for (n, client) in clients.iter_mut().enumerate() {
        let room = n / ROOM_SIZE;
        let others = (room * ROOM_SIZE..((room + 1) * ROOM_SIZE).min(peers)).filter(|&o| o != n);
        for other in others {
            client
                .ok(
                    "consume",
                    json!({"producerId": producers[other], "rtpCapabilities": caps}),
                )
                .await;
        }
    }
    let consume = per_peer(rss);
    let stages = Stages {
        connect,
        join,
        produce,
        consume,
    };
    (clients, stages, started.elapsed())
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let mut size = if bench { BENCH } else { TEST };
    let override_with = |name: &str, value: &mut usize| {
        if let Some(n) = std::env::var(name).ok().and_then(|v| v.parse().ok()) {
            *value = n;
        }
    };
    override_with("CHURN_PEERS", &mut size.peers);
    override_with("CHURN_CYCLES", &mut size.cycles);
    raise_fd_limit();
    // Allocator and profiler experiments reach the server (which starts with a clean
    // environment) as CHURN_SERVER_<NAME>=value, e.g. CHURN_SERVER_LD_PRELOAD=libjemalloc.so.2.
    let passed: Vec<(String, String)> = std::env::vars()
        .filter_map(|(name, value)| Some((name.strip_prefix("CHURN_SERVER_")?.to_owned(), value)))
        .collect();
    let mut env: Vec<(&str, &str)> = passed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "100000"),
        ("MEDIASOUP_MAX_ROOMS", "100000"),
        ("MEDIASOUP_REQUESTS_PER_SEC", "100000"),
        ("MEDIASOUP_REQUEST_BURST", "100000"),
        ("MEDIASOUP_RTC_MIN_PORT", "42000"),
        ("MEDIASOUP_RTC_MAX_PORT", "43999"),
        // The peers read nothing between stages, so they answer no ping; on a loaded machine
        // a stage can outlast the default 30 s, and the server would rightly drop them.
        ("MEDIASOUP_PEER_TIMEOUT_SECS", "3600"),
    ]);
    let server = Server::start(&env);
    let idle = settled_rss(&server);
    println!(
        "churn: {} peers in rooms of {ROOM_SIZE} (2 transports, 1 producer, {} consumers each), {} cycles",
        size.peers,
        ROOM_SIZE - 1,
        size.cycles
    );
    for (name, value) in &passed {
        println!("  server environment: {name}={value}");
    }
    println!("  idle: {idle:.1} MiB");
    for cycle in 1..=size.cycles {
        let (clients, stages, took) = fill(&server, size.peers, cycle).await;
        server.wait_metric("mediasoup_server_peers", size.peers as f64);
        let full = rss_mib(&server);
        for client in clients {
            client.close().await;
        }
        wait_until("every peer, transport and consumer gone", DEADLINE, || {
            let scrape = server.scrape();
            [
                "mediasoup_server_peers",
                "mediasoup_server_worker_transports{worker=\"0\"}",
            ]
            .iter()
            .all(|series| common::metric_value(&scrape, series) == Some(0.0))
        });
        let left = settled_rss(&server);
        println!(
            "  cycle {cycle}: full {full:.1} MiB ({:.0} KiB per peer), after all left {left:.1} MiB ({:.2}x idle); joins {:.0} ms ({:.2} ms per peer incl. produce + consumes)",
            (full - idle) * 1024.0 / size.peers as f64,
            left / idle,
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0 / size.peers as f64
        );
        println!(
            "    per peer: connect {:.0} KiB, join (2 transports) {:.0} KiB, produce {:.0} KiB, {} consumes {:.0} KiB",
            stages.connect,
            stages.join,
            stages.produce,
            ROOM_SIZE - 1,
            stages.consume
        );
    }
    drop(server);
}
