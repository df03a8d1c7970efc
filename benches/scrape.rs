//! What a Prometheus scrape costs with 100 peers: 10 rooms of 10 peers, each producing audio and
//! video and consuming everyone else in its room (200 producers, 1800 consumers, 200 transports),
//! stats polled every second. Prints scrape latency, size and series count, and the server's
//! resident memory. Run: `cargo bench --bench scrape`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::json;

const ROOMS: usize = 10;
const PEERS_PER_ROOM: usize = 10;
const SCRAPES: usize = 200;

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

#[tokio::main]
async fn main() {
    let server = Server::start(&[
        ("MEDIASOUP_NUM_WORKERS", "2"),
        ("MEDIASOUP_STATS_INTERVAL_SECS", "1"),
        ("MEDIASOUP_RTC_MIN_PORT", "40000"),
        ("MEDIASOUP_RTC_MAX_PORT", "40999"),
    ]);
    let idle_rss = rss_kib(server.pid());

    let mut peers = Vec::new();
    for room in 0..ROOMS {
        let mut members: Vec<(Client, Vec<String>)> = Vec::new();
        for peer in 0..PEERS_PER_ROOM {
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
        peers.extend(members);
    }
    server.wait_metric("mediasoup_server_peers", (ROOMS * PEERS_PER_ROOM) as f64);
    server.wait_metric(
        "mediasoup_server_consumers{kind=\"video\"}",
        (ROOMS * PEERS_PER_ROOM * (PEERS_PER_ROOM - 1)) as f64,
    );
    // Let a few stats rounds run with everyone in, so histograms and counters carry data.
    let rounds = "mediasoup_server_stats_poll_duration_seconds_count";
    server.wait_metric_at_least(rounds, server.metric(rounds) + 3.0);

    let mut latencies = Vec::with_capacity(SCRAPES);
    let mut body = String::new();
    for _ in 0..SCRAPES {
        let started = Instant::now();
        body = server.scrape();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let loaded_rss = rss_kib(server.pid());

    let peer_count = ROOMS * PEERS_PER_ROOM;
    println!(
        "scrape with {peer_count} peers in {ROOMS} rooms ({} producers, {} consumers), {SCRAPES} scrapes over loopback:",
        2 * peer_count,
        2 * peer_count * (PEERS_PER_ROOM - 1)
    );
    println!(
        "  latency p50 {:?}  p95 {:?}  max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );
    println!("  body {} bytes, {series} series", body.len());
    println!("  server RSS idle {idle_rss} KiB, with {peer_count} peers {loaded_rss} KiB");
    println!(
        "  last stats round: {}",
        body.lines()
            .find(|l| l.starts_with("mediasoup_server_stats_poll_duration_seconds_sum"))
            .unwrap_or("?")
    );
    drop(peers);
}
