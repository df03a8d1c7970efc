//! Configuration from environment variables (and a `.env` file in the working directory).
//!
//! `envy` maps the `MEDIASOUP_*` variables onto [`RawConfig`]; each value is then parsed here so
//! that a bad one is reported with the variable, the value and what is accepted.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::time::Duration;

use mediasoup::worker::{WorkerLogLevel, WorkerLogTag};
use serde::Deserialize;

mod recording;
mod security;
pub use recording::{Recording, RoomPattern};
pub use security::{Access, IpNet, Limits, Secret};

/// Settings the server runs with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// Accept queue of the signaling listener (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    pub metrics_addr: SocketAddr,
    pub num_workers: NonZeroUsize,
    pub worker_log_level: WorkerLogLevel,
    pub worker_log_tags: Vec<WorkerLogTag>,
    pub rtc_ports: RangeInclusive<u16>,
    /// Single-port mode: worker `i` serves every transport on UDP and TCP port `rtc_port + i`
    /// (one `WebRtcServer` each) instead of a port per transport from `rtc_ports`. Checked so
    /// that every worker's port fits in `u16` and lies outside `rtc_ports`.
    pub rtc_port: Option<u16>,
    /// Put into ICE candidates instead of the listening IP (NAT, public hostname).
    pub announced_address: Option<String>,
    /// Listening IP of the WebRTC transports.
    pub rtc_listen_ip: IpAddr,
    pub max_incoming_bitrate: u32,
    pub stats_interval: Duration,
    pub log_format: LogFormat,
    pub access: Access,
    pub limits: Limits,
    /// Per-speaker recording, `None` unless turned on (README, "Recording").
    pub recording: Option<Recording>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration value that cannot be used; start-up stops with exit code 78 (EX_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub accepted: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: {}={:?}: expected {}",
            self.variable, self.value, self.accepted
        )
    }
}

impl std::error::Error for ConfigError {}

/// The variables as strings, straight from the environment.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    listen_addr: Option<String>,
    listen_backlog: Option<String>,
    metrics_addr: Option<String>,
    num_workers: Option<String>,
    log_level: Option<String>,
    log_tags: Option<String>,
    rtc_min_port: Option<String>,
    rtc_max_port: Option<String>,
    rtc_port: Option<String>,
    rtc_listen_ip: Option<String>,
    announced_ip: Option<String>,
    max_incoming_bitrate: Option<String>,
    stats_interval_secs: Option<String>,
    log_format: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    allowed_origins: Option<String>,
    trusted_proxies: Option<String>,
    self_test: Option<String>,
    max_connections: Option<String>,
    max_connections_per_ip: Option<String>,
    max_peers_per_room: Option<String>,
    max_rooms: Option<String>,
    requests_per_sec: Option<String>,
    request_burst: Option<String>,
    handshake_timeout_secs: Option<String>,
    max_app_data_bytes: Option<String>,
    ping_interval_secs: Option<String>,
    peer_timeout_secs: Option<String>,
    recordings_dir: Option<String>,
    record_rooms: Option<String>,
    record_exclude_users: Option<String>,
}

const PREFIX: &str = "MEDIASOUP_";

/// Enough for a burst of joins (a table reconnecting at once, a server restart) without
/// clients waiting a full SYN retransmission.
const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

impl Config {
    /// Reads `.env` (when present; real environment variables win) and then the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Err(error) = dotenvy::dotenv() {
            if !error.not_found() {
                return Err(ConfigError {
                    variable: ".env".into(),
                    value: error.to_string(),
                    accepted: "KEY=value lines (see .env.example)".into(),
                });
            }
        }
        let mut config = Self::from_vars(std::env::vars())?;
        if config.announced_address.is_none() && config.rtc_listen_ip.is_unspecified() {
            config.announced_address = detect_local_ip().map(|ip| ip.to_string());
        }
        Ok(config)
    }

    /// Parses the given `(name, value)` pairs; variables without the `MEDIASOUP_` prefix are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX));
        let mut raw: RawConfig =
            envy::prefixed(PREFIX)
                .from_iter(vars)
                .map_err(|error| ConfigError {
                    variable: "MEDIASOUP_*".into(),
                    value: error.to_string(),
                    accepted: "valid UTF-8 values".into(),
                })?;

        let access = security::access(&mut raw)?;
        let limits = security::limits(&mut raw)?;
        let recording = recording::recording(&mut raw)?;
        let rtc_min_port = parse(
            "RTC_MIN_PORT",
            raw.rtc_min_port,
            10000u16,
            "a port number from 1 to 65535",
        )?;
        let rtc_max_port = parse(
            "RTC_MAX_PORT",
            raw.rtc_max_port,
            10100u16,
            "a port number from 1 to 65535",
        )?;
        if rtc_min_port == 0 {
            return Err(invalid(
                "RTC_MIN_PORT",
                "0",
                "a port number from 1 to 65535",
            ));
        }
        if rtc_min_port > rtc_max_port {
            return Err(invalid(
                "RTC_MAX_PORT",
                &rtc_max_port.to_string(),
                &format!("a port not below MEDIASOUP_RTC_MIN_PORT ({rtc_min_port})"),
            ));
        }

        let num_workers: usize = parse(
            "NUM_WORKERS",
            raw.num_workers,
            1,
            "a whole number of workers, at least 1",
        )?;
        let num_workers = NonZeroUsize::new(num_workers)
            .ok_or_else(|| invalid("NUM_WORKERS", "0", "a whole number of workers, at least 1"))?;

        let rtc_port = parse_rtc_port(raw.rtc_port, num_workers, &(rtc_min_port..=rtc_max_port))?;

        let stats_secs: u64 = parse(
            "STATS_INTERVAL_SECS",
            raw.stats_interval_secs,
            10,
            "a whole number of seconds, at least 1",
        )?;
        if stats_secs == 0 {
            return Err(invalid(
                "STATS_INTERVAL_SECS",
                "0",
                "a whole number of seconds, at least 1",
            ));
        }

        Ok(Config {
            listen_addr: parse(
                "LISTEN_ADDR",
                raw.listen_addr,
                SocketAddr::from(([0, 0, 0, 0], 3000)),
                "an address with port, like 0.0.0.0:3000 or [::]:3000",
            )?,
            listen_backlog: security::positive(
                "LISTEN_BACKLOG",
                raw.listen_backlog,
                DEFAULT_LISTEN_BACKLOG,
            )?,
            metrics_addr: parse(
                "METRICS_ADDR",
                raw.metrics_addr,
                SocketAddr::from(([127, 0, 0, 1], 9464)),
                "an address with port, like 127.0.0.1:9464",
            )?,
            num_workers,
            worker_log_level: parse_log_level(raw.log_level)?,
            worker_log_tags: parse_log_tags(raw.log_tags)?,
            rtc_ports: rtc_min_port..=rtc_max_port,
            rtc_port,
            rtc_listen_ip: parse(
                "RTC_LISTEN_IP",
                raw.rtc_listen_ip,
                IpAddr::from([0, 0, 0, 0]),
                "an IP address, like 0.0.0.0 or 192.168.1.10",
            )?,
            announced_address: parse_announced(raw.announced_ip)?,
            max_incoming_bitrate: parse(
                "MAX_INCOMING_BITRATE",
                raw.max_incoming_bitrate,
                1_500_000,
                "bits per second as a whole number, like 1500000",
            )?,
            stats_interval: Duration::from_secs(stats_secs),
            log_format: parse_log_format(raw.log_format)?,
            access,
            limits,
            recording,
        })
    }
}

impl Config {
    /// The media port of worker `index` in single-port mode (`None` in range mode).
    pub fn media_port(&self, index: usize) -> Option<u16> {
        let offset = u16::try_from(index).ok()?;
        self.rtc_port?.checked_add(offset)
    }
}

/// `MEDIASOUP_RTC_PORT`: unset (or empty) for range mode; otherwise a port such that
/// `port..=port + workers - 1` are valid ports outside the range, since the range's transports
/// and the workers' servers would otherwise take each other's ports.
fn parse_rtc_port(
    value: Option<String>,
    workers: NonZeroUsize,
    range: &RangeInclusive<u16>,
) -> Result<Option<u16>, ConfigError> {
    const ACCEPTED: &str = "a port number from 1 to 65535 (worker i listens on it + i)";
    let text = match value.as_deref().map(str::trim) {
        None | Some("") => return Ok(None),
        Some(text) => text,
    };
    let port = text
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| invalid("RTC_PORT", text, ACCEPTED))?;
    let last = usize::from(port) + workers.get() - 1;
    let Ok(last) = u16::try_from(last) else {
        let highest = 65536usize.saturating_sub(workers.get());
        return Err(invalid(
            "RTC_PORT",
            text,
            &format!(
                "a port from 1 to {highest}: with MEDIASOUP_NUM_WORKERS={workers} worker i \
                 listens on it + i, up to {last}, above 65535"
            ),
        ));
    };
    if port <= *range.end() && last >= *range.start() {
        let ports = if last == port {
            format!("port {port} is")
        } else {
            format!("ports {port}-{last} (one per worker) are")
        };
        return Err(invalid(
            "RTC_PORT",
            text,
            &format!(
                "a port outside the media port range {}-{} (MEDIASOUP_RTC_MIN_PORT..\
                 MEDIASOUP_RTC_MAX_PORT), but {ports} inside it: pick a port outside it or \
                 move the range",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Some(port))
}

/// The address this host uses for its default route, found by asking the kernel to route a UDP
/// socket (no packet is sent). Browsers cannot use the 0.0.0.0 the transports listen on.
fn detect_local_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // 192.0.2.1 is TEST-NET-1: only its route is looked up.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn invalid(name: &str, value: &str, accepted: &str) -> ConfigError {
    ConfigError {
        variable: format!("{PREFIX}{name}"),
        value: value.to_owned(),
        accepted: accepted.to_owned(),
    }
}

/// Parses an optional value with `FromStr`, falling back to `default` when the variable is unset
/// or empty (an env file with `NAME=` leaves it at its default).
fn parse<T: std::str::FromStr>(
    name: &str,
    value: Option<String>,
    default: T,
    accepted: &str,
) -> Result<T, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text.parse().map_err(|_| invalid(name, text, accepted)),
    }
}

fn parse_log_level(value: Option<String>) -> Result<WorkerLogLevel, ConfigError> {
    const ACCEPTED: &str = "one of debug, warn, error, none";
    match value.as_deref().map(str::trim) {
        None | Some("") | Some("warn") => Ok(WorkerLogLevel::Warn),
        Some("debug") => Ok(WorkerLogLevel::Debug),
        Some("error") => Ok(WorkerLogLevel::Error),
        Some("none") => Ok(WorkerLogLevel::None),
        Some(other) => Err(invalid("LOG_LEVEL", other, ACCEPTED)),
    }
}

fn parse_log_tags(value: Option<String>) -> Result<Vec<WorkerLogTag>, ConfigError> {
    const ACCEPTED: &str = "a comma-separated list of info, ice, dtls, rtp, srtp, rtcp, rtx, bwe, \
                            score, simulcast, svc, sctp, message";
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(|tag| match tag {
            "info" => Ok(WorkerLogTag::Info),
            "ice" => Ok(WorkerLogTag::Ice),
            "dtls" => Ok(WorkerLogTag::Dtls),
            "rtp" => Ok(WorkerLogTag::Rtp),
            "srtp" => Ok(WorkerLogTag::Srtp),
            "rtcp" => Ok(WorkerLogTag::Rtcp),
            "rtx" => Ok(WorkerLogTag::Rtx),
            "bwe" => Ok(WorkerLogTag::Bwe),
            "score" => Ok(WorkerLogTag::Score),
            "simulcast" => Ok(WorkerLogTag::Simulcast),
            "svc" => Ok(WorkerLogTag::Svc),
            "sctp" => Ok(WorkerLogTag::Sctp),
            "message" => Ok(WorkerLogTag::Message),
            _ => Err(invalid("LOG_TAGS", &value, ACCEPTED)),
        })
        .collect()
}

/// An IP address or a DNS hostname (letters, digits, `-` and `.`).
fn parse_announced(value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(text) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let is_ip = text.parse::<IpAddr>().is_ok();
    let is_hostname = text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if is_ip || is_hostname {
        Ok(Some(text))
    } else {
        Err(invalid(
            "ANNOUNCED_IP",
            &text,
            "an IP address or a hostname, like 203.0.113.7 or vtt.example.org",
        ))
    }
}

fn parse_log_format(value: Option<String>) -> Result<LogFormat, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(invalid("LOG_FORMAT", other, "text or json")),
    }
}

#[cfg(test)]
mod tests;
