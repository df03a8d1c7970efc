//! The internal event bus: the core emits typed [`Event`]s. Slow sinks (logs, systemd) each
//! read their own bounded queue: emitting never blocks and never fails, so when such a sink falls
//! behind, its queue fills and further events for it are dropped and counted. The metrics must
//! miss nothing, so they are an [`Observer`] called inline instead; and what exists right now is
//! not an event stream at all but the [`Census`], which the sinks read when they report.

mod census;
mod events;
mod funnel;
mod refusal;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::mpsc;
use tracing::Span;

pub use census::{Census, Counted, Counts, Object, WorkerCounts};
pub use events::*;
pub use funnel::{JoinFailure, JoinStage};
pub use refusal::{RefusalReason, Refused, WorkerLogSuppressed};

/// One emitted event, as a sink receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The span the event belongs to (a peer session, a room, or none), so that sinks can attach
    /// it to the right trace.
    pub span: Span,
    pub event: Arc<Event>,
}

struct Subscriber {
    name: &'static str,
    queue: mpsc::Sender<Envelope>,
    dropped: AtomicU64,
}

/// Sees every event as it is emitted, on the emitter's thread: for what must not miss one and
/// costs no more than a few atomic updates (the metrics).
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event);
}

/// Cheap to clone; every clone feeds the same subscribers.
#[derive(Clone)]
pub struct Bus {
    subscribers: Arc<[Subscriber]>,
    /// Weak: the observer (the metrics) holds a bus itself; the server owns it.
    observer: Arc<OnceLock<Weak<dyn Observer>>>,
    census: Census,
}

/// Test-only, not a supported setting: caps every sink's queue at this many events, so that a
/// test can make the bus drop for certain.
const TEST_QUEUE_CAP: &str = "MEDIASOUP_TEST_SINK_QUEUE";

fn queue_capacity(requested: usize) -> usize {
    std::env::var(TEST_QUEUE_CAP)
        .ok()
        .and_then(|cap| cap.parse::<usize>().ok())
        .map_or(requested, |cap| requested.min(cap.max(1)))
}

/// Collects the subscribers before the bus starts; the set is fixed afterwards.
#[derive(Default)]
pub struct BusBuilder {
    subscribers: Vec<Subscriber>,
}

impl BusBuilder {
    /// Adds a sink named `name` with a queue of `capacity` events.
    pub fn subscribe(&mut self, name: &'static str, capacity: usize) -> mpsc::Receiver<Envelope> {
        let (queue, receiver) = mpsc::channel(queue_capacity(capacity));
        self.subscribers.push(Subscriber {
            name,
            queue,
            dropped: AtomicU64::new(0),
        });
        receiver
    }

    pub fn build(self) -> Bus {
        Bus {
            subscribers: self.subscribers.into(),
            observer: Arc::default(),
            census: Census::default(),
        }
    }
}

impl Bus {
    /// Sets the observer that sees every event from now on, for as long as the caller keeps it;
    /// there is one (the metrics), set before the server starts. A second call is ignored.
    pub fn observe(&self, observer: &Arc<dyn Observer>) {
        let _ = self.observer.set(Arc::downgrade(observer));
    }

    /// What exists now.
    pub fn census(&self) -> &Census {
        &self.census
    }

    /// Publishes `event` to the observer and every sink, as part of `span`.
    pub fn emit(&self, span: &Span, event: impl Into<Event>) {
        let event = event.into();
        if let Some(observer) = self.observer.get().and_then(Weak::upgrade) {
            observer.observe(&event);
        }
        let envelope = Envelope {
            span: span.clone(),
            event: Arc::new(event),
        };
        for subscriber in self.subscribers.iter() {
            // A closed queue means the sink has shut down: nothing to count.
            if let Err(mpsc::error::TrySendError::Full(_)) =
                subscriber.queue.try_send(envelope.clone())
            {
                subscriber.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped so far, per sink.
    pub fn dropped(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.subscribers
            .iter()
            .map(|s| (s.name, s.dropped.load(Ordering::Relaxed)))
    }

    pub fn sink_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.subscribers.iter().map(|s| s.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn worker_spawned(index: usize) -> Event {
        Event::WorkerProbed(WorkerProbed {
            worker: index,
            duration: Duration::from_micros(10),
            ok: true,
        })
    }

    /// An observer that counts what it sees.
    #[derive(Default)]
    struct Counter {
        seen: AtomicU64,
    }

    impl Observer for Counter {
        fn observe(&self, _: &Event) {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn every_sink_receives_every_event() {
        let mut builder = BusBuilder::default();
        let mut a = builder.subscribe("a", 8);
        let mut b = builder.subscribe("b", 8);
        let bus = builder.build();
        bus.emit(&Span::none(), worker_spawned(1));
        bus.emit(&Span::none(), worker_spawned(2));
        for receiver in [&mut a, &mut b] {
            for expected in [1, 2] {
                let envelope = receiver.recv().await.expect("event");
                match envelope.event.as_ref() {
                    Event::WorkerProbed(probe) => assert_eq!(probe.worker, expected),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(bus.dropped().all(|(_, n)| n == 0));
    }

    #[tokio::test]
    async fn a_stalled_sink_drops_and_never_blocks_the_emitter_nor_the_observer() {
        let mut builder = BusBuilder::default();
        let _stalled = builder.subscribe("stalled", 16);
        let mut live = builder.subscribe("live", 100_000);
        let bus = builder.build();
        let counter = Arc::new(Counter::default());
        bus.observe(&(counter.clone() as Arc<dyn Observer>));

        let started = Instant::now();
        for i in 0..50_000 {
            bus.emit(&Span::none(), worker_spawned(i));
        }
        // 50k emits with a full queue must stay far below anything that could block.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let dropped: Vec<_> = bus.dropped().collect();
        assert_eq!(dropped, vec![("stalled", 50_000 - 16), ("live", 0)]);
        assert_eq!(counter.seen.load(Ordering::Relaxed), 50_000);
        let mut received = 0;
        while live.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 50_000);
    }
}
