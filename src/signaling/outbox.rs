//! The frames waiting for one peer's socket, and the writer task that drains them.
//!
//! Writing never holds anything up: the connection's task only puts frames into the peer's
//! [`Outbox`], and a writer task of its own drains it into the socket. A peer that does not read
//! lets its socket fill up, then its outbox; once [`OUTGOING_LIMIT`] frames wait there it counts
//! as too slow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Frames (answers and notifications) waiting for a peer's socket before it counts as too slow.
pub const OUTGOING_LIMIT: usize = 512;

pub type WsSink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// The peer's outbox is over [`OUTGOING_LIMIT`]: it does not read what it is sent.
#[derive(Debug)]
pub struct TooSlow;

/// Frames waiting to be written to one peer's socket, in order, then how the connection ends.
/// Filled by the connection's task, drained by its writer task ([`write_frames`]).
#[derive(Default)]
pub struct Outbox {
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
    pub fn push(&self, text: String) -> Result<(), TooSlow> {
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
    pub fn push_all(&self, texts: impl IntoIterator<Item = String>) {
        self.state()
            .frames
            .extend(texts.into_iter().map(Message::text));
        self.wake.notify_one();
    }

    /// Queues a WebSocket ping, whatever the limit (a peer over it is closed anyway).
    pub fn ping(&self) {
        self.state()
            .frames
            .push_back(Message::Ping(Default::default()));
        self.wake.notify_one();
    }

    pub fn queued(&self) -> usize {
        self.state().frames.len()
    }

    /// Ends the connection: the writer sends what is queued (nothing when `discard`), then the
    /// close frame if there is one, and stops.
    pub fn end(&self, close: Option<CloseFrame>, discard: bool) {
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
pub async fn write_frames<S>(mut sink: WsSink<S>, outbox: Arc<Outbox>)
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
pub fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
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
