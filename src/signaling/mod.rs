//! The MediaSoupVTT signaling protocol over WebSocket: who may connect (`admission`), frame
//! parsing (`message`), request handling (`handler`), one task per connection (`connection`)
//! with its outgoing frames (`outbox`) and request rate (`request_rate`), answering one request
//! (`request`), and room naming (`room_name`).

pub mod admission;
mod connection;
mod handler;
pub mod message;
mod outbox;
mod request;
mod request_rate;
pub mod room_name;

pub use connection::{serve, Signaling, MAX_FRAME_BYTES};
