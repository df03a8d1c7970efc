//! mediasoup-server: a WebRTC SFU for FoundryVTT tables, speaking the MediaSoupVTT protocol.
//!
//! Layout: `config` reads the environment; `workers` owns the mediasoup workers
//! (`fatal_signal` says so on stderr when one of their threads crashes the process); `rooms` is the
//! room/peer model; `recording` writes a recorded room's audio to files; `signaling` speaks the
//! WebSocket protocol; `bus` carries every lifecycle event to the `sinks` (logs, Prometheus,
//! systemd, OTLP); `server` wires it all together.

pub mod bus;
pub mod config;
pub mod fatal_signal;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod recording;
pub mod rooms;
pub mod selftest;
pub mod server;
pub mod shutdown;
pub mod signaling;
pub mod sinks;
pub mod telemetry;
pub mod workers;
