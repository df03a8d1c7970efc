//! One WebSocket = one peer: reads requests, answers them in order, relays what the room has to
//! say, and cleans up when the socket closes or the peer is replaced.
//!
//! Writing never holds anything up: the connection's task only puts frames into the peer's
//! [`Outbox`], and a writer task of its own drains it into the socket. A peer that does not read
//! lets its socket fill up, then its outbox; once [`OUTGOING_LIMIT`] frames wait there it is
//! closed with 1008. Closing never waits on the socket for more than [`CLOSE_GRACE`]: the close
//! frame goes out if the socket still takes it by then, otherwise the connection is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, warn, Instrument};

use super::handler::{self, FollowUp};
use super::message::{self, ParseError};
use crate::bus::{LeaveReason, PeerId, RequestHandled, RoomName, SocketOpened};
use crate::rooms::{session_span, CloseSignal, Peer, PeerCommand, PeerLink, Rooms};
use crate::shutdown::Shutdown;

/// Room notifications queued for one peer before the room counts it as too slow.
const COMMAND_QUEUE: usize = 512;
/// Frames (answers and notifications) waiting for a peer's socket before it counts as too slow.
pub const OUTGOING_LIMIT: usize = 512;
/// How long closing a connection may wait for its socket to take what is left and the close
/// frame; then the connection is dropped without it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest text frame accepted (the biggest legitimate request, `consume` with Chrome's RTP
/// capabilities, is about 10 KiB). Larger frames close the socket with code 1009.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// What every connection shares.
pub struct Signaling {
    pub rooms: Arc<Rooms>,
    next_peer: AtomicU64,
}

impl Signaling {
    pub fn new(rooms: Arc<Rooms>) -> Self {
        Signaling {
            rooms,
            next_peer: AtomicU64::new(1),
        }
    }
}

type WsSink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// The peer's outbox is over [`OUTGOING_LIMIT`]: it does not read what it is sent.
#[derive(Debug)]
struct TooSlow;

/// Frames waiting to be written to one peer's socket, in order, then how the connection ends.
/// Filled by the connection's task, drained by its writer task ([`write_frames`]).
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    wake: Notify,
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<Message>,
    /// Set once the connection ends: the close frame to send after the frames, if any.
    end: Option<Option<CloseFrame>>,
}

/// What the writer does next.
enum Next {
    Frame(Message),
    End(Option<CloseFrame>),
    Wait,
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame; refused when [`OUTGOING_LIMIT`] frames are waiting already.
    fn push(&self, text: String) -> Result<(), TooSlow> {
        {
            let mut state = self.state();
            if state.frames.len() >= OUTGOING_LIMIT {
                return Err(TooSlow);
            }
            state.frames.push_back(Message::text(text));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues frames whatever the limit: the announcements owed to a late joiner, which may
    /// outnumber the limit in a big room.
    fn push_all(&self, texts: impl IntoIterator<Item = String>) {
        self.state()
            .frames
            .extend(texts.into_iter().map(Message::text));
        self.wake.notify_one();
    }

    fn queued(&self) -> usize {
        self.state().frames.len()
    }

    /// Ends the connection: the writer sends what is queued (nothing when `discard`), then the
    /// close frame if there is one, and stops.
    fn end(&self, close: Option<CloseFrame>, discard: bool) {
        {
            let mut state = self.state();
            if discard {
                state.frames.clear();
            }
            state.end.get_or_insert(close);
        }
        self.wake.notify_one();
    }

    fn next(&self) -> Next {
        let mut state = self.state();
        if let Some(frame) = state.frames.pop_front() {
            Next::Frame(frame)
        } else if let Some(close) = state.end.take() {
            Next::End(close)
        } else {
            Next::Wait
        }
    }
}

/// The writer task: drains the outbox into the socket until the connection ends or the socket
/// fails. The only place that waits for the socket to take data.
async fn write_frames<S>(mut sink: WsSink<S>, outbox: Arc<Outbox>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match outbox.next() {
            Next::Frame(frame) => {
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
            Next::End(close) => {
                if let Some(frame) = close {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                let _ = sink.close().await;
                return;
            }
            Next::Wait => outbox.wake.notified().await,
        }
    }
}

/// A close frame with `reason` cut to what a control frame can carry (123 bytes, RFC 6455 5.5).
fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
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
            LeaveReason::Disconnected => None,
            LeaveReason::Replaced => Some(close_frame(
                CloseCode::Library(4000),
                "replaced by a newer connection of the same user",
            )),
            LeaveReason::TooSlow => Some(close_frame(
                CloseCode::Policy,
                "too slow: the connection did not read its notifications",
            )),
            LeaveReason::ServerShutdown => {
                Some(close_frame(CloseCode::Away, "server shutting down"))
            }
        };
        Ending { reason, close }
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
    let peer_id = PeerId(signaling.next_peer.fetch_add(1, Ordering::Relaxed));
    let (commands, mut command_queue) = mpsc::channel(COMMAND_QUEUE);
    let close_signal = Arc::new(CloseSignal::default());
    let link = PeerLink {
        commands: commands.clone(),
        close: close_signal.clone(),
    };
    let (mut sink, mut stream) = ws.split();

    let rooms = &signaling.rooms;
    let room = match rooms.join(room_name.clone(), peer_id, link).await {
        Ok(room) => room,
        Err(error) => {
            warn!(room = %room_name, %error, "could not open the room");
            close_now(&mut sink, CloseCode::Error, &error.to_string()).await;
            return;
        }
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

    let ending = loop {
        tokio::select! {
            reason = close_signal.closed() => break Ending::leave(reason),
            () = shutdown.wait() => break Ending::leave(LeaveReason::ServerShutdown),
            _ = &mut writer, if !writer_done => {
                // The socket failed under the writer: the peer is gone.
                writer_done = true;
                break Ending::leave(LeaveReason::Disconnected);
            }
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
                let outcome = match frame {
                    Some(Ok(Message::Text(text))) => {
                        handle_request(&mut peer, &outbox, &close_signal, &text).await
                    }
                    Some(Ok(Message::Binary(_))) => outbox
                        .push(message::error_frame("binary frames are not part of the protocol: send JSON text frames"))
                        .map_err(|TooSlow| Ending::leave(LeaveReason::TooSlow)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    Some(Err(WsError::Capacity(error))) => {
                        debug!(parent: peer.span(), %error, "frame too large");
                        let reason = format!("frame too large: the limit is {MAX_FRAME_BYTES} bytes");
                        Err(Ending {
                            reason: LeaveReason::Disconnected,
                            close: Some(close_frame(CloseCode::Size, &reason)),
                        })
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        Err(Ending::leave(LeaveReason::Disconnected))
                    }
                };
                if let Err(ending) = outcome {
                    break ending;
                }
            }
        }
    };

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
    outbox.end(ending.close, too_slow);
    if !writer_done
        && tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
    {
        debug!(parent: peer.span(), grace = ?CLOSE_GRACE, "the socket did not take the close frame in time: dropping the connection");
        writer.abort();
        let _ = writer.await;
    }
    // Both halves are gone now: the socket is closed.
    drop(stream);
    peer.leave(ending.reason);
    rooms.leave(&room, peer_id).await;
}

/// Handles one request; a peer found too slow meanwhile is not kept waiting for the request to
/// finish (it cannot take the answer anyway).
async fn handle_request(
    peer: &mut Peer,
    outbox: &Outbox,
    close_signal: &CloseSignal,
    text: &str,
) -> Result<(), Ending> {
    let handling = on_request(peer, outbox, text);
    tokio::pin!(handling);
    let mut closing = false;
    loop {
        tokio::select! {
            outcome = &mut handling => {
                return outcome.map_err(|TooSlow| Ending::leave(LeaveReason::TooSlow));
            }
            reason = close_signal.closed(), if !closing => {
                if reason == LeaveReason::TooSlow {
                    return Err(Ending::leave(LeaveReason::TooSlow));
                }
                // Replaced or shutting down: answer this request first, as before.
                closing = true;
            }
        }
    }
}

/// Answers one text frame: queues the answer (and what follows it) in the outbox.
async fn on_request(peer: &mut Peer, outbox: &Outbox, text: &str) -> Result<(), TooSlow> {
    let started = Instant::now();
    let (kind, ok) = match message::parse(text) {
        Err(ParseError::Unanswerable(error)) => {
            outbox.push(message::error_frame(&error))?;
            ("invalid", false)
        }
        Err(ParseError::Invalid {
            request_id,
            kind,
            error,
        }) => {
            if kind.is_some_and(handler::is_join_request) {
                peer.join_request_failed(false);
            }
            outbox.push(message::error_response(&request_id, &error))?;
            (kind.unwrap_or("invalid"), false)
        }
        Ok(envelope) => {
            let span = info_span!(
                parent: peer.span(),
                "signaling_request",
                r#type = envelope.kind,
                request_id = %envelope.request_id,
                outcome = tracing::field::Empty,
            );
            let kind = envelope.kind;
            let result = async {
                peer.identify(&envelope.user_id)?;
                handler::handle(peer, envelope.request).await
            }
            .instrument(span.clone())
            .await;
            span.record("outcome", if result.is_ok() { "ok" } else { "error" });
            match result {
                Ok(reply) => {
                    let response = message::response(reply.kind, &envelope.request_id, reply.data);
                    outbox.push(response)?;
                    follow_up(peer, outbox, reply.then).instrument(span).await;
                    (kind, true)
                }
                Err(error) => {
                    if error.is_server_side() {
                        warn!(parent: &span, %error, "request failed on the server side");
                    } else {
                        debug!(parent: &span, %error, "request refused");
                    }
                    if handler::is_join_request(kind) {
                        peer.join_request_failed(error.is_server_side());
                    }
                    let response =
                        message::error_response(&envelope.request_id, &error.to_string());
                    outbox.push(response)?;
                    (kind, false)
                }
            }
        }
    };
    let event = RequestHandled {
        peer: peer.id,
        request: kind,
        ok,
        duration: started.elapsed(),
    };
    peer.emit(event);
    Ok(())
}

async fn follow_up(peer: &mut Peer, outbox: &Outbox, then: FollowUp) {
    match then {
        FollowUp::None => {}
        FollowUp::Announce(announcements) => {
            outbox.push_all(announcements.iter().map(message::new_producer));
        }
        FollowUp::StartConsumer(consumer) => {
            if let Err(error) = handler::within_deadline(peer.start_consumer(consumer)).await {
                warn!(%consumer, %error, "could not start the consumer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(next: Next) -> String {
        match next {
            Next::Frame(Message::Text(text)) => text.as_str().to_owned(),
            _ => panic!("expected a text frame"),
        }
    }

    #[test]
    fn outbox_refuses_frames_over_the_limit_but_not_announcements() {
        let outbox = Outbox::default();
        for n in 0..OUTGOING_LIMIT {
            outbox.push(n.to_string()).expect("under the limit");
        }
        assert!(outbox.push("one too many".into()).is_err());
        outbox.push_all(["announced".to_owned()]);
        assert_eq!(outbox.queued(), OUTGOING_LIMIT + 1);
        assert_eq!(text(outbox.next()), "0");
        assert!(outbox.push("still over".into()).is_err());
        assert_eq!(text(outbox.next()), "1");
        outbox
            .push("room again".into())
            .expect("room for one frame");
    }

    #[test]
    fn outbox_ends_after_its_frames_or_at_once_when_discarding() {
        let outbox = Outbox::default();
        outbox.push("answer".into()).unwrap();
        outbox.end(Some(close_frame(CloseCode::Away, "bye")), false);
        assert_eq!(text(outbox.next()), "answer");
        assert!(matches!(outbox.next(), Next::End(Some(frame)) if frame.code == CloseCode::Away));
        assert!(matches!(outbox.next(), Next::Wait));

        let outbox = Outbox::default();
        outbox.push("never read".into()).unwrap();
        outbox.end(Some(close_frame(CloseCode::Policy, "too slow")), true);
        assert!(matches!(outbox.next(), Next::End(Some(frame)) if frame.code == CloseCode::Policy));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let frame = close_frame(CloseCode::Error, &"é".repeat(100));
        assert!(frame.reason.len() <= 123);
        assert!(frame.reason.chars().all(|c| c == 'é'));
    }
}
