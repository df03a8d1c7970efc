//! Subscribers of the event bus, one per module: each turns the core's events into one kind of
//! output. The core knows none of them.

pub mod log;
pub mod otlp;
pub mod prometheus;
pub mod systemd;
