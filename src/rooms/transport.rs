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
        let listen = |protocol| ListenInfo {
            protocol,
            ip: self.listen_ip,
            announced_address: self.announced_address.clone(),
            expose_internal_ip: false,
            port: None,
            port_range: Some(self.rtc_ports.clone()),
            flags: None,
            send_buffer_size: None,
            recv_buffer_size: None,
        };
        if force_tcp {
            WebRtcTransportListenInfos::new(listen(Protocol::Tcp))
        } else {
            WebRtcTransportListenInfos::new(listen(Protocol::Udp)).insert(listen(Protocol::Tcp))
        }
    }
}
