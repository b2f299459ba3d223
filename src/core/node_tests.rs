//! Unit tests of the node core: every rule of API.md §2 that the core owns,
//! driven with explicit times and no IO.

use super::*;
use crate::proto::ids::parse_node_name;

type TestNode = Node<u32>;

fn config() -> NodeConfig {
    NodeConfig {
        name: parse_node_name("n1").unwrap(),
        session_ttl_ms: 60_000,
        poll_timeout_ms: 25_000,
        max_sessions: 100,
        max_session_buffer: 100,
        max_total_buffer: 250,
    }
}

fn pair(s: &str) -> PairId {
    PairId::try_from(s).unwrap()
}

/// Deterministic distinct secrets.
fn secret(n: u8) -> [u8; 16] {
    [n; 16]
}

fn join(node: &mut TestNode, now: Millis, p: &str, side: Side, n: u8) -> Joined {
    node.join(now, &pair(p), side, None, secret(n)).unwrap()
}

fn answers(node: &mut TestNode) -> Vec<(u32, Result<String, ApiError>)> {
    let mut out = Vec::new();
    while let Some(Output::PollAnswered { waiter, result }) = node.poll_output() {
        out.push((waiter, result.map(|b| String::from_utf8(b).unwrap())));
    }
    out
}

fn poll_now(
    node: &mut TestNode,
    now: Millis,
    p: &str,
    side: Side,
    t: &Token,
    after: u64,
) -> String {
    match node.poll(now, &pair(p), side, t, after, Some(0), || 0) {
        Ok(Polled::Ready(b)) => String::from_utf8(b).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn join_alone_then_peer_links_both() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert!(!a.peer_online && !a.resumed);
    assert_eq!(
        poll_now(&mut node, 1, "p", Side::A, &a.token, 0),
        r#"{"peer":"offline","events":[]}"#
    );
    let b = join(&mut node, 2, "p", Side::B, 2);
    assert!(b.peer_online);
    assert_eq!(
        poll_now(&mut node, 3, "p", Side::A, &a.token, 0),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#
    );
    assert_eq!(
        poll_now(&mut node, 3, "p", Side::B, &b.token, 0),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#
    );
    assert_eq!(node.stats().lookups_miss, 1);
    assert_eq!(node.stats().lookups_local, 1);
}

#[test]
fn side_taken_and_resume() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(
        node.join(1, &pair("p"), Side::A, None, secret(2)),
        Err(ApiError::SideTaken)
    );
    // Another live session's token does not open this side.
    let other = join(&mut node, 1, "q", Side::A, 3);
    assert_eq!(
        node.join(1, &pair("p"), Side::A, Some(&other.token), secret(4)),
        Err(ApiError::SideTaken)
    );
    let again = node
        .join(2, &pair("p"), Side::A, Some(&a.token), secret(5))
        .unwrap();
    assert!(again.resumed);
    assert_eq!(again.token, a.token);
    // A token whose session is gone is an ordinary join elsewhere.
    node.leave(3, &pair("q"), Side::A, &other.token).unwrap();
    let fresh = node
        .join(4, &pair("q"), Side::A, Some(&other.token), secret(6))
        .unwrap();
    assert!(!fresh.resumed);
    assert_ne!(fresh.token, other.token);
}

#[test]
fn resume_keeps_events() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.send(1, &pair("p"), Side::B, &b.token, None, "hi".into())
        .unwrap();
    let again = node
        .join(2, &pair("p"), Side::A, Some(&a.token), secret(9))
        .unwrap();
    assert!(again.resumed && again.peer_online);
    assert_eq!(
        poll_now(&mut node, 3, "p", Side::A, &a.token, 0),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"},{"seq":2,"type":"message","data":"hi"}]}"#
    );
}

#[test]
fn tokens_name_one_session_only() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let mut wrong_secret = a.token.clone();
    wrong_secret.secret[0] ^= 1;
    let mut wrong_gen = a.token.clone();
    wrong_gen.gen += 1;
    let mut wrong_node = a.token.clone();
    wrong_node.node = parse_node_name("n2").unwrap();
    for t in [&wrong_secret, &wrong_gen, &wrong_node] {
        assert_eq!(
            node.poll(1, &pair("p"), Side::A, t, 0, Some(0), || 0),
            Err(ApiError::NoSession)
        );
    }
    // Right token, wrong pair or side.
    assert_eq!(
        node.poll(1, &pair("q"), Side::A, &a.token, 0, Some(0), || 0),
        Err(ApiError::NoSession)
    );
    assert_eq!(
        node.poll(1, &pair("p"), Side::B, &a.token, 0, Some(0), || 0),
        Err(ApiError::NoSession)
    );
}

#[test]
fn reused_slot_never_answers_for_old_session() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    node.leave(1, &pair("p"), Side::A, &a.token).unwrap();
    let again = join(&mut node, 2, "p", Side::A, 1); // same secret on purpose
    assert_eq!(again.token.key, a.token.key);
    assert_ne!(again.token.gen, a.token.gen);
    assert_eq!(
        node.poll(3, &pair("p"), Side::A, &a.token, 0, Some(0), || 0),
        Err(ApiError::NoSession)
    );
}

#[test]
fn waiting_poll_is_answered_by_a_message() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    let polled = node
        .poll(1, &pair("p"), Side::A, &a.token, 1, None, || 7)
        .unwrap();
    assert!(matches!(polled, Polled::Waiting(_)));
    assert_eq!(node.polls_waiting(), 1);
    node.send(2, &pair("p"), Side::B, &b.token, None, "x\"y".into())
        .unwrap();
    assert_eq!(
        answers(&mut node),
        vec![(
            7,
            Ok(r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"x\"y"}]}"#.into())
        )]
    );
    assert_eq!(node.polls_waiting(), 0);
    assert_eq!(node.stats().messages_relayed, 1);
}

#[test]
fn unacknowledged_events_are_delivered_again() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.send(1, &pair("p"), Side::B, &b.token, None, "m".into())
        .unwrap();
    let first = poll_now(&mut node, 2, "p", Side::A, &a.token, 0);
    assert_eq!(first, poll_now(&mut node, 3, "p", Side::A, &a.token, 0));
    assert_eq!(
        poll_now(&mut node, 4, "p", Side::A, &a.token, 1),
        r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"m"}]}"#
    );
    assert_eq!(
        poll_now(&mut node, 5, "p", Side::A, &a.token, 2),
        r#"{"peer":"online","events":[]}"#
    );
    assert_eq!(node.buffered_bytes(), 0);
    assert_eq!(
        node.poll(6, &pair("p"), Side::A, &a.token, 3, Some(0), || 0),
        Err(ApiError::BadAfter)
    );
}

#[test]
fn newer_poll_answers_older_at_once() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert!(matches!(
        node.poll(1, &pair("p"), Side::A, &a.token, 0, None, || 1),
        Ok(Polled::Waiting(_))
    ));
    assert!(matches!(
        node.poll(2, &pair("p"), Side::A, &a.token, 0, None, || 2),
        Ok(Polled::Waiting(_))
    ));
    assert_eq!(
        answers(&mut node),
        vec![(1, Ok(r#"{"peer":"offline","events":[]}"#.into()))]
    );
    assert_eq!(node.polls_waiting(), 1);
}

#[test]
fn poll_times_out_then_session_expires() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.poll(10, &pair("p"), Side::A, &a.token, 1, Some(5_000), || 1)
        .unwrap();
    node.handle_timeout(5_009);
    assert!(answers(&mut node).is_empty());
    node.handle_timeout(5_010);
    assert_eq!(
        answers(&mut node),
        vec![(1, Ok(r#"{"peer":"online","events":[]}"#.into()))]
    );
    // b keeps itself alive by polling; a goes idle and expires a TTL after
    // its poll ended.
    node.poll(
        60_000,
        &pair("p"),
        Side::B,
        &b.token,
        1,
        Some(100_000),
        || 2,
    )
    .unwrap();
    node.handle_timeout(65_009);
    assert_eq!(node.sessions_live(), 2);
    node.handle_timeout(65_010);
    assert_eq!(node.sessions_live(), 1);
    assert_eq!(
        answers(&mut node),
        vec![(2, Ok(r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"expired"}]}"#.into()))]
    );
    assert_eq!(node.stats().exits[Reason::Expired.index()], 1);
}

#[test]
fn any_authenticated_call_keeps_a_session_alive() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(
        node.send(50_000, &pair("p"), Side::A, &a.token, None, "x".into()),
        Err(ApiError::PeerOffline)
    );
    node.handle_timeout(60_000);
    assert_eq!(node.sessions_live(), 1);
    node.handle_timeout(110_000);
    assert_eq!(node.sessions_live(), 0);
}

#[test]
fn cancelled_poll_leaves_session_idle() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let Ok(Polled::Waiting(h)) =
        node.poll(0, &pair("p"), Side::A, &a.token, 0, Some(120_000), || 1)
    else {
        panic!()
    };
    node.cancel_poll(1_000, h);
    assert_eq!(node.polls_waiting(), 0);
    node.handle_timeout(61_000);
    assert_eq!(node.sessions_live(), 0);
    assert!(answers(&mut node).is_empty());
}

#[test]
fn leave_answers_poll_and_tells_peer() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.poll(1, &pair("p"), Side::A, &a.token, 1, None, || 1)
        .unwrap();
    node.poll(1, &pair("p"), Side::B, &b.token, 1, None, || 2)
        .unwrap();
    node.leave(2, &pair("p"), Side::A, &a.token).unwrap();
    assert_eq!(
        answers(&mut node),
        vec![
            (1, Ok(r#"{"peer":"online","events":[]}"#.into())),
            (2, Ok(r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"left"}]}"#.into())),
        ]
    );
    assert_eq!(
        node.leave(3, &pair("p"), Side::A, &a.token),
        Err(ApiError::NoSession)
    );
    assert_eq!(
        node.send(3, &pair("p"), Side::B, &b.token, None, "x".into()),
        Err(ApiError::PeerOffline)
    );
    // The peer comes back: both are told.
    let a2 = join(&mut node, 4, "p", Side::A, 3);
    assert!(a2.peer_online);
    assert_eq!(
        poll_now(&mut node, 5, "p", Side::B, &b.token, 2),
        r#"{"peer":"online","events":[{"seq":3,"type":"peer_online"}]}"#
    );
}

#[test]
fn buffers_are_bounded_and_refusals_lose_nothing() {
    let mut node = TestNode::new(config()); // 100 per session, 250 per node
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    let forty = "x".repeat(40);
    for _ in 0..3 {
        node.send(
            1,
            &pair("p"),
            Side::B,
            &b.token,
            None,
            forty.as_str().into(),
        )
        .unwrap();
    }
    // 120 bytes reached the per-session limit.
    assert_eq!(
        node.send(1, &pair("p"), Side::B, &b.token, None, "y".into()),
        Err(ApiError::PeerBusy)
    );
    // Acknowledging frees room.
    poll_now(&mut node, 2, "p", Side::A, &a.token, 3);
    node.send(3, &pair("p"), Side::B, &b.token, None, "y".into())
        .unwrap();

    // The node-wide limit: other pairs fill it.
    let c = join(&mut node, 0, "q", Side::A, 3);
    let d = join(&mut node, 0, "q", Side::B, 4);
    for _ in 0..3 {
        node.send(
            4,
            &pair("q"),
            Side::B,
            &d.token,
            None,
            forty.as_str().into(),
        )
        .unwrap();
    }
    let e = join(&mut node, 0, "r", Side::A, 5);
    let f = join(&mut node, 0, "r", Side::B, 6);
    node.send(
        5,
        &pair("r"),
        Side::B,
        &f.token,
        None,
        forty.as_str().into(),
    )
    .unwrap();
    node.send(
        5,
        &pair("r"),
        Side::B,
        &f.token,
        None,
        forty.as_str().into(),
    )
    .unwrap();
    assert_eq!(node.buffered_bytes(), 40 + 1 + 120 + 80);
    node.send(
        5,
        &pair("r"),
        Side::B,
        &f.token,
        None,
        forty.as_str().into(),
    )
    .unwrap();
    // 281 bytes reached the node's 250: a send to an empty session is refused.
    let _g = join(&mut node, 0, "s", Side::A, 7);
    let h = join(&mut node, 0, "s", Side::B, 8);
    assert_eq!(
        node.send(5, &pair("s"), Side::B, &h.token, None, "z".into()),
        Err(ApiError::PeerBusy)
    );
    // Acknowledging anywhere frees node-wide room.
    poll_now(&mut node, 6, "q", Side::A, &c.token, 4);
    node.send(7, &pair("s"), Side::B, &h.token, None, "z".into())
        .unwrap();
    let _ = e;
}

#[test]
fn idempotent_retries_are_not_delivered_twice() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.send(1, &pair("p"), Side::B, &b.token, Some(b"k1"), "once".into())
        .unwrap();
    node.send(2, &pair("p"), Side::B, &b.token, Some(b"k1"), "once".into())
        .unwrap();
    node.send(3, &pair("p"), Side::B, &b.token, Some(b"k2"), "two".into())
        .unwrap();
    assert_eq!(
        poll_now(&mut node, 4, "p", Side::A, &a.token, 1),
        r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"once"},{"seq":3,"type":"message","data":"two"}]}"#
    );
    assert_eq!(node.stats().messages_relayed, 2);
}

#[test]
fn refused_send_does_not_burn_its_key() {
    let mut node = TestNode::new(config());
    let _a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    let big = "x".repeat(100);
    node.send(1, &pair("p"), Side::B, &b.token, None, big.into())
        .unwrap();
    assert_eq!(
        node.send(1, &pair("p"), Side::B, &b.token, Some(b"k"), "y".into()),
        Err(ApiError::PeerBusy)
    );
    assert!(!node.sessions[b.token.key as usize].knows_key(b"k"));
}

#[test]
fn session_limit() {
    let mut cfg = config();
    cfg.max_sessions = 2;
    let mut node = TestNode::new(cfg);
    join(&mut node, 0, "p", Side::A, 1);
    join(&mut node, 0, "p", Side::B, 2);
    assert_eq!(
        node.join(0, &pair("q"), Side::A, None, secret(3)),
        Err(ApiError::Overloaded)
    );
}

#[test]
fn drain_tells_everyone_shutdown() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    node.poll(1, &pair("p"), Side::A, &a.token, 1, None, || 1)
        .unwrap();
    node.poll(1, &pair("p"), Side::B, &b.token, 1, None, || 2)
        .unwrap();
    node.drain(2);
    let got = answers(&mut node);
    assert_eq!(got.len(), 2);
    // Whichever ended first, its peer's poll carried `shutdown`.
    assert!(got
        .iter()
        .any(|(_, r)| r.as_ref().unwrap().contains(r#""reason":"shutdown""#)));
    assert_eq!(node.sessions_live(), 0);
    assert_eq!(node.polls_waiting(), 0);
    assert_eq!(
        node.join(3, &pair("x"), Side::A, None, secret(3)),
        Err(ApiError::ShuttingDown)
    );
}

#[test]
fn empty_messages_are_bounded_by_count() {
    let mut cfg = config();
    cfg.max_session_buffer = 1 << 20;
    cfg.max_total_buffer = 1 << 30;
    let mut node = TestNode::new(cfg);
    let _a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    let mut sent = 0;
    while node
        .send(1, &pair("p"), Side::B, &b.token, None, "".into())
        .is_ok()
    {
        sent += 1;
        assert!(sent <= crate::limits::SESSION_EVENTS_MAX);
    }
    // The peer_online event counts too.
    assert_eq!(sent + 1, crate::limits::SESSION_EVENTS_MAX);
}
