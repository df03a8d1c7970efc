//! What a Prometheus scrape costs with 100 peers: 10 rooms of 10 peers, each producing audio and
//! video and consuming everyone else in its room (200 producers, 1800 consumers, 200 transports),
//! stats polled every second. Prints scrape latency, size and series count, and the server's
//! resident memory. Run: `cargo bench --bench scrape`.
//!
//! It also checks what the README promises about the series: the same set of series idle, with
//! half of the peers and with all of them (labels are bounded, and every series exists from the
//! first scrape). `cargo test` runs it as a test with 4 rooms of 3 peers and a few scrapes, for
//! that check; `cargo bench` runs the full size and measures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::json;

/// Rooms, peers per room and scrapes: (benchmark, test).
struct Size {
    rooms: usize,
    peers_per_room: usize,
    scrapes: usize,
    stats_rounds: f64,
}

const BENCH: Size = Size {
    rooms: 10,
    peers_per_room: 10,
    scrapes: 200,
    stats_rounds: 3.0,
};
const TEST: Size = Size {
    rooms: 4,
    peers_per_room: 3,
    scrapes: 10,
    stats_rounds: 1.0,
};

/// The series of a scrape: each sample line's name and labels.
fn series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

/// Fails when `now` has other series than `idle`, naming them.
fn assert_same_series(idle: &BTreeSet<String>, now: &BTreeSet<String>, peers: usize) {
    let added: Vec<_> = now.difference(idle).collect();
    let gone: Vec<_> = idle.difference(now).collect();
    assert!(
        added.is_empty() && gone.is_empty(),
        "the series changed with {peers} peers (labels must be bounded and every series exist \
         from the first scrape): new {added:?}, gone {gone:?}"
    );
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Opens `rooms` rooms of `size.peers_per_room` peers, numbered from `first`: everyone produces
/// audio and video and consumes everyone else in the room.
async fn fill_rooms(server: &Server, size: &Size, first: usize, rooms: usize) -> Vec<Client> {
    let mut peers = Vec::new();
    for room in first..first + rooms {
        let mut members: Vec<(Client, Vec<String>)> = Vec::new();
        for peer in 0..size.peers_per_room {
            let user = format!("user{room:02}{peer:02}xxxxxxxx");
            let mut client = Client::connect(&server.url(&format!("/bench-{room}")), &user).await;
            let joined = client.join().await;
            let produced = vec![
                client.produce(&joined.send, "audio", "mic").await,
                client.produce(&joined.send, "video", "webcam").await,
            ];
            members.push((client, produced));
        }
        let all: Vec<String> = members.iter().flat_map(|(_, p)| p.clone()).collect();
        for (client, own) in &mut members {
            for producer in all.iter().filter(|p| !own.contains(p)) {
                client
                    .ok(
                        "consume",
                        json!({"producerId": producer, "rtpCapabilities": common::client_rtp_capabilities()}),
                    )
                    .await;
            }
        }
        peers.extend(members.into_iter().map(|(client, _)| client));
    }
    peers
}

/// Waits until `peers` peers consume everything and a few stats rounds ran with them, so that
/// histograms and counters carry data; returns the scrape.
fn settle(server: &Server, size: &Size, peers: usize) -> String {
    server.wait_metric("mediasoup_server_peers", peers as f64);
    server.wait_metric(
        "mediasoup_server_consumers{kind=\"video\"}",
        (peers * (size.peers_per_room - 1)) as f64,
    );
    let rounds = "mediasoup_server_stats_poll_duration_seconds_count";
    server.wait_metric_at_least(rounds, server.metric(rounds) + size.stats_rounds);
    server.scrape()
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let size = if bench { &BENCH } else { &TEST };
    let server = Server::start(&[
        // Every peer connects from 127.0.0.1: above the default cap of connections per address.
        ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "100000"),
        ("MEDIASOUP_NUM_WORKERS", "2"),
        ("MEDIASOUP_STATS_INTERVAL_SECS", "1"),
        ("MEDIASOUP_RTC_MIN_PORT", "40000"),
        ("MEDIASOUP_RTC_MAX_PORT", "40999"),
    ]);
    let idle_rss = rss_kib(server.pid());
    let idle = series(&server.scrape());

    let half = size.rooms / 2;
    let mut peers = fill_rooms(&server, size, 0, half).await;
    let with_half = series(&settle(&server, size, half * size.peers_per_room));
    assert_same_series(&idle, &with_half, half * size.peers_per_room);
    peers.extend(fill_rooms(&server, size, half, size.rooms - half).await);
    let peer_count = size.rooms * size.peers_per_room;
    let with_all = series(&settle(&server, size, peer_count));
    assert_same_series(&idle, &with_all, peer_count);

    let mut latencies = Vec::with_capacity(size.scrapes);
    let mut body = String::new();
    for _ in 0..size.scrapes {
        let started = Instant::now();
        body = server.scrape();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let loaded_rss = rss_kib(server.pid());

    println!(
        "scrape with {peer_count} peers in {} rooms ({} producers, {} consumers), {} scrapes over loopback:",
        size.rooms,
        2 * peer_count,
        2 * peer_count * (size.peers_per_room - 1),
        size.scrapes
    );
    println!(
        "  latency p50 {:?}  p95 {:?}  max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );
    println!(
        "  body {} bytes, {} series (the same idle, with {} and with {peer_count} peers)",
        body.len(),
        with_all.len(),
        half * size.peers_per_room
    );
    println!("  server RSS idle {idle_rss} KiB, with {peer_count} peers {loaded_rss} KiB");
    println!(
        "  last stats round: {}",
        body.lines()
            .find(|l| l.starts_with("mediasoup_server_stats_poll_duration_seconds_sum"))
            .unwrap_or("?")
    );
    drop(peers);
}
