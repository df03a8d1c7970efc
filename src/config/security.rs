//! The settings that decide who may connect and how much one client may take: room tokens,
//! allowed Origins, trusted proxies and the limits (README, "Security").

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{invalid, parse, ConfigError, RawConfig};

/// Who may open a WebSocket.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Key of the room tokens; `None`: anyone who reaches the server may join any room.
    pub secret: Option<Secret>,
    /// Origins (`scheme://host[:port]`, lower case) allowed to open a WebSocket; empty: any.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies).
    pub trusted_proxies: Vec<IpNet>,
    /// The self-test page (`GET /`) and its throw-away rooms (README, "Self-test page").
    pub self_test: bool,
}

/// The room-token key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(IpNet { addr, prefix })
    }
}

/// How much one client, room or the whole server may take. Every limit refuses with a reason
/// that is counted in `mediasoup_server_refusals_total`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open TCP connections on the signaling port (HTTP and WebSocket).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_ip: usize,
    pub max_peers_per_room: usize,
    pub max_rooms: usize,
    /// Sustained requests per second of one WebSocket (token bucket refill).
    pub requests_per_sec: u32,
    /// Requests one WebSocket may send at once (token bucket size).
    pub request_burst: u32,
    /// Time allowed for the HTTP request head and the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Largest `appData` of a `produce`, in bytes of JSON (it is copied to every peer).
    pub max_app_data_bytes: usize,
    /// Interval of WebSocket pings.
    pub ping_interval: Duration,
    /// A peer that sends nothing (not even a pong) for this long is disconnected.
    pub peer_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 2000,
            max_connections_per_ip: 32,
            max_peers_per_room: 50,
            max_rooms: 500,
            requests_per_sec: 50,
            request_burst: 200,
            handshake_timeout: Duration::from_secs(10),
            max_app_data_bytes: 4096,
            ping_interval: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(30),
        }
    }
}

const WHOLE_NUMBER: &str = "a whole number, at least 1";
const SECONDS: &str = "a whole number of seconds, at least 1";

/// A whole number of at least 1, `default` when unset.
pub(super) fn positive<T>(name: &str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8> + ToString,
{
    let number = parse(name, value, default, WHOLE_NUMBER)?;
    if number < T::from(1) {
        return Err(invalid(name, &number.to_string(), WHOLE_NUMBER));
    }
    Ok(number)
}

fn seconds(name: &str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let secs = parse(name, value, default.as_secs(), SECONDS)?;
    if secs == 0 {
        return Err(invalid(name, "0", SECONDS));
    }
    Ok(Duration::from_secs(secs))
}

pub(super) fn limits(raw: &mut RawConfig) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let limits = Limits {
        max_connections: positive(
            "MAX_CONNECTIONS",
            raw.max_connections.take(),
            d.max_connections,
        )?,
        max_connections_per_ip: positive(
            "MAX_CONNECTIONS_PER_IP",
            raw.max_connections_per_ip.take(),
            d.max_connections_per_ip,
        )?,
        max_peers_per_room: positive(
            "MAX_PEERS_PER_ROOM",
            raw.max_peers_per_room.take(),
            d.max_peers_per_room,
        )?,
        max_rooms: positive("MAX_ROOMS", raw.max_rooms.take(), d.max_rooms)?,
        requests_per_sec: positive(
            "REQUESTS_PER_SEC",
            raw.requests_per_sec.take(),
            d.requests_per_sec,
        )?,
        request_burst: positive("REQUEST_BURST", raw.request_burst.take(), d.request_burst)?,
        handshake_timeout: seconds(
            "HANDSHAKE_TIMEOUT_SECS",
            raw.handshake_timeout_secs.take(),
            d.handshake_timeout,
        )?,
        max_app_data_bytes: positive(
            "MAX_APP_DATA_BYTES",
            raw.max_app_data_bytes.take(),
            d.max_app_data_bytes,
        )?,
        ping_interval: seconds(
            "PING_INTERVAL_SECS",
            raw.ping_interval_secs.take(),
            d.ping_interval,
        )?,
        peer_timeout: seconds(
            "PEER_TIMEOUT_SECS",
            raw.peer_timeout_secs.take(),
            d.peer_timeout,
        )?,
    };
    if limits.peer_timeout <= limits.ping_interval {
        return Err(invalid(
            "PEER_TIMEOUT_SECS",
            &limits.peer_timeout.as_secs().to_string(),
            &format!(
                "more seconds than MEDIASOUP_PING_INTERVAL_SECS ({}), so that a peer gets a ping before it times out",
                limits.ping_interval.as_secs()
            ),
        ));
    }
    Ok(limits)
}

/// Shortest secret accepted: a token must not be guessable from a short key.
const MIN_SECRET_LEN: usize = 16;

pub(super) fn access(raw: &mut RawConfig) -> Result<Access, ConfigError> {
    let secret = match (
        non_empty(raw.secret.take()),
        non_empty(raw.secret_file.take()),
    ) {
        (Some(_), Some(file)) => {
            return Err(invalid(
                "SECRET_FILE",
                &file,
                "unset when MEDIASOUP_SECRET is set (use one of the two)",
            ))
        }
        (Some(secret), None) => Some(check_secret("SECRET", "(hidden)", secret)?),
        (None, Some(file)) => Some(read_secret_file(&file)?),
        (None, None) => None,
    };
    let allowed_origins = list(raw.allowed_origins.take())
        .map(|origin| parse_origin(&origin))
        .collect::<Result<_, _>>()?;
    let trusted_proxies = match non_empty(raw.trusted_proxies.take()) {
        None => vec![
            IpNet {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            IpNet {
                addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ],
        Some(text) if text.trim() == "none" => Vec::new(),
        Some(text) => list(Some(text))
            .map(|net| {
                net.parse().map_err(|()| {
                    invalid(
                        "TRUSTED_PROXIES",
                        &net,
                        "none, or a comma-separated list of IP addresses or networks, like 127.0.0.1,10.0.0.0/8,::1",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let self_test = match non_empty(raw.self_test.take()) {
        None => true,
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            _ => return Err(invalid("SELF_TEST", &text, "on or off")),
        },
    };
    Ok(Access {
        secret,
        allowed_origins,
        trusted_proxies,
        self_test,
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn list(value: Option<String>) -> impl Iterator<Item = String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

fn check_secret(name: &str, shown: &str, secret: String) -> Result<Secret, ConfigError> {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return Err(invalid(
            name,
            shown,
            &format!("at least {MIN_SECRET_LEN} characters (for example: openssl rand -hex 32)"),
        ));
    }
    Ok(Secret(secret.as_bytes().to_vec()))
}

/// Reads the secret from a file (systemd credentials: `LoadCredential=`, then
/// `MEDIASOUP_SECRET_FILE=%d/secret`).
fn read_secret_file(path: &str) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|error| {
        invalid(
            "SECRET_FILE",
            path,
            &format!("a readable file holding the secret ({error})"),
        )
    })?;
    check_secret("SECRET_FILE", path, text)
}

/// `scheme://host[:port]` as browsers send it in `Origin`, lower-cased, without a trailing `/`.
fn parse_origin(text: &str) -> Result<String, ConfigError> {
    let origin = text.trim_end_matches('/').to_ascii_lowercase();
    let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', ' '])
    });
    if valid {
        Ok(origin)
    } else {
        Err(invalid(
            "ALLOWED_ORIGINS",
            text,
            "a comma-separated list of origins, like https://vtt.example.org,http://192.168.1.10:30000",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host: IpNet = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.7".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("host/8".parse::<IpNet>().is_err());
    }

    #[test]
    fn origins_are_normalized_and_checked() {
        assert_eq!(
            parse_origin("HTTPS://VTT.example.org/").unwrap(),
            "https://vtt.example.org"
        );
        for bad in ["vtt.example.org", "ftp://x", "https://x/path", "https://"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
