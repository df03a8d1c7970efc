//! The join funnel of one peer: which stages it reached, and why it stopped if it did.

use std::sync::{Arc, Mutex};

use tracing::Span;

use crate::bus::{Bus, Event, JoinFailed, JoinFailure, JoinProgressed, JoinStage, PeerId};

/// Publishes events as part of one peer's session. A clone is one pointer: every handler the
/// peer registers with mediasoup holds one (four or five per consumer), and each handler's
/// closure is an allocation of its own.
#[derive(Clone)]
pub(super) struct SessionEvents(Arc<Session>);

struct Session {
    bus: Bus,
    span: Span,
}

impl SessionEvents {
    pub(super) fn new(bus: Bus, span: Span) -> Self {
        SessionEvents(Arc::new(Session { bus, span }))
    }

    pub(super) fn bus(&self) -> &Bus {
        &self.0.bus
    }

    pub(super) fn span(&self) -> &Span {
        &self.0.span
    }

    pub(super) fn emit(&self, event: impl Into<Event>) {
        self.0.bus.emit(&self.0.span, event);
    }
}

/// Which join stages a peer reached; shared with mediasoup's event handlers.
#[derive(Default)]
struct JoinState {
    reached: Vec<JoinStage>,
    connect_requested: bool,
    failed: bool,
}

/// Shared by the peer and its handlers; a clone is one pointer, as for [`SessionEvents`].
#[derive(Clone)]
pub(super) struct JoinTracker(Arc<Join>);

struct Join {
    state: Mutex<JoinState>,
    peer: PeerId,
    events: SessionEvents,
}

impl JoinTracker {
    pub(super) fn new(peer: PeerId, events: SessionEvents) -> Self {
        JoinTracker(Arc::new(Join {
            state: Mutex::default(),
            peer,
            events,
        }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut JoinState) -> R) -> R {
        f(&mut self.0.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn reach(&self, stage: JoinStage) {
        let new = self.with(|s| {
            let new = !s.reached.contains(&stage);
            if new {
                s.reached.push(stage);
            }
            new
        });
        if new {
            let peer = self.0.peer;
            self.0.events.emit(JoinProgressed { peer, stage });
        }
    }

    pub(super) fn has(&self, stage: JoinStage) -> bool {
        self.with(|s| s.reached.contains(&stage))
    }

    pub(super) fn connect_requested(&self) {
        self.with(|s| s.connect_requested = true);
    }

    /// Counts a failure, once per peer, unless the peer got through.
    pub(super) fn fail(&self, reason: JoinFailure) {
        let report = self.with(|s| {
            let report = !s.failed && !s.reached.contains(&JoinStage::DtlsConnected);
            s.failed |= report;
            report
        });
        if report {
            let peer = self.0.peer;
            self.0.events.emit(JoinFailed { peer, reason });
        }
    }

    /// Called when the peer leaves: a join that stopped half-way counts as failed.
    pub(super) fn on_leave(&self) {
        let (connect_requested, transports) = self.with(|s| {
            (
                s.connect_requested,
                s.reached.contains(&JoinStage::TransportsCreated),
            )
        });
        if !transports {
            self.fail(JoinFailure::DisconnectedEarly);
        } else if connect_requested && !self.has(JoinStage::IceConnected) {
            self.fail(JoinFailure::IceFailed);
        } else if connect_requested {
            self.fail(JoinFailure::DtlsFailed);
        }
    }
}
