//! The server on the open internet: room tokens, Origins, connection and request limits,
//! liveness, log injection and the close handshake, against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    parse_endpoint, socket_fds, upgrade_status, wait_until, Client, Server, BIN, DEADLINE,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "correct horse battery staple";
const ORIGIN: &str = "https://vtt.example.org";

fn refusals(server: &Server, reason: &str) -> f64 {
    server.metric(&format!(
        "mediasoup_server_refusals_total{{reason=\"{reason}\"}}"
    ))
}

/// The URL `mediasoup-server token <room>` prints for a server configured like `server`.
fn token_url(server: &Server, room: &str) -> String {
    let output = Command::new(BIN)
        .args(["token", room])
        .env_clear()
        .env("MEDIASOUP_SECRET", SECRET)
        .env("MEDIASOUP_LISTEN_ADDR", server.addr.to_string())
        .env("MEDIASOUP_ANNOUNCED_IP", "127.0.0.1")
        .current_dir(std::env::temp_dir())
        .stderr(Stdio::null())
        .output()
        .expect("run mediasoup-server token");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// `/path?query` of a ws:// URL.
fn target(url: &str) -> &str {
    let rest = url.strip_prefix("ws://").expect("a ws:// URL");
    &rest[rest.find('/').expect("a path")..]
}

#[tokio::test]
async fn only_the_right_token_and_origin_get_in() {
    let server = Server::start(&[
        ("MEDIASOUP_SECRET", SECRET),
        ("MEDIASOUP_ALLOWED_ORIGINS", ORIGIN),
        ("RUST_LOG", "debug"),
    ]);
    let url = token_url(&server, "table one");
    assert!(
        url.starts_with(&format!(
            "ws://127.0.0.1:{}/table%20one?token=",
            server.addr.port()
        )),
        "{url}"
    );
    let other_room = token_url(&server, "table two");
    let token = url.split_once("?token=").expect("a token").1.to_owned();
    let origin = [("Origin", ORIGIN)];

    let (status, body) = upgrade_status(server.addr, "/table%20one", &origin);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    let wrong_room = format!("/table%20one?{}", other_room.split_once('?').unwrap().1);
    assert_eq!(upgrade_status(server.addr, &wrong_room, &origin).0, 403);
    let mangled = format!("/table%20one?token={}", token.replace(['a', 'b'], "c"));
    assert_eq!(upgrade_status(server.addr, &mangled, &origin).0, 403);
    let (status, body) = upgrade_status(
        server.addr,
        target(&url),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin"), "{body}");
    assert_eq!(upgrade_status(server.addr, target(&url), &[]).0, 403);
    assert_eq!(upgrade_status(server.addr, target(&url), &origin).0, 101);

    let mut player = Client::connect_with(&url, "player-1", &origin).await;
    player.join().await;
    server.wait_metric("mediasoup_server_peers", 1.0);
    assert_eq!(refusals(&server, "token_missing"), 1.0);
    assert_eq!(refusals(&server, "token_invalid"), 2.0);
    assert_eq!(refusals(&server, "origin"), 2.0);
    let log = server.log();
    assert!(
        !log.iter().any(|line| line.contains(&token)),
        "the token reached the log"
    );
    assert!(
        !log.iter().any(|line| line.contains("anyone who reaches")),
        "no open-access warning with a secret"
    );
}

#[tokio::test]
async fn without_a_secret_anyone_joins_and_the_log_says_so() {
    let server = Server::start(&[]);
    let mut player = Client::connect(&server.url("/any"), "player-1").await;
    player.join().await;
    wait_until("the open-access warning", DEADLINE, || {
        server
            .log()
            .iter()
            .any(|line| line.contains("WARN") && line.contains("anyone who reaches"))
    });
}

/// A connection from `source` (a loopback address) that sends nothing.
async fn idle_from(source: &str, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.expect("connect")
}

/// The status of the answer a refused connection gets without sending anything.
async fn refused_status(mut stream: tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn connections_are_capped_in_total_and_per_address() {
    let server = Server::start(&[
        ("MEDIASOUP_MAX_CONNECTIONS", "5"),
        ("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "3"),
        ("MEDIASOUP_TRUSTED_PROXIES", "none"),
    ]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_from("127.0.0.2", server.addr).await);
    }
    assert_eq!(
        refused_status(idle_from("127.0.0.2", server.addr).await).await,
        429
    );
    held.push(idle_from("127.0.0.3", server.addr).await);
    // A WebSocket counts like any connection.
    let mut player = Client::connect(&server.url("/t"), "player-1").await;
    player.join().await;
    assert_eq!(
        refused_status(idle_from("127.0.0.4", server.addr).await).await,
        503
    );
    assert_eq!(refusals(&server, "connections_per_ip"), 1.0);
    assert_eq!(refusals(&server, "connections"), 1.0);
    // A place freed is a place taken again.
    drop(held.pop());
    let mut second = None;
    wait_until("a freed place", DEADLINE, || {
        second = std::net::TcpStream::connect(server.addr).ok().filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut byte = [0u8; 1];
            // Admitted connections get no answer until they ask; refused ones get one at once.
            matches!((&*s).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        second.is_some()
    });
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_count_by_forwarded_address() {
    let server = Server::start(&[("MEDIASOUP_MAX_CONNECTIONS_PER_IP", "2")]);
    let url = server.url("/t");
    let alice = [("X-Forwarded-For", "203.0.113.9")];
    let _a1 = Client::connect_with(&url, "a1", &alice).await;
    let _a2 = Client::connect_with(&url, "a2", &alice).await;
    let (status, body) = upgrade_status(server.addr, "/t", &alice);
    assert_eq!(status, 429, "{body}");
    // Another client of the same proxy, and an untrusted hop that claims to be alice.
    let mut bob = Client::connect_with(
        &url,
        "b",
        &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7")],
    )
    .await;
    bob.join().await;
    assert_eq!(refusals(&server, "connections_per_ip"), 1.0);
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let server = Server::start(&[("MEDIASOUP_HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /t HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the connection was held {waited:?}"
    );
    server.wait_metric(
        "mediasoup_server_refusals_total{reason=\"handshake_timeout\"}",
        1.0,
    );
    let mut player = Client::connect(&server.url("/t"), "player-1").await;
    player.join().await;
}

#[tokio::test]
async fn a_request_flood_gets_errors_then_the_door() {
    let server = Server::start(&[
        ("MEDIASOUP_REQUESTS_PER_SEC", "1"),
        ("MEDIASOUP_REQUEST_BURST", "5"),
    ]);
    let mut bystander = Client::connect(&server.url("/t"), "bystander").await;
    let mut flooder = Client::connect(&server.url("/t"), "flooder").await;
    for _ in 0..5 {
        flooder.ok("getRouterRtpCapabilities", json!({})).await;
    }
    let error = flooder.error("getRouterRtpCapabilities", json!({})).await;
    assert!(error.contains("too many requests"), "{error}");
    let ws = flooder.ws();
    for n in 0..100 {
        let request = json!({"type": "getRouterRtpCapabilities", "requestId": format!("flood_{n}"), "userId": "flooder"});
        if ws.send(Message::text(request.to_string())).await.is_err() {
            break;
        }
    }
    let (code, reason) = flooder.closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(refusals(&server, "request_rate") >= 50.0);
    // Everyone else is served as before.
    bystander.join().await;
}

#[tokio::test]
async fn app_data_over_the_limit_is_refused() {
    let server = Server::start(&[("MEDIASOUP_MAX_APP_DATA_BYTES", "200")]);
    let mut player = Client::connect(&server.url("/t"), "player-1").await;
    let joined = player.join().await;
    let answer = player
        .request(
            "produce",
            json!({
                "transportId": joined.send,
                "kind": "audio",
                "rtpParameters": common::chromium_rtp_parameters("audio"),
                "appData": {"mediaTag": "mic", "userId": "player-1", "padding": "x".repeat(300)},
            }),
        )
        .await;
    let error = answer["error"].as_str().expect("an error");
    assert!(error.contains("appData is too large"), "{error}");
    assert_eq!(refusals(&server, "app_data_size"), 1.0);
    player.produce(&joined.send, "audio", "mic").await;
}

#[tokio::test]
async fn a_silent_peer_is_cleaned_up_and_a_quiet_one_is_not() {
    let server = Server::start(&[
        ("MEDIASOUP_PING_INTERVAL_SECS", "1"),
        ("MEDIASOUP_PEER_TIMEOUT_SECS", "3"),
    ]);
    let mut quiet = Client::connect(&server.url("/t"), "quiet").await;
    quiet.join().await;
    let mut silent = Client::connect(&server.url("/t"), "silent").await;
    let joined = silent.join().await;
    silent.produce(&joined.send, "audio", "mic").await;
    server.wait_metric("mediasoup_server_peers", 2.0);
    // `silent` is never read from again, so it never answers a ping; `quiet` reads (its
    // WebSocket answers pings) but sends nothing of its own for longer than the timeout.
    let started = Instant::now();
    let closed = quiet.notification_of("producerClosed").await;
    let gone = started.elapsed();
    assert!(closed["producerId"].is_string(), "{closed}");
    assert!(
        gone < Duration::from_secs(3 + 1 + 3),
        "the silent peer stayed {gone:?}"
    );
    server.wait_metric("mediasoup_server_peers", 1.0);
    server.wait_metric("mediasoup_server_producers{kind=\"audio\"}", 0.0);
    server.wait_metric("mediasoup_server_transports{direction=\"send\"}", 1.0);
    assert!(quiet
        .has_notification_within(Duration::from_secs(4))
        .await
        .is_none());
    assert_eq!(server.metric("mediasoup_server_peers"), 1.0);
    drop(silent);
}

/// A server with a video producer and a receiver, and receiver capabilities whose rtx `apt`
/// is the client text `apt`: consuming with them makes the mediasoup crate log an ERROR line
/// that quotes it. Returns (server, receiver, producer id, capabilities).
async fn video_with_rtx_apt(apt: &str) -> (Server, Client, String, Value) {
    let server = Server::start(&[]);
    let mut sender = Client::connect(&server.url("/t"), "sender").await;
    let joined = sender.join().await;
    let producer = sender.produce(&joined.send, "video", "webcam").await;
    // The producer lives as long as the sender's socket: keep it open (and answering pings).
    tokio::spawn(async move { while let Some(Ok(_)) = sender.ws().next().await {} });
    let mut receiver = Client::connect(&server.url("/t"), "receiver").await;
    receiver.join().await;
    let mut capabilities = common::client_rtp_capabilities();
    for codec in capabilities["codecs"].as_array_mut().unwrap() {
        if codec["mimeType"] == "video/rtx" {
            codec["parameters"]["apt"] = json!(apt);
        }
    }
    (server, receiver, producer, capabilities)
}

#[tokio::test]
async fn client_text_cannot_forge_a_log_line() {
    let forged = "INFO mediasoup_server: forged line";
    let (server, mut receiver, producer, capabilities) =
        video_with_rtx_apt(&format!("96\n{forged}\r\n{forged}")).await;
    let answer = receiver
        .request(
            "consume",
            json!({"producerId": producer, "rtpCapabilities": capabilities}),
        )
        .await;
    assert!(answer.get("error").is_some(), "{answer}");
    wait_until("the error to reach the log", DEADLINE, || {
        server.log().iter().any(|line| line.contains("forged line"))
    });
    for line in server.log() {
        assert!(!line.starts_with(forged), "forged line in the log: {line}");
        if line.contains("forged line") {
            assert!(line.contains("\\n"), "unescaped: {line}");
        }
    }
}

#[tokio::test]
async fn close_frames_follow_rfc_6455() {
    let server = Server::start(&[]);
    // The client closes: the server answers with its own close frame.
    let mut leaving = Client::connect(&server.url("/t"), "leaving").await;
    leaving.join().await;
    let ws = leaving.ws();
    ws.send(Message::Close(None)).await.unwrap();
    let until = tokio::time::Instant::now() + DEADLINE;
    let answer = loop {
        match tokio::time::timeout_at(until, ws.next())
            .await
            .expect("an answer")
        {
            Some(Ok(Message::Ping(_))) => continue,
            answer => break answer,
        }
    };
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "no close frame back: {answer:?}"
    );

    // A text frame that is not UTF-8: 1007.
    let mut broken = Client::connect(&server.url("/t"), "broken").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    broken.ws().send(Message::Frame(frame)).await.unwrap();
    assert_eq!(broken.closed().await.0, 1007);

    // Shutdown: every peer gets 1001 with the reason, none a reset.
    let mut peers = Vec::new();
    for n in 0..5 {
        let mut peer = Client::connect(&server.url("/t"), &format!("p{n}")).await;
        peer.join().await;
        peers.push(peer);
    }
    server.wait_metric("mediasoup_server_peers", 5.0);
    server.signal(libc::SIGTERM);
    for mut peer in peers {
        let (code, reason) = peer.closed().await;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
}

#[tokio::test]
async fn unusable_requests_are_answered_with_their_request_id() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server.url("/t"), "player-1").await;
    let deep = format!(
        r#"{{"type":"produce","requestId":"req_deep","userId":"player-1","appData":{}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    client.send_raw(Message::text(deep)).await;
    let answer: Value = client.answer("req_deep").await;
    assert!(answer["error"].is_string(), "{answer}");
    let long = "r".repeat(500);
    let frame =
        json!({"type": "getRouterRtpCapabilities", "requestId": long, "userId": "player-1"});
    client.send_raw(Message::text(frame.to_string())).await;
    let answer = client.answer(&long).await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("requestId")),
        "{answer}"
    );
}

/// TCP keepalive on the server's side of a signaling connection: the kernel notices a peer that
/// vanished without a FIN even when nothing is written to it.
#[tokio::test]
async fn signaling_connections_have_tcp_keepalive() {
    let server = Server::start(&[]);
    let mut player = Client::connect(&server.url("/t"), "player-1").await;
    player.ok("getRouterRtpCapabilities", json!({})).await;
    let filter = format!("sport = :{}", server.addr.port());
    // ss shows the one timer running: retransmission while data is in flight, keepalive once
    // the connection is idle.
    let mut sockets = String::new();
    wait_until("a keepalive timer on the server's socket", DEADLINE, || {
        let output = Command::new("ss")
            .args(["-H", "-t", "-n", "-o", "state", "established", &filter])
            .output()
            .expect("run ss (iproute2)");
        sockets = String::from_utf8_lossy(&output.stdout).into_owned();
        sockets.contains("timer:(keepalive")
    });
    assert!(sockets.contains("timer:(keepalive,"), "{sockets}");
}

/// Nagle's algorithm is off on the server's side of a signaling connection: otherwise a reply
/// written right after a notification waits for the client's delayed ACK (40 ms on every
/// produce, `cargo bench --bench churn`). The option is read from the server's own socket,
/// duplicated with pidfd_getfd (needs root or ptrace rights over the server, as the suite has).
#[tokio::test]
async fn signaling_connections_send_without_nagle_delay() {
    let server = Server::start(&[]);
    let mut player = Client::connect(&server.url("/t"), "player-1").await;
    player.ok("getRouterRtpCapabilities", json!({})).await;
    let socket = established_socket_of(&server);
    let nodelay = socket2::SockRef::from(&socket)
        .tcp_nodelay()
        .expect("read TCP_NODELAY");
    assert!(
        nodelay,
        "TCP_NODELAY is off on the server's signaling socket"
    );
}

/// A copy of the server's one established signaling socket.
fn established_socket_of(server: &Server) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let pid = server.pid();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("/proc net/tcp");
    const ESTABLISHED: &str = "01";
    let inodes: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, local) = parse_endpoint(fields.get(1)?)?;
            let established = fields.get(3) == Some(&ESTABLISHED);
            (local == server.addr.port() && established).then(|| fields.get(9)?.parse().ok())?
        })
        .collect();
    assert_eq!(inodes.len(), 1, "one established connection: {table}");
    let (fd, _) = socket_fds(pid)
        .into_iter()
        .find(|(_, inode)| *inode == inodes[0])
        .expect("the server's descriptor of that socket");
    // SAFETY: plain syscalls; the descriptor pidfd_getfd returns is new and owned here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0);
        let error = std::io::Error::last_os_error();
        libc::close(pidfd as i32);
        assert!(copy >= 0, "pidfd_getfd: {error}");
        std::os::fd::OwnedFd::from_raw_fd(copy as i32)
    }
}

#[tokio::test]
async fn rooms_and_peers_per_room_are_capped() {
    let server = Server::start(&[
        ("MEDIASOUP_MAX_PEERS_PER_ROOM", "2"),
        ("MEDIASOUP_MAX_ROOMS", "2"),
    ]);
    let mut a = Client::connect(&server.url("/one"), "a").await;
    let b = Client::connect(&server.url("/one"), "b").await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
    let mut c = Client::connect(&server.url("/one"), "c").await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("full"), "{reason}");

    let mut d = Client::connect(&server.url("/two"), "d").await;
    d.ok("getRouterRtpCapabilities", json!({})).await;
    let mut e = Client::connect(&server.url("/three"), "e").await;
    let (code, reason) = e.closed().await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("rooms"), "{reason}");
    assert_eq!(refusals(&server, "room_full"), 1.0);
    assert_eq!(refusals(&server, "rooms"), 1.0);
    server.wait_metric("mediasoup_server_peers", 3.0);

    // A place freed is a place taken again.
    b.close().await;
    server.wait_metric("mediasoup_server_peers", 2.0);
    let mut again = Client::connect(&server.url("/one"), "c").await;
    again.ok("getRouterRtpCapabilities", json!({})).await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
}

/// Requests that make the mediasoup crate log an ERROR line each cannot flood the journal: the
/// lines past the rate limit are dropped, counted and reported once.
#[tokio::test]
async fn client_caused_worker_errors_are_rate_limited_in_the_log() {
    let (server, mut receiver, producer, capabilities) =
        video_with_rtx_apt("not a payload type").await;
    const BAD: usize = 150;
    for _ in 0..BAD {
        let answer = receiver
            .request(
                "consume",
                json!({"producerId": producer, "rtpCapabilities": capabilities}),
            )
            .await;
        assert!(answer["error"].is_string(), "{answer}");
    }
    server.wait_metric_at_least(
        "mediasoup_server_worker_log_lines_suppressed_total",
        (BAD - 60) as f64,
    );
    let logged = server
        .log()
        .iter()
        .filter(|line| line.contains("Invalid codec apt parameter"))
        .count();
    assert!(
        (1..=60).contains(&logged),
        "{logged} of {BAD} lines reached the log"
    );
    wait_until("the suppression warning", DEADLINE, || {
        server
            .log()
            .iter()
            .any(|line| line.contains("suppressed mediasoup worker log lines"))
    });
}
