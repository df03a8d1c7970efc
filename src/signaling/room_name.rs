//! The room a WebSocket joins is named by its URL path: `/` is `default`, `/my-table` is
//! `my-table`, `/vtt/table%201` is `vtt/table 1`. The query string is ignored.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::bus::RoomName;

/// Longest room name, in characters, after decoding.
pub const MAX_ROOM_NAME_CHARS: usize = 100;

pub const DEFAULT_ROOM: &str = "default";

/// Reads the room name from a request path (without the query string).
pub fn from_path(path: &str) -> Result<RoomName, String> {
    let decoded = percent_decode_str(path).decode_utf8().map_err(|_| {
        "room name in the URL path is not valid UTF-8 once percent-decoded".to_owned()
    })?;
    let name = decoded.trim_matches('/');
    if name.is_empty() {
        return Ok(DEFAULT_ROOM.into());
    }
    if name.chars().count() > MAX_ROOM_NAME_CHARS {
        return Err(format!(
            "room name in the URL path is longer than {MAX_ROOM_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("room name in the URL path contains control characters".to_owned());
    }
    Ok(name.into())
}

/// What a path segment cannot hold unencoded (RFC 3986), `/` aside: rooms may have levels.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The URL path (without the leading `/`) that names `room`: the inverse of [`from_path`].
pub fn to_path(room: &str) -> String {
    utf8_percent_encode(room, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rooms_by_path() {
        assert_eq!(&*from_path("/").unwrap(), "default");
        assert_eq!(&*from_path("").unwrap(), "default");
        assert_eq!(&*from_path("/my-table").unwrap(), "my-table");
        assert_eq!(&*from_path("/my-table/").unwrap(), "my-table");
        assert_eq!(&*from_path("/vtt/table%201").unwrap(), "vtt/table 1");
        assert_eq!(&*from_path("/%C3%A9t%C3%A9").unwrap(), "été");
    }

    #[test]
    fn paths_name_the_room_they_came_from() {
        for room in ["default", "vtt/table 1", "été", "a?b#c%d"] {
            assert_eq!(&*from_path(&format!("/{}", to_path(room))).unwrap(), room);
        }
    }

    #[test]
    fn refuses_unusable_names() {
        assert!(from_path("/%FF%FE").unwrap_err().contains("UTF-8"));
        assert!(from_path("/a%0Ab").unwrap_err().contains("control"));
        let long = format!("/{}", "x".repeat(MAX_ROOM_NAME_CHARS + 1));
        assert!(from_path(&long).unwrap_err().contains("longer"));
        assert!(from_path(&format!("/{}", "x".repeat(MAX_ROOM_NAME_CHARS))).is_ok());
    }
}
