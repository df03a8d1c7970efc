//! One WebSocket = one peer: reads requests, answers them in order, relays what the room has to
//! say, pings it, and cleans up when the socket closes, the peer goes silent or is replaced.
//!
//! Answers and notifications go through the peer's [`Outbox`] (see `outbox`): a peer that does
//! not read is closed with 1008. Closing never waits on the socket for more than
//! [`CLOSE_GRACE`]: the close frame goes out if the socket still takes it by then, and the
//! client's answering close frame is read if it comes by then; otherwise the connection is
//! dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn, Span};

use super::message;
use super::outbox::{close_frame, write_frames, Outbox, TooSlow, OUTGOING_LIMIT};
use super::request::{on_request, Session};
use super::request_rate::RequestRate;
use crate::bus::{LeaveReason, PeerId, RefusalReason, Refused, RoomName, SocketOpened};
use crate::config::Limits;
use crate::rooms::{session_span, CloseSignal, Liveness, Peer, PeerCommand, PeerLink, Room, Rooms};
use crate::shutdown::Shutdown;

/// Room notifications queued for one peer before the room counts it as too slow.
const COMMAND_QUEUE: usize = 512;
/// How long closing a connection may wait for its socket to take what is left and the close
/// frame, and again for the client's close frame; then the connection is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest text frame accepted (the biggest legitimate request, `consume` with Chrome's RTP
/// capabilities, is about 10 KiB). Larger frames close the socket with code 1009.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// What every connection shares.
pub struct Signaling {
    pub rooms: Arc<Rooms>,
    limits: Limits,
    next_peer: AtomicU64,
    connections: Arc<Connections>,
}

impl Signaling {
    pub fn new(rooms: Arc<Rooms>, limits: Limits) -> Self {
        Signaling {
            rooms,
            limits,
            next_peer: AtomicU64::new(1),
            connections: Arc::default(),
        }
    }

    /// The connections being served, for shutdown to wait on.
    pub fn connections(&self) -> Arc<Connections> {
        Arc::clone(&self.connections)
    }
}

/// The WebSocket connections being served: each holds a [`Tracked`] while its task runs.
#[derive(Default)]
pub struct Connections {
    open: Mutex<usize>,
    none_left: Notify,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, usize> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count(&self) -> usize {
        *self.open()
    }

    fn track(self: &Arc<Self>) -> Tracked {
        *self.open() += 1;
        Tracked(Arc::clone(self))
    }

    /// Waits until no connection is left, at most `deadline`; `false` when some still are.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let idle = async {
            loop {
                let none_left = self.none_left.notified();
                tokio::pin!(none_left);
                none_left.as_mut().enable();
                if self.count() == 0 {
                    return;
                }
                none_left.await;
            }
        };
        tokio::time::timeout(deadline, idle).await.is_ok()
    }
}

/// One connection's place in [`Connections`], given back when its task ends, however it ends.
struct Tracked(Arc<Connections>);

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut open = self.0.open();
        *open -= 1;
        if *open == 0 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// The peer's place in its room, given up when the connection's task ends, however it ends.
struct Membership {
    rooms: Arc<Rooms>,
    room: Arc<Room>,
    peer: PeerId,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.rooms.leave(&self.room, self.peer);
    }
}

/// Sends a close frame straight to `sink`, giving up after [`CLOSE_GRACE`].
async fn close_now<K>(sink: &mut K, code: CloseCode, reason: &str)
where
    K: Sink<Message> + Unpin,
{
    let closing = async {
        // The peer may be gone already; nothing more to do then.
        let _ = sink
            .send(Message::Close(Some(close_frame(code, reason))))
            .await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}

/// How the connection ends: why the peer leaves, and the close frame it is sent.
struct Ending {
    reason: LeaveReason,
    close: Option<CloseFrame>,
}

impl Ending {
    fn leave(reason: LeaveReason) -> Self {
        let close = match reason {
            // The client closed: tungstenite echoes its close frame.
            LeaveReason::Disconnected => None,
            LeaveReason::Replaced => Some(close_frame(
                CloseCode::Library(4000),
                "replaced by a newer connection of the same user",
            )),
            LeaveReason::TooSlow => Some(close_frame(
                CloseCode::Policy,
                "too slow: the connection did not read its notifications",
            )),
            LeaveReason::TimedOut => Some(close_frame(
                CloseCode::Policy,
                "timed out: no answer to pings",
            )),
            LeaveReason::RequestFlood => Some(close_frame(
                CloseCode::Policy,
                "too many requests: kept sending over the request rate",
            )),
            LeaveReason::ServerShutdown => {
                Some(close_frame(CloseCode::Away, "server shutting down"))
            }
            LeaveReason::SelfTestOver => Some(close_frame(
                CloseCode::Normal,
                "self-test over: its room is closed",
            )),
        };
        Ending { reason, close }
    }

    /// The connection broke, or the client sent something that ends it, with this close code.
    fn broken(code: CloseCode, reason: &str) -> Self {
        Ending {
            reason: LeaveReason::Disconnected,
            close: Some(close_frame(code, reason)),
        }
    }
}

/// Serves one peer of room `room_name` until its socket closes.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    room_name: RoomName,
    signaling: Arc<Signaling>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _tracked = signaling.connections.track();
    let peer_id = PeerId(signaling.next_peer.fetch_add(1, Ordering::Relaxed));
    let (commands, mut command_queue) = mpsc::channel(COMMAND_QUEUE);
    let close_signal = Arc::new(CloseSignal::default());
    let liveness = Arc::new(Liveness::default());
    liveness.heard();
    let link = PeerLink {
        commands: commands.clone(),
        close: close_signal.clone(),
        liveness: liveness.clone(),
    };
    let (mut sink, mut stream) = ws.split();

    let rooms = &signaling.rooms;
    let limits = &signaling.limits;
    let room = match rooms.join(room_name.clone(), peer_id, link).await {
        Ok(room) => room,
        Err(error) => {
            let code = match error.refusal() {
                Some(reason) => {
                    rooms.bus().emit(&Span::none(), Refused { reason });
                    CloseCode::Again
                }
                None => {
                    warn!(room = %room_name, %error, "could not open the room");
                    CloseCode::Error
                }
            };
            close_now(&mut sink, code, &error.to_string()).await;
            return;
        }
    };
    // Declared before the peer, so dropped after it: the peer leaves, then the room.
    let _membership = Membership {
        rooms: Arc::clone(rooms),
        room: Arc::clone(&room),
        peer: peer_id,
    };
    let span = session_span(&room, peer_id);
    let bus = rooms.bus().clone();
    bus.emit(
        &span,
        SocketOpened {
            peer: peer_id,
            room: room_name,
        },
    );
    let mut peer = Peer::new(
        peer_id,
        room.clone(),
        span,
        bus,
        rooms.transport_settings.clone(),
        commands,
    );
    let outbox = Arc::new(Outbox::default());
    let mut writer: JoinHandle<()> = tokio::spawn(write_frames(sink, outbox.clone()));
    let mut writer_done = false;
    let mut pings = tokio::time::interval(limits.ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pings.tick().await;
    let mut rate = RequestRate::new(limits.requests_per_sec, limits.request_burst);
    // Whether the client has sent its close frame (or its side is gone): nothing more to read.
    let mut client_closed = false;

    let ending = loop {
        tokio::select! {
            reason = close_signal.closed() => break Ending::leave(reason),
            () = shutdown.wait() => break Ending::leave(LeaveReason::ServerShutdown),
            _ = &mut writer, if !writer_done => {
                // The socket failed under the writer: the peer is gone.
                writer_done = true;
                break Ending::leave(LeaveReason::Disconnected);
            }
            _ = pings.tick() => {
                if liveness.last_heard().is_none_or(|at| at.elapsed() >= limits.peer_timeout) {
                    break Ending::leave(LeaveReason::TimedOut);
                }
                outbox.ping();
            }
            () = liveness.ping_requested() => outbox.ping(),
            Some(command) = command_queue.recv() => {
                let text = match command {
                    PeerCommand::NewProducer(announcement) => message::new_producer(&announcement),
                    PeerCommand::ProducerClosed(producer) => message::producer_closed(producer),
                    PeerCommand::ConsumerGone(consumer) => {
                        peer.forget_consumer(consumer);
                        continue;
                    }
                };
                if outbox.push(text).is_err() {
                    break Ending::leave(LeaveReason::TooSlow);
                }
            }
            frame = stream.next() => {
                liveness.heard();
                let outcome = match frame {
                    Some(Ok(Message::Text(text))) => {
                        if rate.admit() {
                            let session = Session { outbox: &outbox, close: &close_signal, limits, room: &room };
                            // Boxed: a request's future (mediasoup's inline) is KiBs, and
                            // inline it would make every connection's task that large for its
                            // whole life, idle or not.
                            Box::pin(handle_request(&mut peer, &session, &mut shutdown, &text)).await
                        } else {
                            refuse_over_rate(&peer, &outbox, &rate, limits, &text)
                        }
                    }
                    Some(Ok(Message::Binary(_))) => outbox
                        .push(message::error_frame("binary frames are not part of the protocol: send JSON text frames"))
                        .map_err(|TooSlow| Ending::leave(LeaveReason::TooSlow)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    Some(Err(WsError::Capacity(error))) => {
                        debug!(parent: peer.span(), %error, "frame too large");
                        let reason = format!("frame too large: the limit is {MAX_FRAME_BYTES} bytes");
                        Err(Ending::broken(CloseCode::Size, &reason))
                    }
                    Some(Err(WsError::Utf8(_))) => {
                        Err(Ending::broken(CloseCode::Invalid, "text frame is not valid UTF-8"))
                    }
                    Some(Err(WsError::Protocol(error))) => {
                        debug!(parent: peer.span(), %error, "WebSocket protocol error");
                        Err(Ending::broken(CloseCode::Protocol, &error.to_string()))
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        client_closed = true;
                        Err(Ending::leave(LeaveReason::Disconnected))
                    }
                };
                if let Err(ending) = outcome {
                    break ending;
                }
            }
        }
    };

    liveness.ended();
    let too_slow = ending.reason == LeaveReason::TooSlow;
    if too_slow {
        warn!(
            parent: peer.span(),
            queued = outbox.queued(),
            limit = OUTGOING_LIMIT,
            "closing a connection that does not read what it is sent (code 1008)"
        );
    }
    // What is queued still goes out before the close frame, except to a peer that does not read.
    let started_close = Instant::now();
    outbox.end(ending.close, too_slow);
    if !writer_done
        && tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
    {
        debug!(parent: peer.span(), grace = ?CLOSE_GRACE, "the socket did not take the close frame in time: dropping the connection");
        writer.abort();
        let _ = writer.await;
    } else if !client_closed && !too_slow {
        // Our close frame is out: read until the client's own close frame arrives, so that the
        // socket is not closed with unread input (which resets the connection and can lose the
        // close frame on its way).
        let answered = async {
            while let Some(Ok(frame)) = stream.next().await {
                if frame.is_close() {
                    break;
                }
            }
        };
        let left = CLOSE_GRACE.saturating_sub(started_close.elapsed());
        let _ = tokio::time::timeout(left, answered).await;
    }
    // Both halves are gone now: the socket is closed.
    drop(stream);
    peer.leave(ending.reason);
}

/// Answers a request over the socket's rate with an error; a client that keeps going is closed.
fn refuse_over_rate(
    peer: &Peer,
    outbox: &Outbox,
    rate: &RequestRate,
    limits: &Limits,
    text: &str,
) -> Result<(), Ending> {
    peer.emit(Refused {
        reason: RefusalReason::RequestRate,
    });
    if rate.flooding() {
        return Err(Ending::leave(LeaveReason::RequestFlood));
    }
    let error = format!(
        "too many requests: at most {} per second (bursts of {})",
        limits.requests_per_sec, limits.request_burst
    );
    let frame = match message::request_id(text) {
        Some(request_id) => message::error_response(&request_id, &error),
        None => message::error_frame(&error),
    };
    outbox
        .push(frame)
        .map_err(|TooSlow| Ending::leave(LeaveReason::TooSlow))
}

/// Handles one request; a peer found too slow meanwhile is not kept waiting for the request to
/// finish (it cannot take the answer anyway). A replaced peer gets its answer first; on shutdown
/// the request gets [`CLOSE_GRACE`] more to finish, so that it cannot hold up the drain.
async fn handle_request(
    peer: &mut Peer,
    session: &Session<'_>,
    shutdown: &mut Shutdown,
    text: &str,
) -> Result<(), Ending> {
    let close_signal = session.close;
    let handling = on_request(peer, session, text);
    tokio::pin!(handling);
    let mut replaced = false;
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            outcome = &mut handling => {
                return outcome.map_err(|TooSlow| Ending::leave(LeaveReason::TooSlow));
            }
            reason = close_signal.closed(), if !replaced => {
                if reason == LeaveReason::TooSlow {
                    return Err(Ending::leave(LeaveReason::TooSlow));
                }
                replaced = true;
            }
            () = shutdown.wait(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(stopping.unwrap_or_else(tokio::time::Instant::now)), if stopping.is_some() => {
                return Err(Ending::leave(LeaveReason::ServerShutdown));
            }
        }
    }
}
