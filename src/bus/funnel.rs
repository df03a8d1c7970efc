//! The join funnel's vocabulary: the stages a peer passes on its way to media, and why a join
//! stops. Both label metrics, so each has a fixed list.

/// Steps a peer passes on its way to sending or receiving media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinStage {
    SocketOpened,
    RtpCapabilities,
    TransportsCreated,
    IceConnected,
    DtlsConnected,
    FirstMedia,
}

impl JoinStage {
    pub const ALL: [JoinStage; 6] = [
        JoinStage::SocketOpened,
        JoinStage::RtpCapabilities,
        JoinStage::TransportsCreated,
        JoinStage::IceConnected,
        JoinStage::DtlsConnected,
        JoinStage::FirstMedia,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JoinStage::SocketOpened => "socket_opened",
            JoinStage::RtpCapabilities => "rtp_capabilities",
            JoinStage::TransportsCreated => "transports_created",
            JoinStage::IceConnected => "ice_connected",
            JoinStage::DtlsConnected => "dtls_connected",
            JoinStage::FirstMedia => "first_media",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinFailure {
    /// A join request (capabilities, transport) was refused as invalid.
    BadRequest,
    /// The server could not create a transport.
    TransportFailed,
    IceFailed,
    DtlsFailed,
    /// The socket closed before DTLS connected.
    DisconnectedEarly,
}

impl JoinFailure {
    pub const ALL: [JoinFailure; 5] = [
        JoinFailure::BadRequest,
        JoinFailure::TransportFailed,
        JoinFailure::IceFailed,
        JoinFailure::DtlsFailed,
        JoinFailure::DisconnectedEarly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JoinFailure::BadRequest => "bad_request",
            JoinFailure::TransportFailed => "transport_failed",
            JoinFailure::IceFailed => "ice_failed",
            JoinFailure::DtlsFailed => "dtls_failed",
            JoinFailure::DisconnectedEarly => "disconnected_early",
        }
    }
}
