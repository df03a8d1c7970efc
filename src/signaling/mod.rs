//! The MediaSoupVTT signaling protocol over WebSocket: frame parsing (`message`), request
//! handling (`handler`), one task per connection (`connection`) and room naming (`room_name`).

mod connection;
mod handler;
pub mod message;
pub mod room_name;

pub use connection::{serve, Signaling, MAX_FRAME_BYTES};
