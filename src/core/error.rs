//! Answers the API gives when it cannot do what was asked.

/// A refusal by the core, mapped onto a status and an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `bad_after`: the client's cursor is past the last issued seq.
    BadAfter,
    /// 404 `no_session`: no live session for that token, pair and side.
    NoSession,
    /// 409 `side_taken`: another live session holds the side.
    SideTaken,
    /// 409 `peer_offline`: there is no live peer to deliver to.
    PeerOffline,
    /// 429 `peer_busy`: the peer's buffer, or the node's, is full.
    PeerBusy,
    /// 503 `overloaded`: the node is at its session limit.
    Overloaded,
    /// 503 `shutting_down`: the node is draining.
    ShuttingDown,
    /// 503 `unavailable`: the session's home node cannot be reached.
    Unavailable,
    /// 503 `unavailable` too: the peer's node stopped answering a send, so
    /// the message may or may not be in the peer's buffer.
    PeerUnreachable,
}

impl ApiError {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ApiError::BadAfter => 400,
            ApiError::NoSession => 404,
            ApiError::SideTaken | ApiError::PeerOffline => 409,
            ApiError::PeerBusy => 429,
            ApiError::Overloaded
            | ApiError::ShuttingDown
            | ApiError::Unavailable
            | ApiError::PeerUnreachable => 503,
        }
    }

    /// The `error` field.
    pub fn code(self) -> &'static str {
        match self {
            ApiError::BadAfter => "bad_after",
            ApiError::NoSession => "no_session",
            ApiError::SideTaken => "side_taken",
            ApiError::PeerOffline => "peer_offline",
            ApiError::PeerBusy => "peer_busy",
            ApiError::Overloaded => "overloaded",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Unavailable | ApiError::PeerUnreachable => "unavailable",
        }
    }

    /// The `message` field, for humans.
    pub fn message(self) -> &'static str {
        match self {
            ApiError::BadAfter => "after is higher than the last seq this session issued",
            ApiError::NoSession => "no live session for this token, pair and side",
            ApiError::SideTaken => "a live session already holds this side",
            ApiError::PeerOffline => "the peer has no live session",
            ApiError::PeerBusy => "the peer's buffer is full; retry after it polls",
            ApiError::Overloaded => "the node is at its session limit",
            ApiError::ShuttingDown => "the node is shutting down",
            ApiError::Unavailable => "the session's home node is unreachable",
            ApiError::PeerUnreachable => {
                "the peer's node stopped answering; the message may or may not have \
                 been delivered: retry with the same Idempotency-Key"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_whose_peer_node_went_silent_says_so() {
        let e = ApiError::PeerUnreachable;
        assert_eq!((e.status(), e.code()), (503, "unavailable"));
        assert!(
            e.message().starts_with("the peer's node"),
            "{}",
            e.message()
        );
        assert!(ApiError::Unavailable.message().contains("home node"));
    }
}
