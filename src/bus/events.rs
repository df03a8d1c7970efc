//! Everything worth observing, one small struct per event. The core fills them in where the
//! thing happens; the sinks decide what each one means for logs, metrics and systemd.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mediasoup::prelude::{ConsumerId, MediaKind, ProducerId, Protocol, TransportId};
use mediasoup::router::RouterId;
use mediasoup::types::data_structures::{DtlsState, IceState};
use mediasoup::worker::WorkerId;

use super::funnel::{JoinFailure, JoinStage};
use super::refusal::{Refused, WorkerLogSuppressed};

/// The name of a room, from the WebSocket URL's path.
pub type RoomName = Arc<str>;

/// One WebSocket connection, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// Which way media flows on a transport, seen from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer produces on it.
    Send,
    /// The peer consumes on it.
    Recv,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }
}

pub fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSpawned {
    pub worker: usize,
    pub id: WorkerId,
    /// Single-port mode: the UDP and TCP port all of this worker's transports share.
    pub media_port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct WorkerDied {
    pub worker: usize,
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct WorkerClosed {
    pub worker: usize,
}

/// A periodic health probe: one cheap request to the worker, answered or not within the deadline.
#[derive(Debug, Clone)]
pub struct WorkerProbed {
    pub worker: usize,
    pub duration: Duration,
    pub ok: bool,
}

#[derive(Debug, Clone)]
pub struct RouterCreated {
    pub worker: usize,
    pub router: RouterId,
}

#[derive(Debug, Clone)]
pub struct RouterClosed {
    pub worker: usize,
    pub router: RouterId,
}

#[derive(Debug, Clone)]
pub struct RoomOpened {
    pub room: RoomName,
    pub worker: usize,
    pub router: RouterId,
}

#[derive(Debug, Clone)]
pub struct RoomClosed {
    pub room: RoomName,
    pub worker: usize,
    pub router: RouterId,
}

#[derive(Debug, Clone)]
pub struct SocketOpened {
    pub peer: PeerId,
    pub room: RoomName,
}

#[derive(Debug, Clone)]
pub struct PeerJoined {
    pub peer: PeerId,
    pub room: RoomName,
    pub user_id: Arc<str>,
}

/// Why a peer left its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client closed the socket or the connection broke.
    Disconnected,
    /// Another connection with the same user id joined the room.
    Replaced,
    /// The client could not keep up with its notifications.
    TooSlow,
    /// The client sent nothing, not even a pong, for `MEDIASOUP_PEER_TIMEOUT_SECS`.
    TimedOut,
    /// The client kept sending requests over its request rate.
    RequestFlood,
    ServerShutdown,
    /// A self-test room reached the end of its lifetime.
    SelfTestOver,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Replaced => "replaced",
            LeaveReason::TooSlow => "too_slow",
            LeaveReason::TimedOut => "timed_out",
            LeaveReason::RequestFlood => "request_flood",
            LeaveReason::ServerShutdown => "server_shutdown",
            LeaveReason::SelfTestOver => "self_test_over",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerLeft {
    pub peer: PeerId,
    pub room: RoomName,
    /// Set once the first request named the user.
    pub user_id: Option<Arc<str>>,
    pub reason: LeaveReason,
}

#[derive(Debug, Clone)]
pub struct PeerReplaced {
    pub old: PeerId,
    pub new: PeerId,
    pub room: RoomName,
    pub user_id: Arc<str>,
}

/// A peer reached a join stage for the first time.
#[derive(Debug, Clone)]
pub struct JoinProgressed {
    pub peer: PeerId,
    pub stage: JoinStage,
}

#[derive(Debug, Clone)]
pub struct JoinFailed {
    pub peer: PeerId,
    pub reason: JoinFailure,
}

/// One signaling request answered (or refused).
#[derive(Debug, Clone)]
pub struct RequestHandled {
    pub peer: PeerId,
    /// The request's `type`, or `invalid` when it had none we know.
    pub request: &'static str,
    pub ok: bool,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct TransportCreated {
    pub peer: PeerId,
    pub worker: usize,
    pub transport: TransportId,
    pub direction: Direction,
}

#[derive(Debug, Clone)]
pub struct TransportClosed {
    pub peer: PeerId,
    pub worker: usize,
    pub transport: TransportId,
    pub direction: Direction,
}

#[derive(Debug, Clone)]
pub struct IceStateChanged {
    pub peer: PeerId,
    pub transport: TransportId,
    pub state: IceState,
}

#[derive(Debug, Clone)]
pub struct DtlsStateChanged {
    pub peer: PeerId,
    pub transport: TransportId,
    pub state: DtlsState,
    /// Time since the transport was created.
    pub elapsed: Duration,
}

/// ICE chose the network path: the protocol tells UDP from TCP (a firewall hint).
#[derive(Debug, Clone)]
pub struct IceTupleSelected {
    pub peer: PeerId,
    pub transport: TransportId,
    pub protocol: Protocol,
    pub remote: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ProducerCreated {
    pub peer: PeerId,
    pub producer: ProducerId,
    pub kind: MediaKind,
    pub media_tag: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct ProducerClosed {
    pub peer: PeerId,
    pub producer: ProducerId,
    pub kind: MediaKind,
}

/// The peer paused or resumed its producer (its consumers follow in the worker, unannounced).
#[derive(Debug, Clone)]
pub struct ProducerPaused {
    pub peer: PeerId,
    pub producer: ProducerId,
    pub kind: MediaKind,
    /// false: resumed.
    pub paused: bool,
}

#[derive(Debug, Clone)]
pub struct ProducerScored {
    pub peer: PeerId,
    pub producer: ProducerId,
    pub kind: MediaKind,
    /// 0 (unusable) to 10 (perfect), from the worker.
    pub score: u8,
}

#[derive(Debug, Clone)]
pub struct ConsumerCreated {
    pub peer: PeerId,
    pub consumer: ConsumerId,
    pub producer: ProducerId,
    pub kind: MediaKind,
}

#[derive(Debug, Clone)]
pub struct ConsumerClosed {
    pub peer: PeerId,
    pub consumer: ConsumerId,
    pub kind: MediaKind,
}

/// The peer paused or resumed its consumer, or resumed it after creating it paused; a consumer
/// paused because its producer was is not announced again (see [`ProducerPaused`]).
#[derive(Debug, Clone)]
pub struct ConsumerPaused {
    pub peer: PeerId,
    pub consumer: ConsumerId,
    pub kind: MediaKind,
    /// false: resumed.
    pub paused: bool,
}

#[derive(Debug, Clone)]
pub struct ConsumerScored {
    pub peer: PeerId,
    pub consumer: ConsumerId,
    pub kind: MediaKind,
    pub score: u8,
    pub producer_score: u8,
}

#[derive(Debug, Clone)]
pub struct ConsumerLayersChanged {
    pub peer: PeerId,
    pub consumer: ConsumerId,
    pub spatial: Option<u8>,
    pub temporal: Option<u8>,
}

/// Which side of the server a media stream is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From a producing peer into the server.
    In,
    /// From the server out to a consuming peer.
    Out,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::In => "in",
            Flow::Out => "out",
        }
    }
}

/// One stats poll of one producer (`In`) or consumer (`Out`); counters are increments since the
/// previous sample of the same object.
#[derive(Debug, Clone)]
pub struct MediaSampled {
    pub kind: MediaKind,
    pub flow: Flow,
    pub bytes: u64,
    pub bitrate: u64,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Fraction of packets lost in the last report, 0..=1.
    pub loss: f64,
    pub rtt: Option<Duration>,
}

/// One round of stats polling finished.
#[derive(Debug, Clone)]
pub struct StatsPolled {
    pub objects: usize,
    pub skipped: usize,
    pub duration: Duration,
}

/// A file of the per-speaker recording was opened (headers written).
#[derive(Debug, Clone)]
pub struct RecordingStarted {
    pub room: RoomName,
    pub user_id: Arc<str>,
    pub producer: ProducerId,
    /// Its name in the session directory.
    pub file: String,
}

/// A recording file was finished: its producer closed or was replaced, the room closed, or the
/// room's recording stopped on a write error.
#[derive(Debug, Clone)]
pub struct RecordingStopped {
    pub room: RoomName,
    pub producer: ProducerId,
    pub file: String,
    pub bytes: u64,
    pub duration: Duration,
}

/// A room's recording stopped on an error (a write error, a full disk); its media go on.
#[derive(Debug, Clone)]
pub struct RecordingFailed {
    pub room: RoomName,
    pub error: String,
}

/// The recording writer's output since its previous report (about once a second while busy).
#[derive(Debug, Clone)]
pub struct RecordingProgress {
    /// Bytes appended to recording files.
    pub bytes: u64,
    /// Packets dropped because the writer was behind.
    pub dropped: u64,
}

/// Workers up and listeners bound: the server takes traffic.
#[derive(Debug, Clone)]
pub struct ServerReady {
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    pub workers: usize,
    /// The address put into ICE candidates, if any.
    pub announced: Option<String>,
    /// WebSockets need a room token (`MEDIASOUP_SECRET`).
    pub token_required: bool,
    /// The media ports, for the firewall: the range, or one UDP and TCP port per worker.
    pub media_ports: MediaPorts,
}

/// Where media is received: the ports an operator opens or forwards, UDP and TCP alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPorts {
    /// A port per transport, from `MEDIASOUP_RTC_MIN_PORT..MAX_PORT`.
    Range { first: u16, last: u16 },
    /// One port per worker (`MEDIASOUP_RTC_PORT`), shared by its transports.
    Single { first: u16, last: u16 },
}

impl fmt::Display for MediaPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaPorts::Range { first, last } => {
                write!(f, "{first}-{last} udp+tcp, a port per transport")
            }
            MediaPorts::Single { first, last } if first == last => {
                write!(f, "{first} udp+tcp, shared by every transport")
            }
            MediaPorts::Single { first, last } => {
                write!(f, "{first}-{last} udp+tcp, one per worker")
            }
        }
    }
}

/// Shutdown began: no new connections.
#[derive(Debug, Clone)]
pub struct ServerStopping;

/// Shutdown finished: the last event; sinks flush and end.
#[derive(Debug, Clone)]
pub struct ServerStopped;

macro_rules! events {
    ($($name:ident),* $(,)?) => {
        /// Every event the core emits.
        #[derive(Debug, Clone)]
        pub enum Event {
            $($name($name),)*
        }
        $(impl From<$name> for Event {
            fn from(event: $name) -> Self {
                Event::$name(event)
            }
        })*
    };
}

events!(
    WorkerSpawned,
    WorkerDied,
    WorkerClosed,
    WorkerProbed,
    RouterCreated,
    RouterClosed,
    RoomOpened,
    RoomClosed,
    SocketOpened,
    PeerJoined,
    PeerLeft,
    PeerReplaced,
    JoinProgressed,
    JoinFailed,
    RequestHandled,
    TransportCreated,
    TransportClosed,
    IceStateChanged,
    DtlsStateChanged,
    IceTupleSelected,
    ProducerCreated,
    ProducerClosed,
    ProducerPaused,
    ProducerScored,
    ConsumerCreated,
    ConsumerClosed,
    ConsumerPaused,
    ConsumerScored,
    ConsumerLayersChanged,
    MediaSampled,
    StatsPolled,
    Refused,
    WorkerLogSuppressed,
    RecordingStarted,
    RecordingStopped,
    RecordingFailed,
    RecordingProgress,
    ServerReady,
    ServerStopping,
    ServerStopped,
);
