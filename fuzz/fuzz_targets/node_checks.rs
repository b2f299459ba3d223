//! The bodies of the node-protocol fuzz targets, as plain functions of the
//! input bytes, shared by `fuzz_targets/node_*.rs` and by
//! `tests/fuzz_node_corpus.rs` (which replays `fuzz/corpus/node_*/` under a
//! plain `cargo test`). Only `pairlink` and `std` are used here.
//!
//! A check returns normally when the input is fine (including inputs the
//! code under test rightly refuses) and panics when an invariant breaks.
#![allow(dead_code)]

use pairlink::cluster::conn::{ConnEvent, PeerConn};
use pairlink::cluster::frame::{decode, encode, Frame, FRAME_BYTES_MAX, HANDSHAKE_FRAME_BYTES_MAX};
use pairlink::cluster::handshake::Role;
use pairlink::core::{Node, NodeConfig, Output, Started};
use pairlink::proto::ids::{parse_node_name, parse_pair, NodeName, Side};

const COOKIE: &[u8] = b"fuzzing-cookie-of-32-bytes-long!";

fn name(s: &str) -> NodeName {
    parse_node_name(s).expect("a valid name")
}

/// Frame decoding: every frame decoded from a stream of bytes re-encodes
/// to exactly the bytes it came from (one canonical form), and decoding
/// never reads past the input, under both size limits.
pub fn node_frames(data: &[u8]) {
    for max in [HANDSHAKE_FRAME_BYTES_MAX, FRAME_BYTES_MAX] {
        let mut rest = data;
        for _ in 0..1_000 {
            match decode(rest, max) {
                Ok(Some((frame, used))) => {
                    assert!(
                        used <= rest.len() && used > 4,
                        "used {used} of {}",
                        rest.len()
                    );
                    let mut again = Vec::new();
                    encode(&frame, &mut again);
                    assert_eq!(again, &rest[..used], "not canonical: {frame:?}");
                    rest = &rest[used..];
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// The handshake and connection state machine against arbitrary bytes: an
/// acceptor fed bytes that are not a genuine dialer's never comes up (the
/// bytes cannot carry a valid HMAC proof without the cookie), never panics,
/// and keeps its outbound queue bounded. The input is split into chunks by
/// its first byte, to exercise partial frames.
pub fn node_handshake(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let known = |n: &NodeName| n.as_str() == "n0";
    let mut conn = PeerConn::new(
        0,
        Role::Acceptor,
        name("n9"),
        COOKIE.to_vec(),
        [7; 32],
        None,
        1_000,
    );
    let mut now = 0;
    for chunk in stream.chunks(step) {
        now += 10;
        if conn.handle_bytes(now, chunk, &known).is_err() {
            break;
        }
        while let Some(event) = conn.poll_event() {
            assert!(
                !matches!(event, ConnEvent::Up { .. }),
                "came up without the cookie"
            );
        }
        assert!(conn.transmit_bytes() < 1 << 20);
        let _ = conn.take_transmit();
        let _ = conn.handle_timeout(now, 0);
    }
}

/// An established connection fed arbitrary bytes after its handshake:
/// every frame it yields is a node frame that re-encodes canonically.
pub fn node_conn_stream(data: &[u8]) {
    let (mut dialer, mut acceptor) = connected_pair();
    let known = |_: &NodeName| true;
    if acceptor.handle_bytes(100, data, &known).is_err() {
        return;
    }
    while let Some(event) = acceptor.poll_event() {
        if let ConnEvent::Frame(frame) = event {
            assert!(!matches!(
                frame,
                Frame::Hello { .. } | Frame::Proof { .. } | Frame::Ping { .. } | Frame::Pong { .. }
            ));
            let mut bytes = Vec::new();
            encode(&frame, &mut bytes);
            assert!(matches!(decode(&bytes, FRAME_BYTES_MAX), Ok(Some(_))));
        }
    }
    // Whatever the acceptor answered, the dialer can read (or refuse).
    let answer = acceptor.take_transmit();
    let _ = dialer.handle_bytes(100, &answer, &known);
}

/// Two connections that completed their handshake with each other.
fn connected_pair() -> (PeerConn, PeerConn) {
    let known_d = |n: &NodeName| n.as_str() == "n2";
    let known_a = |n: &NodeName| n.as_str() == "n1";
    let mut d = PeerConn::new(
        0,
        Role::Dialer,
        name("n1"),
        COOKIE.to_vec(),
        [1; 32],
        Some(name("n2")),
        1_000,
    );
    let mut a = PeerConn::new(
        0,
        Role::Acceptor,
        name("n2"),
        COOKIE.to_vec(),
        [2; 32],
        None,
        1_000,
    );
    for _ in 0..4 {
        let to_a = d.take_transmit();
        a.handle_bytes(1, &to_a, &known_a)
            .expect("genuine handshake");
        let to_d = a.take_transmit();
        d.handle_bytes(1, &to_d, &known_d)
            .expect("genuine handshake");
    }
    while a.poll_event().is_some() {}
    while d.poll_event().is_some() {}
    assert!(
        a.is_up() && d.is_up(),
        "the genuine handshake must complete"
    );
    (d, a)
}

/// The cluster core fed a sequence of operations: client joins, polls,
/// sends, leaves and timeouts on node 0, interleaved with arbitrary frames
/// "from" node 1 (decoded from the input, so forged handles, claims and
/// request ids) and peer up/down. The core must never panic and must keep
/// its own books: waiting polls never exceed live sessions, and with no
/// sessions nothing is buffered.
pub fn node_core(data: &[u8]) {
    let config = NodeConfig {
        name: name("n0"),
        peers: vec![name("n1")],
        session_ttl_ms: 5_000,
        poll_timeout_ms: 1_000,
        lookup_timeout_ms: 500,
        max_sessions: 8,
        max_session_buffer: 256,
        max_total_buffer: 1_024,
    };
    let mut node: Node<u32> = Node::new(config);
    node.peer_up(0, 1);
    let mut tokens = Vec::new();
    let mut now = 0u64;
    let mut rest = data;
    for waiter in 1..=256u32 {
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        now += u64::from(op >> 5) * 50;
        let pair = parse_pair(["p", "q"][usize::from(op & 1)]).expect("valid");
        let side = if op & 2 == 0 { Side::A } else { Side::B };
        match op % 8 {
            0 | 1 => {
                if let Started::Done(reply) =
                    node.join(now, now, &pair, side, None, [op; 16], || waiter)
                {
                    if let Some(t) = token_in(&reply.body) {
                        tokens.push(t);
                    }
                }
            }
            2 => {
                if let Some(t) = tokens.get(usize::from(op >> 3) % tokens.len().max(1)) {
                    let _ = node.poll(
                        now,
                        &pair,
                        side,
                        t,
                        u64::from(op >> 4),
                        Some(u64::from(op)),
                        || waiter,
                    );
                }
            }
            3 => {
                if let Some(t) = tokens.get(usize::from(op >> 3) % tokens.len().max(1)) {
                    let _ = node.send(now, &pair, side, t, None, "m".into(), || waiter);
                }
            }
            4 => {
                if let Some(t) = tokens.get(usize::from(op >> 3) % tokens.len().max(1)) {
                    let _ = node.leave(now, &pair, side, t, || waiter);
                }
            }
            5 => node.handle_timeout(now),
            6 => {
                // A frame from node 1, taken from the input.
                match decode(rest, FRAME_BYTES_MAX) {
                    Ok(Some((frame, used))) => {
                        rest = &rest[used..];
                        node.handle_frame(now, 1, frame);
                    }
                    _ => break,
                }
            }
            _ => {
                if op & 16 == 0 {
                    node.peer_down(now, 1);
                } else {
                    node.peer_up(now, 1);
                }
            }
        }
        while let Some(output) = node.poll_output() {
            if let Output::Answer { reply, .. } = output {
                assert!((100..600).contains(&reply.status));
            }
        }
        assert!(node.polls_waiting() <= node.sessions_live());
        if node.sessions_live() == 0 {
            assert_eq!(node.buffered_bytes(), 0);
        }
    }
    node.drain(now);
    while node.poll_output().is_some() {}
    assert_eq!(
        (
            node.sessions_live(),
            node.polls_waiting(),
            node.requests_pending()
        ),
        (0, 0, 0)
    );
}

fn token_in(body: &[u8]) -> Option<pairlink::proto::ids::Token> {
    let body = std::str::from_utf8(body).ok()?;
    let t = body.split("\"session\":\"").nth(1)?.split('"').next()?;
    pairlink::proto::ids::Token::parse(t.as_bytes())
}
