//! The Prometheus sink: counts bus events into counters and histograms as they are emitted (it
//! is the bus's [`Observer`], so none is lost to a full queue), reads the current-state gauges
//! from the [`Census`](crate::bus::Census) at scrape time, and serves both on `GET /metrics`.
//!
//! Labels are bounded by construction (kinds, directions, stages, reasons, request types,
//! outcomes, worker indexes, sink names); every known label combination is created at start-up
//! so that each series is present from the first scrape.

mod define;

use std::sync::Arc;

use hyper::{Method, StatusCode};
use mediasoup::prelude::MediaKind;
use mediasoup::types::data_structures::DtlsState;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

use self::define::Define;
use crate::bus::{
    kind_str, Bus, Direction, Event, JoinFailure, JoinStage, MediaSampled, Observer, RefusalReason,
};
use crate::health::Health;
use crate::http;
use crate::shutdown::Shutdown;
use crate::signaling::message::REQUEST_TYPES;

const KINDS: [&str; 2] = ["audio", "video"];

pub struct Metrics {
    registry: Registry,
    bus: Bus,
    health: Health,
    ready: IntGauge,
    workers_alive: IntGauge,
    worker_deaths: IntCounter,
    rooms: IntGauge,
    peers: IntGauge,
    transports: IntGaugeVec,
    producers: IntGaugeVec,
    consumers: IntGaugeVec,
    join_funnel: IntCounterVec,
    join_failures: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    dtls_connect: Histogram,
    ice_selected: IntCounterVec,
    producer_score: HistogramVec,
    consumer_score: HistogramVec,
    media_bytes: IntCounterVec,
    rtcp_feedback: IntCounterVec,
    packet_loss: HistogramVec,
    rtt: Histogram,
    /// Indexed by worker index.
    per_worker: Vec<WorkerSeries>,
    stats_poll: Histogram,
    stats_skipped: IntCounter,
    dropped: IntCounterVec,
    refusals: IntCounterVec,
    worker_log_suppressed: IntCounter,
    recordings_active: IntGauge,
    recording_bytes: IntCounter,
    recording_errors: IntCounter,
    recording_dropped: IntCounter,
}

/// One worker's series, labelled once at start-up rather than on every event.
struct WorkerSeries {
    /// The probe latency, under its name and its deprecated one.
    probe: [Histogram; 2],
    rooms: IntGauge,
    transports: IntGauge,
}

const SCORE_BUCKETS: [f64; 11] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];

impl Metrics {
    pub fn new(workers: usize, bus: Bus, health: Health) -> Self {
        let registry = Registry::new();
        let d = Define(&registry);
        d.gauges(
            "build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        d.gauge(
            "workers_configured",
            "Workers the server was configured to run.",
        )
        .set(workers as i64);
        let probe_buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ];
        let worker_probe = d.histograms(
            "worker_probe_duration_seconds",
            "Latency of the periodic health probe request to each worker.",
            &probe_buckets,
            &["worker"],
        );
        let worker_probe_old_name = d.histograms(
            "worker_request_duration_seconds",
            "Deprecated, removed in the next release: worker_probe_duration_seconds under its old name.",
            &probe_buckets,
            &["worker"],
        );
        let worker_rooms = d.gauges(
            "worker_rooms",
            "Rooms (routers) on each worker.",
            &["worker"],
        );
        let worker_transports = d.gauges(
            "worker_transports",
            "Transports on each worker.",
            &["worker"],
        );
        let per_worker = (0..workers)
            .map(|index| {
                let label = [index.to_string()];
                WorkerSeries {
                    probe: [
                        worker_probe.with_label_values(&label),
                        worker_probe_old_name.with_label_values(&label),
                    ],
                    rooms: worker_rooms.with_label_values(&label),
                    transports: worker_transports.with_label_values(&label),
                }
            })
            .collect();
        let metrics = Metrics {
            ready: d.gauge(
                "ready",
                "1 while /readyz passes: workers alive and answering, listeners bound.",
            ),
            workers_alive: d.gauge("workers_alive", "Workers currently alive."),
            worker_deaths: d.counter("worker_deaths_total", "Workers that died unexpectedly."),
            rooms: d.gauge("rooms", "Rooms open now (one router each)."),
            peers: d.gauge("peers", "Peers (signaling connections in a room) now."),
            transports: d.gauges(
                "transports",
                "WebRTC transports open now, by the peer's direction.",
                &["direction"],
            ),
            producers: d.gauges("producers", "Producers open now, by media kind.", &["kind"]),
            consumers: d.gauges("consumers", "Consumers open now, by media kind.", &["kind"]),
            join_funnel: d.counters(
                "join_funnel_total",
                "Peers reaching each join stage (counted once per peer).",
                &["stage"],
            ),
            join_failures: d.counters(
                "join_failures_total",
                "Peers whose join stopped, by reason.",
                &["reason"],
            ),
            requests: d.counters(
                "signaling_requests_total",
                "Signaling requests answered, by type and outcome.",
                &["type", "outcome"],
            ),
            request_duration: d.histograms(
                "signaling_request_duration_seconds",
                "Time to answer a signaling request.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
                &["type"],
            ),
            dtls_connect: d.histogram(
                "dtls_connect_duration_seconds",
                "Time from transport creation to DTLS connected.",
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            ice_selected: d.counters(
                "ice_selected_tuples_total",
                "ICE paths chosen, by protocol (tcp means UDP is blocked for that client).",
                &["protocol"],
            ),
            producer_score: d.histograms(
                "producer_score",
                "Producer scores reported by the workers (0 bad .. 10 perfect).",
                &SCORE_BUCKETS,
                &["kind"],
            ),
            consumer_score: d.histograms(
                "consumer_score",
                "Consumer scores reported by the workers (0 bad .. 10 perfect).",
                &SCORE_BUCKETS,
                &["kind"],
            ),
            media_bytes: d.counters(
                "media_bytes_total",
                "RTP bytes received from producers (in) and sent to consumers (out).",
                &["direction", "kind"],
            ),
            rtcp_feedback: d.counters(
                "rtcp_feedback_total",
                "NACK, PLI and FIR messages seen on producers and consumers.",
                &["type", "kind"],
            ),
            packet_loss: d.histograms(
                "packet_loss_ratio",
                "Fraction of packets lost per stats sample.",
                &[0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
                &["kind"],
            ),
            rtt: d.histogram(
                "rtt_seconds",
                "Round-trip time to peers per stats sample.",
                &[0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0],
            ),
            per_worker,
            stats_poll: d.histogram(
                "stats_poll_duration_seconds",
                "Time one round of media stats polling took.",
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            ),
            stats_skipped: d.counter(
                "stats_objects_skipped_total",
                "Producers/consumers left out of a stats round by the per-round cap.",
            ),
            dropped: d.counters(
                "bus_events_dropped_total",
                "Events a sink missed because its queue was full.",
                &["sink"],
            ),
            refusals: d.counters(
                "refusals_total",
                "Connections and requests refused by a limit or by access control.",
                &["reason"],
            ),
            worker_log_suppressed: d.counter(
                "worker_log_lines_suppressed_total",
                "mediasoup worker log lines dropped by the log rate limit.",
            ),
            recordings_active: d.gauge(
                "recordings_active",
                "Recording files being written now (one per recorded audio producer).",
            ),
            recording_bytes: d.counter(
                "recording_bytes_total",
                "Bytes written to recording files.",
            ),
            recording_errors: d.counter(
                "recording_write_errors_total",
                "Rooms whose recording stopped on an error (a write error, a full disk); media go on.",
            ),
            recording_dropped: d.counter(
                "recording_packets_dropped_total",
                "Audio packets left out of recordings because the writer fell behind.",
            ),
            registry,
            bus,
            health,
        };
        metrics.initialise_series();
        metrics
            .registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("process metrics are registered once");
        metrics
    }

    fn initialise_series(&self) {
        for direction in [Direction::Send, Direction::Recv] {
            self.transports.with_label_values(&[direction.as_str()]);
        }
        for kind in KINDS {
            self.producers.with_label_values(&[kind]);
            self.consumers.with_label_values(&[kind]);
            self.producer_score.with_label_values(&[kind]);
            self.consumer_score.with_label_values(&[kind]);
            self.packet_loss.with_label_values(&[kind]);
            for flow in ["in", "out"] {
                self.media_bytes.with_label_values(&[flow, kind]);
            }
            for feedback in ["nack", "pli", "fir"] {
                self.rtcp_feedback.with_label_values(&[feedback, kind]);
            }
        }
        for stage in JoinStage::ALL {
            self.join_funnel.with_label_values(&[stage.as_str()]);
        }
        for reason in JoinFailure::ALL {
            self.join_failures.with_label_values(&[reason.as_str()]);
        }
        for reason in RefusalReason::ALL {
            self.refusals.with_label_values(&[reason.as_str()]);
        }
        for request in REQUEST_TYPES.into_iter().chain(["invalid"]) {
            self.request_duration.with_label_values(&[request]);
            for outcome in ["ok", "error"] {
                self.requests.with_label_values(&[request, outcome]);
            }
        }
        for protocol in ["udp", "tcp"] {
            self.ice_selected.with_label_values(&[protocol]);
        }
        for sink in self.bus.sink_names() {
            self.dropped.with_label_values(&[sink]);
        }
    }

    fn observe_media(&self, sample: &MediaSampled) {
        let kind = kind_str(sample.kind);
        self.media_bytes
            .with_label_values(&[sample.flow.as_str(), kind])
            .inc_by(sample.bytes);
        for (feedback, count) in [
            ("nack", sample.nacks),
            ("pli", sample.plis),
            ("fir", sample.firs),
        ] {
            self.rtcp_feedback
                .with_label_values(&[feedback, kind])
                .inc_by(count);
        }
        if sample.bytes > 0 {
            self.packet_loss
                .with_label_values(&[kind])
                .observe(sample.loss);
        }
        if let Some(rtt) = sample.rtt {
            self.rtt.observe(rtt.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.ready.set(i64::from(self.health.is_ready()));
        self.workers_alive.set(self.health.alive_count() as i64);
        self.set_current_state();
        for (sink, dropped) in self.bus.dropped() {
            let counter = self.dropped.with_label_values(&[sink]);
            counter.inc_by(dropped.saturating_sub(counter.get()));
        }
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Copies the census into the gauges.
    fn set_current_state(&self) {
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        let now = self.bus.census().now();
        self.rooms.set(gauge(now.rooms));
        self.peers.set(gauge(now.peers));
        for direction in [Direction::Send, Direction::Recv] {
            self.transports
                .with_label_values(&[direction.as_str()])
                .set(gauge(now.transports(direction)));
        }
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let label = [kind_str(kind)];
            self.producers
                .with_label_values(&label)
                .set(gauge(now.producers(kind)));
            self.consumers
                .with_label_values(&label)
                .set(gauge(now.consumers(kind)));
        }
        for (index, series) in self.per_worker.iter().enumerate() {
            let counts = now.worker(index);
            series.rooms.set(gauge(counts.rooms));
            series.transports.set(gauge(counts.transports));
        }
    }
}

impl Observer for Metrics {
    /// Counts one event; the gauges are not events but the census, read in [`Metrics::render`].
    fn observe(&self, event: &Event) {
        match event {
            Event::WorkerDied(_) => self.worker_deaths.inc(),
            Event::WorkerProbed(e) => {
                if let Some(worker) = self.per_worker.get(e.worker) {
                    for probe in &worker.probe {
                        probe.observe(e.duration.as_secs_f64());
                    }
                }
            }
            Event::JoinProgressed(e) => self
                .join_funnel
                .with_label_values(&[e.stage.as_str()])
                .inc(),
            Event::JoinFailed(e) => self
                .join_failures
                .with_label_values(&[e.reason.as_str()])
                .inc(),
            Event::RequestHandled(e) => {
                let outcome = if e.ok { "ok" } else { "error" };
                self.requests.with_label_values(&[e.request, outcome]).inc();
                self.request_duration
                    .with_label_values(&[e.request])
                    .observe(e.duration.as_secs_f64());
            }
            Event::DtlsStateChanged(e) if e.state == DtlsState::Connected => {
                self.dtls_connect.observe(e.elapsed.as_secs_f64())
            }
            Event::IceTupleSelected(e) => {
                let protocol = match e.protocol {
                    mediasoup::prelude::Protocol::Tcp => "tcp",
                    mediasoup::prelude::Protocol::Udp => "udp",
                };
                self.ice_selected.with_label_values(&[protocol]).inc();
            }
            Event::ProducerScored(e) => self
                .producer_score
                .with_label_values(&[kind_str(e.kind)])
                .observe(f64::from(e.score)),
            Event::ConsumerScored(e) => self
                .consumer_score
                .with_label_values(&[kind_str(e.kind)])
                .observe(f64::from(e.score)),
            Event::MediaSampled(e) => self.observe_media(e),
            Event::StatsPolled(e) => {
                self.stats_poll.observe(e.duration.as_secs_f64());
                self.stats_skipped.inc_by(e.skipped as u64);
            }
            Event::Refused(e) => self.refusals.with_label_values(&[e.reason.as_str()]).inc(),
            Event::WorkerLogSuppressed(e) => self.worker_log_suppressed.inc_by(e.lines),
            Event::RecordingStarted(_) => self.recordings_active.inc(),
            Event::RecordingStopped(_) => self.recordings_active.dec(),
            Event::RecordingFailed(_) => self.recording_errors.inc(),
            Event::RecordingProgress(e) => {
                self.recording_bytes.inc_by(e.bytes);
                self.recording_dropped.inc_by(e.dropped);
            }
            _ => {}
        }
    }
}

/// Serves `GET /metrics` on its own listener.
pub async fn serve(metrics: Arc<Metrics>, listener: TcpListener, shutdown: Shutdown) {
    let handler = move |request: hyper::Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        async move {
            if request.method() == Method::GET && request.uri().path() == "/metrics" {
                http::response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                )
            } else {
                http::text(
                    StatusCode::NOT_FOUND,
                    "not found: metrics are at GET /metrics\n",
                )
            }
        }
    };
    http::serve(listener, handler, shutdown, None).await;
}
