//! The bus's sinks seen from outside: systemd notifications (through a NOTIFY_SOCKET harness),
//! a stalled sink, and OTLP trace export (into a small test collector).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http_get, wait_until, Client, FrozenWorker, Server, DEADLINE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::json;

/// Datagrams received on a NOTIFY_SOCKET, with the times the kernel queued them (SO_TIMESTAMP):
/// when the server sent them, however late the reader gets to them.
struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<(SystemTime, String)>>>,
}

/// Receives one datagram and the kernel's arrival timestamp (SO_TIMESTAMP must be on).
fn recv_with_arrival(
    socket: &UnixDatagram,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SystemTime)> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is a plain C struct; all-zeroes is valid and the pointers set below
    // outlive the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg(2) on our own socket with buffers described by `message`.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMP
            {
                let at: libc::timeval = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                let at = UNIX_EPOCH + Duration::new(at.tv_sec as u64, at.tv_usec as u32 * 1000);
                return Ok((n as usize, at));
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Err(std::io::Error::other(
        "the datagram came without its SO_TIMESTAMP",
    ))
}

impl NotifySocket {
    fn bind(name: &str, read: bool) -> (NotifySocket, UnixDatagram) {
        let path = std::env::temp_dir().join(format!("notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        let received = Arc::new(Mutex::new(Vec::new()));
        if read {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt(2) on our own socket with a valid int.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMP,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of_val(&on) as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "SO_TIMESTAMP: {}", std::io::Error::last_os_error());
            let (reader, sink) = (socket.try_clone().unwrap(), received.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok((n, at)) = recv_with_arrival(&reader, &mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    sink.lock().unwrap().push((at, text));
                }
            });
        }
        (NotifySocket { path, received }, socket)
    }

    fn lines(&self) -> Vec<(SystemTime, String)> {
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

    /// When each WATCHDOG=1 was sent, in order.
    fn pings(&self) -> Vec<SystemTime> {
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
        ("WATCHDOG_USEC", "400000"),
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

    // Pings at half of WATCHDOG_USEC (200 ms here) while healthy. Counted over a window of
    // send times rather than timed one by one, with a tolerance for a loaded machine.
    let interval = Duration::from_millis(200);
    let window = Duration::from_secs(4);
    let expected = (window.as_millis() / interval.as_millis()) as usize;
    wait_until("a first watchdog ping", DEADLINE, || {
        !notify.pings().is_empty()
    });
    let start = notify.pings()[0];
    // The first ping sent after the window: all the window's pings have been read by then.
    wait_until(
        "a watchdog ping after the counting window",
        DEADLINE,
        || notify.pings().iter().any(|at| *at > start + window),
    );
    let counted = notify
        .pings()
        .iter()
        .filter(|at| **at > start && **at <= start + window)
        .count();
    // Fewer than 60% of the expected pings: they stopped, or come at 1.7 times the interval or
    // worse (pinging at the full WATCHDOG_USEC would give half); more than twice: not paced.
    assert!(
        counted * 10 >= expected * 6 && counted <= expected * 2,
        "{counted} pings sent in {window:?}, expected about {expected} (one every {interval:?})"
    );

    // A hung worker stops the pings (and fails readiness); they resume when it answers again.
    let frozen = FrozenWorker::freeze(server.pid(), 0);
    server.wait_unready(0);
    let unready_at = SystemTime::now();
    // Watch for as long as 10 pings would take.
    wait_until("the watch window to pass", DEADLINE, || {
        unready_at.elapsed().is_ok_and(|e| e > interval * 10)
    });
    let thawed_at = SystemTime::now();
    frozen.thaw();
    wait_until("pings to resume", DEADLINE, || {
        notify.pings().iter().any(|at| *at > thawed_at)
    });
    // Every ping sent while the worker hung has been read now. One decided just before
    // readiness failed may have been sent after; no more.
    let late = notify
        .pings()
        .iter()
        .filter(|at| **at > unready_at && **at < thawed_at)
        .count();
    assert!(late <= 1, "{late} pings sent while a worker hung");

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
    // One client sends all the requests: lift its request rate limit.
    let server = Server::start(&[
        ("NOTIFY_SOCKET", &notify_socket),
        ("WATCHDOG_USEC", "20000"),
        ("MEDIASOUP_REQUESTS_PER_SEC", "1000000"),
        ("MEDIASOUP_REQUEST_BURST", "1000000"),
    ]);
    let mut client = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;

    // Every request is answered (each within the client's deadline) while the sink is stuck
    // for good: signaling does not wait for it. How fast is for the benchmarks. Enough requests
    // that their events outnumber by far what the sink takes before it stalls (its queue of
    // 1024, and what it handled until the socket's datagram queue filled).
    const REQUESTS: usize = 6000;
    for _ in 0..REQUESTS {
        client.ok("getRouterRtpCapabilities", json!({})).await;
    }

    // The sink's queue overflowed: most of the requests' events were dropped for it, counted,
    // instead of being waited for. The metrics, counted as events are emitted, lost none.
    let dropped = server.metric("mediasoup_server_bus_events_dropped_total{sink=\"systemd\"}");
    assert!(
        dropped >= (REQUESTS / 2) as f64,
        "{dropped} events dropped for the stalled sink, expected most of the {REQUESTS} requests' events"
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
