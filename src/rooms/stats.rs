//! Periodic media statistics: every interval, ask the workers for the stats of the live
//! producers and consumers and publish one [`MediaSampled`] per object.
//!
//! Cost bound: each object is one worker request; at most [`MAX_OBJECTS_PER_ROUND`] objects are
//! polled per round, [`CONCURRENCY`] requests at a time. Over the cap the rest are skipped and
//! counted, and the next round starts where this one stopped, so every object is sampled in turn.

use std::collections::HashMap;
use std::hash::Hash;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    bytes: u64,
    nacks: u64,
    plis: u64,
    firs: u64,
}

impl Counters {
    /// What was counted since `then`; a counter that went backwards (a restarted stream) counts
    /// nothing rather than wrapping around.
    fn since(self, then: Counters) -> Counters {
        Counters {
            bytes: self.bytes.saturating_sub(then.bytes),
            nacks: self.nacks.saturating_sub(then.nacks),
            plis: self.plis.saturating_sub(then.plis),
            firs: self.firs.saturating_sub(then.firs),
        }
    }
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

/// Turns one round's cumulative counters into deltas since each object's previous sample, and
/// leaves in `previous` what the next round compares against. An object without a sample this
/// round (`unsampled`: left out by the cap; or sampled with `None`: its stats request failed)
/// keeps its previous counters, so that its next delta spans the rounds it missed instead of
/// counting its whole history again. An object in neither list is gone and forgotten.
fn settle_round<K: Hash + Eq, S>(
    previous: &mut HashMap<K, Counters>,
    unsampled: impl IntoIterator<Item = K>,
    sampled: Vec<(K, Option<S>)>,
    counters: impl Fn(&S) -> Counters,
) -> Vec<(S, Counters)> {
    let mut before = std::mem::take(previous);
    let keep = |key: K, before: &mut HashMap<K, Counters>, previous: &mut HashMap<K, Counters>| {
        if let Some(counters) = before.remove(&key) {
            previous.insert(key, counters);
        }
    };
    for key in unsampled {
        keep(key, &mut before, previous);
    }
    let mut deltas = Vec::new();
    for (key, sample) in sampled {
        let Some(sample) = sample else {
            keep(key, &mut before, previous);
            continue;
        };
        let then = before.remove(&key).unwrap_or_default();
        let now = counters(&sample);
        previous.insert(key, now);
        deltas.push((sample, now.since(then)));
    }
    deltas
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
        let unsampled: Vec<String> = skipped.iter().map(Object::key).collect();
        let skipped = skipped.len();

        let samples: Vec<(String, Option<Sample>)> = stream::iter(objects)
            .map(|object| async move { (object.key(), object.sample().await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        for (sample, delta) in settle_round(&mut previous, unsampled, samples, |s| s.counters) {
            rooms.bus().emit(
                &Span::none(),
                MediaSampled {
                    kind: sample.kind,
                    flow: sample.flow,
                    bytes: delta.bytes,
                    bitrate: sample.bitrate,
                    nacks: delta.nacks,
                    plis: delta.plis,
                    firs: delta.firs,
                    loss: f64::from(sample.fraction_lost) / 256.0,
                    rtt: sample
                        .rtt_ms
                        .filter(|ms| ms.is_finite() && *ms >= 0.0)
                        .map(|ms| Duration::from_secs_f64(f64::from(ms) / 1000.0)),
                },
            );
        }
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
    use std::collections::HashMap;

    use super::{settle_round, take_round, Counters};

    fn counters(bytes: u64, nacks: u64) -> Counters {
        Counters {
            bytes,
            nacks,
            plis: nacks * 2,
            firs: nacks * 3,
        }
    }

    /// One round: `sampled` are (object, its cumulative counters or None for a failed sample);
    /// returns each sampled object's delta.
    fn round(
        previous: &mut HashMap<&'static str, Counters>,
        unsampled: &[&'static str],
        sampled: &[(&'static str, Option<Counters>)],
    ) -> Vec<(&'static str, Counters)> {
        let sampled = sampled
            .iter()
            .map(|(key, counters)| (*key, counters.map(|c| (*key, c))))
            .collect();
        let mut deltas = settle_round(previous, unsampled.iter().copied(), sampled, |s| s.1)
            .into_iter()
            .map(|((key, _), delta)| (key, delta))
            .collect::<Vec<_>>();
        deltas.sort_by_key(|(key, _)| *key);
        deltas
    }

    #[test]
    fn deltas_count_only_what_happened_since_the_previous_sample() {
        let mut previous = HashMap::new();
        let first = round(&mut previous, &[], &[("p", Some(counters(1000, 4)))]);
        assert_eq!(first, [("p", counters(1000, 4))]);
        let second = round(&mut previous, &[], &[("p", Some(counters(1500, 5)))]);
        assert_eq!(second, [("p", counters(500, 1))]);
    }

    #[test]
    fn a_failed_sample_keeps_the_previous_counters_for_the_next_delta() {
        let mut previous = HashMap::new();
        round(
            &mut previous,
            &[],
            &[
                ("p", Some(counters(1000, 4))),
                ("c", Some(counters(700, 1))),
            ],
        );
        // The producer's stats request fails this round; the consumer's does not.
        let failed = round(
            &mut previous,
            &[],
            &[("p", None), ("c", Some(counters(900, 1)))],
        );
        assert_eq!(failed, [("c", counters(200, 0))]);
        // Its next delta spans both rounds, not its whole history.
        let next = round(
            &mut previous,
            &[],
            &[
                ("p", Some(counters(1800, 6))),
                ("c", Some(counters(950, 2))),
            ],
        );
        assert_eq!(next, [("c", counters(50, 1)), ("p", counters(800, 2))]);
    }

    #[test]
    fn a_skipped_object_keeps_its_counters_and_a_gone_one_is_forgotten() {
        let mut previous = HashMap::new();
        round(
            &mut previous,
            &[],
            &[
                ("p", Some(counters(1000, 4))),
                ("gone", Some(counters(5, 0))),
            ],
        );
        assert!(round(&mut previous, &["p"], &[]).is_empty());
        assert!(!previous.contains_key("gone"), "{previous:?}");
        let next = round(&mut previous, &[], &[("p", Some(counters(1200, 4)))]);
        assert_eq!(next, [("p", counters(200, 0))]);
    }

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
