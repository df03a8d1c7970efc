//! Wires the server together: bus and sinks, workers, rooms, the two listeners, and shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn, Span};

use crate::bus::{
    BusBuilder, MediaPorts, RefusalReason, ServerReady, ServerStopped, ServerStopping,
    WorkerLogSuppressed,
};
use crate::config::Config;
use crate::health::Health;
use crate::http::{self, Body};
use crate::recording::Recorder;
use crate::rooms::{stats, Rooms, TransportSettings};
use crate::selftest::{self, SelfTest};
use crate::shutdown::{self, Shutdown};
use crate::signaling::admission::{Admission, ConnectionSlot};
use crate::signaling::{self, room_name, Signaling, MAX_FRAME_BYTES};
use crate::sinks;
use crate::telemetry;
use crate::workers::{check_media_ports, MediaPortInUse, SpawnError, WorkerPool};

/// Queue sizes of the sinks: generous, since a full queue loses events.
const LOG_QUEUE: usize = 8192;
const SYSTEMD_QUEUE: usize = 1024;
/// How long peers get to close on shutdown, and sinks to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("address {addr} is in use: set {variable} to a free address")]
    AddressInUse {
        addr: SocketAddr,
        variable: &'static str,
    },
    #[error("cannot listen on {addr}: {source}; check {variable}")]
    Bind {
        addr: SocketAddr,
        variable: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    MediaPortInUse(#[from] MediaPortInUse),
    #[error(transparent)]
    Workers(#[from] SpawnError),
    #[error("cannot start the recording writer thread: {0}")]
    Recorder(#[source] io::Error),
}

impl ServerError {
    /// The configuration must change before a restart can help (exit code 78, which the
    /// systemd unit does not restart on).
    pub fn is_configuration(&self) -> bool {
        matches!(self, ServerError::MediaPortInUse(_))
    }
}

/// Accept queue of the metrics listener (one Prometheus).
const METRICS_BACKLOG: u32 = 128;
/// Read buffer of a WebSocket: requests are small (the largest, `consume`, ~10 KiB, takes a few
/// reads), and the library's default 128 KiB would be held by every idle connection.
const WS_READ_BUFFER: usize = 4096;

fn bind(
    addr: SocketAddr,
    variable: &'static str,
    backlog: u32,
) -> Result<TcpListener, ServerError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        // As TcpListener::bind does: a restart can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServerError::AddressInUse { addr, variable }
        } else {
            ServerError::Bind {
                addr,
                variable,
                source,
            }
        }
    })
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let signal = shutdown_signal();
    run_until(config, signal).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the server until `stop` resolves.
pub async fn run_until(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let workers_configured = config.num_workers.get();
    let health = Health::new(workers_configured);

    let mut bus = BusBuilder::default();
    let log_events = bus.subscribe("log", LOG_QUEUE);
    let systemd_events = sinks::systemd::enabled().then(|| bus.subscribe("systemd", SYSTEMD_QUEUE));
    let bus = bus.build();

    let mut sink_tasks: Vec<JoinHandle<()>> = vec![tokio::spawn(sinks::log::run(log_events))];
    let metrics = Arc::new(sinks::prometheus::Metrics::new(
        workers_configured,
        bus.clone(),
        health.clone(),
    ));
    let observer: Arc<dyn crate::bus::Observer> = metrics.clone();
    bus.observe(&observer);
    if let Some(events) = systemd_events {
        sink_tasks.push(tokio::spawn(sinks::systemd::run(
            events,
            health.clone(),
            bus.census().clone(),
            workers_configured,
        )));
    }

    // Bind first: a taken port should fail before the workers start.
    let signaling_listener = bind(
        config.listen_addr,
        "MEDIASOUP_LISTEN_ADDR",
        config.listen_backlog,
    )?;
    let metrics_listener = bind(
        config.metrics_addr,
        "MEDIASOUP_METRICS_ADDR",
        METRICS_BACKLOG,
    )?;
    let listen = signaling_listener
        .local_addr()
        .unwrap_or(config.listen_addr);
    let metrics_addr = metrics_listener.local_addr().unwrap_or(config.metrics_addr);
    check_media_ports(&config)?;

    let workers = Arc::new(WorkerPool::spawn(&config, &bus, &health).await?);
    let recorder = match config.recording.clone() {
        Some(recording) => {
            Some(Recorder::start(recording, bus.clone()).map_err(ServerError::Recorder)?)
        }
        None => None,
    };
    let rooms = Arc::new(Rooms::new(
        workers.clone(),
        bus.clone(),
        config.limits.clone(),
        TransportSettings::from_config(&config),
        recorder.clone(),
    ));
    let signaling = Arc::new(Signaling::new(rooms.clone(), config.limits.clone()));
    let connections = signaling.connections();
    let admission = Admission::new(config.access.clone(), config.limits.clone(), bus.clone());
    let self_test = SelfTest::new(config.access.self_test, rooms.clone(), admission.clone());
    let (trigger, shutdown) = shutdown::channel();

    let background = [
        tokio::spawn(report_suppressed_worker_lines(bus.clone())),
        tokio::spawn(workers.clone().probe_forever(bus.clone())),
        tokio::spawn(stats::poll_forever(rooms.clone(), config.stats_interval)),
    ];
    let servers = [
        tokio::spawn(sinks::prometheus::serve(
            metrics,
            metrics_listener,
            shutdown.clone(),
        )),
        tokio::spawn(serve_signaling(
            signaling_listener,
            signaling,
            admission,
            self_test,
            health.clone(),
            shutdown.clone(),
        )),
    ];
    health.set_listeners_bound();
    bus.emit(
        &Span::none(),
        ServerReady {
            listen,
            metrics: metrics_addr,
            workers: workers_configured,
            announced: config.announced_address.clone(),
            token_required: config.access.secret.is_some(),
            media_ports: media_ports(&config),
        },
    );

    stop.await;

    bus.emit(&Span::none(), ServerStopping);
    // The one shutdown path: every connection sees the trigger, closes with 1001 and leaves.
    trigger.trigger();
    if !connections.wait_idle(DRAIN_TIMEOUT).await {
        warn!(
            open = connections.count(),
            "not every connection closed within {DRAIN_TIMEOUT:?}"
        );
    }
    for task in background.into_iter().chain(servers) {
        task.abort();
        let _ = task.await;
    }
    // Closing the last handles closes the workers; wait for their threads to end.
    let exits = workers.exits();
    drop(rooms);
    drop(workers);
    // The rooms closed their recordings: their last pages are written before the process ends.
    if let Some(recorder) = recorder {
        let flushed = tokio::task::spawn_blocking(move || recorder.flush(DRAIN_TIMEOUT)).await;
        if !matches!(flushed, Ok(true)) {
            warn!("recordings were not all written out within {DRAIN_TIMEOUT:?}");
        }
    }
    let ended = exits.wait(DRAIN_TIMEOUT).await;
    if ended < workers_configured {
        warn!(
            ended,
            workers = workers_configured,
            "not every worker thread ended in time"
        );
    }
    bus.emit(&Span::none(), ServerStopped);
    for task in sink_tasks {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, task).await;
    }
    Ok(())
}

fn media_ports(config: &Config) -> MediaPorts {
    let last_worker = config.num_workers.get() - 1;
    match (config.media_port(0), config.media_port(last_worker)) {
        (Some(first), Some(last)) => MediaPorts::Single { first, last },
        _ => MediaPorts::Range {
            first: *config.rtc_ports.start(),
            last: *config.rtc_ports.end(),
        },
    }
}

/// Reports the worker log lines the log rate limit dropped, every 10 s at most.
async fn report_suppressed_worker_lines(bus: crate::bus::Bus) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        let lines = telemetry::take_suppressed_worker_lines();
        if lines > 0 {
            bus.emit(&Span::none(), WorkerLogSuppressed { lines });
        }
    }
}

async fn serve_signaling(
    listener: TcpListener,
    signaling: Arc<Signaling>,
    admission: Arc<Admission>,
    self_test: Arc<SelfTest>,
    health: Health,
    shutdown: Shutdown,
) {
    let connection_shutdown = shutdown.clone();
    let connection_admission = admission.clone();
    let handler = move |request: Request<Incoming>| {
        let (signaling, admission, self_test, health, shutdown) = (
            signaling.clone(),
            connection_admission.clone(),
            self_test.clone(),
            health.clone(),
            connection_shutdown.clone(),
        );
        async move { route(request, signaling, admission, self_test, health, shutdown) }
    };
    http::serve(listener, handler, shutdown, Some(admission)).await;
}

fn route(
    request: Request<Incoming>,
    signaling: Arc<Signaling>,
    admission: Arc<Admission>,
    self_test: Arc<SelfTest>,
    health: Health,
    shutdown: Shutdown,
) -> Response<Body> {
    let is_upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match (request.method(), request.uri().path(), is_upgrade) {
        (&Method::GET, "/healthz", false) => {
            if health.workers_alive() {
                http::text(StatusCode::OK, "ok\n")
            } else {
                http::text(StatusCode::SERVICE_UNAVAILABLE, "a mediasoup worker died\n")
            }
        }
        (&Method::GET, "/readyz", false) => {
            let failing = health.failing_checks();
            if failing.is_empty() {
                http::json(StatusCode::OK, &json!({ "ready": true, "failing": [] }))
            } else {
                http::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "ready": false, "failing": failing }),
                )
            }
        }
        (&Method::GET, "/selftest/session", false) if self_test.enabled() => {
            let peer = request
                .extensions()
                .get::<Arc<ConnectionSlot>>()
                .map(|slot| slot.peer());
            match peer {
                Some(peer) => self_test.session(peer, request.headers()),
                None => http::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "connection not admitted\n",
                ),
            }
        }
        (&Method::GET, path, false) if path == "/" || path.starts_with("/selftest/") => self_test
            .file(path)
            .unwrap_or_else(|| {
                let why = if self_test.enabled() {
                    "not found\n"
                } else {
                    "the self-test page is off on this server (MEDIASOUP_SELF_TEST=off)\n"
                };
                http::text(StatusCode::NOT_FOUND, why)
            }),
        (&Method::GET, _, true) => upgrade(request, signaling, admission, self_test, shutdown),
        _ => http::text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a MediaSoupVTT signaling server: connect with a WebSocket to ws://host:port/<room>\n",
        ),
    }
}

/// Accepts the WebSocket handshake (Origin, room token, per-client limit) and hands the
/// connection to signaling.
fn upgrade(
    request: Request<Incoming>,
    signaling: Arc<Signaling>,
    admission: Arc<Admission>,
    self_test: Arc<SelfTest>,
    shutdown: Shutdown,
) -> Response<Body> {
    let room = match room_name::from_path(request.uri().path()) {
        Ok(room) => room,
        Err(reason) => return http::text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
    };
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return http::text(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key header\n",
        );
    };
    let Some(slot) = request.extensions().get::<Arc<ConnectionSlot>>().cloned() else {
        return http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection not admitted\n",
        );
    };
    let client = admission.client_address(slot.peer(), request.headers());
    let (headers, query) = (request.headers(), request.uri().query());
    // A self-test room: minted by the page's session request, and held only while its WebSocket is.
    let admitted = if self_test.enabled() && selftest::is_self_test_room(&room) {
        self_test.admit(&room, headers, query).map(Some)
    } else {
        admission
            .check_request(&room, headers, query)
            .map(|()| None)
    };
    let self_test_place = match admitted.and_then(|place| slot.attribute(client).map(|()| place)) {
        Ok(place) => place,
        Err(refusal) => return http::text(refusal.status(), refusal.message()),
    };
    let accept = derive_accept_key(key.as_bytes());
    let handshake_timeout = admission.limits().handshake_timeout;
    tokio::spawn(async move {
        let upgraded = tokio::time::timeout(handshake_timeout, hyper::upgrade::on(request)).await;
        match upgraded {
            Err(_) => {
                admission.refused(RefusalReason::HandshakeTimeout);
            }
            Ok(Ok(upgraded)) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_FRAME_BYTES))
                    .max_frame_size(Some(MAX_FRAME_BYTES))
                    .read_buffer_size(WS_READ_BUFFER)
                    // Each frame is flushed as it is sent; nothing to gather.
                    .write_buffer_size(0);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                signaling::serve(ws, room, signaling, shutdown).await;
                // The connection's place is free once the peer is gone.
                drop(slot);
                drop(self_test_place);
            }
            Ok(Err(error)) => debug!(%error, "WebSocket upgrade failed"),
        }
    });
    let mut response = http::text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.remove(hyper::header::CONTENT_TYPE);
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
