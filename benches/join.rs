//! Join latency against a floor: the module's join (connect, router capabilities, two
//! transports) against the real server and against a trivial WebSocket server that answers the
//! same requests with the same replies (captured from the real server first), with the same
//! client in the same run. Alone (one join after another) and 200 at once in 20 rooms, the
//! bursts in rounds that alternate which of the two goes first (one burst's p99 is its
//! second-slowest join, so a single round says little). Also the server's own time per join
//! (its request histograms) and its CPU per join (/proc).
//! Run: `cargo bench --bench join`; `cargo test` runs it small as a check that it works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric_value, Client, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

struct Size {
    alone: usize,
    burst: usize,
    rounds: usize,
}

const BENCH: Size = Size {
    alone: 200,
    burst: 200,
    rounds: 5,
};
const TEST: Size = Size {
    alone: 5,
    burst: 10,
    rounds: 1,
};

const REQUESTS: [&str; 2] = ["getRouterRtpCapabilities", "createWebRtcTransport"];

/// Answers every request with the reply the real server gave to a request of that type, under
/// the request's own requestId: the cost of a WebSocket round trip with the same bytes.
async fn floor_server(replies: Arc<HashMap<String, Value>>) -> SocketAddr {
    // The server's own accept queue (1024), so that bursts measure the same thing.
    let socket = TcpSocket::new_v4().expect("floor socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind the floor");
    let listener = socket.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("floor address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let replies = replies.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let Ok(request) = serde_json::from_str::<Value>(&text) else {
                        return;
                    };
                    let kind = request["type"].as_str().unwrap_or_default();
                    let Some(reply) = replies.get(kind) else {
                        return;
                    };
                    let mut reply = reply.clone();
                    reply["requestId"] = request["requestId"].clone();
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One reply of each request type a join makes, from the real server.
async fn capture_replies(server: &Server) -> HashMap<String, Value> {
    let mut client = Client::connect(&server.url("/join-capture"), "capture").await;
    let mut replies = HashMap::new();
    for kind in REQUESTS {
        let fields = if kind == "createWebRtcTransport" {
            serde_json::json!({"forceTcp": false, "producing": true, "consuming": false})
        } else {
            serde_json::json!({})
        };
        replies.insert(kind.to_owned(), client.request(kind, fields).await);
    }
    client.close().await;
    replies
}

async fn join(url: String, user: String) -> Duration {
    let started = Instant::now();
    let mut client = Client::connect(&url, &user).await;
    client.join().await;
    let took = started.elapsed();
    client.close().await;
    took
}

/// `count` joins one after another, sorted.
async fn alone(url: impl Fn(usize) -> String, count: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(count);
    for n in 0..count {
        took.push(join(url(n), format!("alone-{n}")).await);
    }
    took.sort();
    took
}

/// `count` joins started at once, sorted.
async fn burst(url: impl Fn(usize) -> String, count: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..count)
        .map(|n| tokio::spawn(join(url(n), format!("burst-{n}"))))
        .collect();
    let mut took = Vec::with_capacity(count);
    for task in tasks {
        took.push(task.await.expect("join task"));
    }
    took.sort();
    took
}

/// One line comparing the server's joins with the floor's.
fn compare(what: &str, server: &[Duration], floor: &[Duration]) -> String {
    format!(
        "{what:>9}: server p50 {:6.2} ms p99 {:7.2} ms | floor p50 {:6.2} ms p99 {:7.2} ms | p99 ratio {:.2}x",
        ms(server, 0.5),
        ms(server, 0.99),
        ms(floor, 0.5),
        ms(floor, 0.99),
        p99_ratio(server, floor)
    )
}

fn p99_ratio(server: &[Duration], floor: &[Duration]) -> f64 {
    ms(server, 0.99) / ms(floor, 0.99)
}

fn ms(took: &[Duration], p: f64) -> f64 {
    took[((took.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// The server's user + system CPU time, from /proc/<pid>/stat (clock ticks of 10 ms).
fn cpu_seconds(server: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).expect("stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Seconds the server spent answering join requests, from its request histograms.
fn request_seconds(server: &Server) -> f64 {
    let scrape = server.scrape();
    REQUESTS
        .iter()
        .map(|kind| {
            metric_value(
                &scrape,
                &format!(
                    "mediasoup_server_signaling_request_duration_seconds_sum{{type=\"{kind}\"}}"
                ),
            )
            .unwrap_or(0.0)
        })
        .sum()
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let size = if bench { BENCH } else { TEST };
    let server = Server::start(&[
        ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "100000"),
        ("MEDIASOUP_RTC_MIN_PORT", "45000"),
        ("MEDIASOUP_RTC_MAX_PORT", "46999"),
    ]);
    let floor = floor_server(Arc::new(capture_replies(&server).await)).await;
    // Each burst round has rooms of its own, so that none joins a room still closing.
    let server_url = |round: usize| {
        let server = &server;
        move |n: usize| server.url(&format!("/join-{round}-{}", n % 20))
    };
    let floor_url = |n: usize| format!("ws://{floor}/join-{}", n % 20);

    let (cpu, spent) = (cpu_seconds(&server), request_seconds(&server));
    let server_alone = alone(server_url(0), size.alone).await;
    let (cpu_alone, spent_alone) = (cpu_seconds(&server) - cpu, request_seconds(&server) - spent);
    let floor_alone = alone(floor_url, size.alone).await;

    println!(
        "join (connect, capabilities, two transports): {} alone, then {} at once in 20 rooms (rounds: {})",
        size.alone, size.burst, size.rounds
    );
    println!("  {}", compare("alone", &server_alone, &floor_alone));
    let mut ratios = Vec::with_capacity(size.rounds);
    let cpu = cpu_seconds(&server);
    for round in 1..=size.rounds {
        let (server_burst, floor_burst) = if round % 2 == 1 {
            let server_burst = burst(server_url(round), size.burst).await;
            (server_burst, burst(floor_url, size.burst).await)
        } else {
            let floor_burst = burst(floor_url, size.burst).await;
            (burst(server_url(round), size.burst).await, floor_burst)
        };
        println!(
            "  {}",
            compare(&format!("at once {round}"), &server_burst, &floor_burst)
        );
        ratios.push(p99_ratio(&server_burst, &floor_burst));
    }
    let cpu_burst = cpu_seconds(&server) - cpu;
    ratios.sort_by(f64::total_cmp);
    println!(
        "  at once: p99 ratio, median of {}: {:.2}x ({:.2}-{:.2}x)",
        size.rounds,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "  server's own time per join (request histograms): {:.3} ms; server CPU per join: {:.2} ms alone, {:.2} ms at once",
        spent_alone * 1000.0 / size.alone as f64,
        cpu_alone * 1000.0 / size.alone as f64,
        cpu_burst * 1000.0 / (size.rounds * size.burst) as f64
    );
    drop(server);
}
