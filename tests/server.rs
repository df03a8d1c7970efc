//! Start-up, health, configuration errors and shutdown of the real binary.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    http_get, parse_endpoint, producing, socket_inodes, udp_and_tcp_candidates, wait_until, Client,
    FrozenWorker, Media, Server, BIN, DEADLINE,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Runs `command` to its exit and returns its exit code and stderr. A process still running
/// after [`DEADLINE`] is killed and fails the test: for these commands that means a value that
/// should have stopped start-up was accepted.
fn run_to_exit(command: &mut Command, what: &str) -> (Option<i32>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {BIN}: {e}"));
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (mut pipe, stderr) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            stderr.lock().unwrap().push_str(&text);
        })
    };
    let until = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            panic!(
                "{what}: the server was still running after {DEADLINE:?}, so it accepted what it \
                 should have refused; killed it. stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("stderr reader");
    let stderr = stderr.lock().unwrap().clone();
    (status.code(), stderr)
}

#[tokio::test]
async fn starts_two_workers_serves_health_and_websocket_and_stops_on_sigterm() {
    let server = Server::start(&[("MEDIASOUP_NUM_WORKERS", "2")]);

    assert_eq!(http_get(server.addr, "/healthz").unwrap().0, 200);
    let (status, body) = http_get(server.addr, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], true);
    let (status, body) = http_get(server.addr, "/my-table").unwrap();
    assert_eq!(
        status, 426,
        "plain HTTP on a room path asks for a WebSocket: {body}"
    );
    let (status, body) = http_get(server.addr, "/").unwrap();
    assert_eq!(status, 200, "`/` is the self-test page: {body}");

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
    run_to_exit(
        Command::new(BIN)
            .env_clear()
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir()),
        &format!("with {env:?}"),
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
        (
            &[("MEDIASOUP_RTC_PORT", "0")],
            "MEDIASOUP_RTC_PORT",
            "\"0\"",
        ),
        (
            &[("MEDIASOUP_RTC_PORT", "forty")],
            "MEDIASOUP_RTC_PORT",
            "\"forty\"",
        ),
        (
            &[("MEDIASOUP_RTC_PORT", "70000")],
            "MEDIASOUP_RTC_PORT",
            "\"70000\"",
        ),
        (
            &[
                ("MEDIASOUP_RTC_PORT", "65535"),
                ("MEDIASOUP_NUM_WORKERS", "2"),
            ],
            "MEDIASOUP_RTC_PORT",
            "above 65535",
        ),
        // Inside the default range, and (with two workers) its second port inside a moved one.
        (
            &[("MEDIASOUP_RTC_PORT", "10050")],
            "MEDIASOUP_RTC_PORT",
            "pick a port outside it or move the range",
        ),
        (
            &[
                ("MEDIASOUP_RTC_PORT", "39999"),
                ("MEDIASOUP_NUM_WORKERS", "2"),
                ("MEDIASOUP_RTC_MIN_PORT", "40000"),
                ("MEDIASOUP_RTC_MAX_PORT", "40100"),
            ],
            "MEDIASOUP_RTC_PORT",
            "ports 39999-40000 (one per worker) are inside it",
        ),
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

/// Single-port mode with `held` bound by someone else: start-up stops before any worker starts,
/// with exit code 78 and a line naming the port, the protocol and the variable.
fn a_taken_media_port_stops_start_up(workers: u16, held: u16, protocol: &str) {
    let first = held + 1 - workers;
    let (code, stderr) = run_with(&[
        ("MEDIASOUP_RTC_PORT", &first.to_string()),
        ("MEDIASOUP_NUM_WORKERS", &workers.to_string()),
        (
            "MEDIASOUP_LISTEN_ADDR",
            &format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "MEDIASOUP_METRICS_ADDR",
            &format!("127.0.0.1:{}", common::free_port()),
        ),
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&format!(
            "media port {held}/{protocol} on 0.0.0.0 is in use: set MEDIASOUP_RTC_PORT"
        )),
        "{stderr}"
    );
    let worker = held - first;
    if worker > 0 {
        let which = format!("worker {worker} listens on MEDIASOUP_RTC_PORT + {worker}");
        assert!(lines[0].contains(&which), "{stderr}");
    }
}

#[test]
fn a_taken_media_udp_port_is_a_configuration_error() {
    let port = common::free_media_ports(1);
    let _held = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("hold the UDP port");
    a_taken_media_port_stops_start_up(1, port, "udp");
}

#[test]
fn a_taken_media_tcp_port_is_a_configuration_error() {
    // Worker 1's port, so that the check covers every worker's.
    let first = common::free_media_ports(2);
    let _held = TcpListener::bind(("0.0.0.0", first + 1)).expect("hold the TCP port");
    a_taken_media_port_stops_start_up(2, first + 1, "tcp");
}

/// A private working directory holding `.env` with `contents`; removed on drop.
struct DotenvDir(std::path::PathBuf);

impl DotenvDir {
    fn new(name: &str, contents: &str) -> DotenvDir {
        let dir = std::env::temp_dir().join(format!("mediasoup-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), contents).unwrap();
        DotenvDir(dir)
    }
}

impl Drop for DotenvDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_dotenv_file_in_the_working_directory_is_read() {
    let dir = DotenvDir::new("dotenv", "MEDIASOUP_NUM_WORKERS=zero\n");
    let (code, stderr) = run_to_exit(
        Command::new(BIN).env_clear().current_dir(&dir.0),
        "with MEDIASOUP_NUM_WORKERS=zero in .env",
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("MEDIASOUP_NUM_WORKERS") && stderr.contains("zero"),
        "{stderr}"
    );
}

#[test]
fn real_environment_variables_win_over_the_dotenv_file() {
    // Both refused, so the process stops at once and says which value it used.
    let dir = DotenvDir::new("dotenv-env-wins", "MEDIASOUP_NUM_WORKERS=zero\n");
    let (code, stderr) = run_to_exit(
        Command::new(BIN)
            .env_clear()
            .env("MEDIASOUP_NUM_WORKERS", "many")
            .current_dir(&dir.0),
        "with MEDIASOUP_NUM_WORKERS=many in the environment",
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("\"many\"") && !stderr.contains("zero"),
        "the environment's value is the one used: {stderr}"
    );

    // A usable value in the environment overrides a bad one in .env, while the file's other
    // lines still apply (JSON log lines).
    let dir = DotenvDir::new(
        "dotenv-env-wins-running",
        "MEDIASOUP_NUM_WORKERS=zero\nMEDIASOUP_LOG_FORMAT=json\n",
    );
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(BIN)
        .env_clear()
        .env("MEDIASOUP_NUM_WORKERS", "1")
        .env("MEDIASOUP_LISTEN_ADDR", &listen)
        .env(
            "MEDIASOUP_METRICS_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("MEDIASOUP_ANNOUNCED_IP", "127.0.0.1")
        .env("MEDIASOUP_RTC_MIN_PORT", "45000")
        .env("MEDIASOUP_RTC_MAX_PORT", "45039")
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mediasoup-server");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (pipe, lines) = (child.stderr.take().expect("stderr"), lines.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let listening = |lines: &[String]| {
        lines
            .iter()
            .find(|l| l.contains("listening for signaling"))
            .cloned()
    };
    let until = Instant::now() + DEADLINE;
    let line = loop {
        if let Some(line) = listening(&lines.lock().unwrap()) {
            break line;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the server stopped ({status}) instead of taking MEDIASOUP_NUM_WORKERS from the \
                 environment: {:?}",
                lines.lock().unwrap()
            );
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no listening line within {DEADLINE:?}: {:?}",
                lines.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let line: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!("MEDIASOUP_LOG_FORMAT=json from .env not applied ({e}): {line}")
    });
    assert_eq!(line["workers"], 1, "{line}");
}

/// The source address the kernel picks for the route to `destination` (`ip route get`), or
/// `None` when there is no such route.
fn route_source(destination: &str) -> Option<IpAddr> {
    let output = Command::new("ip")
        .args(["-4", "route", "get", destination])
        .output()
        .expect("run `ip` (iproute2) to read the routing table");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "src")?;
    words.next()?.parse().ok()
}

#[tokio::test]
async fn without_an_announced_ip_candidates_carry_the_default_route_address() {
    let has_default = Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let Some(expected) = route_source("192.0.2.1").filter(|_| has_default) else {
        eprintln!(
            "SKIPPED without_an_announced_ip_candidates_carry_the_default_route_address: this \
             machine has no IPv4 default route, so there is no address to detect"
        );
        return;
    };
    // An empty value is the same as unset.
    let server = Server::start(&[("MEDIASOUP_ANNOUNCED_IP", "")]);
    let mut client = Client::connect(&server.url("/"), "aaaaaaaaaaaaaaaa").await;
    let transport = client.ok("createWebRtcTransport", producing()).await;
    let candidates = transport["iceCandidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{transport}");
    for candidate in candidates {
        assert_eq!(
            candidate["address"],
            expected.to_string(),
            "`ip route get 192.0.2.1` says src {expected}: {candidate}"
        );
    }
    // And it is logged at start-up.
    let expected = expected.to_string();
    wait_until("the listening line", DEADLINE, || {
        server
            .log()
            .iter()
            .any(|l| l.contains("listening for signaling") && l.contains(&expected))
    });
}

/// Sockets of process `pid` bound to `port` (`udp` or `tcp`, IPv4): their local addresses.
fn bound_addresses(pid: i32, protocol: &str, port: u16) -> Vec<Ipv4Addr> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}")).unwrap();
    let owned = socket_inodes(pid);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ip, local_port) = parse_endpoint(fields.get(1)?)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            (local_port == port && owned.contains(&inode)).then_some(ip)
        })
        .collect()
}

/// The IPv4 sockets of process `pid` for media: every UDP one, and the listening TCP ones
/// other than `except` (signaling, metrics); sorted (address, port) pairs.
fn media_sockets(pid: i32, protocol: &str, except: &[u16]) -> Vec<(Ipv4Addr, u16)> {
    const TCP_LISTEN: &str = "0A";
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}")).unwrap();
    let owned = socket_inodes(pid);
    let mut sockets: Vec<(Ipv4Addr, u16)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let endpoint = parse_endpoint(fields.get(1)?)?;
            let state = *fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let media = protocol == "udp" || (state == TCP_LISTEN && !except.contains(&endpoint.1));
            (media && owned.contains(&inode)).then_some(endpoint)
        })
        .collect();
    sockets.sort_unstable();
    sockets
}

/// Joins `user` to `room` like the module, but keeping both transports' answers.
async fn join_keeping_transports(server: &Server, room: &str, user: &str) -> (Client, [Value; 2]) {
    let mut client = Client::connect(&server.url(room), user).await;
    client.ok("getRouterRtpCapabilities", json!({})).await;
    let mut transports = Vec::new();
    for (producing, consuming) in [(true, false), (false, true)] {
        let fields = json!({"forceTcp": false, "producing": producing, "consuming": consuming});
        transports.push(client.ok("createWebRtcTransport", fields).await);
    }
    let transports = transports.try_into().expect("two transports");
    (client, transports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_port_mode_shares_one_udp_and_one_tcp_port_per_worker() {
    let server = Server::start_in(Media::SinglePort, &[("MEDIASOUP_NUM_WORKERS", "2")]);
    let first = server.media_port.expect("single-port mode");
    let ports = [first, first + 1];
    let except = [server.addr.port(), server.metrics.port()];
    let expected: Vec<(Ipv4Addr, u16)> =
        ports.iter().map(|p| (Ipv4Addr::UNSPECIFIED, *p)).collect();
    let sockets = || {
        (
            media_sockets(server.pid(), "udp", &except),
            media_sockets(server.pid(), "tcp", &except),
        )
    };
    assert_eq!(
        sockets(),
        (expected.clone(), expected.clone()),
        "before any peer"
    );

    // Rooms of two peers, spread over both workers; each transport on its worker's port.
    const ROOMS: usize = 6;
    let mut clients = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for room in 0..ROOMS {
        for peer in 0..2 {
            let (client, transports) = join_keeping_transports(
                &server,
                &format!("/spread-{room}"),
                &format!("user-{room}-{peer}"),
            )
            .await;
            for transport in &transports {
                let candidates = udp_and_tcp_candidates(transport);
                for candidate in candidates {
                    let port = candidate["port"].as_u64().unwrap() as u16;
                    assert!(ports.contains(&port), "{candidate}");
                    used.insert(port);
                }
                // A transport lives on its room's worker: all its candidates carry that port.
                let room_ports: std::collections::BTreeSet<u64> = candidates
                    .iter()
                    .filter_map(|c| c["port"].as_u64())
                    .collect();
                assert_eq!(room_ports.len(), 1, "{transport}");
            }
            clients.push(client);
        }
    }
    for worker in ["0", "1"] {
        server.wait_metric(
            &format!("mediasoup_server_worker_rooms{{worker=\"{worker}\"}}"),
            (ROOMS / 2) as f64,
        );
    }
    assert_eq!(
        used,
        ports.into_iter().collect(),
        "both workers' ports in use"
    );
    server.wait_metric(
        "mediasoup_server_transports{direction=\"send\"}",
        (2 * ROOMS) as f64,
    );
    assert_eq!(
        sockets(),
        (expected.clone(), expected.clone()),
        "after {} transports: no socket of their own",
        4 * ROOMS
    );

    // forceTcp: TCP candidates only, on the shared port.
    let mut tcp = Client::connect(&server.url("/spread-0"), "tcp-only-user").await;
    let transport = tcp
        .ok(
            "createWebRtcTransport",
            json!({"forceTcp": true, "producing": true, "consuming": false}),
        )
        .await;
    let candidates = transport["iceCandidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{transport}");
    for candidate in candidates {
        assert_eq!(candidate["protocol"], "tcp", "{candidate}");
        assert!(
            ports.contains(&(candidate["port"].as_u64().unwrap() as u16)),
            "{candidate}"
        );
    }
    assert_eq!(
        sockets(),
        (expected.clone(), expected),
        "after a TCP-only transport"
    );

    // Operators see the ports at info: per worker, and in the listening line.
    let log = server.log();
    for (worker, port) in ports.iter().enumerate() {
        assert!(
            log.iter().any(|l| l.contains("worker created")
                && l.contains(&format!("worker={worker}"))
                && l.contains(&format!("media_port={port}"))),
            "{log:#?}"
        );
    }
    let media = format!(
        "media on ports {first}-{} udp+tcp, one per worker",
        first + 1
    );
    assert!(
        log.iter()
            .any(|l| l.contains("listening for signaling") && l.contains(&media)),
        "{log:#?}"
    );
}

#[tokio::test]
async fn media_sockets_listen_on_the_configured_rtc_ip() {
    // 127.0.0.2 is local on Linux (all of 127/8 is) and differs from the default 0.0.0.0; with no
    // announced address the candidates carry it too.
    let server = Server::start(&[
        ("MEDIASOUP_RTC_LISTEN_IP", "127.0.0.2"),
        ("MEDIASOUP_ANNOUNCED_IP", ""),
    ]);
    let mut client = Client::connect(&server.url("/"), "aaaaaaaaaaaaaaaa").await;
    let transport = client.ok("createWebRtcTransport", producing()).await;
    let candidates = udp_and_tcp_candidates(&transport);
    for candidate in candidates {
        assert_eq!(candidate["address"], "127.0.0.2", "{candidate}");
        let protocol = candidate["protocol"].as_str().unwrap();
        let port = candidate["port"].as_u64().unwrap() as u16;
        let bound = bound_addresses(server.pid(), protocol, port);
        assert_eq!(
            bound,
            vec![Ipv4Addr::new(127, 0, 0, 2)],
            "the server's {protocol} sockets on port {port}"
        );
    }
}

in_both_media_modes! {
    #[tokio::test]
    async fn a_hung_worker_fails_only_its_own_requests_and_new_rooms_avoid_it(media) {
        let server = Server::start_in(media, &[("MEDIASOUP_NUM_WORKERS", "2")]);
        let (mut a, mut c1, _c2) = common::rooms_on_two_workers(&server).await;

        let frozen = FrozenWorker::freeze(server.pid(), 0);
        // A TCP-only transport: not one of those prepared at connect, so the worker must make it.
        let tcp_only = json!({"forceTcp": true, "producing": true, "consuming": false});
        let error = a.error("createWebRtcTransport", tcp_only).await;
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
}

in_both_media_modes! {
    #[tokio::test]
    async fn a_peers_transports_are_made_once_it_asks_for_the_router_capabilities(media) {
        let server = Server::start_in(media, &[]);
        let mut peer = Client::connect(&server.url("/table"), "aaaaaaaaaaaaaaaa").await;
        peer.ok("getRouterRtpCapabilities", json!({})).await;
        // The worker answers in order: once this TCP-only transport (made on request) exists, so
        // do the two made ahead when the peer asked for the capabilities.
        let tcp_only = json!({"forceTcp": true, "producing": false, "consuming": true});
        peer.ok("createWebRtcTransport", tcp_only).await;
        let frozen = FrozenWorker::freeze(server.pid(), 0);
        // Answered although the worker cannot answer anything now.
        let transport = peer.ok("createWebRtcTransport", producing()).await;
        let protocols: Vec<&str> = transport["iceCandidates"]
            .as_array()
            .expect("candidates")
            .iter()
            .filter_map(|c| c["protocol"].as_str())
            .collect();
        assert_eq!(protocols, ["udp", "tcp"], "{transport}");
        frozen.thaw();
        server.wait_metric("mediasoup_server_transports{direction=\"send\"}", 1.0);
    }
}

#[tokio::test]
async fn peers_that_leave_right_after_asking_for_the_capabilities_leave_no_transport_behind() {
    let server = Server::start(&[]);
    let udp_sockets = || media_sockets(server.pid(), "udp", &[]).len();
    // Keeps the room and its router open, with its two transports (a UDP socket each).
    let mut stays = Client::connect(&server.url("/table"), "ssssssssssssssss").await;
    stays.ok("getRouterRtpCapabilities", json!({})).await;
    stays.ok("createWebRtcTransport", producing()).await;
    let consuming = json!({"producing": false, "consuming": true});
    stays.ok("createWebRtcTransport", consuming).await;
    wait_until("the staying peer's two UDP sockets", DEADLINE, || {
        udp_sockets() == 2
    });
    for n in 0..50 {
        let user = format!("leaver{n:010}");
        let mut leaver = Client::connect(&server.url("/table"), &user).await;
        leaver.ok("getRouterRtpCapabilities", json!({})).await;
        leaver.close().await;
    }
    wait_until("the leavers' prepared transports closed", DEADLINE, || {
        udp_sockets() == 2
    });
    server.wait_metric("mediasoup_server_transports{direction=\"send\"}", 1.0);
}

in_both_media_modes! {
    #[tokio::test]
    async fn a_room_whose_worker_hangs_is_refused_and_opens_later(media) {
        let server = Server::start_in(media, &[]);
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
}

// A peer that does not read: dropped, not waited for.

type RawWs = WebSocketStream<tokio::net::TcpStream>;

/// A client that joins like the module (capabilities, then both transports, so that it gets
/// every `newProducer`) and then stops reading, with a small receive buffer so that its socket
/// fills up after a few notifications. Returns the socket and its local port.
async fn join_then_stop_reading(server: &Server, room: &str, user: &str) -> (RawWs, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.expect("connect");
    let port = stream.local_addr().unwrap().port();
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(room), stream)
        .await
        .expect("WebSocket handshake");
    let requests = [
        ("getRouterRtpCapabilities", json!({})),
        ("createWebRtcTransport", producing()),
        (
            "createWebRtcTransport",
            json!({"producing": false, "consuming": true}),
        ),
    ];
    for (n, (kind, fields)) in requests.into_iter().enumerate() {
        let request_id = format!("req_{n}");
        let mut request = json!({"type": kind, "requestId": request_id, "userId": user});
        request
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        ws.send(Message::text(request.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(DEADLINE, ws.next())
                .await
                .expect("an answer in time");
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => panic!("socket closed while joining: {frame:?}"),
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["requestId"] == request_id.as_str() {
                assert!(frame.get("error").is_none(), "{kind}: {frame}");
                break;
            }
        }
    }
    (ws, port)
}

/// The server's end of the TCP connection from local port `client_port`: its bytes not yet
/// taken by the client (`tx_queue`), while the server process still holds the socket.
fn server_end(server: &Server, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", server.pid())).ok()?;
    let owned = socket_inodes(server.pid());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (_, local) = parse_endpoint(fields.get(1)?)?;
        let (_, remote) = parse_endpoint(fields.get(2)?)?;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        if local != server.addr.port() || remote != client_port || !owned.contains(&inode) {
            return None;
        }
        let (tx, _) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(tx, 16).ok()
    })
}

/// What the server logs when it gives up on a peer that does not read.
const TOO_SLOW_LINE: &str = "does not read what it is sent";

/// A producer that keeps replacing its webcam: each round is a `producerClosed` and a
/// `newProducer` for every other receiving peer of the room. The `newProducer` carries the
/// producer's appData, padded here to 16 KiB so that a socket fills up in a few hundred rounds.
struct Churn {
    client: Client,
    transport: String,
    rounds: usize,
}

/// The server settings [`Churn`] needs: its appData is over the default limit, and it sends
/// its rounds back to back, over the default request rate.
const CHURN_LIMITS: &[(&str, &str)] = &[
    ("MEDIASOUP_MAX_APP_DATA_BYTES", "65536"),
    ("MEDIASOUP_REQUESTS_PER_SEC", "100000"),
    ("MEDIASOUP_REQUEST_BURST", "100000"),
];

impl Churn {
    async fn join(server: &Server, room: &str) -> Churn {
        let mut client = Client::connect(&server.url(room), "cccccccccccccccc").await;
        let joined = client.join().await;
        Churn {
            client,
            transport: joined.send,
            rounds: 0,
        }
    }

    /// One round; returns the new producer's id (its answer proves the server still serves).
    async fn round(&mut self) -> String {
        self.rounds += 1;
        let mut rtp_parameters = common::chromium_rtp_parameters("video");
        rtp_parameters["mid"] = json!(self.rounds.to_string());
        let ssrc = 500_000_000 + 4 * self.rounds as u64;
        for encoding in rtp_parameters["encodings"].as_array_mut().unwrap() {
            encoding["ssrc"] = json!(ssrc);
            if encoding.get("rtx").is_some() {
                encoding["rtx"]["ssrc"] = json!(ssrc + 1);
            }
        }
        let data = self
            .client
            .ok(
                "produce",
                json!({
                    "transportId": self.transport,
                    "kind": "video",
                    "rtpParameters": rtp_parameters,
                    "appData": {"mediaTag": "webcam", "userId": self.client.user_id, "pad": "x".repeat(16 * 1024)},
                }),
            )
            .await;
        data["id"].as_str().expect("producer id").to_owned()
    }

    /// Rounds until the server gives up on a peer that does not read; returns when it said so.
    async fn until_too_slow(&mut self, server: &Server) -> Instant {
        let until = Instant::now() + DEADLINE;
        loop {
            self.round().await;
            if server.log().iter().any(|l| l.contains(TOO_SLOW_LINE)) {
                return Instant::now();
            }
            assert!(
                Instant::now() < until,
                "a peer that reads nothing was still connected after {} rounds ({} notifications)",
                self.rounds,
                2 * self.rounds
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_dropped_while_the_others_are_served() {
    let server = Server::start(CHURN_LIMITS);
    let mut churn = Churn::join(&server, "/busy").await;
    // A normal peer reads everything it is sent, on its own task.
    let mut reader = Client::connect(&server.url("/busy"), "aaaaaaaaaaaaaaaa").await;
    reader.join().await;
    let announced = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reading = {
        let announced = announced.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return reader,
                    frame = reader.notification() => {
                        if frame["type"] == "newProducer" {
                            let id = frame["producerId"].as_str().unwrap_or_default().to_owned();
                            announced.lock().unwrap().push(id);
                        }
                    }
                }
            }
        })
    };
    // Two peers with both transports each; the metrics sink catches up on its own time.
    let gauges = [
        ("mediasoup_server_peers", 2.0),
        ("mediasoup_server_transports{direction=\"send\"}", 2.0),
        ("mediasoup_server_transports{direction=\"recv\"}", 2.0),
    ];
    for (series, value) in gauges {
        server.wait_metric(series, value);
    }

    let (_slow, slow_port) = join_then_stop_reading(&server, "/busy", "bbbbbbbbbbbbbbbb").await;
    server.wait_metric("mediasoup_server_peers", 3.0);
    assert!(server_end(&server, slow_port).is_some());

    let gave_up = churn.until_too_slow(&server).await;
    wait_until("the slow peer's socket to be closed", DEADLINE, || {
        server_end(&server, slow_port).is_none()
    });
    for (series, value) in gauges {
        server.wait_metric(series, value);
    }
    let took = gave_up.elapsed();
    eprintln!(
        "slow peer dropped {took:?} after the server gave up on it, after {} rounds",
        churn.rounds
    );
    // The server waits at most 1 s for the close frame; 5 s leaves room for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        server
            .log()
            .iter()
            .all(|l| !l.contains(TOO_SLOW_LINE) || l.contains("WARN")),
        "logged as a warning"
    );

    // The others are still served: the churning peer got every answer, and the reading peer
    // hears about the next producer.
    let latest = churn.round().await;
    wait_until(
        "the reading peer to hear of the latest producer",
        DEADLINE,
        || announced.lock().unwrap().contains(&latest),
    );
    assert_eq!(
        announced.lock().unwrap().len(),
        churn.rounds,
        "the reading peer got every newProducer"
    );
    let _ = stop.send(());
    let reader = reading.await.unwrap();
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_with_1008() {
    let server = Server::start(CHURN_LIMITS);
    let mut churn = Churn::join(&server, "/busy").await;
    let (mut slow, _) = join_then_stop_reading(&server, "/busy", "bbbbbbbbbbbbbbbb").await;
    churn.until_too_slow(&server).await;

    // Reading again at once, it gets what the server had written, then the close frame.
    let mut frames = 0;
    let close = loop {
        let frame = tokio::time::timeout(DEADLINE, slow.next())
            .await
            .expect("the server closes the socket in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("frame {frames} is not JSON ({e}): {text}"));
                assert!(
                    frame["type"] == "newProducer" || frame["type"] == "producerClosed",
                    "{frame}"
                );
                frames += 1;
            }
            Some(Ok(Message::Close(close))) => break close,
            other => panic!("no close frame after {frames} notifications: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert_eq!(
        close.reason.as_str(),
        "too slow: the connection did not read its notifications"
    );
    assert!(
        frames < 2 * churn.rounds,
        "what was queued for it was dropped, not sent: {frames} of {}",
        2 * churn.rounds
    );
    server.wait_metric("mediasoup_server_peers", 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_peer_that_does_not_read() {
    let server = Server::start(CHURN_LIMITS);
    let mut churn = Churn::join(&server, "/busy").await;
    let (_slow, slow_port) = join_then_stop_reading(&server, "/busy", "bbbbbbbbbbbbbbbb").await;

    // Fill its socket: the server's unsent bytes stop growing once the socket takes no more,
    // and from then on notifications wait in the server (well below the 512 that would drop
    // the peer).
    let mut last = 0;
    let mut flat = 0;
    let until = Instant::now() + DEADLINE;
    while flat < 20 {
        churn.round().await;
        let queued = server_end(&server, slow_port).expect("the slow peer is still connected");
        flat = if queued > 0 && queued == last {
            flat + 1
        } else {
            0
        };
        last = queued;
        assert!(
            Instant::now() < until,
            "the socket never filled up: {queued} bytes queued after {} rounds",
            churn.rounds
        );
    }
    assert!(
        !server.log().iter().any(|l| l.contains(TOO_SLOW_LINE)),
        "the peer must still be connected when the server stops"
    );

    let mut server = server;
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait_exit("SIGTERM"));
    let took = started.elapsed();
    eprintln!("shutdown with a peer that does not read took {took:?}");
    assert!(status.success(), "exit status {status}");
    let log = server.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("not every worker thread ended in time")),
        "{log:#?}"
    );
    // Before, the server waited 5 s for the peer's room to empty and 5 s more for the workers.
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}

/// `mediasoup-server healthcheck` against `listen`: its exit code and stderr.
fn healthcheck(listen: &str) -> (Option<i32>, String) {
    run_to_exit(
        Command::new(BIN)
            .arg("healthcheck")
            .env_clear()
            .env("MEDIASOUP_LISTEN_ADDR", listen)
            .env("MEDIASOUP_ANNOUNCED_IP", "127.0.0.1")
            .current_dir(std::env::temp_dir()),
        "healthcheck",
    )
}

#[test]
fn healthcheck_exits_0_only_while_the_server_is_ready() {
    let server = Server::start(&[]);
    let listen = server.addr.to_string();
    let wildcard = format!("0.0.0.0:{}", server.addr.port());
    assert_eq!(healthcheck(&listen).0, Some(0));
    // A wildcard listen address (the container default) is asked on loopback.
    assert_eq!(healthcheck(&wildcard).0, Some(0));

    let frozen = FrozenWorker::freeze(server.pid(), 0);
    server.wait_unready(0);
    let (code, stderr) = healthcheck(&listen);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not ready (503") && stderr.contains("worker 0"),
        "{stderr}"
    );
    frozen.thaw();
    server.wait_ready();
    assert_eq!(healthcheck(&listen).0, Some(0));

    drop(server);
    let (code, stderr) = healthcheck(&listen);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the server at"), "{stderr}");
}
