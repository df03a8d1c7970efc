//! How every WebRTC transport is set up.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use mediasoup::prelude::*;

use crate::config::Config;

/// What a new transport may send before bandwidth estimation has measured the path (bps).
const INITIAL_OUTGOING_BITRATE: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub listen_ip: IpAddr,
    pub announced_address: Option<String>,
    pub max_incoming_bitrate: u32,
    pub rtc_ports: RangeInclusive<u16>,
}

impl TransportSettings {
    pub fn from_config(config: &Config) -> Self {
        TransportSettings {
            listen_ip: config.rtc_listen_ip,
            announced_address: config.announced_address.clone(),
            max_incoming_bitrate: config.max_incoming_bitrate,
            rtc_ports: config.rtc_ports.clone(),
        }
    }

    /// UDP and TCP candidates, UDP preferred; TCP only when the client asks (`forceTcp`). With
    /// the worker's `WebRtcServer` (single-port mode) the transport shares its two ports;
    /// without, it binds its own from the range.
    pub(super) fn options(
        &self,
        force_tcp: bool,
        webrtc_server: Option<&WebRtcServer>,
    ) -> WebRtcTransportOptions {
        let mut options = match webrtc_server {
            Some(server) => WebRtcTransportOptions::new_with_server(server.clone()),
            None => WebRtcTransportOptions::new(self.listen_infos(force_tcp)),
        };
        options.enable_udp = !force_tcp;
        options.enable_tcp = true;
        options.prefer_udp = true;
        options.initial_available_outgoing_bitrate = INITIAL_OUTGOING_BITRATE;
        options.max_incoming_bitrate = Some(u64::from(self.max_incoming_bitrate));
        options
    }

    /// Range mode: a UDP and a TCP socket of the transport's own (TCP only with `forceTcp`).
    fn listen_infos(&self, force_tcp: bool) -> WebRtcTransportListenInfos {
        let listen = |protocol| {
            listen_info(
                protocol,
                self.listen_ip,
                self.announced_address.clone(),
                MediaPort::Range(self.rtc_ports.clone()),
            )
        };
        if force_tcp {
            WebRtcTransportListenInfos::new(listen(Protocol::Tcp))
        } else {
            WebRtcTransportListenInfos::new(listen(Protocol::Udp)).insert(listen(Protocol::Tcp))
        }
    }
}

/// Where a media socket binds: any free port of the range, or one fixed port.
pub enum MediaPort {
    Range(RangeInclusive<u16>),
    Fixed(u16),
}

/// A media socket on `ip`, announced as `announced_address` in ICE candidates: what both the
/// per-transport sockets (range mode) and a worker's `WebRtcServer` (single-port mode) listen with.
pub fn listen_info(
    protocol: Protocol,
    ip: IpAddr,
    announced_address: Option<String>,
    port: MediaPort,
) -> ListenInfo {
    let (port, port_range) = match port {
        MediaPort::Range(range) => (None, Some(range)),
        MediaPort::Fixed(port) => (Some(port), None),
    };
    ListenInfo {
        protocol,
        ip,
        announced_address,
        expose_internal_ip: false,
        port,
        port_range,
        flags: None,
        send_buffer_size: None,
        recv_buffer_size: None,
    }
}
