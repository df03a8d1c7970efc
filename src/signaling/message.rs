//! The MediaSoupVTT wire format (see PROTOCOL.md): parsing requests, building responses and
//! notifications. Nothing here touches media.

use std::sync::Arc;

use mediasoup::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::rooms::Announcement;

/// Longest `userId` accepted (FoundryVTT's are 16 characters).
const MAX_USER_ID_LEN: usize = 128;
/// Longest `appData.mediaTag` accepted.
const MAX_MEDIA_TAG_LEN: usize = 64;

/// Declares [`Request`] and [`REQUEST_TYPES`] from one list, so that each request's wire name is
/// written once: it is both the variant's serde name and its entry in the list.
macro_rules! requests {
    ($($name:literal => $(#[$attr:meta])* $variant:ident $({ $($fields:tt)* })?,)*) => {
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type")]
        pub enum Request {
            $(
                #[serde(rename = $name)]
                $(#[$attr])*
                $variant $({ $($fields)* })?,
            )*
        }

        /// A request's `type` values, as the module names them.
        pub const REQUEST_TYPES: [&str; [$($name),*].len()] = [$($name),*];
    };
}

requests! {
    "getRouterRtpCapabilities" => GetRouterRtpCapabilities,
    "createWebRtcTransport" => #[serde(rename_all = "camelCase")] CreateWebRtcTransport {
        #[serde(default)]
        force_tcp: bool,
        producing: bool,
        consuming: bool,
    },
    "connectTransport" => #[serde(rename_all = "camelCase")] ConnectTransport {
        transport_id: TransportId,
        dtls_parameters: DtlsParameters,
    },
    "produce" => #[serde(rename_all = "camelCase")] Produce {
        transport_id: TransportId,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        app_data: ProduceAppData,
    },
    "consume" => #[serde(rename_all = "camelCase")] Consume {
        producer_id: ProducerId,
        rtp_capabilities: RtpCapabilities,
    },
    "pauseProducer" => #[serde(rename_all = "camelCase")] PauseProducer { producer_id: ProducerId },
    "resumeProducer" => #[serde(rename_all = "camelCase")] ResumeProducer { producer_id: ProducerId },
    "consumerPause" => #[serde(rename_all = "camelCase")] ConsumerPause { consumer_id: ConsumerId },
    "consumerResume" => #[serde(rename_all = "camelCase")] ConsumerResume { consumer_id: ConsumerId },
    "consumerClose" => #[serde(rename_all = "camelCase")] ConsumerClose { consumer_id: ConsumerId },
}

/// A produce request's `appData`: kept whole, since the other peers receive it, with its
/// `mediaTag` (`mic`, `webcam`, ...) checked and read once, here.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct ProduceAppData {
    pub media_tag: Arc<str>,
    pub fields: Map<String, Value>,
}

impl TryFrom<Map<String, Value>> for ProduceAppData {
    type Error = String;

    fn try_from(fields: Map<String, Value>) -> Result<Self, String> {
        let media_tag = match fields.get("mediaTag") {
            Some(Value::String(tag)) if !tag.is_empty() && tag.len() <= MAX_MEDIA_TAG_LEN => {
                tag.as_str().into()
            }
            _ => return Err(format!(
                "appData.mediaTag must be a non-empty string of at most {MAX_MEDIA_TAG_LEN} characters, like \"mic\" or \"webcam\""
            )),
        };
        Ok(ProduceAppData { media_tag, fields })
    }
}

/// A frame that could be read as a request.
#[derive(Debug)]
pub struct Envelope {
    pub request_id: Value,
    /// One of [`REQUEST_TYPES`].
    pub kind: &'static str,
    pub user_id: String,
    pub request: Request,
}

/// Why a frame is not a usable request.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// No `requestId` to answer to: reply with a `{"type": "error"}` frame.
    Unanswerable(String),
    /// Answer `{requestId, error}`; `kind` is the request type when it was known.
    Invalid {
        request_id: Value,
        kind: Option<&'static str>,
        error: String,
    },
}

/// Longest `requestId` string accepted (the module's are `req_<n>`).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Just the `requestId` of a frame; serde_json skips the other fields without recursing, so
/// this reads it even from a frame nested too deeply to parse.
#[derive(Deserialize)]
struct RequestIdOnly {
    #[serde(rename = "requestId")]
    request_id: Option<Value>,
}

/// The `requestId` of a frame that may not be a valid request, when it has a usable one.
pub fn request_id(text: &str) -> Option<Value> {
    let id = serde_json::from_str::<RequestIdOnly>(text)
        .ok()?
        .request_id?;
    matches!(id, Value::String(_) | Value::Number(_)).then_some(id)
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<Envelope, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let error = format!("frame is not valid JSON: {e}");
        match request_id(text) {
            Some(request_id) => ParseError::Invalid {
                request_id,
                kind: None,
                error,
            },
            None => ParseError::Unanswerable(error),
        }
    })?;
    let Value::Object(object) = value else {
        return Err(ParseError::Unanswerable(
            "frame is not a JSON object: send {\"type\": ..., \"requestId\": ..., \"userId\": ...}"
                .into(),
        ));
    };
    let request_id = match object.get("requestId") {
        Some(id @ Value::String(s)) if !s.is_empty() && s.len() <= MAX_REQUEST_ID_LEN => id.clone(),
        Some(id @ Value::Number(_)) => id.clone(),
        Some(id @ Value::String(_)) => {
            return Err(ParseError::Invalid {
                request_id: id.clone(),
                kind: None,
                error: format!("requestId must be a non-empty string of at most {MAX_REQUEST_ID_LEN} characters, like \"req_0\""),
            })
        }
        _ => {
            return Err(ParseError::Unanswerable(
                "request has no usable requestId (a non-empty string, like \"req_0\")".into(),
            ))
        }
    };
    let invalid = |kind, error: String| ParseError::Invalid {
        request_id: request_id.clone(),
        kind,
        error,
    };
    let kind = match object.get("type") {
        Some(Value::String(t)) => REQUEST_TYPES
            .into_iter()
            .find(|known| known == t)
            .ok_or_else(|| {
                invalid(
                    None,
                    format!(
                        "unknown request type {t:?}; expected one of {}",
                        REQUEST_TYPES.join(", ")
                    ),
                )
            })?,
        _ => return Err(invalid(None, "request has no \"type\" string".into())),
    };
    let user_id = match object.get("userId") {
        Some(Value::String(u)) if !u.is_empty() && u.len() <= MAX_USER_ID_LEN => u.clone(),
        _ => {
            return Err(invalid(
                Some(kind),
                format!("{kind}: missing or invalid \"userId\" (a non-empty string of at most {MAX_USER_ID_LEN} characters)"),
            ))
        }
    };
    let request: Request = serde_json::from_value(Value::Object(object))
        .map_err(|e| invalid(Some(kind), format!("invalid {kind} request: {e}")))?;
    Ok(Envelope {
        request_id,
        kind,
        user_id,
        request,
    })
}

/// A successful answer, `data` written as it is.
#[derive(Serialize)]
struct Response<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "requestId")]
    request_id: &'a Value,
    data: &'a RawValue,
}

pub fn response(kind: &str, request_id: &Value, data: &RawValue) -> String {
    let response = Response {
        kind,
        request_id,
        data,
    };
    // A str, a JSON value and valid JSON text always serialize.
    serde_json::to_string(&response).unwrap_or_default()
}

pub fn error_response(request_id: &Value, error: &str) -> String {
    json!({ "requestId": request_id, "error": error }).to_string()
}

/// For frames that carry no usable `requestId`.
pub fn error_frame(error: &str) -> String {
    json!({ "type": "error", "error": error }).to_string()
}

/// `newProducer`, its `appData` written as it is.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewProducer<'a> {
    r#type: &'static str,
    producer_id: ProducerId,
    user_id: &'a str,
    kind: MediaKind,
    app_data: &'a RawValue,
}

pub fn new_producer(announcement: &Announcement) -> String {
    let frame = NewProducer {
        r#type: "newProducer",
        producer_id: announcement.producer,
        user_id: &announcement.user_id,
        kind: announcement.kind,
        app_data: &announcement.app_data,
    };
    // Ids, a str, a kind and valid JSON text always serialize.
    serde_json::to_string(&frame).unwrap_or_default()
}

pub fn producer_closed(producer: ProducerId) -> String {
    json!({ "type": "producerClosed", "producerId": producer }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_error(text: &str) -> String {
        match parse(text) {
            Err(ParseError::Invalid { error, .. }) => error,
            other => panic!("expected an answerable error, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_requests_the_module_sends() {
        let envelope = parse(
            r#"{"type":"createWebRtcTransport","requestId":"req_1","userId":"abcdefghijklmnop",
                "forceTcp":false,"producing":true,"consuming":false,
                "sctpCapabilities":{"numStreams":{"OS":1024,"MIS":1024}}}"#,
        )
        .expect("valid");
        assert_eq!(envelope.kind, "createWebRtcTransport");
        assert_eq!(envelope.request_id, json!("req_1"));
        assert!(matches!(
            envelope.request,
            Request::CreateWebRtcTransport {
                producing: true,
                consuming: false,
                force_tcp: false
            }
        ));
        let envelope =
            parse(r#"{"type":"getRouterRtpCapabilities","requestId":"req_0","userId":"u"}"#)
                .expect("valid");
        assert!(matches!(
            envelope.request,
            Request::GetRouterRtpCapabilities
        ));
    }

    #[test]
    fn every_listed_type_is_a_request_variant() {
        for kind in REQUEST_TYPES {
            let frame = json!({"type": kind, "requestId": "r", "userId": "u"}).to_string();
            if let Err(ParseError::Invalid { error, .. }) = parse(&frame) {
                assert!(error.contains("missing field"), "{kind}: {error}");
            }
        }
    }

    #[test]
    fn frames_without_request_id_are_unanswerable() {
        for text in [
            "not json",
            "[1,2]",
            r#"{"type":"produce"}"#,
            r#"{"requestId":{"a":1}}"#,
        ] {
            assert!(
                matches!(parse(text), Err(ParseError::Unanswerable(_))),
                "{text}"
            );
        }
    }

    /// Whenever a requestId can be read, the answer carries it, so the client's request does
    /// not wait for its own timeout.
    #[test]
    fn unusable_frames_keep_their_request_id() {
        let deep = format!(
            r#"{{"requestId":"req_7","type":"produce","userId":"u","appData":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for (text, id) in [
            (deep, "req_7".to_owned()),
            (
                format!(r#"{{"requestId":"{long}","type":"consume"}}"#),
                long.clone(),
            ),
            (r#"{"requestId":""}"#.to_owned(), String::new()),
        ] {
            match parse(&text) {
                Err(ParseError::Invalid { request_id, .. }) => {
                    assert_eq!(request_id, Value::String(id), "{text:.60}")
                }
                other => panic!("{text:.60}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            invalid_error(r#"{"requestId":"r","type":"fly","userId":"u"}"#)
                .contains("unknown request type \"fly\"")
        );
        assert!(invalid_error(r#"{"requestId":"r","type":"consume"}"#).contains("userId"));
        assert!(
            invalid_error(r#"{"requestId":"r","type":"connectTransport","userId":"u"}"#)
                .contains("missing field `transportId`")
        );
        assert!(invalid_error(
            r#"{"requestId":"r","type":"pauseProducer","userId":"u","producerId":42}"#
        )
        .contains("invalid pauseProducer request"));
        let produce = r#"{"requestId":"r","type":"produce","userId":"u",
            "transportId":"5bd9f2bc-2e3b-4b1a-9b0e-3c3e6f3c8a11","kind":"audio",
            "rtpParameters":{"codecs":[],"headerExtensions":[],"encodings":[],"rtcp":{"reducedSize":true}},"appData":{}}"#;
        assert_eq!(
            invalid_error(produce),
            "invalid produce request: appData.mediaTag must be a non-empty string of at most 64 characters, like \"mic\" or \"webcam\""
        );
    }
}
