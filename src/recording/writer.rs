//! The recording's only file I/O, on a dedicated thread: media threads and the async runtime
//! hand it packets and never wait for a disk. Packets wait in a bounded queue; when the thread
//! falls behind, further packets are dropped and counted rather than slowing the media.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mediasoup::prelude::ProducerId;
use tracing::Span;

use super::ogg_opus::{OggOpusStream, StreamInfo};
use crate::bus::{
    Bus, RecordingFailed, RecordingProgress, RecordingStarted, RecordingStopped, RoomName,
};

/// Packets waiting for the writer at most (about 10 s of 50 streams of 20 ms packets).
pub const MAX_QUEUED_PACKETS: usize = 25_000;
/// Recordings are for the service and, through its group, whoever it lets read them.
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// How often the bytes written and packets dropped are reported on the bus.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One room's recording session, shared by the room and the writer.
pub struct Session {
    pub room: RoomName,
    /// `<recordings dir>/<room as a file name>`.
    pub room_dir: PathBuf,
    /// The session directory's name: its start, UTC (`20261130T071500Z`).
    pub stamp: String,
    /// The session directory, made by the writer on first use (a suffix when the stamp is taken).
    dir: OnceLock<PathBuf>,
    /// Set on the first write error: the room records nothing more.
    pub failed: AtomicBool,
    /// The newest manifest, written by the writer when it gets to it (older ones are skipped).
    manifest: Mutex<Option<Vec<u8>>>,
    pub span: Span,
}

impl Session {
    pub fn new(room: RoomName, room_dir: PathBuf, stamp: String, span: Span) -> Self {
        Session {
            room,
            room_dir,
            stamp,
            dir: OnceLock::new(),
            failed: AtomicBool::new(false),
            manifest: Mutex::new(None),
            span,
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One file to open: an audio producer's recording.
pub struct Track {
    pub id: u64,
    pub session: Arc<Session>,
    pub file_name: String,
    pub user_id: Arc<str>,
    pub producer: ProducerId,
    pub info: StreamInfo,
}

enum Command {
    Open(Box<Track>),
    Packet {
        track: u64,
        sequence: u16,
        timestamp: u32,
        payload: Vec<u8>,
    },
    Close(u64),
    Manifest(Arc<Session>),
    Flush(Sender<()>),
}

/// The sending side, cheap to clone into RTP callbacks.
#[derive(Clone)]
pub struct WriterHandle {
    queue: Sender<Command>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl WriterHandle {
    /// Starts the writer thread; it ends once every handle is gone.
    pub fn spawn(bus: Bus) -> io::Result<WriterHandle> {
        let (queue, commands) = mpsc::channel();
        let handle = WriterHandle {
            queue,
            queued: Arc::default(),
            dropped: Arc::default(),
        };
        let writer = Writer {
            bus,
            tracks: HashMap::new(),
            queued: handle.queued.clone(),
            dropped: handle.dropped.clone(),
            bytes: 0,
        };
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || writer.run(commands))?;
        Ok(handle)
    }

    /// Queues one RTP packet's payload, or drops and counts it when the writer is behind.
    pub fn packet(&self, track: u64, sequence: u16, timestamp: u32, payload: &[u8]) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_PACKETS {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let command = Command::Packet {
            track,
            sequence,
            timestamp,
            payload: payload.to_vec(),
        };
        if self.queue.send(command).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn open(&self, track: Track) {
        let _ = self.queue.send(Command::Open(Box::new(track)));
    }

    pub fn close(&self, track: u64) {
        let _ = self.queue.send(Command::Close(track));
    }

    /// Has the session's manifest rewritten as `json`; only the newest waiting one is written.
    pub fn manifest(&self, session: &Arc<Session>, json: Vec<u8>) {
        let pending = session
            .manifest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(json)
            .is_some();
        if !pending {
            let _ = self.queue.send(Command::Manifest(session.clone()));
        }
    }

    /// Waits (blocking) until everything queued before is on disk, or `deadline` passed.
    pub fn flush(&self, deadline: Duration) -> bool {
        let (done, flushed) = mpsc::channel();
        self.queue.send(Command::Flush(done)).is_ok() && flushed.recv_timeout(deadline).is_ok()
    }
}

struct OpenFile {
    track: Box<Track>,
    file: File,
    stream: OggOpusStream,
    bytes: u64,
    opened: Instant,
}

struct Writer {
    bus: Bus,
    tracks: HashMap<u64, OpenFile>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    /// Bytes written since the last progress report.
    bytes: u64,
}

impl Writer {
    fn run(mut self, commands: Receiver<Command>) {
        let mut reported = Instant::now();
        loop {
            match commands.recv_timeout(PROGRESS_EVERY) {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                self.report();
            }
        }
        for id in self.tracks.keys().copied().collect::<Vec<_>>() {
            self.close(id);
        }
        self.report();
    }

    fn report(&mut self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if self.bytes > 0 || dropped > 0 {
            let bytes = std::mem::take(&mut self.bytes);
            self.bus
                .emit(&Span::none(), RecordingProgress { bytes, dropped });
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open(track) => self.open(track),
            Command::Packet {
                track,
                sequence,
                timestamp,
                payload,
            } => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                let Some(open) = self.tracks.get_mut(&track) else {
                    return;
                };
                let written = open
                    .stream
                    .push(sequence, timestamp, payload)
                    .and_then(|()| append(&mut open.file, &mut open.stream, &mut open.bytes));
                self.bytes += written.as_ref().map_or(0, |n| *n);
                if let Err(error) = written {
                    let session = open.track.session.clone();
                    self.fail(&session, &error);
                }
            }
            Command::Close(track) => self.close(track),
            Command::Manifest(session) => {
                let json = session
                    .manifest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let (Some(json), false) = (json, session.failed()) {
                    if let Err(error) = write_manifest(&session, &json) {
                        self.fail(&session, &error);
                    }
                }
            }
            Command::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    fn open(&mut self, track: Box<Track>) {
        let session = track.session.clone();
        if session.failed() {
            return;
        }
        let opened = session_dir(&session).and_then(|dir| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(dir.join(&track.file_name))?;
            // Explicitly: the service's umask (0077 in the unit) would take the group's read.
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            let stream = OggOpusStream::new(track.id as u32, &track.info)?;
            Ok((file, stream))
        });
        let (mut file, mut stream) = match opened {
            Ok(opened) => opened,
            Err(error) => return self.fail(&session, &error),
        };
        let mut bytes = 0;
        if let Err(error) = append(&mut file, &mut stream, &mut bytes) {
            return self.fail(&session, &error);
        }
        self.bytes += bytes;
        self.bus.emit(
            &session.span,
            RecordingStarted {
                room: session.room.clone(),
                user_id: track.user_id.clone(),
                producer: track.producer,
                file: track.file_name.clone(),
            },
        );
        self.tracks.insert(
            track.id,
            OpenFile {
                track,
                file,
                stream,
                bytes,
                opened: Instant::now(),
            },
        );
    }

    /// Ends a file: the held packets and the end-of-stream page are written out.
    fn close(&mut self, id: u64) {
        let Some(mut open) = self.tracks.remove(&id) else {
            return;
        };
        let before = open.bytes;
        let written = open
            .stream
            .finish()
            .and_then(|()| append(&mut open.file, &mut open.stream, &mut open.bytes));
        self.bytes += open.bytes - before;
        let session = open.track.session.clone();
        self.stopped(&session, &open);
        if let Err(error) = written {
            self.fail(&session, &error);
        }
    }

    /// Says that one file is finished (closed normally or after an error).
    fn stopped(&self, session: &Session, open: &OpenFile) {
        self.bus.emit(
            &session.span,
            RecordingStopped {
                room: session.room.clone(),
                producer: open.track.producer,
                file: open.track.file_name.clone(),
                bytes: open.bytes,
                duration: open.opened.elapsed(),
            },
        );
    }

    /// Stops the session's recording after a write error: its files are closed as they are
    /// (each ends at its last whole page), and nothing more is written for the room.
    fn fail(&mut self, session: &Arc<Session>, error: &io::Error) {
        if session.failed.swap(true, Ordering::Relaxed) {
            return;
        }
        let ids: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, open)| Arc::ptr_eq(&open.track.session, session))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(open) = self.tracks.remove(&id) {
                self.stopped(session, &open);
            }
        }
        self.bus.emit(
            &session.span,
            RecordingFailed {
                room: session.room.clone(),
                error: error.to_string(),
            },
        );
    }
}

/// Appends the pages the stream finished; a page is written whole, in one call, as soon as it
/// is complete, so that the file is playable up to its last page at any moment.
fn append(file: &mut File, stream: &mut OggOpusStream, bytes: &mut u64) -> io::Result<u64> {
    let pages = stream.take_pages();
    if pages.is_empty() {
        return Ok(0);
    }
    file.write_all(&pages)?;
    *bytes += pages.len() as u64;
    Ok(pages.len() as u64)
}

/// The session's directory, made on first use (mode 0750); a session started within the same
/// second as an earlier one of the room gets `-2`, `-3`, ...
fn session_dir(session: &Session) -> io::Result<&Path> {
    if let Some(dir) = session.dir.get() {
        return Ok(dir);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&session.room_dir)?;
    let mut attempt = 1;
    let dir = loop {
        let name = match attempt {
            1 => session.stamp.clone(),
            n => format!("{}-{n}", session.stamp),
        };
        let dir = session.room_dir.join(name);
        match DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, Permissions::from_mode(DIR_MODE))?;
                break dir;
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(error) => return Err(error),
        }
    };
    Ok(session.dir.get_or_init(|| dir))
}

/// Replaces `manifest.json` atomically: a reader sees the old or the new one, never a part.
fn write_manifest(session: &Session, json: &[u8]) -> io::Result<()> {
    let dir = session_dir(session)?;
    let temporary = dir.join(".manifest.json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&temporary)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(json)?;
    drop(file);
    std::fs::rename(&temporary, dir.join("manifest.json"))
}
