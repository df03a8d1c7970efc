//! Opt-in per-speaker recording (README, "Recording"): where files go, which rooms are
//! recorded and whose voices never are. Nothing is recorded unless both a directory and rooms
//! are set.

use std::path::PathBuf;

use super::{invalid, ConfigError, RawConfig};

/// What to record; `None` in [`Config`](super::Config) when recording is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Absolute directory under which `<room>/<session>/` directories are made.
    pub dir: PathBuf,
    pub rooms: Vec<RoomPattern>,
    /// User ids whose audio is never recorded.
    pub exclude_users: Vec<String>,
}

/// A room name, or a prefix when written with a trailing `*` (`table-*`; `*` alone: every room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    Exact(String),
    Prefix(String),
}

impl RoomPattern {
    pub fn matches(&self, room: &str) -> bool {
        match self {
            RoomPattern::Exact(name) => name == room,
            RoomPattern::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

impl Recording {
    pub fn records_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| p.matches(room))
    }

    pub fn excludes(&self, user_id: &str) -> bool {
        self.exclude_users.iter().any(|u| u == user_id)
    }
}

const ROOMS_ACCEPTED: &str = "comma-separated room names of letters, digits, - _ . / and spaces, \
                              each optionally ending in * (a prefix), like table-1,campaign-*";
const USERS_ACCEPTED: &str =
    "comma-separated FoundryVTT user ids (letters, digits, - and _), like Xy12Ab34Cd56Ef78";

/// Reads the three recording variables; each is checked even when the others are unset.
pub(super) fn recording(raw: &mut RawConfig) -> Result<Option<Recording>, ConfigError> {
    let dir = match raw.recordings_dir.take().map(|d| d.trim().to_owned()) {
        None => None,
        Some(d) if d.is_empty() => None,
        Some(d) => {
            let path = PathBuf::from(&d);
            if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
                return Err(invalid(
                    "RECORDINGS_DIR",
                    &d,
                    "an absolute directory path without .., like /var/lib/mediasoup-server/recordings",
                ));
            }
            Some(path)
        }
    };
    let rooms = list(raw.record_rooms.take())
        .map(|entry| {
            parse_pattern(&entry).ok_or_else(|| invalid("RECORD_ROOMS", &entry, ROOMS_ACCEPTED))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exclude_users = list(raw.record_exclude_users.take())
        .map(|user| {
            let ok = user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if ok {
                Ok(user)
            } else {
                Err(invalid("RECORD_EXCLUDE_USERS", &user, USERS_ACCEPTED))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match dir {
        Some(dir) if !rooms.is_empty() => Some(Recording {
            dir,
            rooms,
            exclude_users,
        }),
        _ => None,
    })
}

/// The non-empty, trimmed entries of a comma-separated list.
fn list(value: Option<String>) -> impl Iterator<Item = String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

fn parse_pattern(entry: &str) -> Option<RoomPattern> {
    let (name, prefix) = match entry.strip_suffix('*') {
        Some(name) => (name, true),
        None => (entry, false),
    };
    let ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ' '));
    if !ok || (!prefix && name.is_empty()) {
        return None;
    }
    Some(if prefix {
        RoomPattern::Prefix(name.to_owned())
    } else {
        RoomPattern::Exact(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dir: Option<&str>, rooms: Option<&str>, users: Option<&str>) -> RawConfig {
        RawConfig {
            recordings_dir: dir.map(str::to_owned),
            record_rooms: rooms.map(str::to_owned),
            record_exclude_users: users.map(str::to_owned),
            ..RawConfig::default()
        }
    }

    #[test]
    fn off_unless_directory_and_rooms_are_set() {
        assert_eq!(recording(&mut raw(Some("/r"), None, None)), Ok(None));
        assert_eq!(recording(&mut raw(None, Some("a"), None)), Ok(None));
        assert_eq!(recording(&mut raw(Some("/r"), Some(" , "), None)), Ok(None));
        let on = recording(&mut raw(Some("/r"), Some("a"), None))
            .unwrap()
            .expect("on");
        assert!(on.records_room("a") && !on.records_room("ab"));
    }

    #[test]
    fn prefix_patterns_and_exclusions() {
        let on = recording(&mut raw(Some("/r"), Some("table-*, vtt/x"), Some("U1,U2")))
            .unwrap()
            .expect("on");
        assert!(on.records_room("table-1") && on.records_room("table-"));
        assert!(on.records_room("vtt/x") && !on.records_room("vtt/y"));
        assert!(on.excludes("U2") && !on.excludes("U3"));
        let every = recording(&mut raw(Some("/r"), Some("*"), None))
            .unwrap()
            .expect("on");
        assert!(every.records_room("anything at all"));
    }

    #[test]
    fn refuses_bad_values() {
        for (r, variable) in [
            (
                raw(Some("relative"), None, None),
                "MEDIASOUP_RECORDINGS_DIR",
            ),
            (raw(Some("/a/../b"), None, None), "MEDIASOUP_RECORDINGS_DIR"),
            (raw(None, Some("a*b"), None), "MEDIASOUP_RECORD_ROOMS"),
            (raw(None, Some("x,../y;"), None), "MEDIASOUP_RECORD_ROOMS"),
            (
                raw(None, None, Some("../../etc")),
                "MEDIASOUP_RECORD_EXCLUDE_USERS",
            ),
        ] {
            let mut r = r;
            assert_eq!(recording(&mut r).expect_err(variable).variable, variable);
        }
    }
}
