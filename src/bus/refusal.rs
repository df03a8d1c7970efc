//! Events of the server saying no: a limit or access control refused a client, and the worker
//! log lines the log rate limit dropped.

/// Why the server said no to a client: a limit, or access control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// `MEDIASOUP_MAX_CONNECTIONS` reached.
    Connections,
    /// `MEDIASOUP_MAX_CONNECTIONS_PER_IP` reached for the client's address.
    ConnectionsPerIp,
    /// The server has a secret and the URL has no token.
    TokenMissing,
    /// The token is not the room's.
    TokenInvalid,
    /// The page's Origin is not in `MEDIASOUP_ALLOWED_ORIGINS`.
    Origin,
    /// The request head or the WebSocket handshake took too long.
    HandshakeTimeout,
    /// `MEDIASOUP_MAX_PEERS_PER_ROOM` reached.
    RoomFull,
    /// `MEDIASOUP_MAX_ROOMS` reached.
    Rooms,
    /// A request over the socket's request rate.
    RequestRate,
    /// The user id belongs to a live connection.
    UserIdTaken,
    /// A `produce` whose appData is over `MEDIASOUP_MAX_APP_DATA_BYTES`.
    AppDataSize,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 11] = [
        RefusalReason::Connections,
        RefusalReason::ConnectionsPerIp,
        RefusalReason::TokenMissing,
        RefusalReason::TokenInvalid,
        RefusalReason::Origin,
        RefusalReason::HandshakeTimeout,
        RefusalReason::RoomFull,
        RefusalReason::Rooms,
        RefusalReason::RequestRate,
        RefusalReason::UserIdTaken,
        RefusalReason::AppDataSize,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Connections => "connections",
            RefusalReason::ConnectionsPerIp => "connections_per_ip",
            RefusalReason::TokenMissing => "token_missing",
            RefusalReason::TokenInvalid => "token_invalid",
            RefusalReason::Origin => "origin",
            RefusalReason::HandshakeTimeout => "handshake_timeout",
            RefusalReason::RoomFull => "room_full",
            RefusalReason::Rooms => "rooms",
            RefusalReason::RequestRate => "request_rate",
            RefusalReason::UserIdTaken => "user_id_taken",
            RefusalReason::AppDataSize => "app_data_size",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: RefusalReason,
}

/// Log lines of the mediasoup workers dropped by the rate limit since the last report.
#[derive(Debug, Clone)]
pub struct WorkerLogSuppressed {
    pub lines: u64,
}
