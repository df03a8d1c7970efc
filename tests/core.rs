//! The core under the conditions it exists to watch: gauges that stay exact while the bus drops
//! events, rooms that open without holding up other rooms while a worker hangs, and producers
//! replaced in order so that a client may reuse a MID.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    chromium_rtp_parameters, client_rtp_capabilities, metric_value, wait_until, Client,
    FrozenWorker, Server, DEADLINE,
};
use serde_json::{json, Value};

/// A `NOTIFY_SOCKET` that keeps every line the server sends.
struct Notifications {
    path: std::path::PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Notifications {
    fn bind(name: &str) -> Notifications {
        let path = std::env::temp_dir().join(format!("notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                sink.lock().unwrap().extend(text.lines().map(str::to_owned));
            }
        });
        Notifications { path, lines }
    }

    /// The last `STATUS=` line sent.
    fn status(&self) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("STATUS=").map(str::to_owned))
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The current-state gauges of one scrape; the per-worker ones summed over the two workers.
#[derive(Debug, Default, PartialEq)]
struct Gauges {
    rooms: f64,
    peers: f64,
    transports: [f64; 2],
    producers: [f64; 2],
    consumers: [f64; 2],
    worker_rooms: f64,
    worker_transports: f64,
}

impl Gauges {
    fn scrape(server: &Server) -> Gauges {
        let scrape = server.scrape();
        let value = |series: String| {
            metric_value(&scrape, &series).unwrap_or_else(|| panic!("{series} not in the scrape"))
        };
        let pair = |name: &str, label: &str, values: [&str; 2]| {
            values.map(|v| value(format!("mediasoup_server_{name}{{{label}=\"{v}\"}}")))
        };
        let per_worker = |name: &str| pair(&format!("worker_{name}"), "worker", ["0", "1"]);
        Gauges {
            rooms: value("mediasoup_server_rooms".into()),
            peers: value("mediasoup_server_peers".into()),
            transports: pair("transports", "direction", ["send", "recv"]),
            producers: pair("producers", "kind", ["audio", "video"]),
            consumers: pair("consumers", "kind", ["audio", "video"]),
            worker_rooms: per_worker("rooms").iter().sum(),
            worker_transports: per_worker("transports").iter().sum(),
        }
    }

    /// `rooms` rooms of `peers` peers each, every peer with both transports, a microphone and a
    /// webcam, and consuming every other peer of its room.
    fn expected(rooms: usize, peers: usize) -> Gauges {
        let all = (rooms * peers) as f64;
        let consumers = all * peers.saturating_sub(1) as f64;
        Gauges {
            rooms: rooms as f64,
            peers: all,
            transports: [all, all],
            producers: [all, all],
            consumers: [consumers, consumers],
            worker_rooms: rooms as f64,
            worker_transports: 2.0 * all,
        }
    }
}

const ROOMS: usize = 3;
const PEERS_PER_ROOM: usize = 3;

in_both_media_modes! {
    #[tokio::test]
    async fn gauges_are_exact_and_counters_complete_while_the_bus_drops(media) {
        let notify = Notifications::bind(&format!("exact-{media:?}"));
        let notify_socket = notify.path.to_string_lossy().into_owned();
        let server = Server::start_in(media, &[
            ("MEDIASOUP_TEST_SINK_QUEUE", "8"),
            ("MEDIASOUP_NUM_WORKERS", "2"),
            ("MEDIASOUP_STATS_INTERVAL_SECS", "1"),
            ("NOTIFY_SOCKET", &notify_socket),
        ]);

        let mut rooms = Vec::new();
        for room in 0..ROOMS {
            let mut peers = Vec::new();
            for peer in 0..PEERS_PER_ROOM {
                let mut client = Client::connect(
                    &server.url(&format!("/exact-{room}")),
                    &format!("user-{room}-{peer}-padding"),
                )
                .await;
                let joined = client.join().await;
                let mut producers = Vec::new();
                for (kind, tag) in [("audio", "mic"), ("video", "webcam")] {
                    producers.push(client.produce(&joined.send, kind, tag).await);
                }
                peers.push((client, producers));
            }
            // Everyone consumes everyone else's producers.
            for consumer in 0..PEERS_PER_ROOM {
                for producer in 0..PEERS_PER_ROOM {
                    if consumer == producer {
                        continue;
                    }
                    for id in peers[producer].1.clone() {
                        peers[consumer]
                            .0
                            .ok(
                                "consume",
                                json!({"producerId": id, "rtpCapabilities": client_rtp_capabilities()}),
                            )
                            .await;
                    }
                }
            }
            rooms.push(peers);
        }

        // Every object the server answered for is counted by then: no waiting for a queue.
        let full = Gauges::expected(ROOMS, PEERS_PER_ROOM);
        assert_eq!(Gauges::scrape(&server), full);

        // Stats rounds of 45 objects, emitted in one burst each, overflow the 8-slot queues.
        wait_until("the log sink to drop events", DEADLINE, || {
            metric_value(
                &server.scrape(),
                "mediasoup_server_bus_events_dropped_total{sink=\"log\"}",
            )
            .is_some_and(|dropped| dropped > 0.0)
        });
        assert_eq!(Gauges::scrape(&server), full);
        // The counters lost nothing either: every request is there.
        let requests = |kind: &str| {
            format!("mediasoup_server_signaling_requests_total{{type=\"{kind}\",outcome=\"ok\"}}")
        };
        let peers = ROOMS * PEERS_PER_ROOM;
        server.wait_metric(&requests("createWebRtcTransport"), (2 * peers) as f64);
        server.wait_metric(&requests("produce"), (2 * peers) as f64);
        server.wait_metric(
            &requests("consume"),
            (2 * peers * (PEERS_PER_ROOM - 1)) as f64,
        );
        let status = format!("{ROOMS} rooms, {peers} peers, 2/2 workers alive");
        wait_until(&format!("STATUS={status}"), DEADLINE, || {
            notify.status().as_deref() == Some(status.as_str())
        });

        // One peer of each room leaves, then everyone.
        for peers in &mut rooms {
            let (client, _) = peers.pop().expect("a peer");
            client.close().await;
        }
        let fewer = Gauges::expected(ROOMS, PEERS_PER_ROOM - 1);
        wait_until(
            "the gauges to count the peers that stayed",
            DEADLINE,
            || Gauges::scrape(&server) == fewer,
        );
        for (client, _) in rooms.into_iter().flatten() {
            client.close().await;
        }
        wait_until("every gauge to return to 0", DEADLINE, || {
            Gauges::scrape(&server) == Gauges::default()
        });
        wait_until("STATUS= with 0 rooms and 0 peers", DEADLINE, || {
            notify.status().as_deref() == Some("0 rooms, 0 peers, 2/2 workers alive")
        });
        let dropped = server.metric("mediasoup_server_bus_events_dropped_total{sink=\"log\"}")
            + server.metric("mediasoup_server_bus_events_dropped_total{sink=\"systemd\"}");
        assert!(dropped > 0.0, "{dropped}");
    }
}

/// How many routers the server has asked its workers for (mediasoup logs each request at debug).
fn router_requests(server: &Server) -> usize {
    server
        .log()
        .iter()
        .filter(|line| line.contains("request() [method:WorkerCreateRouter"))
        .count()
}

in_both_media_modes! {
    #[tokio::test]
    async fn a_room_opening_on_a_hung_worker_holds_up_no_other_room(media) {
        let server = Server::start_in(media, &[
            ("MEDIASOUP_NUM_WORKERS", "2"),
            ("RUST_LOG", "info,mediasoup::worker::channel=debug"),
        ]);
        let (_a, mut c1, _c2) = common::rooms_on_two_workers(&server).await;
        assert_eq!(router_requests(&server), 2, "{:?}", server.log());

        let frozen = FrozenWorker::freeze(server.pid(), 0);
        let mut opening = Client::connect(&server.url("/new"), "eeeeeeeeeeeeeeee").await;
        wait_until("the new room's router request", DEADLINE, || {
            router_requests(&server) == 3
        });
        // A second joiner of the room being opened waits for that room.
        let mut waiting = Client::connect(&server.url("/new"), "ffffffffffffffff").await;

        // Meanwhile a join to a room on the other worker goes through at once.
        let started = Instant::now();
        let mut c3 = Client::connect(&server.url("/c"), "gggggggggggggggg").await;
        c3.ok("getRouterRtpCapabilities", json!({})).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "joining an open room took {took:?} while another room was being opened"
        );
        c1.ok("createWebRtcTransport", common::producing()).await;

        // The room on the hung worker is refused at its deadline...
        let (code, reason) = opening.closed().await;
        assert_eq!(code, 1011, "{reason}");
        assert_eq!(
            reason,
            "worker 0 did not create the room's router within 10s: try again later"
        );
        // ...and the joiner that waited for it opens it again, on the worker that answers.
        waiting
            .ok("createWebRtcTransport", common::producing())
            .await;
        server.wait_metric("mediasoup_server_worker_rooms{worker=\"1\"}", 2.0);
        frozen.thaw();
    }
}

/// A produce request with fixed parameters: the same MID and SSRCs every time, as a client that
/// re-creates a track on the same transceiver sends.
fn same_track(transport: &str, kind: &str, tag: &str, user: &str) -> Value {
    let mut rtp_parameters = chromium_rtp_parameters(kind);
    let (mid, ssrc) = if kind == "audio" {
        ("0", 11_111_111)
    } else {
        ("1", 22_222_222)
    };
    rtp_parameters["mid"] = json!(mid);
    for (n, encoding) in rtp_parameters["encodings"]
        .as_array_mut()
        .expect("encodings")
        .iter_mut()
        .enumerate()
    {
        let n = n as u64 * 4;
        encoding["ssrc"] = json!(ssrc + n);
        if encoding.get("rtx").is_some() {
            encoding["rtx"]["ssrc"] = json!(ssrc + n + 1);
        }
    }
    json!({
        "transportId": transport,
        "kind": kind,
        "rtpParameters": rtp_parameters,
        "appData": {"mediaTag": tag, "userId": user},
    })
}

#[tokio::test]
async fn a_replaced_producer_frees_its_mid_and_ssrcs_every_time() {
    const ROUNDS: usize = 40;
    let server = Server::start(&[]);
    let mut producer = Client::connect(&server.url("/replace"), "aaaaaaaaaaaaaaaa").await;
    let mut watcher = Client::connect(&server.url("/replace"), "bbbbbbbbbbbbbbbb").await;
    watcher.join().await;
    let joined = producer.join().await;
    let user = producer.user_id.clone();

    let mut previous: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut ids = Vec::new();
        for (kind, tag) in [("audio", "mic"), ("video", "webcam")] {
            let answer = producer
                .request("produce", same_track(&joined.send, kind, tag, &user))
                .await;
            let id = answer["data"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("round {round}: {kind} not produced: {answer}"))
                .to_owned();
            ids.push(id);
        }
        // The watcher hears of each replacement: the old producer closed, the new one added.
        for old in &previous {
            let closed = watcher.notification_of("producerClosed").await;
            assert_eq!(closed["producerId"], json!(old), "round {round}");
        }
        previous = ids;
    }
    server.wait_metric("mediasoup_server_producers{kind=\"audio\"}", 1.0);
    server.wait_metric("mediasoup_server_producers{kind=\"video\"}", 1.0);
}
