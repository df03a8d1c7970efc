//! Periodic media statistics: every interval, ask the workers for the stats of the live
//! producers and consumers and publish one [`MediaSampled`] per object.
//!
//! Cost bound: each object is one worker request; at most [`MAX_OBJECTS_PER_ROUND`] objects are
//! polled per round, [`CONCURRENCY`] requests at a time. Over the cap the rest are skipped and
//! counted, and the next round starts where this one stopped, so every object is sampled in turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use mediasoup::consumer::ConsumerRtpStreamStat;
use mediasoup::prelude::*;
use tokio::time::{interval, MissedTickBehavior};
use tracing::Span;

use super::Rooms;
use crate::bus::{Flow, MediaSampled, StatsPolled};

pub const MAX_OBJECTS_PER_ROUND: usize = 5_000;
pub const CONCURRENCY: usize = 16;

/// Cumulative counters of one object at its previous sample.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    bytes: u64,
    nacks: u64,
    plis: u64,
    firs: u64,
}

/// The numbers of one stats sample, before deltas.
struct Sample {
    kind: MediaKind,
    flow: Flow,
    counters: Counters,
    bitrate: u64,
    fraction_lost: u8,
    rtt_ms: Option<f32>,
}

enum Object {
    Producer(Producer),
    Consumer(MediaKind, Consumer),
}

impl Object {
    fn key(&self) -> String {
        match self {
            Object::Producer(p) => p.id().to_string(),
            Object::Consumer(_, c) => c.id().to_string(),
        }
    }

    async fn sample(&self) -> Option<Sample> {
        match self {
            Object::Producer(producer) => {
                let stats = producer.get_stats().await.ok()?;
                // Simulcast has one stream per layer: add them up.
                let mut sample = Sample {
                    kind: producer.kind(),
                    flow: Flow::In,
                    counters: Counters::default(),
                    bitrate: 0,
                    fraction_lost: 0,
                    rtt_ms: None,
                };
                for s in &stats {
                    sample.counters.bytes += s.byte_count;
                    sample.counters.nacks += s.nack_count;
                    sample.counters.plis += s.pli_count;
                    sample.counters.firs += s.fir_count;
                    sample.bitrate += s.bitrate;
                    sample.fraction_lost = sample.fraction_lost.max(s.fraction_lost);
                    sample.rtt_ms = s.round_trip_time.or(sample.rtt_ms);
                }
                Some(sample)
            }
            Object::Consumer(kind, consumer) => {
                let stats = consumer.get_stats().await.ok()?;
                stats.into_iter().find_map(|stat| match stat {
                    ConsumerRtpStreamStat::Outbound(s) => Some(Sample {
                        kind: *kind,
                        flow: Flow::Out,
                        counters: Counters {
                            bytes: s.byte_count,
                            nacks: s.nack_count,
                            plis: s.pli_count,
                            firs: s.fir_count,
                        },
                        bitrate: s.bitrate,
                        fraction_lost: s.fraction_lost,
                        rtt_ms: s.round_trip_time,
                    }),
                    ConsumerRtpStreamStat::Inbound(_) => None,
                })
            }
        }
    }
}

/// Splits `objects` into this round's (at most `cap`, starting at `*start`) and the skipped
/// ones, and moves `*start` past this round's.
fn take_round<T>(mut objects: Vec<T>, cap: usize, start: &mut usize) -> (Vec<T>, Vec<T>) {
    if objects.len() <= cap {
        *start = 0;
        return (objects, Vec::new());
    }
    let first = *start % objects.len();
    objects.rotate_left(first);
    *start = first + cap;
    let skipped = objects.split_off(cap);
    (objects, skipped)
}

/// Polls every `period` until dropped.
pub async fn poll_forever(rooms: Arc<Rooms>, period: Duration) {
    let mut previous: HashMap<String, Counters> = HashMap::new();
    let mut start = 0;
    let mut ticks = interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let mut objects = Vec::new();
        for room in rooms.snapshot().await {
            let media = room.media();
            objects.extend(media.producers.into_iter().map(Object::Producer));
            objects.extend(
                media
                    .consumers
                    .into_iter()
                    .map(|(kind, c)| Object::Consumer(kind, c)),
            );
        }
        let (objects, skipped) = take_round(objects, MAX_OBJECTS_PER_ROUND, &mut start);
        let polled = objects.len();
        // A skipped object keeps its previous counters, so its next delta spans both rounds.
        let mut current: HashMap<String, Counters> = skipped
            .iter()
            .filter_map(|object| {
                let key = object.key();
                previous.remove(&key).map(|counters| (key, counters))
            })
            .collect();
        let skipped = skipped.len();

        let samples: Vec<(String, Option<Sample>)> = stream::iter(objects)
            .map(|object| async move { (object.key(), object.sample().await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        for (key, sample) in samples {
            let Some(sample) = sample else { continue };
            let before = previous.get(&key).copied().unwrap_or_default();
            let now = sample.counters;
            rooms.bus().emit(
                &Span::none(),
                MediaSampled {
                    kind: sample.kind,
                    flow: sample.flow,
                    bytes: now.bytes.saturating_sub(before.bytes),
                    bitrate: sample.bitrate,
                    nacks: now.nacks.saturating_sub(before.nacks),
                    plis: now.plis.saturating_sub(before.plis),
                    firs: now.firs.saturating_sub(before.firs),
                    loss: f64::from(sample.fraction_lost) / 256.0,
                    rtt: sample
                        .rtt_ms
                        .filter(|ms| ms.is_finite() && *ms >= 0.0)
                        .map(|ms| Duration::from_secs_f64(f64::from(ms) / 1000.0)),
                },
            );
            current.insert(key, now);
        }
        previous = current;
        rooms.bus().emit(
            &Span::none(),
            StatsPolled {
                objects: polled,
                skipped,
                duration: started.elapsed(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::take_round;

    #[test]
    fn rounds_over_the_cap_take_every_object_in_turn() {
        let mut start = 0;
        let objects: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (polled, skipped) = take_round(objects.clone(), 3, &mut start);
            assert_eq!(polled.len() + skipped.len(), 7);
            seen.extend(polled);
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6, 0, 1]);

        let (polled, skipped) = take_round(vec![1, 2], 3, &mut start);
        assert_eq!((polled, skipped, start), (vec![1, 2], vec![], 0));
    }
}
