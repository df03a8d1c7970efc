//! The mediasoup workers: spawned at start-up, probed periodically, and picked for new rooms.
//!
//! Placement rule: a new room goes to the live worker hosting the fewest peers; ties go to the
//! one with fewer rooms, then to the lowest index. A worker that missed its last health probe
//! gets a new room only when no other live worker answered. A room stays on its worker for its
//! lifetime.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediasoup::prelude::*;
use mediasoup::worker::{CreateWebRtcServerError, WorkerSettings};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, MissedTickBehavior};
use tracing::Span;

use crate::bus::{Bus, WorkerClosed, WorkerDied, WorkerProbed, WorkerSpawned};
use crate::config::Config;
use crate::fatal_signal;
use crate::health::Health;
use crate::rooms::{listen_info, MediaPort};

/// How often each worker is asked a cheap question, and how long it has to answer.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a signaling request, or the router of a new room, waits for its worker. A hung
/// worker then costs its own peers an error instead of a stuck connection, while the health
/// probe fails readiness and stops the systemd watchdog pings.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One worker and its current load.
pub struct PoolWorker {
    pub index: usize,
    pub worker: Worker,
    /// Single-port mode: the worker's one UDP and TCP media port, shared by all its
    /// transports. Held here, beside the worker, so that it lives as long as the worker and
    /// every room (which holds its `PoolWorker` through its `Placement`); closed on drop.
    pub webrtc_server: Option<WebRtcServer>,
    peers: AtomicUsize,
    rooms: AtomicUsize,
    /// Its transports' DTLS parameters as JSON, with the parameters it was written from: a
    /// worker has one certificate, so they are the same for all its transports, and their five
    /// fingerprints take longer to write than the rest of a transport's answer.
    dtls_json: Mutex<Option<(DtlsParameters, Arc<RawValue>)>>,
}

impl PoolWorker {
    /// `parameters` (of one of this worker's transports) as JSON: written by `serialize`, and
    /// reused while the parameters are the same.
    pub fn dtls_json(
        &self,
        parameters: DtlsParameters,
        serialize: impl FnOnce(&DtlsParameters) -> Arc<RawValue>,
    ) -> Arc<RawValue> {
        let mut known = self.dtls_json.lock().unwrap_or_else(|e| e.into_inner());
        match &*known {
            Some((written, json)) if *written == parameters => Arc::clone(json),
            _ => {
                let json = serialize(&parameters);
                *known = Some((parameters, Arc::clone(&json)));
                json
            }
        }
    }
}

/// Counts a room (and its peers) against a worker while it lives.
pub struct Placement {
    worker: Arc<PoolWorker>,
}

impl Placement {
    pub fn worker(&self) -> &Arc<PoolWorker> {
        &self.worker
    }

    pub fn peer_added(&self) {
        self.worker.peers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn peer_removed(&self) {
        self.worker.peers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.worker.rooms.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct WorkerPool {
    workers: Vec<Arc<PoolWorker>>,
    /// Whether each worker is alive and answering, for placement.
    health: Health,
    // Owns the executor the workers' channels run on: dropped last.
    _manager: WorkerManager,
    exits: WorkerExits,
}

thread_local! {
    /// Set on each worker thread; dropped (and so reported) when the thread ends.
    static THREAD_EXIT: RefCell<Option<ThreadExit>> = const { RefCell::new(None) };
}

struct ThreadExit(mpsc::UnboundedSender<()>);

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Learns when the worker threads have ended. The process must not exit before: the worker's
/// C++ statics are torn down at exit, under any worker thread still running.
#[derive(Clone)]
pub struct WorkerExits {
    spawned: usize,
    ended: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>>,
    sender: mpsc::UnboundedSender<()>,
}

impl WorkerExits {
    fn new(spawned: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        WorkerExits {
            spawned,
            ended: Arc::new(tokio::sync::Mutex::new(receiver)),
            sender,
        }
    }

    /// Runs first on the thread of worker `index`.
    fn thread_initializer(&self, index: usize) -> Arc<dyn Fn() + Send + Sync> {
        let sender = self.sender.clone();
        Arc::new(move || {
            THREAD_EXIT.with(|exit| *exit.borrow_mut() = Some(ThreadExit(sender.clone())));
            fatal_signal::mark_worker_thread(index);
        })
    }

    /// Waits until every worker thread has ended, or `deadline` passed; returns how many ended.
    pub async fn wait(&self, deadline: Duration) -> usize {
        let mut ended = self.ended.lock().await;
        let mut count = 0;
        let until = tokio::time::Instant::now() + deadline;
        while count < self.spawned {
            match tokio::time::timeout_at(until, ended.recv()).await {
                Ok(Some(())) => count += 1,
                _ => break,
            }
        }
        count
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("could not start mediasoup worker {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
    /// Not a configuration error: [`check_media_ports`] found the port free just before.
    #[error(
        "mediasoup worker {index} could not listen on media port {addr} (UDP and TCP): {source}"
    )]
    WebRtcServer {
        index: usize,
        addr: SocketAddr,
        source: CreateWebRtcServerError,
    },
}

/// A single-port media port another process (or a second server) already holds.
#[derive(Debug, thiserror::Error)]
#[error("media port {port}/{protocol} on {ip} is in use: set MEDIASOUP_RTC_PORT to a free port{which}, or stop what holds it", which = worker_offset(*.worker))]
pub struct MediaPortInUse {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub worker: usize,
}

/// Says which worker's port it was, when not the first's.
fn worker_offset(worker: usize) -> String {
    match worker {
        0 => String::new(),
        _ => format!(" (worker {worker} listens on MEDIASOUP_RTC_PORT + {worker})"),
    }
}

/// In single-port mode, binds each worker's UDP and TCP port for a moment, the way the worker
/// will, so that a taken one stops start-up with a clear message before any worker starts (the
/// worker reports it only as text). Other bind errors are left to the worker to report.
pub fn check_media_ports(config: &Config) -> Result<(), MediaPortInUse> {
    for worker in 0..config.num_workers.get() {
        let Some(port) = config.media_port(worker) else {
            return Ok(());
        };
        let addr = SocketAddr::new(config.rtc_listen_ip, port);
        let in_use = |result: std::io::Result<()>| matches!(result, Err(error) if error.kind() == std::io::ErrorKind::AddrInUse);
        let taken = if in_use(std::net::UdpSocket::bind(addr).map(drop)) {
            Some("udp")
        } else if in_use(std::net::TcpListener::bind(addr).map(drop)) {
            Some("tcp")
        } else {
            None
        };
        if let Some(protocol) = taken {
            return Err(MediaPortInUse {
                ip: config.rtc_listen_ip,
                port,
                protocol,
                worker,
            });
        }
    }
    Ok(())
}

/// One UDP and one TCP listener on `addr`, UDP first (the preferred candidates), announcing
/// the configured address like the per-transport sockets of range mode.
fn webrtc_server_options(
    addr: SocketAddr,
    announced_address: Option<String>,
) -> WebRtcServerOptions {
    let listen = |protocol| {
        listen_info(
            protocol,
            addr.ip(),
            announced_address.clone(),
            MediaPort::Fixed(addr.port()),
        )
    };
    WebRtcServerOptions::new(
        WebRtcServerListenInfos::new(listen(Protocol::Udp)).insert(listen(Protocol::Tcp)),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("no mediasoup worker is alive: restart the server (see the log for why they died)")]
pub struct NoWorkerAlive;

impl WorkerPool {
    pub async fn spawn(config: &Config, bus: &Bus, health: &Health) -> Result<Self, SpawnError> {
        let manager = WorkerManager::new();
        let exits = WorkerExits::new(config.num_workers.get());
        let mut workers = Vec::with_capacity(config.num_workers.get());
        for index in 0..config.num_workers.get() {
            // No `rtc_port_range`: every listen info names its port or range itself, and the
            // worker reads its own range only for listen infos that name neither.
            let mut settings = WorkerSettings::default();
            settings.log_level = config.worker_log_level;
            settings.log_tags = config.worker_log_tags.clone();
            settings.thread_initializer = Some(exits.thread_initializer(index));
            let worker = manager
                .create_worker(settings)
                .await
                .map_err(|source| SpawnError::Worker { index, source })?;
            let media_port = config.media_port(index);
            let webrtc_server = match media_port {
                None => None,
                Some(port) => {
                    let addr = SocketAddr::new(config.rtc_listen_ip, port);
                    let options = webrtc_server_options(addr, config.announced_address.clone());
                    let server = worker
                        .create_webrtc_server(options)
                        .await
                        .map_err(|source| SpawnError::WebRtcServer {
                            index,
                            addr,
                            source,
                        })?;
                    Some(server)
                }
            };
            {
                let bus_for_close = bus.clone();
                let (bus, health) = (bus.clone(), health.clone());
                worker
                    .on_dead(move |result| {
                        health.worker_died(index);
                        let error = match result {
                            Ok(()) => "exited".to_owned(),
                            Err(error) => error.to_string(),
                        };
                        bus.emit(
                            &Span::none(),
                            WorkerDied {
                                worker: index,
                                error,
                            },
                        );
                    })
                    .detach();
                let bus = bus_for_close;
                worker
                    .on_close(move || bus.emit(&Span::none(), WorkerClosed { worker: index }))
                    .detach();
            }
            bus.emit(
                &Span::none(),
                WorkerSpawned {
                    worker: index,
                    id: worker.id(),
                    media_port,
                },
            );
            workers.push(Arc::new(PoolWorker {
                index,
                worker,
                webrtc_server,
                peers: AtomicUsize::new(0),
                rooms: AtomicUsize::new(0),
                dtls_json: Mutex::new(None),
            }));
        }
        Ok(WorkerPool {
            workers,
            health: health.clone(),
            _manager: manager,
            exits,
        })
    }

    pub fn exits(&self) -> WorkerExits {
        self.exits.clone()
    }

    /// Picks the worker for a new room (see the module docs for the rule).
    pub fn place_room(&self) -> Result<Placement, NoWorkerAlive> {
        let (worker, _) = self
            .workers
            .iter()
            .filter_map(|w| Some((w, self.health.worker(w.index).filter(|h| h.alive)?)))
            .min_by_key(|(w, health)| {
                (
                    !health.answering,
                    w.peers.load(Ordering::Relaxed),
                    w.rooms.load(Ordering::Relaxed),
                    w.index,
                )
            })
            .ok_or(NoWorkerAlive)?;
        worker.rooms.fetch_add(1, Ordering::Relaxed);
        Ok(Placement {
            worker: Arc::clone(worker),
        })
    }

    /// Asks every worker a cheap question every [`PROBE_INTERVAL`]; runs until dropped.
    pub async fn probe_forever(self: Arc<Self>, bus: Bus) {
        let mut ticks = interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let probes = self.workers.iter().map(|w| async {
                let started = Instant::now();
                let ok = matches!(timeout(PROBE_TIMEOUT, w.worker.dump()).await, Ok(Ok(_)));
                (w.index, ok, started.elapsed())
            });
            for (worker, ok, duration) in futures_util::future::join_all(probes).await {
                self.health.probe_result(worker, ok);
                bus.emit(
                    &Span::none(),
                    WorkerProbed {
                        worker,
                        duration,
                        ok,
                    },
                );
            }
        }
    }
}
