//! The bus's sinks seen from outside: systemd notifications (through a NOTIFY_SOCKET harness),
//! a stalled sink, and OTLP trace export (into a small test collector).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, wait_until, Client, FrozenWorker, Server, DEADLINE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::json;

/// Datagrams received on a NOTIFY_SOCKET, with their arrival times.
struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind(name: &str, read: bool) -> (NotifySocket, UnixDatagram) {
        let path = std::env::temp_dir().join(format!("notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        let received = Arc::new(Mutex::new(Vec::new()));
        if read {
            let (reader, sink) = (socket.try_clone().unwrap(), received.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = reader.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    sink.lock().unwrap().push((Instant::now(), text));
                }
            });
        }
        (NotifySocket { path, received }, socket)
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(at, text)| {
                text.lines()
                    .map(|l| (*at, l.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn pings(&self) -> Vec<Instant> {
        self.lines()
            .into_iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(at, _)| at)
            .collect()
    }

    fn has(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|(_, l)| wanted(l))
    }
}

#[tokio::test]
async fn systemd_ready_status_watchdog_and_stopping() {
    let (notify, _socket) = NotifySocket::bind("watchdog", true);
    let notify_socket = notify.path.to_string_lossy().into_owned();
    let server = Server::spawn(&[
        ("NOTIFY_SOCKET", &notify_socket),
        ("WATCHDOG_USEC", "1000000"),
    ]);

    wait_until("READY=1", DEADLINE, || notify.has(|l| l == "READY=1"));
    // By the time READY=1 is sent, the listener takes connections and /readyz passes.
    assert!(TcpStream::connect(server.addr).is_ok());
    assert_eq!(http_get(server.addr, "/readyz").unwrap().0, 200);
    assert!(notify.has(|l| l.starts_with("STATUS=0 rooms, 0 peers, 1/1 workers alive")));

    let mut client = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;
    client.ok("getRouterRtpCapabilities", json!({})).await;
    wait_until("a STATUS= line with the peer", DEADLINE, || {
        notify.has(|l| l.starts_with("STATUS=1 rooms, 1 peers"))
    });

    // Pings at half of WATCHDOG_USEC while healthy.
    wait_until("5 watchdog pings", DEADLINE, || notify.pings().len() >= 5);
    let pings = notify.pings();
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(250) && gap < Duration::from_millis(1500),
            "ping interval {gap:?}, expected about 500 ms"
        );
    }

    // A hung worker stops the pings (and fails readiness); they resume when it answers again.
    let frozen = FrozenWorker::freeze(server.pid(), 0);
    server.wait_unready(0);
    // Watch for 3 s; a ping already on its way when readiness failed may still land within one
    // interval, none after that.
    let unready_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<_> = notify
        .pings()
        .into_iter()
        .filter(|at| *at > unready_at + Duration::from_millis(600))
        .collect();
    assert!(late.is_empty(), "{} pings while a worker hung", late.len());
    let pings_when_unready = notify.pings().len();
    frozen.thaw();
    wait_until("pings to resume", DEADLINE, || {
        notify.pings().len() > pings_when_unready
    });

    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    wait_until("STOPPING=1", DEADLINE, || notify.has(|l| l == "STOPPING=1"));
    drop(client);
    let _ = std::fs::remove_file(&notify.path);
}

#[tokio::test]
async fn a_stalled_sink_does_not_slow_signaling() {
    // Nobody reads this socket: after a few datagrams every send blocks, stalling the systemd
    // sink for good.
    let (notify, _socket) = NotifySocket::bind("stalled", false);
    let notify_socket = notify.path.to_string_lossy().into_owned();
    let server = Server::start(&[
        ("NOTIFY_SOCKET", &notify_socket),
        ("WATCHDOG_USEC", "20000"),
    ]);
    let mut client = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;

    const REQUESTS: usize = 3000;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..REQUESTS {
        let sent = Instant::now();
        client.ok("getRouterRtpCapabilities", json!({})).await;
        slowest = slowest.max(sent.elapsed());
    }
    let total = started.elapsed();
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    assert!(
        total < Duration::from_secs(60),
        "{REQUESTS} requests took {total:?}"
    );

    let dropped = server.metric("mediasoup_server_bus_events_dropped_total{sink=\"systemd\"}");
    assert!(
        dropped > 0.0,
        "the stalled sink's queue overflowed and was counted"
    );
    assert_eq!(
        server.metric("mediasoup_server_bus_events_dropped_total{sink=\"prometheus\"}"),
        0.0
    );
    server.wait_metric(
        "mediasoup_server_signaling_requests_total{type=\"getRouterRtpCapabilities\",outcome=\"ok\"}",
        REQUESTS as f64,
    );
    let _ = std::fs::remove_file(&notify.path);
}

/// What the collector received of one span.
struct ExportedSpan {
    name: String,
    attributes: HashMap<String, String>,
    events: Vec<String>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

impl ExportedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A test OTLP/HTTP collector: accepts protobuf POSTs on /v1/traces and keeps them.
struct Collector {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if let Some(request) = read_export(stream) {
                    sink.lock().unwrap().push(request);
                }
            }
        });
        Collector { addr, requests }
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        let mut spans = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for resource in &request.resource_spans {
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        spans.push(ExportedSpan {
                            name: span.name.clone(),
                            attributes: attributes(&span.attributes),
                            events: span.events.iter().map(|e| e.name.clone()).collect(),
                            id: span.span_id.clone(),
                            parent: span.parent_span_id.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    fn service_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .filter_map(|r| r.resource.as_ref())
            .filter_map(|r| attributes(&r.attributes).remove("service.name"))
            .collect()
    }
}

fn attributes(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// Reads one HTTP/1.1 POST, answers 200, decodes the protobuf body.
fn read_export(mut stream: TcpStream) -> Option<ExportTraceServiceRequest> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = Vec::new();
    let mut buffer = [0u8; 65536];
    let (header_end, length) = loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())?;
            break (end + 4, length);
        }
    };
    while data.len() < header_end + length {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    ExportTraceServiceRequest::decode(&data[header_end..header_end + length]).ok()
}

#[tokio::test]
async fn traces_reach_an_otlp_collector() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "sfu-under-test"),
    ]);
    let mut a = Client::connect(&server.url("/traced-table"), "aaaaaaaaaaaaaaaa").await;
    let joined = a.join().await;
    a.produce(&joined.send, "audio", "mic").await;
    a.error(
        "pauseProducer",
        json!({"producerId": "5bd9f2bc-2e3b-4b1a-9b0e-3c3e6f3c8a11"}),
    )
    .await;
    a.close().await;
    server.wait_metric("mediasoup_server_rooms", 0.0);
    // Shutdown flushes the batch exporter.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());

    wait_until("spans at the collector", DEADLINE, || {
        collector.spans().iter().any(|s| s.name == "peer_session")
    });
    let spans = collector.spans();
    assert!(collector
        .service_names()
        .iter()
        .all(|n| n == "sfu-under-test"));

    let room = spans
        .iter()
        .find(|s| s.name == "room")
        .expect("a room span");
    assert_eq!(room.attribute("room"), Some("traced-table"));
    let session = spans
        .iter()
        .find(|s| s.name == "peer_session")
        .expect("a peer session span");
    assert_eq!(session.attribute("user_id"), Some("aaaaaaaaaaaaaaaa"));
    assert_eq!(session.attribute("room"), Some("traced-table"));
    assert_eq!(
        session.parent, room.id,
        "the session is a child of the room"
    );
    for event in [
        "peer joined",
        "transport created",
        "producer created",
        "producer closed",
        "peer left",
    ] {
        assert!(
            session.events.iter().any(|e| e == event),
            "{event} missing from {:?}",
            session.events
        );
    }

    let requests: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "signaling_request")
        .collect();
    assert_eq!(requests.len(), 5, "one span per request");
    assert!(
        requests.iter().all(|r| r.parent == session.id),
        "children of the session"
    );
    let types: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.attribute("type"))
        .collect();
    for expected in [
        "getRouterRtpCapabilities",
        "createWebRtcTransport",
        "produce",
        "pauseProducer",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let failed = requests
        .iter()
        .find(|r| r.attribute("type") == Some("pauseProducer"))
        .unwrap();
    assert_eq!(failed.attribute("outcome"), Some("error"));
}

#[tokio::test]
async fn an_unreachable_collector_does_not_affect_the_service() {
    let closed_port = common::free_port();
    let server = Server::start(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{closed_port}"),
    )]);
    let mut a = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;
    let joined = a.join().await;
    a.produce(&joined.send, "video", "webcam").await;
    a.close().await;
    server.wait_metric("mediasoup_server_rooms", 0.0);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
}
