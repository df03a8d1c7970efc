//! Start-up, health, configuration errors and shutdown of the real binary.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::{http_get, producing, wait_until, Client, FrozenWorker, Server, BIN, DEADLINE};
use serde_json::{json, Value};

#[tokio::test]
async fn starts_two_workers_serves_health_and_websocket_and_stops_on_sigterm() {
    let server = Server::start(&[("MEDIASOUP_NUM_WORKERS", "2")]);

    assert_eq!(http_get(server.addr, "/healthz").unwrap().0, 200);
    let (status, body) = http_get(server.addr, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], true);
    let (status, body) = http_get(server.addr, "/").unwrap();
    assert_eq!(
        status, 426,
        "plain HTTP on a room path asks for a WebSocket: {body}"
    );

    let mut client = Client::connect(&server.url("/"), "aaaaaaaaaaaaaaaa").await;
    client.ok("getRouterRtpCapabilities", json!({})).await;

    // The log sink writes after the fact; the listening line is logged after the workers'.
    let listening = format!("listening for signaling on {}", server.addr);
    wait_until("the listening line", DEADLINE, || {
        server.log().iter().any(|l| l.contains(&listening))
    });
    let log = server.log();
    let created: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("worker created"))
        .collect();
    assert_eq!(created.len(), 2, "one line per worker: {log:#?}");
    assert!(created.iter().all(|l| l.contains("id=")), "{created:?}");
    assert_eq!(server.metric("mediasoup_server_workers_alive"), 2.0);
    assert_eq!(server.metric("mediasoup_server_workers_configured"), 2.0);

    let (code, _) = {
        let closing = client.closed();
        let status = tokio::task::spawn_blocking(move || server.terminate());
        let close = closing.await;
        let status = status.await.unwrap();
        assert!(status.success(), "exit status after SIGTERM: {status}");
        close
    };
    assert_eq!(code, 1001, "peers are told the server is going away");
}

#[tokio::test]
async fn transports_announce_the_configured_address() {
    for announced in ["198.51.100.7", "vtt.example.org"] {
        let server = Server::start(&[("MEDIASOUP_ANNOUNCED_IP", announced)]);
        let mut client = Client::connect(&server.url("/"), "aaaaaaaaaaaaaaaa").await;
        let transport = client.ok("createWebRtcTransport", producing()).await;
        let candidates = transport["iceCandidates"].as_array().unwrap();
        assert!(!candidates.is_empty());
        for candidate in candidates {
            assert_eq!(candidate["address"], announced, "{candidate}");
        }
    }
}

#[tokio::test]
async fn json_logs_carry_lifecycle_events_with_their_fields_at_debug() {
    let server = Server::start(&[
        ("MEDIASOUP_LOG_FORMAT", "json"),
        ("RUST_LOG", "mediasoup_server=debug"),
    ]);
    let mut client = Client::connect(&server.url("/json-room"), "aaaaaaaaaaaaaaaa").await;
    let transport = client.ok("createWebRtcTransport", producing()).await;
    let id = transport["id"].as_str().unwrap().to_owned();
    wait_until("the transport's log line", DEADLINE, || {
        server.log().iter().any(|l| l.contains(&id))
    });
    let lines: Vec<Value> = server
        .log()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let created = lines
        .iter()
        .find(|l| l["message"] == "transport created")
        .expect("a transport created event");
    assert_eq!(created["level"], "DEBUG");
    assert_eq!(created["transport"], id.as_str());
    assert_eq!(created["direction"], "send");
    assert!(created["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("peer-")));
    assert!(lines.iter().any(|l| l["message"] == "router created"));
    assert!(lines
        .iter()
        .any(|l| l["message"] == "peer joined" && l["user_id"] == "aaaaaaaaaaaaaaaa"));
}

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run mediasoup-server");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Environment, the variable the error must name, the value it must quote.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[test]
fn bad_configuration_exits_78_naming_the_variable_and_value() {
    let cases: &[Case] = &[
        (
            &[("MEDIASOUP_NUM_WORKERS", "0")],
            "MEDIASOUP_NUM_WORKERS",
            "\"0\"",
        ),
        (
            &[("MEDIASOUP_NUM_WORKERS", "many")],
            "MEDIASOUP_NUM_WORKERS",
            "\"many\"",
        ),
        (
            &[("MEDIASOUP_LISTEN_ADDR", "localhost")],
            "MEDIASOUP_LISTEN_ADDR",
            "\"localhost\"",
        ),
        (
            &[("MEDIASOUP_METRICS_ADDR", "9464")],
            "MEDIASOUP_METRICS_ADDR",
            "\"9464\"",
        ),
        (
            &[
                ("MEDIASOUP_RTC_MIN_PORT", "20000"),
                ("MEDIASOUP_RTC_MAX_PORT", "10000"),
            ],
            "MEDIASOUP_RTC_MAX_PORT",
            "\"10000\"",
        ),
        (
            &[("MEDIASOUP_RTC_MAX_PORT", "70000")],
            "MEDIASOUP_RTC_MAX_PORT",
            "\"70000\"",
        ),
        (
            &[("MEDIASOUP_LOG_LEVEL", "loud")],
            "MEDIASOUP_LOG_LEVEL",
            "\"loud\"",
        ),
        (
            &[("MEDIASOUP_LOG_TAGS", "ice,nope")],
            "MEDIASOUP_LOG_TAGS",
            "\"ice,nope\"",
        ),
        (
            &[("MEDIASOUP_ANNOUNCED_IP", "not valid!")],
            "MEDIASOUP_ANNOUNCED_IP",
            "\"not valid!\"",
        ),
        (
            &[("MEDIASOUP_MAX_INCOMING_BITRATE", "-1")],
            "MEDIASOUP_MAX_INCOMING_BITRATE",
            "\"-1\"",
        ),
        (
            &[("MEDIASOUP_LOG_FORMAT", "xml")],
            "MEDIASOUP_LOG_FORMAT",
            "\"xml\"",
        ),
        (&[("RUST_LOG", "info,[")], "RUST_LOG", "info,["),
    ];
    for (env, variable, value) in cases {
        let (code, stderr) = run_with(env);
        assert_eq!(code, Some(78), "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains(variable) && lines[0].contains(value),
            "{stderr}"
        );
        assert!(
            lines[0].contains("expected"),
            "says what is accepted: {stderr}"
        );
    }
}

#[test]
fn a_taken_address_is_a_clear_error_naming_the_variable() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let (code, stderr) = run_with(&[
        ("MEDIASOUP_LISTEN_ADDR", &addr),
        ("MEDIASOUP_METRICS_ADDR", &metrics),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "address {addr} is in use: set MEDIASOUP_LISTEN_ADDR"
        )),
        "{stderr}"
    );
}

#[test]
fn a_dotenv_file_in_the_working_directory_is_read() {
    let dir = std::env::temp_dir().join(format!("mediasoup-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "MEDIASOUP_NUM_WORKERS=zero\n").unwrap();
    let output = Command::new(BIN)
        .env_clear()
        .current_dir(&dir)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("MEDIASOUP_NUM_WORKERS") && stderr.contains("zero"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_hung_worker_fails_only_its_own_requests_and_new_rooms_avoid_it() {
    let server = Server::start(&[("MEDIASOUP_NUM_WORKERS", "2")]);
    // Room a on worker 0 (1 peer), room c on worker 1 (2 peers): least-loaded alone would put
    // the next room on worker 0.
    let mut a = Client::connect(&server.url("/a"), "aaaaaaaaaaaaaaaa").await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
    let mut c1 = Client::connect(&server.url("/c"), "cccccccccccccccc").await;
    c1.ok("getRouterRtpCapabilities", json!({})).await;
    let mut c2 = Client::connect(&server.url("/c"), "dddddddddddddddd").await;
    c2.ok("getRouterRtpCapabilities", json!({})).await;
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"0\"}", 1.0);
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"1\"}", 1.0);

    let frozen = FrozenWorker::freeze(server.pid(), 0);
    let error = a.error("createWebRtcTransport", producing()).await;
    assert!(
        error.contains("the media server did not answer within 10s"),
        "{error}"
    );
    // The peers on the other worker are served meanwhile.
    c1.ok("createWebRtcTransport", producing()).await;

    server.wait_unready(0);
    let mut b = Client::connect(&server.url("/b"), "bbbbbbbbbbbbbbbb").await;
    b.ok("createWebRtcTransport", producing()).await;
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"1\"}", 2.0);

    frozen.thaw();
    a.ok("createWebRtcTransport", producing()).await;
    server.wait_ready();
}

#[tokio::test]
async fn a_room_whose_worker_hangs_is_refused_and_opens_later() {
    let server = Server::start(&[]);
    let frozen = FrozenWorker::freeze(server.pid(), 0);
    let mut early = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;
    let (code, reason) = early.closed().await;
    assert_eq!(code, 1011, "{reason}");
    assert_eq!(
        reason,
        "worker 0 did not create the room's router within 10s: try again later"
    );

    frozen.thaw();
    let mut late = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;
    late.ok("createWebRtcTransport", producing()).await;
    server.wait_metric("mediasoup_server_rooms", 1.0);
}
