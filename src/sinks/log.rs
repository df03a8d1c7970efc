//! The log sink: every bus event becomes one `tracing` event inside the span it belongs to, so
//! the same fields reach the log lines and, when OTLP export is on, the trace's span events.
//!
//! Levels: info for start-up and shutdown, warn/error for trouble, debug for lifecycle, trace
//! for the frequent score and stats samples.

use tokio::sync::mpsc;
use tracing::{debug, error, info, trace, warn};

use crate::bus::{kind_str, Envelope, Event};

pub async fn run(mut events: mpsc::Receiver<Envelope>) {
    while let Some(envelope) = events.recv().await {
        if log(&envelope) {
            return;
        }
    }
}

/// Logs one event; `true` once the server has stopped.
fn log(envelope: &Envelope) -> bool {
    let span = &envelope.span;
    match envelope.event.as_ref() {
        Event::WorkerSpawned(e) => match e.media_port {
            Some(port) => {
                info!(parent: span, worker = e.worker, id = %e.id, media_port = port, "worker created, media on UDP and TCP port {port} for all its transports")
            }
            None => info!(parent: span, worker = e.worker, id = %e.id, "worker created"),
        },
        Event::WorkerDied(e) => {
            error!(parent: span, worker = e.worker, error = %e.error, "worker died")
        }
        Event::WorkerClosed(e) => debug!(parent: span, worker = e.worker, "worker closed"),
        Event::WorkerProbed(e) if e.ok => {
            trace!(parent: span, worker = e.worker, duration_us = e.duration.as_micros() as u64, "worker probed")
        }
        Event::WorkerProbed(e) => {
            warn!(parent: span, worker = e.worker, duration_us = e.duration.as_micros() as u64, "worker did not answer its health probe in time")
        }
        Event::RouterCreated(e) => {
            debug!(parent: span, worker = e.worker, router = %e.router, "router created")
        }
        Event::RouterClosed(e) => {
            debug!(parent: span, worker = e.worker, router = %e.router, "router closed")
        }
        Event::RoomOpened(e) => {
            debug!(parent: span, room = %e.room, worker = e.worker, router = %e.router, "room opened")
        }
        Event::RoomClosed(e) => {
            debug!(parent: span, room = %e.room, worker = e.worker, router = %e.router, "room closed")
        }
        Event::SocketOpened(e) => {
            debug!(parent: span, peer = %e.peer, room = %e.room, "socket opened")
        }
        Event::PeerJoined(e) => {
            debug!(parent: span, peer = %e.peer, room = %e.room, user_id = %e.user_id, "peer joined")
        }
        Event::PeerLeft(e) => {
            debug!(parent: span, peer = %e.peer, room = %e.room, user_id = e.user_id.as_deref(), reason = e.reason.as_str(), "peer left")
        }
        Event::PeerReplaced(e) => {
            debug!(parent: span, old = %e.old, new = %e.new, room = %e.room, user_id = %e.user_id, "peer replaced by a newer connection of the same user")
        }
        Event::JoinProgressed(e) => {
            debug!(parent: span, peer = %e.peer, stage = e.stage.as_str(), "join progressed")
        }
        Event::JoinFailed(e) => {
            debug!(parent: span, peer = %e.peer, reason = e.reason.as_str(), "join failed")
        }
        Event::RequestHandled(e) => {
            debug!(parent: span, peer = %e.peer, request = e.request, ok = e.ok, duration_us = e.duration.as_micros() as u64, "request handled")
        }
        Event::TransportCreated(e) => {
            debug!(parent: span, peer = %e.peer, transport = %e.transport, direction = e.direction.as_str(), worker = e.worker, "transport created")
        }
        Event::TransportClosed(e) => {
            debug!(parent: span, peer = %e.peer, transport = %e.transport, direction = e.direction.as_str(), "transport closed")
        }
        Event::IceStateChanged(e) => {
            debug!(parent: span, peer = %e.peer, transport = %e.transport, state = ?e.state, "ICE state changed")
        }
        Event::DtlsStateChanged(e) => {
            debug!(parent: span, peer = %e.peer, transport = %e.transport, state = ?e.state, elapsed_ms = e.elapsed.as_millis() as u64, "DTLS state changed")
        }
        Event::IceTupleSelected(e) => {
            debug!(parent: span, peer = %e.peer, transport = %e.transport, protocol = ?e.protocol, remote = ?e.remote, "ICE tuple selected")
        }
        Event::ProducerCreated(e) => {
            debug!(parent: span, peer = %e.peer, producer = %e.producer, kind = kind_str(e.kind), media_tag = %e.media_tag, "producer created")
        }
        Event::ProducerClosed(e) => {
            debug!(parent: span, peer = %e.peer, producer = %e.producer, kind = kind_str(e.kind), "producer closed")
        }
        Event::ProducerPaused(e) => {
            debug!(parent: span, peer = %e.peer, producer = %e.producer, kind = kind_str(e.kind), paused = e.paused, "producer paused or resumed")
        }
        Event::ProducerScored(e) => {
            trace!(parent: span, peer = %e.peer, producer = %e.producer, kind = kind_str(e.kind), score = e.score, "producer score")
        }
        Event::ConsumerCreated(e) => {
            debug!(parent: span, peer = %e.peer, consumer = %e.consumer, producer = %e.producer, kind = kind_str(e.kind), "consumer created")
        }
        Event::ConsumerClosed(e) => {
            debug!(parent: span, peer = %e.peer, consumer = %e.consumer, kind = kind_str(e.kind), "consumer closed")
        }
        Event::ConsumerPaused(e) => {
            debug!(parent: span, peer = %e.peer, consumer = %e.consumer, kind = kind_str(e.kind), paused = e.paused, "consumer paused or resumed")
        }
        Event::ConsumerScored(e) => {
            trace!(parent: span, peer = %e.peer, consumer = %e.consumer, kind = kind_str(e.kind), score = e.score, producer_score = e.producer_score, "consumer score")
        }
        Event::ConsumerLayersChanged(e) => {
            debug!(parent: span, peer = %e.peer, consumer = %e.consumer, spatial = e.spatial, temporal = e.temporal, "consumer layers changed")
        }
        Event::MediaSampled(e) => {
            trace!(parent: span, kind = kind_str(e.kind), flow = e.flow.as_str(), bytes = e.bytes, bitrate = e.bitrate, nacks = e.nacks, plis = e.plis, firs = e.firs, loss = e.loss, rtt_ms = e.rtt.map(|d| d.as_secs_f64() * 1000.0), "media sampled")
        }
        Event::StatsPolled(e) => {
            debug!(parent: span, objects = e.objects, skipped = e.skipped, duration_ms = e.duration.as_millis() as u64, "stats polled")
        }
        Event::Refused(e) => debug!(parent: span, reason = e.reason.as_str(), "refused"),
        Event::WorkerLogSuppressed(e) => {
            warn!(parent: span, lines = e.lines, "suppressed mediasoup worker log lines over the rate limit (their count is in mediasoup_server_worker_log_lines_suppressed_total)")
        }
        Event::RecordingStarted(e) => {
            info!(parent: span, room = %e.room, user_id = %e.user_id, producer = %e.producer, file = %e.file, "recording started")
        }
        Event::RecordingStopped(e) => {
            info!(parent: span, room = %e.room, producer = %e.producer, file = %e.file, bytes = e.bytes, duration_ms = e.duration.as_millis() as u64, "recording stopped")
        }
        Event::RecordingFailed(e) => {
            error!(parent: span, room = %e.room, error = %e.error, "recording of the room stopped (media unaffected)")
        }
        Event::RecordingProgress(e) if e.dropped > 0 => {
            warn!(parent: span, bytes = e.bytes, dropped = e.dropped, "recording writer fell behind: packets dropped from recordings (media unaffected)")
        }
        Event::RecordingProgress(e) => trace!(parent: span, bytes = e.bytes, "recording written"),
        Event::ServerReady(e) => {
            info!(parent: span, listen = %e.listen, metrics = %e.metrics, workers = e.workers, announced = e.announced.as_deref(), media_ports = %e.media_ports, "listening for signaling on {} (metrics on {}); media on ports {}", e.listen, e.metrics, e.media_ports);
            if !e.token_required {
                warn!(parent: span, "MEDIASOUP_SECRET is unset: anyone who reaches this server can join any room; set it and give each table the URL that `mediasoup-server token <room>` prints");
            }
            if e.announced.is_none() {
                warn!(parent: span, "no address to announce: MEDIASOUP_ANNOUNCED_IP is unset and none could be detected, so browsers cannot reach the media ports; set MEDIASOUP_ANNOUNCED_IP");
            }
        }
        Event::ServerStopping(_) => info!(parent: span, "shutting down"),
        Event::ServerStopped(_) => {
            info!(parent: span, "stopped");
            return true;
        }
    }
    false
}
