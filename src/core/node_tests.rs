//! Unit tests of the node core on a single node: every rule of API.md §2
//! that the core owns, driven with explicit times and no IO.

use super::*;
use crate::proto::ids::parse_node_name;

type TestNode = Node<u32>;

fn config() -> NodeConfig {
    NodeConfig {
        name: parse_node_name("n1").unwrap(),
        peers: Vec::new(),
        session_ttl_ms: 60_000,
        poll_timeout_ms: 25_000,
        lookup_timeout_ms: 1_000,
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

/// The status and body text of an immediate answer.
fn done(started: Started) -> (u16, String) {
    match started {
        Started::Done(r) => (r.status, String::from_utf8(r.body.into_owned()).unwrap()),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn token_in(body: &str) -> Token {
    Token::parse(crate::proto::ids::session_in_join_body(body).as_bytes()).unwrap()
}

/// Joins and returns (status, token, peer online).
fn join_with(
    node: &mut TestNode,
    now: Millis,
    p: &str,
    side: Side,
    auth: Option<&Token>,
    n: u8,
) -> (u16, Option<Token>, bool) {
    let (status, body) = done(node.join(now, now, &pair(p), side, auth, secret(n), || 0));
    let token = body.contains("\"session\"").then(|| token_in(&body));
    (status, token, body.contains("\"peer\":\"online\""))
}

fn join(node: &mut TestNode, now: Millis, p: &str, side: Side, n: u8) -> Token {
    let (status, token, _) = join_with(node, now, p, side, None, n);
    assert_eq!(status, 201);
    token.unwrap()
}

fn answers(node: &mut TestNode) -> Vec<(u32, u16, String)> {
    let mut out = Vec::new();
    while let Some(output) = node.poll_output() {
        match output {
            Output::Answer { waiter, reply } => out.push((
                waiter,
                reply.status,
                String::from_utf8(reply.body.into_owned()).unwrap(),
            )),
            Output::Send { .. } => panic!("a single node sends no frames"),
        }
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
    let (status, body) = done(node.poll(now, &pair(p), side, t, after, Some(0), || 0));
    assert_eq!(status, 200, "{body}");
    body
}

#[allow(clippy::too_many_arguments)]
fn poll_wait(
    node: &mut TestNode,
    now: Millis,
    p: &str,
    side: Side,
    t: &Token,
    after: u64,
    timeout: Option<u64>,
    w: u32,
) -> PollHandle {
    match node.poll(now, &pair(p), side, t, after, timeout, || w) {
        Started::Waiting(Some(CancelKey::Poll(h))) => h,
        other => panic!("expected a waiting poll, got {other:?}"),
    }
}

fn send(
    node: &mut TestNode,
    now: Millis,
    p: &str,
    side: Side,
    t: &Token,
    key: Option<&[u8]>,
    data: &str,
) -> u16 {
    done(node.send(now, &pair(p), side, t, key, data.into(), || 0)).0
}

fn leave(node: &mut TestNode, now: Millis, p: &str, side: Side, t: &Token) -> u16 {
    done(node.leave(now, &pair(p), side, t, || 0)).0
}

#[test]
fn join_alone_then_peer_links_both() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(
        poll_now(&mut node, 1, "p", Side::A, &a, 0),
        r#"{"peer":"offline","events":[]}"#
    );
    let (_, b, online) = join_with(&mut node, 2, "p", Side::B, None, 2);
    assert!(online);
    let online_event = r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"}]}"#;
    assert_eq!(poll_now(&mut node, 3, "p", Side::A, &a, 0), online_event);
    assert_eq!(
        poll_now(&mut node, 3, "p", Side::B, &b.unwrap(), 0),
        online_event
    );
    assert_eq!(
        (node.stats().lookups_miss, node.stats().lookups_local),
        (1, 1)
    );
}

#[test]
fn side_taken_and_resume() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(join_with(&mut node, 1, "p", Side::A, None, 2).0, 409);
    // Another live session's token opens neither a taken nor a free side.
    let other = join(&mut node, 1, "q", Side::A, 3);
    assert_eq!(
        join_with(&mut node, 1, "p", Side::A, Some(&other), 4).0,
        409
    );
    assert_eq!(
        join_with(&mut node, 1, "r", Side::A, Some(&other), 4).0,
        409
    );
    let (status, again, _) = join_with(&mut node, 2, "p", Side::A, Some(&a), 5);
    assert_eq!((status, again), (200, Some(a.clone())));
    // A token whose session is gone is an ordinary join.
    assert_eq!(leave(&mut node, 3, "q", Side::A, &other), 204);
    let (status, fresh, _) = join_with(&mut node, 4, "q", Side::A, Some(&other), 6);
    assert_eq!(status, 201);
    assert_ne!(fresh, Some(other));
}

#[test]
fn resume_keeps_events() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    assert_eq!(send(&mut node, 1, "p", Side::B, &b, None, "hi"), 202);
    let (status, _, online) = join_with(&mut node, 2, "p", Side::A, Some(&a), 9);
    assert!(status == 200 && online);
    assert_eq!(
        poll_now(&mut node, 3, "p", Side::A, &a, 0),
        r#"{"peer":"online","events":[{"seq":1,"type":"peer_online"},{"seq":2,"type":"message","data":"hi"}]}"#
    );
}

#[test]
fn tokens_name_one_session_only() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let mut wrong_secret = a.clone();
    wrong_secret.secret[0] ^= 1;
    let mut wrong_gen = a.clone();
    wrong_gen.gen += 1;
    let mut unknown_node = a.clone();
    unknown_node.node = parse_node_name("n2").unwrap();
    for t in [&wrong_secret, &wrong_gen, &unknown_node] {
        assert_eq!(
            done(node.poll(1, &pair("p"), Side::A, t, 0, Some(0), || 0)).0,
            404
        );
    }
    // Right token, wrong pair or side.
    assert_eq!(
        done(node.poll(1, &pair("q"), Side::A, &a, 0, Some(0), || 0)).0,
        404
    );
    assert_eq!(
        done(node.poll(1, &pair("p"), Side::B, &a, 0, Some(0), || 0)).0,
        404
    );
}

#[test]
fn reused_slot_never_answers_for_old_session() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(leave(&mut node, 1, "p", Side::A, &a), 204);
    let again = join(&mut node, 2, "p", Side::A, 1); // same secret on purpose
    assert_eq!(again.key, a.key);
    assert_ne!(again.gen, a.gen);
    assert_eq!(
        done(node.poll(3, &pair("p"), Side::A, &a, 0, Some(0), || 0)).0,
        404
    );
}

#[test]
fn waiting_poll_is_answered_by_a_message() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    poll_wait(&mut node, 1, "p", Side::A, &a, 1, None, 7);
    assert_eq!(node.polls_waiting(), 1);
    assert_eq!(send(&mut node, 2, "p", Side::B, &b, None, "x\"y"), 202);
    assert_eq!(
        answers(&mut node),
        vec![(
            7,
            200,
            r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"x\"y"}]}"#.into()
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
    send(&mut node, 1, "p", Side::B, &b, None, "m");
    let first = poll_now(&mut node, 2, "p", Side::A, &a, 0);
    assert_eq!(first, poll_now(&mut node, 3, "p", Side::A, &a, 0));
    assert_eq!(
        poll_now(&mut node, 4, "p", Side::A, &a, 1),
        r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"m"}]}"#
    );
    assert_eq!(
        poll_now(&mut node, 5, "p", Side::A, &a, 2),
        r#"{"peer":"online","events":[]}"#
    );
    assert_eq!(node.buffered_bytes(), 0);
    let (status, body) = done(node.poll(6, &pair("p"), Side::A, &a, 3, Some(0), || 0));
    assert!(status == 400 && body.contains("bad_after"));
}

#[test]
fn newer_poll_answers_older_at_once() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    poll_wait(&mut node, 1, "p", Side::A, &a, 0, None, 1);
    poll_wait(&mut node, 2, "p", Side::A, &a, 0, None, 2);
    assert_eq!(
        answers(&mut node),
        vec![(1, 200, r#"{"peer":"offline","events":[]}"#.into())]
    );
    assert_eq!(node.polls_waiting(), 1);
}

#[test]
fn poll_times_out_then_session_expires() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    poll_wait(&mut node, 10, "p", Side::A, &a, 1, Some(5_000), 1);
    node.handle_timeout(5_009);
    assert!(answers(&mut node).is_empty());
    node.handle_timeout(5_010);
    assert_eq!(
        answers(&mut node),
        vec![(1, 200, r#"{"peer":"online","events":[]}"#.into())]
    );
    // b keeps itself alive by polling; a goes idle and expires a TTL after
    // its poll ended.
    poll_wait(&mut node, 60_000, "p", Side::B, &b, 1, Some(100_000), 2);
    node.handle_timeout(65_009);
    assert_eq!(node.sessions_live(), 2);
    node.handle_timeout(65_010);
    assert_eq!(node.sessions_live(), 1);
    assert_eq!(
        answers(&mut node),
        vec![(
            2,
            200,
            r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"expired"}]}"#
                .into()
        )]
    );
    assert_eq!(node.stats().exits[Reason::Expired.index()], 1);
}

#[test]
fn any_authenticated_call_keeps_a_session_alive() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    assert_eq!(send(&mut node, 50_000, "p", Side::A, &a, None, "x"), 409);
    node.handle_timeout(60_000);
    assert_eq!(node.sessions_live(), 1);
    node.handle_timeout(110_000);
    assert_eq!(node.sessions_live(), 0);
}

#[test]
fn cancelled_poll_leaves_session_idle() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let h = poll_wait(&mut node, 0, "p", Side::A, &a, 0, Some(120_000), 1);
    node.cancel(1_000, CancelKey::Poll(h));
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
    poll_wait(&mut node, 1, "p", Side::A, &a, 1, None, 1);
    poll_wait(&mut node, 1, "p", Side::B, &b, 1, None, 2);
    assert_eq!(leave(&mut node, 2, "p", Side::A, &a), 204);
    assert_eq!(
        answers(&mut node),
        vec![
            (1, 200, r#"{"peer":"online","events":[]}"#.into()),
            (
                2,
                200,
                r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"left"}]}"#
                    .into()
            ),
        ]
    );
    assert_eq!(leave(&mut node, 3, "p", Side::A, &a), 404);
    assert_eq!(send(&mut node, 3, "p", Side::B, &b, None, "x"), 409);
    // The peer comes back: both are told.
    assert!(join_with(&mut node, 4, "p", Side::A, None, 3).2);
    assert_eq!(
        poll_now(&mut node, 5, "p", Side::B, &b, 2),
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
        assert_eq!(send(&mut node, 1, "p", Side::B, &b, None, &forty), 202);
    }
    // 120 bytes reached the per-session limit.
    assert_eq!(send(&mut node, 1, "p", Side::B, &b, None, "y"), 429);
    // Acknowledging frees room.
    poll_now(&mut node, 2, "p", Side::A, &a, 3);
    assert_eq!(send(&mut node, 3, "p", Side::B, &b, None, "y"), 202);

    // The node-wide limit: other pairs fill it.
    let c = join(&mut node, 0, "q", Side::A, 3);
    let d = join(&mut node, 0, "q", Side::B, 4);
    for _ in 0..3 {
        assert_eq!(send(&mut node, 4, "q", Side::B, &d, None, &forty), 202);
    }
    let _e = join(&mut node, 0, "r", Side::A, 5);
    let f = join(&mut node, 0, "r", Side::B, 6);
    for _ in 0..3 {
        assert_eq!(send(&mut node, 5, "r", Side::B, &f, None, &forty), 202);
    }
    // 281 bytes reached the node's 250: a send to an empty session is refused.
    let _g = join(&mut node, 0, "s", Side::A, 7);
    let h = join(&mut node, 0, "s", Side::B, 8);
    assert_eq!(node.buffered_bytes(), 41 + 120 + 120);
    assert_eq!(send(&mut node, 5, "s", Side::B, &h, None, "z"), 429);
    // Acknowledging anywhere frees node-wide room.
    poll_now(&mut node, 6, "q", Side::A, &c, 4);
    assert_eq!(send(&mut node, 7, "s", Side::B, &h, None, "z"), 202);
}

#[test]
fn idempotent_retries_are_not_delivered_twice() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    assert_eq!(
        send(&mut node, 1, "p", Side::B, &b, Some(b"k1"), "once"),
        202
    );
    assert_eq!(
        send(&mut node, 2, "p", Side::B, &b, Some(b"k1"), "once"),
        202
    );
    assert_eq!(
        send(&mut node, 3, "p", Side::B, &b, Some(b"k2"), "two"),
        202
    );
    assert_eq!(
        poll_now(&mut node, 4, "p", Side::A, &a, 1),
        r#"{"peer":"online","events":[{"seq":2,"type":"message","data":"once"},{"seq":3,"type":"message","data":"two"}]}"#
    );
    assert_eq!(node.stats().messages_relayed, 2);
}

#[test]
fn refused_send_does_not_burn_its_key() {
    let mut node = TestNode::new(config());
    let _a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    assert_eq!(
        send(&mut node, 1, "p", Side::B, &b, None, &"x".repeat(100)),
        202
    );
    assert_eq!(send(&mut node, 1, "p", Side::B, &b, Some(b"k"), "y"), 429);
    assert!(!node.sessions[b.key as usize].knows_key(b"k"));
}

#[test]
fn session_limit() {
    let mut cfg = config();
    cfg.max_sessions = 2;
    let mut node = TestNode::new(cfg);
    join(&mut node, 0, "p", Side::A, 1);
    join(&mut node, 0, "p", Side::B, 2);
    assert_eq!(join_with(&mut node, 0, "q", Side::A, None, 3).0, 503);
}

#[test]
fn drain_tells_both_sides_shutdown() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    poll_wait(&mut node, 1, "p", Side::A, &a, 1, None, 1);
    poll_wait(&mut node, 1, "p", Side::B, &b, 1, None, 2);
    node.drain(2);
    let shutdown =
        r#"{"peer":"offline","events":[{"seq":2,"type":"peer_offline","reason":"shutdown"}]}"#;
    assert_eq!(
        answers(&mut node),
        vec![(1, 200, shutdown.into()), (2, 200, shutdown.into())]
    );
    assert_eq!((node.sessions_live(), node.polls_waiting()), (0, 0));
    assert_eq!(join_with(&mut node, 3, "x", Side::A, None, 3).0, 503);
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
    while send(&mut node, 1, "p", Side::B, &b, None, "") == 202 {
        sent += 1;
        assert!(sent <= crate::limits::SESSION_EVENTS_MAX);
    }
    // The peer_online event counts too.
    assert_eq!(sent + 1, crate::limits::SESSION_EVENTS_MAX);
}

#[test]
fn join_leave_loops_cannot_flood_a_session() {
    let mut cfg = config();
    cfg.max_sessions = 10;
    let mut node = TestNode::new(cfg);
    let _a = join(&mut node, 0, "p", Side::A, 1);
    let mut refused = false;
    for i in 0..(crate::limits::SESSION_EVENTS_MAX as u64) {
        let (status, token, _) = join_with(&mut node, i, "p", Side::B, None, 2);
        if status == 503 {
            refused = true;
            break;
        }
        assert_eq!(leave(&mut node, i, "p", Side::B, &token.unwrap()), 204);
    }
    assert!(
        refused,
        "joins must be refused once side a holds too many events"
    );
    assert!(node.sessions[0].events.len() <= crate::limits::SESSION_EVENTS_MAX + 1);
}

/// A send remembers where its peer's session is, for the next send's
/// prefetch; before any send there is nothing to remember.
#[test]
fn a_send_remembers_its_peers_address() {
    let mut node = TestNode::new(config());
    let a = join(&mut node, 0, "p", Side::A, 1);
    let b = join(&mut node, 0, "p", Side::B, 2);
    let at = |node: &TestNode, t: &Token| node.session_addr(t.key);
    assert_eq!(node.sessions[b.key as usize].peer_at, 0);
    assert_eq!(send(&mut node, 1, "p", Side::B, &b, None, "x"), 202);
    assert_eq!(node.sessions[b.key as usize].peer_at, at(&node, &a));
    assert_ne!(at(&node, &a), 0);
    assert_eq!(node.sessions[a.key as usize].peer_at, 0);
}
