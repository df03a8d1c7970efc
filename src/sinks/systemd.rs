//! The systemd sink (`sd_notify`): `READY=1` once the server takes traffic, a `STATUS=` line kept
//! current from the census (read every [`STATUS_PERIOD`], sent when it changed), `WATCHDOG=1` at
//! half of `WATCHDOG_USEC` while the health check passes, and `STOPPING=1` on shutdown. Started
//! only when `NOTIFY_SOCKET` is set.
//!
//! The watchdog ping is sent from a timer on the runtime, and only while every worker answered
//! its last probe in time: a hung worker or a stalled runtime both stop the pings, and systemd
//! restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};
use tracing::warn;

use crate::bus::{Census, Envelope, Event};
use crate::health::Health;

/// STATUS= is sent at most this often.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// One line of a notification (owned, to cross into the blocking thread).
enum Note {
    Ready,
    Stopping,
    Watchdog,
    Status(String),
}

/// Sends the notes from a blocking thread: a socket nobody reads blocks the sender, and that
/// must stall only this sink.
async fn notify(notes: Vec<Note>) {
    let sent = tokio::task::spawn_blocking(move || {
        let states: Vec<NotifyState> = notes
            .iter()
            .map(|note| match note {
                Note::Ready => NotifyState::Ready,
                Note::Stopping => NotifyState::Stopping,
                Note::Watchdog => NotifyState::Watchdog,
                Note::Status(status) => NotifyState::Status(status),
            })
            .collect();
        sd_notify::notify(&states)
    })
    .await;
    if let Ok(Err(error)) = sent {
        warn!(%error, "could not notify systemd (NOTIFY_SOCKET)");
    }
}

pub async fn run(
    mut events: mpsc::Receiver<Envelope>,
    health: Health,
    census: Census,
    workers: usize,
) {
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping = interval(watchdog.map_or(Duration::from_secs(3600), |usec| usec / 2));
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut status_tick = interval(STATUS_PERIOD);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut ready = false;
    let mut last_status = String::new();
    let status = || {
        let now = census.now();
        format!(
            "{} rooms, {} peers, {}/{} workers alive",
            now.rooms,
            now.peers,
            health.alive_count(),
            workers
        )
    };
    loop {
        tokio::select! {
            envelope = events.recv() => {
                let Some(envelope) = envelope else { return };
                match envelope.event.as_ref() {
                    Event::ServerReady(_) => {
                        ready = true;
                        last_status = status();
                        notify(vec![Note::Ready, Note::Status(last_status.clone())]).await;
                    }
                    Event::ServerStopping(_) => {
                        // The status says "shutting down" from now on.
                        ready = false;
                        notify(vec![Note::Stopping, Note::Status("shutting down".into())]).await;
                    }
                    Event::ServerStopped(_) => return,
                    _ => {}
                }
            }
            _ = status_tick.tick(), if ready => {
                let now = status();
                if now != last_status {
                    last_status = now;
                    notify(vec![Note::Status(last_status.clone())]).await;
                }
            }
            _ = ping.tick(), if watchdog.is_some() => {
                if health.is_ready() {
                    notify(vec![Note::Watchdog]).await;
                }
            }
        }
    }
}
