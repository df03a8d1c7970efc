//! Why a peer's request could not be carried out, and whose fault that was.

use std::sync::Arc;
use std::time::Duration;

use mediasoup::prelude::*;
use mediasoup::worker::RequestError;

/// Why a peer's request could not be carried out; the message goes back to the client.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("userId {got:?} does not match {expected:?}, the userId this connection started with; open a new connection to change user")]
    UserIdChanged { expected: Arc<str>, got: String },
    #[error("this connection already has a {0} transport; a peer has one producing and one consuming transport")]
    TransportExists(&'static str),
    #[error("no {0} transport yet: send createWebRtcTransport with {0}: true first")]
    NoTransport(&'static str),
    #[error("exactly one of producing and consuming must be true")]
    AmbiguousTransport,
    #[error("no transport {0} on this connection")]
    UnknownTransport(TransportId),
    #[error("transport {0} is not this connection's producing transport; produce on the transport created with producing: true")]
    NotProducingTransport(TransportId),
    #[error("no producer {0} in this room")]
    UnknownProducer(ProducerId),
    #[error("no producer {0} of this connection")]
    NotOwnProducer(ProducerId),
    #[error("no consumer {0} of this connection")]
    UnknownConsumer(ConsumerId),
    #[error(
        "cannot consume producer {0} with the given rtpCapabilities: they share no codec with it"
    )]
    CannotConsume(ProducerId),
    #[error("could not create the transport: {0}{hint}", hint = port_range_hint(.0))]
    CreateTransport(#[source] RequestError),
    /// Single-port mode: the transport binds no port of its own, so the range hint of
    /// `CreateTransport` does not apply.
    #[error("could not create the transport on the media server's shared port: {0}")]
    CreateSharedPortTransport(#[source] RequestError),
    #[error("could not connect the transport: {0}")]
    Connect(#[source] RequestError),
    #[error("could not produce: {0}")]
    Produce(#[source] ProduceError),
    #[error("could not consume: {0}")]
    Consume(#[source] ConsumeError),
    #[error("the media server did not carry out the request: {0}")]
    Worker(#[from] RequestError),
    #[error("the media server did not answer within {0:?}: try again later")]
    WorkerTimeout(Duration),
}

/// A worker that answers a transport creation with an error has, in practice, run out of
/// ports (it binds nothing else); mediasoup reports that only as text, so the hint goes with
/// every refusal rather than being guessed from the wording.
fn port_range_hint(error: &RequestError) -> &'static str {
    match error {
        RequestError::Response { .. } => "; if the server's media port range is full, an operator can widen MEDIASOUP_RTC_MIN_PORT..MEDIASOUP_RTC_MAX_PORT",
        _ => "",
    }
}

/// The worker did not get to judge the request: its channel closed, it timed out, or its
/// answer could not be read. A `Response` error is the worker refusing what was asked.
fn worker_failed(error: &RequestError) -> bool {
    !matches!(error, RequestError::Response { .. })
}

impl PeerError {
    /// The server, not the request, was at fault. Creating a transport takes nothing from the
    /// client that the worker could refuse, and neither do the requests that fail as `Worker`
    /// (they name an object this connection owns); connecting, producing and consuming carry
    /// the client's parameters, so there only a worker that failed to judge them is at fault.
    pub fn is_server_side(&self) -> bool {
        match self {
            PeerError::CreateTransport(_)
            | PeerError::CreateSharedPortTransport(_)
            | PeerError::Worker(_)
            | PeerError::WorkerTimeout(_) => true,
            PeerError::Connect(error)
            | PeerError::Produce(ProduceError::Request(error))
            | PeerError::Consume(ConsumeError::Request(error)) => worker_failed(error),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> RequestError {
        RequestError::Response {
            reason: "no more available ports [protocol:udp]".into(),
        }
    }

    #[test]
    fn the_worker_refusing_client_parameters_is_the_clients_fault() {
        assert!(!PeerError::Connect(refused()).is_server_side());
        assert!(!PeerError::Produce(ProduceError::Request(refused())).is_server_side());
        assert!(!PeerError::Consume(ConsumeError::Request(refused())).is_server_side());
        assert!(!PeerError::NoTransport("consuming").is_server_side());
    }

    #[test]
    fn a_worker_that_failed_to_answer_is_the_servers_fault() {
        assert!(PeerError::Connect(RequestError::ChannelClosed).is_server_side());
        assert!(PeerError::Produce(ProduceError::Request(RequestError::TimedOut)).is_server_side());
        assert!(PeerError::CreateTransport(refused()).is_server_side());
        assert!(PeerError::Worker(refused()).is_server_side());
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error;
        let error = PeerError::Connect(RequestError::ChannelClosed);
        assert!(error
            .source()
            .is_some_and(|source| source.to_string() == "Channel already closed"));
        let message = PeerError::CreateTransport(refused()).to_string();
        assert!(message.contains("no more available ports"), "{message}");
        assert!(message.contains("MEDIASOUP_RTC_MIN_PORT"), "{message}");
        let message = PeerError::CreateTransport(RequestError::ChannelClosed).to_string();
        assert!(!message.contains("MEDIASOUP_RTC_MIN_PORT"), "{message}");
        // Single-port mode binds no port per transport: no advice to widen the range.
        let error = PeerError::CreateSharedPortTransport(refused());
        assert!(error.is_server_side());
        let message = error.to_string();
        assert!(message.contains("no more available ports"), "{message}");
        assert!(!message.contains("MEDIASOUP_RTC_MIN_PORT"), "{message}");
    }
}
