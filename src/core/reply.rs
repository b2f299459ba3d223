//! Answers to client requests as status and JSON body: the form in which
//! they travel between nodes and reach the HTTP layer.

use super::error::ApiError;
use super::Millis;
use crate::proto::ids::{PairId, Side, Token};
use crate::proto::json;
use std::borrow::Cow;

/// A response body: built for the answer, or a constant (`{}` of every
/// `202`, no allocation for the most frequent answer of a relay).
pub type Body = Cow<'static, [u8]>;

/// An HTTP status and its JSON body (empty for 204).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Body,
}

impl Reply {
    /// A reply with a body built for it.
    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body: body.into(),
        }
    }

    /// The reply for a refusal.
    pub fn error(e: ApiError) -> Reply {
        Reply {
            status: e.status(),
            body: json::error_body(e.code(), e.message()).into(),
        }
    }

    /// `202 {}`
    pub fn accepted() -> Reply {
        Reply {
            status: 202,
            body: Cow::Borrowed(b"{}"),
        }
    }

    /// `204`
    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            body: Cow::Borrowed(b""),
        }
    }

    /// `200` with a poll body.
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply::new(200, body)
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::error(e)
    }
}

/// The body of a join: `{"pair":..,"side":..,"session":..,"peer":..,
/// "poll_timeout_ms":..,"session_ttl_ms":..}`.
pub fn join_body(
    pair: &PairId,
    side: Side,
    token: &Token,
    peer_online: bool,
    poll_timeout_ms: Millis,
    session_ttl_ms: Millis,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(200);
    body.extend_from_slice(b"{\"pair\":");
    json::write_str(&mut body, pair);
    body.extend_from_slice(b",\"side\":\"");
    body.extend_from_slice(side.as_str().as_bytes());
    body.extend_from_slice(b"\",\"session\":\"");
    token.write_text(&mut body);
    body.push(b'"');
    body.extend_from_slice(if peer_online {
        b",\"peer\":\"online\"".as_slice()
    } else {
        b",\"peer\":\"offline\""
    });
    body.extend_from_slice(b",\"poll_timeout_ms\":");
    json::write_u64(&mut body, poll_timeout_ms);
    body.extend_from_slice(b",\"session_ttl_ms\":");
    json::write_u64(&mut body, session_ttl_ms);
    body.push(b'}');
    body
}
