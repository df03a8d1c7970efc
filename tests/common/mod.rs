//! Test harness: runs the real server binary (real mediasoup workers) on free loopback ports and
//! talks to it the way MediaSoupVTT does.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream as AsyncTcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_mediasoup-server");

/// Lets this process (and the server it starts, which inherits the limit) hold thousands of
/// connections: the soft limit of open files raised to the hard one.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Generous: the first start of a worker can take a moment on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Every port a test hands the server lies below the kernel's ephemeral range (32768 up on
/// Linux), where no client connection of a parallel test can take it between the probe and the
/// server's bind (a port probed free from the ephemeral range can be taken by any `connect`).
/// Signaling and metrics ports: 20000-29999; RTC ranges: 30000-32759; single media ports:
/// 10000-19999.
const EPHEMERAL_PORTS_START: u16 = 32768;

/// A loopback TCP port that is free now, from 20000-29999, starting at a different place per
/// test process and never handed out twice by one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    free_ports_in(20_000..30_000, 1, &NEXT, |port| {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// The first of `count` consecutive ports of `window` that `is_free` accepts. Parallel test
/// processes start at different places (by pid) and each moves on at every call, so two of them
/// rarely probe the same ports at once.
fn free_ports_in(
    window: std::ops::Range<u16>,
    count: u16,
    next: &AtomicU16,
    is_free: impl Fn(u16) -> bool,
) -> u16 {
    let starts = u32::from(window.end - window.start - count + 1);
    let own = std::process::id() % starts;
    for _ in 0..starts {
        let offset = u32::from(next.fetch_add(count, Ordering::Relaxed));
        let first = window.start + ((own + offset) % starts) as u16;
        if (first..first + count).all(&is_free) {
            return first;
        }
    }
    panic!(
        "no {count} free consecutive ports in {}-{}",
        window.start,
        window.end - 1
    );
}

/// A distinct RTC port range per server within one test binary.
fn rtc_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % ((EPHEMERAL_PORTS_START - 30_000) / 40);
    let min = 30_000 + n * 40;
    (min, min + 39)
}

/// How the server under test receives media (README, "Firewall").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// A UDP and a TCP port per transport from the RTC port range (the default).
    Range,
    /// One UDP and one TCP port per worker (`MEDIASOUP_RTC_PORT`), shared by its transports.
    SinglePort,
}

/// Defines a test once for both media modes: a module `$name` with the tests `range` and
/// `single_port`, each running the body with `$media` set to its [`Media`]. What the body
/// checks must hold however media is received.
#[macro_export]
macro_rules! in_both_media_modes {
    ($(#[$attr:meta])* async fn $name:ident($media:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn range() {
                test($crate::common::Media::Range).await
            }

            $(#[$attr])*
            async fn single_port() {
                test($crate::common::Media::SinglePort).await
            }

            async fn test($media: $crate::common::Media) $body
        }
    };
}

/// `count` consecutive ports free for UDP and TCP on every address, for `MEDIASOUP_RTC_PORT`:
/// from 10000-19999 (outside the test ranges of [`rtc_range`] and the default range), starting
/// at a different place per test process.
pub fn free_media_ports(count: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    free_ports_in(10_000..20_000, count, &NEXT, |port| {
        std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
    })
}

/// `0100007F:2710` (as /proc/net/tcp and udp print it) -> 127.0.0.1, 10000.
pub fn parse_endpoint(text: &str) -> Option<(Ipv4Addr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    Some((
        Ipv4Addr::from(ip.to_ne_bytes()),
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// The sockets process `pid` has open: (descriptor, inode) pairs.
pub fn socket_fds(pid: i32) -> Vec<(i32, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| {
                    let target = std::fs::read_link(fd.path()).ok()?;
                    let inode = target
                        .to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()?;
                    Some((fd.file_name().to_str()?.parse().ok()?, inode))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The inodes of the sockets process `pid` has open.
pub fn socket_inodes(pid: i32) -> Vec<u64> {
    socket_fds(pid)
        .into_iter()
        .map(|(_, inode)| inode)
        .collect()
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sends a WebSocket upgrade request for `target` (path and query) with `headers` on a fresh
/// connection and returns the response's status and body (empty for 101).
pub fn upgrade_status(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    read_response(&mut stream)
}

/// Reads one HTTP response head and its `Content-Length` body: (status, body).
pub fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub rtc_ports: (u16, u16),
    /// Single-port mode: worker 0's media port (worker i has this + i).
    pub media_port: Option<u16>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with test defaults overridden by `env`, and waits until it is ready.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let server = Server::spawn(env);
        server.wait_ready();
        server
    }

    /// Like [`start`](Self::start), receiving media as `media` says.
    pub fn start_in(media: Media, env: &[(&str, &str)]) -> Server {
        let server = Server::spawn_in(media, env);
        server.wait_ready();
        server
    }

    /// Starts the server without waiting.
    pub fn spawn(env: &[(&str, &str)]) -> Server {
        Server::spawn_in(Media::Range, env)
    }

    /// Starts the server without waiting, receiving media as `media` says.
    pub fn spawn_in(media: Media, env: &[(&str, &str)]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rtc_ports = rtc_range();
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MEDIASOUP_LISTEN_ADDR", addr.to_string())
            .env("MEDIASOUP_METRICS_ADDR", metrics.to_string())
            .env("MEDIASOUP_ANNOUNCED_IP", "127.0.0.1")
            .env("MEDIASOUP_RTC_MIN_PORT", rtc_ports.0.to_string())
            .env("MEDIASOUP_RTC_MAX_PORT", rtc_ports.1.to_string())
            .env("RUST_LOG", "info")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let media_port = (media == Media::SinglePort).then(|| {
            let workers = env
                .iter()
                .find(|(key, _)| *key == "MEDIASOUP_NUM_WORKERS")
                .map_or(1, |(_, value)| value.parse().expect("a number of workers"));
            free_media_ports(workers)
        });
        if let Some(port) = media_port {
            command.env("MEDIASOUP_RTC_PORT", port.to_string());
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start mediasoup-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            addr,
            metrics,
            rtc_ports,
            media_port,
            log,
        }
    }

    /// Waits for `/readyz` to answer 200; on timeout, fails with what `/readyz` last said and
    /// the server's log, so that a start that never became ready shows why.
    pub fn wait_ready(&self) {
        let until = Instant::now() + DEADLINE;
        loop {
            let readyz = http_get(self.addr, "/readyz");
            if matches!(readyz, Ok((200, _))) {
                return;
            }
            let exited =
                std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).is_ok_and(|stat| {
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('Z'))
                });
            assert!(
                !exited && Instant::now() < until,
                "the server {} instead of becoming ready; /readyz: {readyz:?}; its log:\n{}",
                if exited { "exited" } else { "timed out" },
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `/readyz` to fail naming worker `index`.
    pub fn wait_unready(&self, index: usize) {
        let check = format!("worker {index}");
        wait_until(
            &format!("/readyz to report {check}"),
            DEADLINE,
            || matches!(http_get(self.addr, "/readyz"), Ok((503, body)) if body.contains(&check)),
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}{}", self.addr, room)
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The value of one series in a scrape, e.g. `mediasoup_server_peers` or
    /// `mediasoup_server_producers{kind="audio"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.scrape(), series)
            .unwrap_or_else(|| panic!("series {series} not in the scrape"))
    }

    /// Waits for a series to reach `value`.
    pub fn wait_metric(&self, series: &str, value: f64) {
        wait_until(&format!("{series} == {value}"), DEADLINE, || {
            metric_value(&self.scrape(), series) == Some(value)
        });
    }

    /// Waits for a series to reach at least `min` (counters that other events also raise).
    pub fn wait_metric_at_least(&self, series: &str, min: f64) {
        wait_until(&format!("{series} >= {min}"), DEADLINE, || {
            metric_value(&self.scrape(), series).is_some_and(|value| value >= min)
        });
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit("SIGTERM")
    }

    /// Waits for the process to exit after `cause`.
    pub fn wait_exit(&mut self, cause: &str) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < until, "server did not exit after {cause}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A series as name plus sorted labels, so that label order does not matter.
fn parse_series(series: &str) -> (String, Vec<String>) {
    match series.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            labels.sort();
            (name.to_owned(), labels)
        }
        None => (series.to_owned(), Vec::new()),
    }
}

pub fn metric_value(scrape: &str, series: &str) -> Option<f64> {
    let wanted = parse_series(series);
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        if parse_series(name) != wanted {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// The ICE candidates of a `transportCreated` answer, which must offer both UDP and TCP.
pub fn udp_and_tcp_candidates(transport: &Value) -> &Vec<Value> {
    let candidates = transport["iceCandidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no iceCandidates in {transport}"));
    let protocols: Vec<&str> = candidates
        .iter()
        .filter_map(|c| c["protocol"].as_str())
        .collect();
    assert!(
        protocols.contains(&"udp") && protocols.contains(&"tcp"),
        "UDP and TCP candidates expected: {transport}"
    );
    candidates
}

/// The fields of a `createWebRtcTransport` for the producing transport.
pub fn producing() -> Value {
    json!({"producing": true, "consuming": false})
}

/// Chromium's RTP parameters for its microphone and webcam producers, captured from a real
/// browser by the e2e test.
pub fn chromium_rtp_parameters(kind: &str) -> Value {
    let fixture: Value =
        serde_json::from_str(include_str!("../fixtures/chromium-rtp-parameters.json"))
            .expect("fixture is JSON");
    fixture[kind].clone()
}

/// DTLS parameters a browser would send (the transport does not connect in these tests).
pub fn dtls_parameters() -> Value {
    json!({
        "role": "client",
        "fingerprints": [{
            "algorithm": "sha-256",
            "value": "82:5A:68:3D:36:C3:0A:DE:AF:E7:32:43:D2:88:83:57:AC:2D:65:E5:80:C4:B6:FB:AF:1A:A0:21:9F:6D:0C:AD"
        }]
    })
}

/// The RTP capabilities a Chromium-based client announces (opus + VP8 is enough to consume).
pub fn client_rtp_capabilities() -> Value {
    json!({
        "codecs": [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
             "preferredPayloadType": 100, "parameters": {}, "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
            {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 101,
             "parameters": {}, "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                                                 {"type": "ccm", "parameter": "fir"}, {"type": "goog-remb", "parameter": ""}]},
            {"kind": "video", "mimeType": "video/rtx", "clockRate": 90000, "preferredPayloadType": 102,
             "parameters": {"apt": 101}, "rtcpFeedback": []}
        ],
        "headerExtensions": []
    })
}

pub type Ws = WebSocketStream<MaybeTlsStream<AsyncTcpStream>>;

/// How [`Client::has_notification_within`] fails on a dead connection.
const QUIET_CHECK_ON_CLOSED: &str = "socket closed while checking that no notification arrives";

/// A WebSocket client that speaks PROTOCOL.md as the module does.
pub struct Client {
    ws: Ws,
    pub user_id: String,
    next_request: u64,
    next_mid: u32,
    /// Frames received while waiting for something else.
    pending: VecDeque<Value>,
}

impl Client {
    pub async fn connect(url: &str, user_id: &str) -> Client {
        Client::connect_with(url, user_id, &[]).await
    }

    /// Connects with extra request headers (`Origin`, `X-Forwarded-For`).
    pub async fn connect_with(url: &str, user_id: &str, headers: &[(&str, &str)]) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderName;
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client::from_ws(ws, user_id)
    }

    /// A client on a WebSocket the caller opened itself.
    pub fn from_ws(ws: Ws, user_id: &str) -> Client {
        Client {
            ws,
            user_id: user_id.to_owned(),
            next_request: 0,
            next_mid: 0,
            pending: VecDeque::new(),
        }
    }

    /// The WebSocket itself, for tests that need frames the protocol never sends.
    pub fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.ws.send(frame).await.expect("send frame");
    }

    /// The next frame from the server, `None` once the socket closed. Pings do not count: the
    /// deadline is for a text frame.
    async fn next_frame(&mut self) -> Option<Value> {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let frame = tokio::time::timeout_at(until, self.ws.next())
                .await
                .expect("a frame from the server in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"))
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends `{"type": kind, "requestId": "req_<n>", "userId", ...fields}` and returns the answer
    /// (`{type, requestId, data}` or `{requestId, error}`).
    pub async fn request(&mut self, kind: &str, fields: Value) -> Value {
        let request_id = format!("req_{}", self.next_request);
        self.next_request += 1;
        let mut request = json!({ "type": kind, "requestId": request_id, "userId": self.user_id });
        if let Value::Object(fields) = fields {
            request.as_object_mut().unwrap().extend(fields);
        }
        self.send_raw(Message::text(request.to_string())).await;
        self.answer(&request_id).await
    }

    /// Waits for the frame answering `request_id`, keeping notifications for later.
    pub async fn answer(&mut self, request_id: &str) -> Value {
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("socket open while waiting for an answer");
            if frame["requestId"] == request_id {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Like [`request`](Self::request), but expects success and returns `data`.
    pub async fn ok(&mut self, kind: &str, fields: Value) -> Value {
        let answer = self.request(kind, fields).await;
        assert!(answer.get("error").is_none(), "{kind} failed: {answer}");
        answer["data"].clone()
    }

    /// Like [`request`](Self::request), but expects an error and returns its message.
    pub async fn error(&mut self, kind: &str, fields: Value) -> String {
        let answer = self.request(kind, fields).await;
        answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} should have failed: {answer}"))
            .to_owned()
    }

    /// The next frame without a requestId (a notification or an `error` frame).
    pub async fn notification(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.next_frame()
            .await
            .expect("socket open while waiting for a notification")
    }

    /// The next notification of type `kind`, skipping others.
    pub async fn notification_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.notification().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The first notification that arrives within `wait`, or `None` when none did (for asserting
    /// that none does). "None" is believed only of a live connection: the socket closing or
    /// failing meanwhile panics, and after the quiet period a `getRouterRtpCapabilities` round
    /// trip proves that the server still answers this connection (a notification that arrives
    /// before that answer is returned). That request counts in the signaling metrics like any.
    pub async fn has_notification_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if let Some(frame) = self
            .live_frame_until(tokio::time::Instant::now() + wait)
            .await
        {
            return Some(frame);
        }
        let request_id = format!("req_{}", self.next_request);
        self.next_request += 1;
        let request = json!({"type": "getRouterRtpCapabilities", "requestId": request_id, "userId": self.user_id});
        if let Err(error) = self.ws.send(Message::text(request.to_string())).await {
            panic!("{QUIET_CHECK_ON_CLOSED}: {error}");
        }
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let frame = self
                .live_frame_until(until)
                .await
                .expect("the server answers within the deadline after a quiet period");
            if frame["requestId"] == request_id {
                return self.pending.pop_front();
            }
            self.pending.push_back(frame);
        }
    }

    /// The next text frame before `until` (`None` once it passed); panics when the socket closes
    /// or fails.
    async fn live_frame_until(&mut self, until: tokio::time::Instant) -> Option<Value> {
        loop {
            let frame = match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => return None,
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"))
                }
                Some(Ok(Message::Close(close))) => panic!("{QUIET_CHECK_ON_CLOSED}: {close:?}"),
                None => panic!("{QUIET_CHECK_ON_CLOSED}: the stream ended"),
                Some(Err(error)) => panic!("{QUIET_CHECK_ON_CLOSED}: {error}"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for the server to close the socket; returns the close frame's code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let frame = tokio::time::timeout_at(until, self.ws.next())
                .await
                .expect("socket closed in time");
            match frame {
                Some(Ok(Message::Close(Some(close)))) => {
                    return (close.code.into(), close.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The module's join: capabilities, producing transport, consuming transport. Returns the
    /// transports' ids and the notifications that followed the consuming transport.
    pub async fn join(&mut self) -> Joined {
        let caps = self.ok("getRouterRtpCapabilities", json!({})).await;
        assert!(
            caps["codecs"].as_array().is_some_and(|c| !c.is_empty()),
            "{caps}"
        );
        let send = self
            .ok("createWebRtcTransport", json!({"forceTcp": false, "producing": true, "consuming": false,
                                                 "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}}))
            .await;
        let recv = self
            .ok("createWebRtcTransport", json!({"forceTcp": false, "producing": false, "consuming": true,
                                                 "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}}))
            .await;
        Joined {
            send: send["id"].as_str().expect("transport id").to_owned(),
            recv: recv["id"].as_str().expect("transport id").to_owned(),
            recv_transport: recv,
        }
    }

    /// Produces `kind` (Chromium's parameters, with a fresh MID and SSRCs as a browser uses for
    /// each new track) with `mediaTag` `tag`; returns the producer id.
    pub async fn produce(&mut self, transport: &str, kind: &str, tag: &str) -> String {
        self.produce_with(transport, kind, tag, chromium_rtp_parameters(kind))
            .await
    }

    /// Like [`produce`](Self::produce), with `rtp_parameters` in place of Chromium's (their MID
    /// and SSRCs are replaced the same way).
    pub async fn produce_with(
        &mut self,
        transport: &str,
        kind: &str,
        tag: &str,
        mut rtp_parameters: Value,
    ) -> String {
        static NEXT_SSRC: AtomicU32 = AtomicU32::new(1_000_000);
        rtp_parameters["mid"] = json!(self.next_mid.to_string());
        self.next_mid += 1;
        for encoding in rtp_parameters["encodings"]
            .as_array_mut()
            .expect("encodings")
        {
            encoding["ssrc"] = json!(NEXT_SSRC.fetch_add(2, Ordering::Relaxed));
            if encoding.get("rtx").is_some() {
                encoding["rtx"]["ssrc"] = json!(NEXT_SSRC.fetch_add(2, Ordering::Relaxed));
            }
        }
        let data = self
            .ok(
                "produce",
                json!({
                    "transportId": transport,
                    "kind": kind,
                    "rtpParameters": rtp_parameters,
                    "appData": {"mediaTag": tag, "userId": self.user_id},
                }),
            )
            .await;
        data["id"].as_str().expect("producer id").to_owned()
    }
}

pub struct Joined {
    pub send: String,
    pub recv: String,
    pub recv_transport: Value,
}

/// On a server with two workers: room `/a` on worker 0 with one peer, room `/c` on worker 1 with
/// two, so that placement by load alone would put the next room on worker 0. Returns a's peer
/// and c's two peers.
pub async fn rooms_on_two_workers(server: &Server) -> (Client, Client, Client) {
    let mut a = Client::connect(&server.url("/a"), "aaaaaaaaaaaaaaaa").await;
    a.ok("getRouterRtpCapabilities", json!({})).await;
    let mut c1 = Client::connect(&server.url("/c"), "cccccccccccccccc").await;
    c1.ok("getRouterRtpCapabilities", json!({})).await;
    let mut c2 = Client::connect(&server.url("/c"), "dddddddddddddddd").await;
    c2.ok("getRouterRtpCapabilities", json!({})).await;
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"0\"}", 1.0);
    server.wait_metric("mediasoup_server_worker_rooms{worker=\"1\"}", 1.0);
    (a, c1, c2)
}

/// Collects the next `n` notifications of type `kind`.
pub async fn notifications(client: &mut Client, kind: &str, n: usize) -> Vec<Value> {
    let mut found = Vec::new();
    while found.len() < n {
        found.push(client.notification_of(kind).await);
    }
    found
}

/// The thread id of worker `index` of server process `pid`. Each worker is one thread, named
/// `mediasoup-worker-<id>`, and the workers are spawned one after the other, so the index-th
/// such thread by thread id is worker `index`.
pub fn worker_thread(pid: i32, index: usize) -> i32 {
    let mut threads: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid: i32 = t.file_name().to_string_lossy().parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            comm.starts_with("mediasoup-worke").then_some(tid)
        })
        .collect();
    threads.sort_unstable();
    *threads
        .get(index)
        .unwrap_or_else(|| panic!("no thread for worker {index} among {threads:?}"))
}

/// Stops one worker's thread with ptrace, as a hang would; `thaw` (or dropping it) resumes it.
/// ptrace must be driven from one thread, hence the helper thread.
pub struct FrozenWorker {
    release: std::sync::mpsc::Sender<()>,
    done: std::thread::JoinHandle<()>,
}

impl FrozenWorker {
    /// Freezes worker `index` of server process `pid` (see [`worker_thread`]).
    pub fn freeze(pid: i32, index: usize) -> FrozenWorker {
        let tid = worker_thread(pid, index);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (frozen, is_frozen) = std::sync::mpsc::channel::<()>();
        let done = std::thread::spawn(move || {
            // SAFETY: plain ptrace(2) calls on a thread of our own child process.
            unsafe {
                assert_eq!(
                    libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                    0,
                    "PTRACE_SEIZE {tid}: {}",
                    std::io::Error::last_os_error()
                );
                assert_eq!(
                    libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0),
                    0,
                    "PTRACE_INTERRUPT"
                );
                let mut status = 0;
                libc::waitpid(tid, &mut status, libc::__WALL);
            }
            frozen.send(()).unwrap();
            let _ = released.recv();
            // SAFETY: as above; the thread is in a ptrace stop.
            unsafe {
                libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            }
        });
        is_frozen.recv().expect("worker frozen");
        FrozenWorker { release, done }
    }

    pub fn thaw(self) {
        self.release.send(()).unwrap();
        self.done.join().unwrap();
    }
}
