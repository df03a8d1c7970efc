//! A normal join while the server holds thousands of idle WebSockets and slowloris clients
//! (request heads sent a byte a second, reconnecting whenever cut off). Prints join latency
//! without and with the load, what the server refused, and how many of a burst of handshakes
//! started at once waited for a SYN retransmission (a full accept queue). Run: `cargo bench --bench flood`.
//!
//! `cargo test` runs it small (a few hundred connections) as a check that joins are still
//! answered and that the slowloris connections are cut off by the handshake timeout.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{raise_fd_limit, wait_until, Client, Server, DEADLINE};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Size {
    idle: usize,
    slowloris: usize,
    joins: usize,
    burst: usize,
}

const BENCH: Size = Size {
    idle: 3000,
    slowloris: 1000,
    joins: 50,
    burst: 600,
};
const TEST: Size = Size {
    idle: 200,
    slowloris: 50,
    joins: 5,
    burst: 50,
};

/// Time for one module-style join: connect, capabilities, both transports.
async fn join_once(server: &Server, n: usize) -> Duration {
    let started = Instant::now();
    let mut client = Client::connect(&server.url("/flood-probe"), &format!("probe-{n}")).await;
    client.join().await;
    let took = started.elapsed();
    client.close().await;
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn joins(server: &Server, count: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        took.push(join_once(server, n).await);
    }
    took.sort();
    took
}

/// One slowloris client: a request head one byte a second, again whenever it is cut off.
async fn slowloris(addr: SocketAddr, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if stream
            .write_all(b"GET /t HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stream.write_all(b"X").await.is_err() {
                break;
            }
        }
    }
}

/// A SYN retransmission waits 1 s: a connect that took this long waited in a full accept queue.
const SYN_RETRY: Duration = Duration::from_millis(900);

/// `count` module-style joins started at once in 20 rooms (tables reconnecting after a blip);
/// returns how many TCP connects waited for a SYN retransmission, and the slowest join.
async fn burst(server: &Server, count: usize) -> (usize, Duration) {
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let addr = server.addr;
            let url = server.url(&format!("/flood-burst-{}", n % 20));
            tokio::spawn(async move {
                let started = Instant::now();
                let stream = TcpStream::connect(addr)
                    .await
                    .unwrap_or_else(|e| panic!("burst connection {n}: {e}"));
                let connected = started.elapsed();
                let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
                let (ws, _) = tokio_tungstenite::client_async(&url, stream)
                    .await
                    .unwrap_or_else(|e| panic!("burst handshake {n}: {e}"));
                let mut client = Client::from_ws(ws, &format!("burst-{n}"));
                client.join().await;
                (connected, started.elapsed(), client)
            })
        })
        .collect();
    let mut connects = Vec::with_capacity(count);
    let mut slowest = Duration::ZERO;
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        let (connected, joined, client) = task.await.expect("burst task");
        connects.push(connected);
        slowest = slowest.max(joined);
        clients.push(client);
    }
    for client in clients {
        client.close().await;
    }
    (
        connects.iter().filter(|t| **t >= SYN_RETRY).count(),
        slowest,
    )
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let size = if bench { BENCH } else { TEST };
    raise_fd_limit();
    // FLOOD_LISTEN_BACKLOG compares accept queues (the default is the server's own, 1024).
    let backlog = std::env::var("FLOOD_LISTEN_BACKLOG")
        .ok()
        .filter(|b| !b.is_empty());
    let mut env = vec![
        ("MEDIASOUP_MAX_CONNECTIONS", "100000"),
        ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "100000"),
        ("MEDIASOUP_HANDSHAKE_TIMEOUT_SECS", "3"),
        ("MEDIASOUP_RTC_MIN_PORT", "40000"),
        ("MEDIASOUP_RTC_MAX_PORT", "44999"),
    ];
    if let Some(backlog) = &backlog {
        env.push(("MEDIASOUP_LISTEN_BACKLOG", backlog));
        println!("flood: MEDIASOUP_LISTEN_BACKLOG={backlog}");
    }
    let server = Server::start(&env);
    let quiet = joins(&server, size.joins).await;
    let (retried, slowest) = burst(&server, size.burst).await;

    // Idle WebSockets, each read by a task of its own so that it answers pings.
    let mut idle = Vec::with_capacity(size.idle);
    for n in 0..size.idle {
        let url = server.url(&format!("/flood-idle-{}", n % 100));
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("idle connection {n}: {e}"));
        idle.push(tokio::spawn(async move {
            let mut ws = ws;
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    wait_until("every idle peer counted", DEADLINE, || {
        server.metric("mediasoup_server_peers") >= size.idle as f64
    });
    let rss_idle = server.metric("process_resident_memory_bytes");
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..size.slowloris)
        .map(|_| tokio::spawn(slowloris(server.addr, stop.clone())))
        .collect();
    // Let the slowloris connections pile up past one handshake timeout.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loaded = joins(&server, size.joins).await;
    stop.store(true, Ordering::Relaxed);
    let timeouts = server.metric("mediasoup_server_refusals_total{reason=\"handshake_timeout\"}");
    assert!(
        timeouts >= size.slowloris as f64,
        "{timeouts} slowloris connections cut off, expected at least {}",
        size.slowloris
    );
    // Every idle peer is still there (the probes leave on their own time).
    server.wait_metric("mediasoup_server_peers", size.idle as f64);
    for task in attackers.into_iter().chain(idle) {
        task.abort();
    }
    println!(
        "flood: {} idle WebSockets + {} slowloris clients ({} cut off by the 3 s handshake timeout), {} joins each",
        size.idle, size.slowloris, timeouts, size.joins
    );
    for (what, took) in [("quiet", &quiet), ("under load", &loaded)] {
        println!(
            "  join {what:>10}: p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms",
            percentile(took, 0.5).as_secs_f64() * 1000.0,
            percentile(took, 0.99).as_secs_f64() * 1000.0,
            took[took.len() - 1].as_secs_f64() * 1000.0
        );
    }
    println!(
        "  burst of {} joins at once: {retried} TCP connects waited >= {} ms (a SYN retransmission), slowest join {:.0} ms",
        size.burst,
        SYN_RETRY.as_millis(),
        slowest.as_secs_f64() * 1000.0
    );
    println!(
        "  server RSS with the idle peers: {:.1} MiB",
        rss_idle / 1024.0 / 1024.0
    );
    drop(server);
}
