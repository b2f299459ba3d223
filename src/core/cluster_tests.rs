//! Unit tests of the cluster's part of the core: two nodes wired back to
//! back in memory, frames pumped until none are left.

use super::*;
use crate::core::{CancelKey, NodeConfig, Output, Reply, Started};
use crate::proto::ids::{parse_node_name, Token};

type TestNode = Node<u32>;

fn node(name: &str, peer: &str) -> TestNode {
    node_with(name, peer, |_| {})
}

fn node_with_poll_timeout(name: &str, peer: &str, poll_timeout_ms: Millis) -> TestNode {
    node_with(name, peer, |c| c.poll_timeout_ms = poll_timeout_ms)
}

fn node_with(name: &str, peer: &str, change: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let mut config = NodeConfig {
        name: parse_node_name(name).unwrap(),
        peers: vec![parse_node_name(peer).unwrap()],
        session_ttl_ms: 60_000,
        poll_timeout_ms: 25_000,
        lookup_timeout_ms: 1_000,
        max_sessions: 100,
        max_session_buffer: 1_000,
        max_total_buffer: 10_000,
    };
    change(&mut config);
    Node::new(config)
}

/// Two connected nodes; each sees the other as node index 1.
fn cluster() -> [TestNode; 2] {
    let mut nodes = [node("n1", "n2"), node("n2", "n1")];
    nodes[0].peer_up(0, 1);
    nodes[1].peer_up(0, 1);
    nodes
}

/// Moves frames between the nodes until none are left; returns the
/// answers to clients as (node, waiter, reply).
fn pump(nodes: &mut [TestNode; 2], now: Millis) -> Vec<(usize, u32, Reply)> {
    let mut answers = Vec::new();
    for _ in 0..1_000 {
        let mut moved = false;
        for from in 0..2 {
            while let Some(output) = nodes[from].poll_output() {
                match output {
                    Output::Answer { waiter, reply } => answers.push((from, waiter, reply)),
                    Output::Send { frame, .. } => {
                        nodes[1 - from].handle_frame(now, 1, frame);
                        moved = true;
                    }
                }
            }
        }
        if !moved {
            return answers;
        }
    }
    panic!("frames kept flowing");
}

fn pair(s: &str) -> PairId {
    PairId::try_from(s).unwrap()
}

fn token_in(reply: &Reply) -> Token {
    let body = std::str::from_utf8(&reply.body).unwrap();
    Token::parse(crate::proto::ids::session_in_join_body(body).as_bytes()).unwrap()
}

fn body(reply: &Reply) -> &str {
    std::str::from_utf8(&reply.body).unwrap()
}

/// Joins on node `i` and pumps; returns the reply.
fn join(nodes: &mut [TestNode; 2], i: usize, p: &str, side: Side, w: u32) -> Reply {
    match nodes[i].join(0, 0, &pair(p), side, None, [w as u8; 16], || w) {
        Started::Done(r) => r,
        Started::Waiting(_) => {
            let answers = pump(nodes, 0);
            let (_, _, reply) = answers
                .into_iter()
                .find(|(n, x, _)| *n == i && *x == w)
                .unwrap();
            reply
        }
    }
}

fn poll_now(node: &mut TestNode, p: &str, side: Side, t: &Token, after: u64) -> String {
    match node.poll(1, &pair(p), side, t, after, Some(0), || 0) {
        Started::Done(r) => String::from_utf8(r.body.into_owned()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cross_node_pairing_and_relay() {
    let mut nodes = cluster();
    let a = join(&mut nodes, 0, "p", Side::A, 1);
    assert_eq!(a.status, 201);
    assert!(body(&a).contains("\"peer\":\"offline\""));
    let b = join(&mut nodes, 1, "p", Side::B, 2);
    assert_eq!(b.status, 201);
    assert!(body(&b).contains("\"peer\":\"online\""));
    let (ta, tb) = (token_in(&a), token_in(&b));
    let online = r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#;
    assert_eq!(poll_now(&mut nodes[0], "p", Side::A, &ta, 0), online);
    assert_eq!(poll_now(&mut nodes[1], "p", Side::B, &tb, 0), online);

    // b's send waits for a's handler on the other node.
    let started = nodes[1].send(2, &pair("p"), Side::B, &tb, Some(b"k"), "hi".into(), || 3);
    assert_eq!(started, Started::Waiting(None));
    let answers = pump(&mut nodes, 2);
    assert_eq!(answers.len(), 1);
    assert_eq!((answers[0].1, answers[0].2.status), (3, 202));
    // The retry with the same key is answered without a second delivery.
    assert_eq!(
        nodes[1].send(3, &pair("p"), Side::B, &tb, Some(b"k"), "hi".into(), || 4),
        Started::Done(Reply::accepted())
    );
    assert_eq!(
        poll_now(&mut nodes[0], "p", Side::A, &ta, 1),
        r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"hi"}]}"#
    );
    assert_eq!(nodes[0].stats().lookups_miss, 1);
    assert_eq!(nodes[1].stats().lookups_remote, 1);
}

#[test]
fn requests_are_forwarded_to_the_home_node() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    let _b = join(&mut nodes, 1, "p", Side::B, 2);
    // a polls through n2.
    let started = nodes[1].poll(1, &pair("p"), Side::A, &a, 0, Some(0), || 5);
    assert!(matches!(
        started,
        Started::Waiting(Some(CancelKey::Forward(_)))
    ));
    let answers = pump(&mut nodes, 1);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, 1);
    assert_eq!(
        body(&answers[0].2),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#
    );
    // A wrong secret through n2 is 404, as at home.
    let mut wrong = a.clone();
    wrong.secret[0] ^= 1;
    nodes[1].poll(1, &pair("p"), Side::A, &wrong, 0, Some(0), || 6);
    assert_eq!(pump(&mut nodes, 1)[0].2.status, 404);
    // A resume through n2 answers 200 with the same token.
    nodes[1].join(1, 1, &pair("p"), Side::A, Some(&a), [9; 16], || 7);
    let resumed = pump(&mut nodes, 1).remove(0).2;
    assert_eq!((resumed.status, token_in(&resumed)), (200, a.clone()));
    // Leave through n2.
    nodes[1].leave(1, &pair("p"), Side::A, &a, || 8);
    assert_eq!(pump(&mut nodes, 1)[0].2.status, 204);
    assert_eq!(nodes[0].sessions_live(), 0);
}

#[test]
fn same_side_claimed_on_both_nodes_leaves_exactly_one() {
    let mut nodes = cluster();
    // Both joins start before either node hears of the other.
    let first = nodes[0].join(0, 100, &pair("p"), Side::A, None, [1; 16], || 1);
    let second = nodes[1].join(0, 100, &pair("p"), Side::A, None, [2; 16], || 2);
    assert_eq!(
        (first, second),
        (Started::Waiting(None), Started::Waiting(None))
    );
    let answers = pump(&mut nodes, 0);
    let mut statuses: Vec<u16> = answers.iter().map(|(_, _, r)| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 409]);
    assert_eq!(nodes[0].sessions_live() + nodes[1].sessions_live(), 1);
}

#[test]
fn a_lost_node_fires_node_down_and_a_new_one_repairs() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    let _b = join(&mut nodes, 1, "p", Side::B, 2);
    nodes[0].peer_down(5, 1);
    assert_eq!(
        poll_now(&mut nodes[0], "p", Side::A, &a, 1),
        r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"node_down"}]}"#
    );
    assert_eq!(
        nodes[0].stats().peer_offline[crate::core::Reason::NodeDown.index()],
        1
    );
    // The other node comes back with b still alive: both are re-paired.
    nodes[1].peer_down(5, 1);
    nodes[0].peer_up(6, 1);
    nodes[1].peer_up(6, 1);
    pump(&mut nodes, 6);
    assert_eq!(
        poll_now(&mut nodes[0], "p", Side::A, &a, 2),
        r#"{"peer":"online","events":[{"seq":3,"type":"peer_online"}]}"#
    );
}

#[test]
fn a_silent_home_node_gets_503_after_the_deadline() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    // n2 forwards a send; n1 never answers (its frames are dropped).
    nodes[1].send(10, &pair("p"), Side::A, &a, None, "x".into(), || 9);
    while nodes[1].poll_output().is_some() {}
    nodes[1].handle_timeout(10 + crate::limits::FORWARD_SLACK_MS - 1);
    assert!(nodes[1].poll_output().is_none());
    nodes[1].handle_timeout(10 + crate::limits::FORWARD_SLACK_MS);
    let mut got = Vec::new();
    while let Some(o) = nodes[1].poll_output() {
        got.push(o);
    }
    assert!(got
        .iter()
        .any(|o| matches!(o, Output::Answer { waiter: 9, reply } if reply.status == 503)));
    assert_eq!(nodes[1].requests_pending(), 0);
}

#[test]
fn leaving_tells_the_remote_peer() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    let b = token_in(&join(&mut nodes, 1, "p", Side::B, 2));
    nodes[0].leave(3, &pair("p"), Side::A, &a, || 0);
    pump(&mut nodes, 3);
    assert_eq!(
        poll_now(&mut nodes[1], "p", Side::B, &b, 1),
        r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"left"}]}"#
    );
}

#[test]
fn a_drain_answers_clients_waiting_on_other_nodes() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    // A poll of a's, forwarded through n2, waits at n1.
    let started = nodes[1].poll(1, &pair("p"), Side::A, &a, 0, Some(60_000), || 5);
    assert!(matches!(
        started,
        Started::Waiting(Some(CancelKey::Forward(_)))
    ));
    pump(&mut nodes, 1);
    // n2 drains: the poll is cancelled at its home, which answers it at
    // once with what it has, and that answer is the client's: 200.
    nodes[1].drain(2);
    let answers = pump(&mut nodes, 2);
    let polled: Vec<_> = answers
        .iter()
        .filter(|(n, w, _)| *n == 1 && *w == 5)
        .map(|(_, _, r)| (r.status, body(r).to_string()))
        .collect();
    assert_eq!(
        polled,
        vec![(200, r#"{"peer":"offline","events":[]}"#.to_string())]
    );
    assert_eq!(nodes[1].requests_pending(), 0);
}

#[test]
fn a_drain_gives_up_on_forwarded_requests_whose_home_is_silent() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    nodes[1].poll(1, &pair("p"), Side::A, &a, 0, Some(60_000), || 5);
    pump(&mut nodes, 1);
    nodes[1].drain(2);
    // n1 never answers (its frames are dropped); the driver gives up.
    while nodes[1].poll_output().is_some() {}
    nodes[1].abandon_forwards();
    let mut answered = Vec::new();
    while let Some(o) = nodes[1].poll_output() {
        if let Output::Answer { waiter, reply } = o {
            answered.push((waiter, reply.status));
        }
    }
    assert_eq!(answered, vec![(5, 503)]);
    assert_eq!(nodes[1].requests_pending(), 0);
}

/// Moves exactly the frames `from` has queued now to the other node.
fn deliver_queued(nodes: &mut [TestNode; 2], from: usize, now: Millis) -> Vec<(usize, u32, Reply)> {
    let mut answers = Vec::new();
    let mut frames = Vec::new();
    while let Some(output) = nodes[from].poll_output() {
        match output {
            Output::Answer { waiter, reply } => answers.push((from, waiter, reply)),
            Output::Send { frame, .. } => frames.push(frame),
        }
    }
    for frame in frames {
        nodes[1 - from].handle_frame(now, 1, frame);
    }
    answers
}

#[test]
fn a_waiting_poll_hears_peer_online_when_the_lookup_arrives() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    // a waits on n1.
    let waiting = nodes[0].poll(0, &pair("p"), Side::A, &a, 0, Some(25_000), || 9);
    assert!(matches!(waiting, Started::Waiting(_)));
    // b joins on n2: only its Lookup reaches n1, no reply and no Link yet.
    let started = nodes[1].join(1, 1, &pair("p"), Side::B, None, [2; 16], || 2);
    assert_eq!(started, Started::Waiting(None));
    assert!(deliver_queued(&mut nodes, 1, 1).is_empty());
    let answered = deliver_queued(&mut nodes, 0, 1);
    let poll = answered
        .iter()
        .find(|(n, w, _)| (*n, *w) == (0, 9))
        .expect("a's poll is answered at the lookup");
    assert_eq!(
        body(&poll.2),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#
    );
    // The rest of the exchange changes nothing for a: one peer_online.
    let rest = pump(&mut nodes, 1);
    assert_eq!(rest.len(), 1, "b's join answer: {rest:?}");
    assert!(body(&rest[0].2).contains("\"peer\":\"online\""));
    assert_eq!(
        poll_now(&mut nodes[0], "p", Side::A, &a, 1),
        r#"{"peer":"online","events":[]}"#
    );
}

#[test]
fn a_link_made_at_the_lookup_is_undone_when_the_asker_is_gone() {
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    // b's lookup reaches n1 and links a; b leaves before the reply is read.
    nodes[1].join(1, 1, &pair("p"), Side::B, None, [2; 16], || 2);
    deliver_queued(&mut nodes, 1, 1);
    assert!(poll_now(&mut nodes[0], "p", Side::A, &a, 0).contains("peer_online"));
    let b_addr = nodes[1].inspect().next().expect("b lives").addr;
    let b = Token {
        node: parse_node_name("n2").unwrap(),
        key: b_addr.key,
        gen: b_addr.gen,
        secret: [2; 16],
    };
    assert_eq!(
        nodes[1].leave(2, &pair("p"), Side::B, &b, || 3),
        Started::Done(Reply::no_content())
    );
    // Now the reply, and what follows: a is told its peer left.
    pump(&mut nodes, 3);
    assert_eq!(
        poll_now(&mut nodes[0], "p", Side::A, &a, 1),
        r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"left"}]}"#
    );
    assert_eq!(nodes[1].sessions_live(), 0);
}

/// Drops what `node` sends: the other node never hears it.
fn drop_frames(node: &mut TestNode) -> Vec<(u32, Reply)> {
    let mut answers = Vec::new();
    while let Some(output) = node.poll_output() {
        if let Output::Answer { waiter, reply } = output {
            answers.push((waiter, reply));
        }
    }
    answers
}

/// Starts a join of `p`, side a, on `node` (waiter 1), which asks its
/// peer; drops the frames and returns the lookup's `req`.
fn join_asking_the_peer(node: &mut TestNode, p: &str) -> u64 {
    use crate::cluster::frame::Frame;
    assert!(matches!(
        node.join(0, 0, &pair(p), Side::A, None, [1; 16], || 1),
        Started::Waiting(_)
    ));
    let mut lookup = None;
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send {
                frame: Frame::Lookup { req, .. },
                ..
            } => lookup = Some(req),
            Output::Send { .. } => {}
            Output::Answer { .. } => panic!("the join was answered at once"),
        }
    }
    lookup.expect("the join asked the peer")
}

#[test]
fn lookups_a_node_never_answers_are_dropped_in_time() {
    use crate::limits::{LATE_LOOKUP_MS, LOOKUP_TIMEOUT_MS};
    let mut nodes = cluster();
    // n1's join asks n2, which is up but never answers.
    join_asking_the_peer(&mut nodes[0], "p");
    nodes[0].handle_timeout(LOOKUP_TIMEOUT_MS);
    let answers = drop_frames(&mut nodes[0]);
    assert!(matches!(answers.as_slice(), [(1, r)] if r.status == 201));
    // The join is answered; its lookup is still out, a late reply counts.
    assert_eq!(nodes[0].requests_pending(), 1);
    let late = LOOKUP_TIMEOUT_MS + LATE_LOOKUP_MS;
    assert!(nodes[0].next_deadline() <= Some(late));
    nodes[0].handle_timeout(late - 1);
    assert_eq!(nodes[0].requests_pending(), 1);
    nodes[0].handle_timeout(late);
    assert_eq!(nodes[0].requests_pending(), 0);
    assert!(drop_frames(&mut nodes[0]).is_empty());

    // The lookups re-sent when a node comes (back) up are bounded the same
    // way: one per live session, dropped unanswered.
    nodes[0].peer_down(late, 1);
    drop_frames(&mut nodes[0]);
    assert!(matches!(
        nodes[0].join(late, 0, &pair("q"), Side::B, None, [2; 16], || 2),
        Started::Done(r) if r.status == 201
    ));
    nodes[0].peer_up(late + 1, 1);
    assert!(drop_frames(&mut nodes[0]).is_empty());
    assert_eq!(nodes[0].requests_pending(), 1);
    nodes[0].handle_timeout(late + LATE_LOOKUP_MS);
    assert_eq!(nodes[0].requests_pending(), 1);
    nodes[0].handle_timeout(late + 1 + LATE_LOOKUP_MS);
    assert_eq!(nodes[0].requests_pending(), 0);
}

#[test]
fn replies_naming_another_kind_of_request_leave_it_alone() {
    use crate::cluster::frame::{DeliverResult, Frame};
    use crate::limits::LOOKUP_TIMEOUT_MS;
    let mut nodes = cluster();
    let req = join_asking_the_peer(&mut nodes[0], "p");
    // n2 answers that request as if it were a forward, then a delivery:
    // the join must be left alone and answered at its deadline, not
    // dropped or left waiting for ever.
    nodes[0].handle_frame(
        1,
        1,
        Frame::ForwardReply {
            req,
            status: 200,
            body: b"{}".to_vec(),
        },
    );
    nodes[0].handle_frame(
        1,
        1,
        Frame::DeliverReply {
            req,
            result: DeliverResult::Delivered,
        },
    );
    assert_eq!(nodes[0].requests_pending(), 1);
    assert!(drop_frames(&mut nodes[0]).is_empty());
    nodes[0].handle_timeout(LOOKUP_TIMEOUT_MS);
    let answers = drop_frames(&mut nodes[0]);
    assert!(
        matches!(answers.as_slice(), [(1, r)] if r.status == 201),
        "{answers:?}"
    );
}

#[test]
fn ever_better_claims_do_not_grow_a_session_past_its_event_cap() {
    use crate::cluster::frame::{Claim, Frame, Handle};
    use crate::limits::SESSION_EVENTS_MAX;
    let mut nodes = cluster();
    join(&mut nodes, 0, "p", Side::A, 1);
    join(&mut nodes, 1, "p", Side::B, 2);
    let a = nodes[0].inspect().next().unwrap().addr;
    assert!(nodes[0].sessions[a.key as usize].peer.is_some());
    let to = Handle {
        key: a.key,
        gen: a.gen,
    };
    // n2 (confused or hostile) sends links with ever better claims to
    // side b; a's client never acknowledges what it hears.
    for i in 0..(SESSION_EVENTS_MAX as u32 + 500) {
        let from = Claim {
            handle: Handle {
                key: u32::MAX - i,
                gen: 1,
            },
            hlc: 0,
        };
        nodes[0].handle_frame(1, 1, Frame::Link { from, to });
        while nodes[0].poll_output().is_some() {}
    }
    let events = nodes[0].sessions[a.key as usize].events.len();
    assert!(events <= SESSION_EVENTS_MAX, "{events} events");
}

#[test]
fn a_forwarded_poll_waits_no_longer_than_the_cap() {
    use crate::cluster::frame::{ForwardOp, Frame};
    use crate::limits::POLL_TIMEOUT_MS_MAX;
    let mut nodes = cluster();
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    nodes[0].handle_frame(
        1,
        1,
        Frame::Forward {
            req: 77,
            pair: pair("p"),
            side: Side::A,
            key: a.key,
            gen: a.gen,
            secret: a.secret,
            op: ForwardOp::Poll {
                after: 0,
                timeout_ms: Some(u64::MAX),
            },
        },
    );
    while nodes[0].poll_output().is_some() {}
    // Run the node's timers until the poll is answered (a bounded number
    // of steps: the session's own deadline, then the poll's).
    let mut answered_at = None;
    for _ in 0..10 {
        let at = nodes[0].next_deadline().expect("a timer is set");
        nodes[0].handle_timeout(at);
        while let Some(output) = nodes[0].poll_output() {
            if let Output::Send {
                frame: Frame::ForwardReply { req: 77, .. },
                ..
            } = output
            {
                answered_at = Some(at);
            }
        }
        if answered_at.is_some() {
            break;
        }
    }
    assert_eq!(answered_at, Some(1 + POLL_TIMEOUT_MS_MAX));
}

#[test]
fn a_forwarded_poll_without_a_timeout_waits_the_forwarding_nodes_default() {
    // n1 (the home) waits 25 s by default, n2 (where the client polls) 2 s.
    let mut nodes = [
        node_with_poll_timeout("n1", "n2", 25_000),
        node_with_poll_timeout("n2", "n1", 2_000),
    ];
    nodes[0].peer_up(0, 1);
    nodes[1].peer_up(0, 1);
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    nodes[1].poll(10, &pair("p"), Side::A, &a, 0, None, || 5);
    assert!(pump(&mut nodes, 10).is_empty(), "nothing to answer yet");
    // The home node answers (empty) when n2's default is up, well before
    // n2 gives up on it (its default + FORWARD_SLACK_MS) with a 503.
    let at = nodes[0].next_deadline().expect("the poll's timer");
    assert_eq!(at, 10 + 2_000);
    nodes[0].handle_timeout(at);
    let answers = pump(&mut nodes, at);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!((answers[0].0, answers[0].1), (1, 5));
    assert_eq!(answers[0].2.status, 200);
    assert_eq!(body(&answers[0].2), r#"{"peer":"offline","events":[]}"#);
}

/// The seqs of the events in a poll body.
fn seqs_in(body: &str) -> Vec<u64> {
    body.split("\"seq\":")
        .skip(1)
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_forwarded_poll_answer_fits_one_frame_and_the_rest_comes_next() {
    use crate::cluster::frame::{encode, FORWARD_REPLY_BODY_BYTES_MAX, FRAME_BYTES_MAX};
    const MESSAGE_BYTES: usize = 12 << 20; // three make more than a frame
    let big = |c: &mut NodeConfig| {
        c.max_session_buffer = 64 << 20;
        c.max_total_buffer = 64 << 20;
    };
    let mut nodes = [node_with("n1", "n2", big), node_with("n2", "n1", big)];
    nodes[0].peer_up(0, 1);
    nodes[1].peer_up(0, 1);
    let a = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    let b = token_in(&join(&mut nodes, 1, "p", Side::B, 2));
    for (i, fill) in ["x", "y", "z"].into_iter().enumerate() {
        let data: Box<str> = fill.repeat(MESSAGE_BYTES).into();
        nodes[1].send(1, &pair("p"), Side::B, &b, None, data, || 10 + i as u32);
        let answers = pump(&mut nodes, 1);
        assert_eq!(answers[0].2.status, 202, "send {i}");
    }
    // a polls through n2: one answer now, one for the rest; nothing lost.
    let mut after = 0;
    let mut got = Vec::new();
    for round in 0..2 {
        nodes[1].poll(2, &pair("p"), Side::A, &a, after, Some(0), || 20 + round);
        while let Some(output) = nodes[1].poll_output() {
            if let Output::Send { frame, .. } = output {
                nodes[0].handle_frame(2, 1, frame);
            }
        }
        // The home node's reply, as the frame it would write.
        let mut reply = None;
        while let Some(output) = nodes[0].poll_output() {
            if let Output::Send { frame, .. } = output {
                let mut bytes = Vec::new();
                encode(&frame, &mut bytes);
                assert!(bytes.len() <= 4 + FRAME_BYTES_MAX, "{} bytes", bytes.len());
                if let Frame::ForwardReply { .. } = frame {
                    reply = Some(frame.clone());
                }
                nodes[1].handle_frame(2, 1, frame);
            }
        }
        let answers = pump(&mut nodes, 2);
        assert!(reply.is_some(), "round {round}: no ForwardReply");
        assert_eq!(answers.len(), 1, "round {round}");
        let (node, waiter, reply) = &answers[0];
        assert_eq!((*node, *waiter, reply.status), (1, 20 + round, 200));
        assert!(reply.body.len() <= FORWARD_REPLY_BODY_BYTES_MAX);
        let seqs = seqs_in(body(reply));
        assert!(!seqs.is_empty(), "round {round}: no events");
        after = *seqs.last().unwrap();
        got.extend(seqs);
    }
    // peer_online, then the three messages, each once and in order.
    assert_eq!(got, vec![1, 2, 3, 4]);
}

/// Frames a node has queued, with the peer each is for, and its answers
/// to clients.
#[allow(clippy::type_complexity)]
fn take_outputs(node: &mut TestNode) -> (Vec<(u16, Frame)>, Vec<(u32, Reply)>) {
    let (mut frames, mut answers) = (Vec::new(), Vec::new());
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send { peer, frame } => frames.push((peer, frame)),
            Output::Answer { waiter, reply } => answers.push((waiter, reply)),
        }
    }
    (frames, answers)
}

/// b on n1 sends to a on n2 while a's join is still out: a has n1's
/// lookup reply (so it is linked to b) but not that of n3, a third node
/// that is up and silent. Returns n1, n2 and n2's frames after the
/// `Deliver` (n3's frames are dropped).
fn send_into_a_joining_session() -> (TestNode, TestNode, Vec<(u16, Frame)>) {
    let mut n1 = node("n1", "n2");
    let mut n2 = node_with("n2", "n1", |c| {
        c.peers.push(parse_node_name("n3").unwrap());
    });
    n1.peer_up(0, 1);
    n2.peer_up(0, 1);
    n2.peer_up(0, 2);
    // b joins on n1 (its lookup to n2 finds nothing).
    assert!(matches!(
        n1.join(0, 0, &pair("p"), Side::B, None, [1; 16], || 1),
        Started::Waiting(_)
    ));
    for (_, f) in take_outputs(&mut n1).0 {
        n2.handle_frame(0, 1, f);
    }
    for (_, f) in take_outputs(&mut n2).0 {
        n1.handle_frame(0, 1, f);
    }
    let (_, answers) = take_outputs(&mut n1);
    let b = token_in(&answers[0].1);
    // a joins on n2: n1 links b to it at the lookup and replies; n3 is
    // silent, so a's join stays out.
    assert!(matches!(
        n2.join(2, 2, &pair("p"), Side::A, None, [7; 16], || 2),
        Started::Waiting(_)
    ));
    for (peer, f) in take_outputs(&mut n2).0 {
        if peer == 1 {
            n1.handle_frame(2, 1, f);
        }
    }
    for (_, f) in take_outputs(&mut n1).0 {
        n2.handle_frame(2, 1, f);
    }
    let (_, answers) = take_outputs(&mut n2);
    assert!(answers.is_empty(), "a's join answered early: {answers:?}");
    // b, told peer_online, sends.
    let body = poll_now(&mut n1, "p", Side::B, &b, 0);
    assert!(body.contains("peer_online"), "{body}");
    let started = n1.send(3, &pair("p"), Side::B, &b, None, "early".into(), || 3);
    assert!(matches!(started, Started::Waiting(_)));
    for (_, f) in take_outputs(&mut n1).0 {
        n2.handle_frame(3, 1, f);
    }
    let (frames, _) = take_outputs(&mut n2);
    (n1, n2, frames)
}

/// n1's answers to its clients after it reads `frames` (those for n1).
fn answers_after(n1: &mut TestNode, frames: Vec<(u16, Frame)>) -> Vec<(u32, Reply)> {
    for (peer, f) in frames {
        if peer == 1 {
            n1.handle_frame(5, 1, f);
        }
    }
    take_outputs(n1).1
}

#[test]
fn a_message_into_a_joining_session_is_acknowledged_when_its_join_is() {
    use crate::cluster::frame::DeliverResult;
    let (mut n1, mut n2, frames) = send_into_a_joining_session();
    assert!(
        !frames
            .iter()
            .any(|(_, f)| matches!(f, Frame::DeliverReply { .. })),
        "acknowledged before the join was answered: {frames:?}"
    );
    // n3 never answers: at the lookup deadline the join is answered, then
    // the message.
    let at = n2.next_deadline().expect("the join's deadline");
    n2.handle_timeout(at);
    let (frames, answers) = take_outputs(&mut n2);
    assert!(
        answers.iter().any(|(w, r)| *w == 2 && r.status == 201),
        "{answers:?}"
    );
    assert!(frames.iter().any(|(_, f)| matches!(
        f,
        Frame::DeliverReply {
            result: DeliverResult::Delivered,
            ..
        }
    )));
    let answers = answers_after(&mut n1, frames);
    let send = answers
        .iter()
        .find(|(w, _)| *w == 3)
        .expect("the send's answer");
    assert_eq!(send.1.status, 202);
}

#[test]
fn a_message_into_a_session_that_ends_while_joining_is_not_acknowledged() {
    let (mut n1, mut n2, _) = send_into_a_joining_session();
    // n2 drains before a's join is answered: a ends, and nobody read the
    // message. (Losing its side to a better claim ends it the same way.)
    n2.drain(4);
    let (frames, _) = take_outputs(&mut n2);
    let answers = answers_after(&mut n1, frames);
    let send = answers
        .iter()
        .find(|(w, _)| *w == 3)
        .expect("the send's answer");
    assert_eq!(send.1.status, 409, "not 202: the message was never read");
}

/// Every link on `node` between two of its own sessions goes both ways.
fn assert_local_links_symmetric(node: &TestNode) {
    let views: Vec<_> = node.inspect().map(|v| (v.addr, v.peer)).collect();
    for &(addr, peer) in &views {
        if let Some(peer) = peer.filter(|p| p.node == 0) {
            let back = views.iter().find(|(a, _)| *a == peer).and_then(|(_, p)| *p);
            assert_eq!(
                back,
                Some(addr),
                "one-way link {addr:?} -> {peer:?}: {views:?}"
            );
        }
    }
}

#[test]
fn a_full_session_is_linked_both_ways_or_not_at_all() {
    use crate::limits::SESSION_EVENTS_MAX;
    let mut nodes = cluster();
    let k = token_in(&join(&mut nodes, 0, "p", Side::A, 1));
    let r = token_in(&join(&mut nodes, 1, "p", Side::B, 2));
    // R fills K (which never acknowledges) to SESSION_EVENTS_MAX - 1
    // events: its peer_online and 4094 messages.
    for _ in 0..SESSION_EVENTS_MAX - 2 {
        nodes[1].send(1, &pair("p"), Side::B, &r, None, "".into(), || 100);
        pump(&mut nodes, 1);
    }
    // Q joins side b on n1 (K has no room to switch to it) and R leaves
    // before n2 answers Q's lookup: K hears peer_offline (now full) and
    // looks for its peer again, finding Q here.
    assert!(matches!(
        nodes[0].join(2, 2, &pair("p"), Side::B, None, [3; 16], || 3),
        Started::Waiting(_)
    ));
    assert!(matches!(
        nodes[1].leave(2, &pair("p"), Side::B, &r, || 4),
        Started::Done(_)
    ));
    let answers = pump(&mut nodes, 2);
    let q_reply = &answers
        .iter()
        .find(|(n, w, _)| *n == 0 && *w == 3)
        .unwrap()
        .2;
    assert_eq!(q_reply.status, 201);
    assert_local_links_symmetric(&nodes[0]);
    // Once K's client acknowledges, the two are linked (both ways).
    let polled = poll_now(&mut nodes[0], "p", Side::A, &k, SESSION_EVENTS_MAX as u64);
    assert!(polled.contains(r#""peer":"online""#), "{polled}");
    assert_local_links_symmetric(&nodes[0]);
    let q = token_in(q_reply);
    let polled = poll_now(&mut nodes[0], "p", Side::B, &q, 0);
    assert!(polled.contains(r#""peer":"online""#), "{polled}");
}

/// A keyed retry of a send whose acknowledgement is held (the receiver's
/// join is out) waits for the same outcome instead of being answered 202
/// from the sender's key memory; when the receiver then loses its side,
/// both attempts get 409 and nothing was promised. (Found by a review.)
#[test]
fn a_keyed_retry_of_a_held_send_waits_for_its_outcome() {
    let mut n2 = node("n2", "n1");
    n2.peer_up(0, 1);
    // b joins on n2; n1 is silent, so b's join is answered at its deadline.
    assert!(matches!(
        n2.join(0, 0, &pair("p"), Side::B, None, [1; 16], || 1),
        Started::Waiting(_)
    ));
    let at = n2.next_deadline().unwrap();
    n2.handle_timeout(at);
    let (_, answers) = take_outputs(&mut n2);
    let b = token_in(&answers[0].1);
    // a joins on n2: linked to b at once, its lookups still out.
    assert!(matches!(
        n2.join(2_000, 2_000, &pair("p"), Side::A, None, [7; 16], || 2),
        Started::Waiting(_)
    ));
    take_outputs(&mut n2);
    let body = poll_now(&mut n2, "p", Side::B, &b, 0);
    assert!(body.contains("peer_online"), "{body}");
    let first = n2.send(2_001, &pair("p"), Side::B, &b, Some(b"k"), "x".into(), || 3);
    assert!(matches!(first, Started::Waiting(None)), "{first:?}");
    // The client gives up on the first attempt and retries with its key.
    let retry = n2.send(2_002, &pair("p"), Side::B, &b, Some(b"k"), "x".into(), || 4);
    assert!(matches!(retry, Started::Waiting(None)), "{retry:?}");
    // a loses its side to a better claim on n1 before its join is answered.
    n2.handle_frame(
        2_003,
        1,
        Frame::Lookup {
            req: 99,
            pair: pair("p"),
            side: Side::A,
            claim: Claim {
                handle: Handle { key: 0, gen: 0 },
                hlc: 0,
            },
        },
    );
    let (_, answers) = take_outputs(&mut n2);
    let status = |w: u32| answers.iter().find(|(x, _)| *x == w).map(|(_, r)| r.status);
    assert_eq!(
        (status(3), status(4)),
        (Some(409), Some(409)),
        "{answers:?}"
    );
    // The key is forgotten: a third attempt is a new message, sent on to
    // b's new peer (the better claim, on n1), not answered 202 from memory.
    let third = n2.send(2_004, &pair("p"), Side::B, &b, Some(b"k"), "x".into(), || 5);
    assert!(matches!(third, Started::Waiting(None)), "{third:?}");
    let (frames, _) = take_outputs(&mut n2);
    assert!(frames
        .iter()
        .any(|(p, f)| *p == 1 && matches!(f, Frame::Deliver { .. })));
}

/// Acknowledgements held for a node that goes down are dropped: a
/// restarted process there would take them for its own requests.
#[test]
fn held_acknowledgements_for_a_node_that_goes_down_are_dropped() {
    let (_n1, mut n2, _) = send_into_a_joining_session();
    // n1 goes down and comes back (a restart) before a's join is answered.
    n2.peer_down(4, 1);
    n2.peer_up(5, 1);
    take_outputs(&mut n2);
    let at = n2.next_deadline().expect("the join's deadline");
    n2.handle_timeout(at);
    let (frames, _) = take_outputs(&mut n2);
    assert!(
        !frames
            .iter()
            .any(|(_, f)| matches!(f, Frame::DeliverReply { .. })),
        "{frames:?}"
    );
}
