//! Session events and their JSON form.

use crate::proto::json;

/// Why a peer went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It left (DELETE).
    Left,
    /// It was idle for the session TTL.
    Expired,
    /// Its node died or became unreachable.
    NodeDown,
    /// Its node is draining.
    Shutdown,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 4] = [
        Reason::Left,
        Reason::Expired,
        Reason::NodeDown,
        Reason::Shutdown,
    ];

    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Left => "left",
            Reason::Expired => "expired",
            Reason::NodeDown => "node_down",
            Reason::Shutdown => "shutdown",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The peer's session is present and linked.
    PeerOnline,
    /// A message from the peer.
    Message(Box<str>),
    /// The peer's session ended.
    PeerOffline(Reason),
}

/// An event in a session's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3, … within the session.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Bytes charged against the session buffer: a message's data. Control
    /// events are free here; they are bounded by the event count instead.
    pub fn data_bytes(&self) -> usize {
        match &self.kind {
            EventKind::Message(data) => data.len(),
            _ => 0,
        }
    }

    /// Appends the event's JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        json::write_u64(out, self.seq);
        match &self.kind {
            EventKind::PeerOnline => out.extend_from_slice(b",\"type\":\"peer_online\"}"),
            EventKind::Message(data) => {
                out.extend_from_slice(b",\"type\":\"message\",\"data\":");
                json::write_str(out, data);
                out.push(b'}');
            }
            EventKind::PeerOffline(reason) => {
                out.extend_from_slice(b",\"type\":\"peer_offline\",\"reason\":\"");
                out.extend_from_slice(reason.as_str().as_bytes());
                out.extend_from_slice(b"\"}");
            }
        }
    }
}

/// The JSON of an event beyond its data: `{"seq":…,"type":"peer_offline",…}`.
const EVENT_JSON_BYTES: usize = 80;

/// The body of a poll answer: `{"peer":"online"|"offline","events":[...]}`.
///
/// At most `bytes_max` long where it can be: the events are a prefix of
/// `events`, stopping before the first that would take the body past it,
/// but never fewer than one (the client then acknowledges what it got and
/// polls again for the rest). `usize::MAX` for no bound.
pub fn poll_body<'a>(
    peer_online: bool,
    events: impl Iterator<Item = &'a Event> + Clone,
    bytes_max: usize,
) -> Vec<u8> {
    const CLOSE: &[u8] = b"]}";
    // Sized up front (escapes aside): growing it cost a reallocation per
    // answer with a message in it.
    let size = events
        .clone()
        .fold(32, |n, e| n + EVENT_JSON_BYTES + e.data_bytes() + 2);
    let mut out = Vec::with_capacity(size.min(bytes_max));
    out.extend_from_slice(if peer_online {
        b"{\"peer\":\"online\",\"events\":[".as_slice()
    } else {
        b"{\"peer\":\"offline\",\"events\":["
    });
    for (i, event) in events.enumerate() {
        let before = out.len();
        if i > 0 {
            out.push(b',');
        }
        event.write_json(&mut out);
        if i > 0 && out.len().saturating_add(CLOSE.len()) > bytes_max {
            out.truncate(before);
            break;
        }
    }
    out.extend_from_slice(CLOSE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_bodies() {
        let events = [
            Event {
                seq: 1,
                kind: EventKind::PeerOnline,
            },
            Event {
                seq: 2,
                kind: EventKind::Message("hi \"you\"\n".into()),
            },
            Event {
                seq: 3,
                kind: EventKind::PeerOffline(Reason::NodeDown),
            },
        ];
        assert_eq!(
            String::from_utf8(poll_body(true, events.iter(), usize::MAX)).unwrap(),
            r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"},{"seq":2,"type":"message","data":"hi \"you\"\n"},{"seq":3,"type":"peer_offline","reason":"node_down"}]}"#
        );
        assert_eq!(
            poll_body(false, [].iter(), usize::MAX),
            br#"{"peer":"offline","events":[]}"#
        );
        // A bound keeps a prefix of the events that fits, never none.
        let two = poll_body(true, events[..2].iter(), usize::MAX);
        for (bound, expect) in [
            (two.len(), two.clone()),
            (
                two.len() - 1,
                poll_body(true, events[..1].iter(), usize::MAX),
            ),
            (1, poll_body(true, events[..1].iter(), usize::MAX)),
        ] {
            assert_eq!(poll_body(true, events.iter(), bound), expect, "{bound}");
        }
    }
}
