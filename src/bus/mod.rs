//! The internal event bus: the core emits typed [`Event`]s; each sink (logs, metrics, systemd)
//! reads its own bounded queue. Emitting never blocks and never fails: when a sink falls behind,
//! its queue fills and further events for that sink are dropped and counted.

mod events;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::Span;

pub use events::*;

/// One emitted event, as a sink receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// When the core emitted it.
    pub at: SystemTime,
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

/// Cheap to clone; every clone feeds the same subscribers.
#[derive(Clone)]
pub struct Bus {
    subscribers: Arc<[Subscriber]>,
}

/// Collects the subscribers before the bus starts; the set is fixed afterwards.
#[derive(Default)]
pub struct BusBuilder {
    subscribers: Vec<Subscriber>,
}

impl BusBuilder {
    /// Adds a sink named `name` with a queue of `capacity` events.
    pub fn subscribe(&mut self, name: &'static str, capacity: usize) -> mpsc::Receiver<Envelope> {
        let (queue, receiver) = mpsc::channel(capacity);
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
        }
    }
}

impl Bus {
    /// Publishes `event` to every sink, as part of `span`.
    pub fn emit(&self, span: &Span, event: impl Into<Event>) {
        let envelope = Envelope {
            at: SystemTime::now(),
            span: span.clone(),
            event: Arc::new(event.into()),
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
    async fn a_stalled_sink_drops_and_never_blocks_the_emitter() {
        let mut builder = BusBuilder::default();
        let _stalled = builder.subscribe("stalled", 16);
        let mut live = builder.subscribe("live", 100_000);
        let bus = builder.build();

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
        let mut received = 0;
        while live.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 50_000);
    }
}
