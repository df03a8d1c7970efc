//! Opt-in per-speaker recording (README, "Recording"). Every audio producer of a recorded room
//! is consumed inside the process, on a `DirectTransport` of the room's router, and its Opus
//! packets are written untranscoded to `<dir>/<room>/<session start>/<userId>-<n>.opus`, with a
//! `manifest.json` saying who is in which file when, and who spoke when (from an
//! `AudioLevelObserver` on the same router). Files are written by one thread off the media path
//! ([`writer`]); a write error stops only that room's recording.

mod ogg_opus;
mod writer;

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mediasoup::prelude::*;
use mediasoup::types::rtp_parameters::RtpCodecParametersParametersValue;
use mediasoup::worker::RequestError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{warn, Span};

pub use ogg_opus::{opus_samples, parse_rtp, OggOpusStream, StreamInfo, PRE_SKIP};
use writer::{Session, Track, WriterHandle};

use crate::bus::{Bus, RecordingFailed, RoomName};
use crate::config::Recording;

/// Silence shorter than this between two loud intervals of one speaker is part of one turn.
const SPEAKING_MERGE_MS: u64 = 1_000;
/// How often the worker reports audio levels, in ms.
const LEVEL_INTERVAL_MS: u16 = 250;
/// Level (dBov) above which a producer counts as speaking; silence is -127.
const SPEAKING_THRESHOLD: i8 = -70;

/// The server's recorder: which rooms to record and the writer thread.
pub struct Recorder {
    config: Recording,
    writer: WriterHandle,
    bus: Bus,
    next_track: AtomicU64,
}

impl Recorder {
    /// Starts the writer thread.
    pub fn start(config: Recording, bus: Bus) -> std::io::Result<Arc<Recorder>> {
        Ok(Arc::new(Recorder {
            writer: WriterHandle::spawn(bus.clone())?,
            config,
            bus,
            next_track: AtomicU64::new(1),
        }))
    }

    /// Begins a session when `room` is one to record: a direct transport and an audio level
    /// observer on its router. A failure is logged and the room goes unrecorded, media unharmed.
    pub async fn open_room(
        self: &Arc<Self>,
        room: &RoomName,
        router: &Router,
        span: &Span,
    ) -> Option<RoomRecording> {
        if !self.config.records_room(room) {
            return None;
        }
        match RoomRecording::open(self, room, router, span).await {
            Ok(recording) => Some(recording),
            Err(error) => {
                self.bus.emit(
                    span,
                    RecordingFailed {
                        room: room.clone(),
                        error: error.to_string(),
                    },
                );
                None
            }
        }
    }

    /// Waits, blocking, until what was queued is written (at shutdown).
    pub fn flush(&self, deadline: Duration) -> bool {
        self.writer.flush(deadline)
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("could not create the recording transport or audio level observer: {0}")]
    Worker(#[from] RequestError),
    #[error("the router's capabilities do not convert: {0}")]
    Capabilities(#[from] serde_json::Error),
}

/// One file of the manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileEntry {
    user_id: Arc<str>,
    producer_id: ProducerId,
    file: String,
    start_ms: u64,
    /// `None` while it is being recorded.
    end_ms: Option<u64>,
}

/// One stretch of a user speaking.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Speaking {
    user_id: Arc<str>,
    producer_id: ProducerId,
    start_ms: u64,
    /// `None` while they speak.
    end_ms: Option<u64>,
}

/// `manifest.json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    room: RoomName,
    /// Wall-clock start of the session, UTC, as text and as Unix milliseconds; every offset
    /// below is in ms from it.
    started_at: String,
    started_at_ms: u64,
    files: Vec<FileEntry>,
    speaking: Vec<Speaking>,
}

/// A recorded producer.
struct Recorded {
    track: u64,
    /// Index in `files`.
    file: usize,
    user_id: Arc<str>,
    /// Set once the consumer exists; dropping it closes it.
    consumer: Option<Consumer>,
}

struct State {
    manifest: Manifest,
    recorded: HashMap<ProducerId, Recorded>,
    /// Index in `speaking` of the open stretch of each producer.
    speaking_now: HashMap<ProducerId, usize>,
    /// Files made per user (by file-name form), for `<userId>-<n>`.
    files_per_user: HashMap<String, u32>,
}

/// A room's recording session; ends (files closed, manifest final) when dropped with the room.
pub struct RoomRecording {
    shared: Arc<Shared>,
    transport: DirectTransport,
    observer: AudioLevelObserver,
    capabilities: RtpCapabilities,
}

/// What the RTP and audio level callbacks need.
struct Shared {
    recorder: Arc<Recorder>,
    session: Arc<Session>,
    started: Instant,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands the manifest to the writer (the caller holds the state).
    fn publish(&self, state: &State) {
        if let Ok(json) = serde_json::to_vec_pretty(&state.manifest) {
            self.recorder.writer.manifest(&self.session, json);
        }
    }

    /// The audio levels of the last interval: `loud` are the producers above the threshold.
    fn levels(&self, loud: &[ProducerId]) {
        let now = self.now_ms();
        let since = now.saturating_sub(u64::from(LEVEL_INTERVAL_MS));
        let mut state = self.state();
        let mut changed = false;
        let quiet: Vec<ProducerId> = state
            .speaking_now
            .keys()
            .filter(|p| !loud.contains(*p))
            .copied()
            .collect();
        for producer in quiet {
            changed |= end_speaking(&mut state, producer, since);
        }
        for producer in loud {
            if state.speaking_now.contains_key(producer) {
                continue;
            }
            let Some(user_id) = state.recorded.get(producer).map(|r| r.user_id.clone()) else {
                continue;
            };
            changed = true;
            let speaking = &mut state.manifest.speaking;
            // A short pause continues the speaker's last stretch.
            let resumed = speaking.iter().rposition(|s| {
                s.producer_id == *producer
                    && s.end_ms
                        .is_some_and(|end| since.saturating_sub(end) <= SPEAKING_MERGE_MS)
            });
            let index = match resumed {
                Some(index) => {
                    speaking[index].end_ms = None;
                    index
                }
                None => {
                    speaking.push(Speaking {
                        user_id,
                        producer_id: *producer,
                        start_ms: since,
                        end_ms: None,
                    });
                    speaking.len() - 1
                }
            };
            state.speaking_now.insert(*producer, index);
        }
        if changed {
            self.publish(&state);
        }
    }
}

fn end_speaking(state: &mut State, producer: ProducerId, at: u64) -> bool {
    let Some(index) = state.speaking_now.remove(&producer) else {
        return false;
    };
    if let Some(stretch) = state.manifest.speaking.get_mut(index) {
        stretch.end_ms = Some(at.max(stretch.start_ms));
    }
    true
}

impl RoomRecording {
    async fn open(
        recorder: &Arc<Recorder>,
        room: &RoomName,
        router: &Router,
        span: &Span,
    ) -> Result<RoomRecording, OpenError> {
        let transport = router
            .create_direct_transport(DirectTransportOptions::default())
            .await?;
        let mut options = AudioLevelObserverOptions::default();
        options.max_entries = NonZeroU16::new(32).unwrap_or(NonZeroU16::MIN);
        options.threshold = SPEAKING_THRESHOLD;
        options.interval = LEVEL_INTERVAL_MS;
        let observer = router.create_audio_level_observer(options).await?;
        let capabilities: RtpCapabilities =
            serde_json::from_value(serde_json::to_value(router.rtp_capabilities())?)?;

        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let started_at_ms = u64::try_from(wall.as_millis()).unwrap_or(0);
        let session = Arc::new(Session::new(
            room.clone(),
            recorder.config.dir.join(file_name(room)),
            utc_stamp(wall.as_secs()),
            span.clone(),
        ));
        let state = State {
            manifest: Manifest {
                room: room.clone(),
                started_at: utc_iso(started_at_ms),
                started_at_ms,
                files: Vec::new(),
                speaking: Vec::new(),
            },
            recorded: HashMap::new(),
            speaking_now: HashMap::new(),
            files_per_user: HashMap::new(),
        };
        let shared = Arc::new(Shared {
            recorder: recorder.clone(),
            session,
            started: Instant::now(),
            state: Mutex::new(state),
        });
        {
            let shared = Arc::downgrade(&shared);
            observer
                .on_volumes(move |volumes| {
                    if let Some(shared) = shared.upgrade() {
                        let loud: Vec<ProducerId> =
                            volumes.iter().map(|v| v.producer.id()).collect();
                        shared.levels(&loud);
                    }
                })
                .detach();
        }
        {
            let shared = Arc::downgrade(&shared);
            observer
                .on_silence(move || {
                    if let Some(shared) = shared.upgrade() {
                        shared.levels(&[]);
                    }
                })
                .detach();
        }
        shared.publish(&shared.state());
        Ok(RoomRecording {
            shared,
            transport,
            observer,
            capabilities,
        })
    }

    /// Starts recording an audio producer of `user_id` unless the user is excluded or the
    /// room's recording stopped on an error. The consumer is made in the background.
    pub fn start(&self, user_id: &Arc<str>, producer: &Producer) {
        let shared = &self.shared;
        if producer.kind() != MediaKind::Audio
            || shared.session.failed()
            || shared.recorder.config.excludes(user_id)
        {
            return;
        }
        let track = shared.recorder.next_track.fetch_add(1, Ordering::Relaxed);
        let stereo = producer
            .rtp_parameters()
            .codecs
            .first()
            .is_some_and(|codec| {
                matches!(codec, RtpCodecParameters::Audio { parameters, .. }
                if parameters.get("stereo") == Some(&RtpCodecParametersParametersValue::Number(1)))
            });
        let file = {
            let mut state = shared.state();
            let user_file_name = file_name(user_id);
            let n = state
                .files_per_user
                .entry(user_file_name.clone())
                .or_insert(0);
            *n += 1;
            let file = format!("{user_file_name}-{n}.opus");
            let index = state.manifest.files.len();
            state.manifest.files.push(FileEntry {
                user_id: user_id.clone(),
                producer_id: producer.id(),
                file: file.clone(),
                start_ms: shared.now_ms(),
                end_ms: None,
            });
            state.recorded.insert(
                producer.id(),
                Recorded {
                    track,
                    file: index,
                    user_id: user_id.clone(),
                    consumer: None,
                },
            );
            shared.recorder.writer.open(Track {
                id: track,
                session: shared.session.clone(),
                file_name: file.clone(),
                user_id: user_id.clone(),
                producer: producer.id(),
                info: StreamInfo {
                    channels: if stereo { 2 } else { 1 },
                    comments: vec![
                        format!("USERID={user_id}"),
                        format!("ROOM={}", shared.session.room),
                        format!("PRODUCERID={}", producer.id()),
                    ],
                },
            });
            shared.publish(&state);
            file
        };

        let (transport, observer, shared) = (
            self.transport.clone(),
            self.observer.clone(),
            self.shared.clone(),
        );
        let options = ConsumerOptions::new(producer.id(), self.capabilities.clone());
        let producer_id = producer.id();
        tokio::spawn(async move {
            let consumer = match transport.consume(options).await {
                Ok(consumer) => consumer,
                // The producer closed meanwhile, or the worker refused: this file stays empty.
                Err(error) => {
                    warn!(parent: &shared.session.span, %error, %file, "could not consume an audio producer for recording");
                    return;
                }
            };
            let writer = shared.recorder.writer.clone();
            let session = Arc::downgrade(&shared.session);
            consumer
                .on_rtp(move |packet| {
                    if session.upgrade().is_some_and(|s| s.failed()) {
                        return;
                    }
                    if let Some(rtp) = parse_rtp(packet) {
                        writer.packet(track, rtp.sequence, rtp.timestamp, rtp.payload);
                    }
                })
                .detach();
            let _ = observer
                .add_producer(RtpObserverAddProducerOptions::new(producer_id))
                .await;
            let mut state = shared.state();
            match state.recorded.get_mut(&producer_id) {
                Some(recorded) if recorded.track == track => recorded.consumer = Some(consumer),
                // Stopped while the consumer was being made: it closes here.
                _ => drop(consumer),
            }
        });
    }

    /// Stops recording a producer (it closed or was replaced); its file is finished.
    pub fn stop(&self, producer: ProducerId) {
        let shared = &self.shared;
        let consumer = {
            let mut state = shared.state();
            let Some(recorded) = state.recorded.remove(&producer) else {
                return;
            };
            let now = shared.now_ms();
            if let Some(file) = state.manifest.files.get_mut(recorded.file) {
                file.end_ms = Some(now);
            }
            end_speaking(&mut state, producer, now);
            shared.recorder.writer.close(recorded.track);
            shared.publish(&state);
            recorded.consumer
        };
        drop(consumer);
    }
}

impl Drop for RoomRecording {
    fn drop(&mut self) {
        let producers: Vec<ProducerId> = self.shared.state().recorded.keys().copied().collect();
        for producer in producers {
            self.stop(producer);
        }
    }
}

/// A user id or room name as one safe path component: letters, digits, `-`, `_` and `.` are
/// kept, anything else becomes `_`, and a name that had to change gets a short hash of the
/// original so that two names never share a file (`../../etc` -> `.._.._etc-3c1a9f0e`). Never
/// empty, never `.` or `..`, never starting with `.`.
pub fn file_name(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe != name || safe.is_empty() {
        let hash = Sha256::digest(name.as_bytes());
        safe = format!("{safe}-{}", hex::encode(&hash[..4]));
    }
    safe
}

/// `20261130T071500Z`: a session directory's name.
pub fn utc_stamp(secs: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// `2026-11-30T07:15:00.123Z`.
pub fn utc_iso(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Where a room's sessions go, for tests and tools.
pub fn room_dir(dir: &std::path::Path, room: &str) -> PathBuf {
    dir.join(file_name(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert_eq!(file_name("Xy12Ab34Cd56Ef78"), "Xy12Ab34Cd56Ef78");
        for hostile in [
            "../../etc",
            "..",
            ".",
            "",
            "a/b",
            "/etc/passwd",
            "a\0b",
            ".hidden",
        ] {
            let safe = file_name(hostile);
            assert!(
                !safe.contains('/') && !safe.starts_with('.') && !safe.is_empty(),
                "{hostile:?} -> {safe:?}"
            );
            assert_ne!(safe, hostile);
        }
        assert_ne!(
            file_name("a/b"),
            file_name("a_b"),
            "no two names share a file"
        );
    }

    #[test]
    fn utc_names() {
        // 2026-11-30T07:15:00Z
        assert_eq!(utc_stamp(1_796_022_900), "20261130T071500Z");
        assert_eq!(utc_iso(1_796_022_900_123), "2026-11-30T07:15:00.123Z");
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
