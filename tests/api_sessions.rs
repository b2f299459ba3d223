//! Sessions as API.md §1–2 fix them: pairs, join, resume, long poll, send,
//! leave, expiry, events and their seqs, idempotency, buffers (429), bad
//! input and the order in which it is validated.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Changes the first character of the token's secret (every bit of it is
/// secret), keeping the token's shape.
fn wrong_secret(token: &str) -> String {
    let (head, secret) = token.rsplit_once('.').unwrap();
    let first = secret.as_bytes()[0];
    let other = if first == b'A' { 'B' } else { 'A' };
    format!("{head}.{other}{}", &secret[1..])
}

/// Adds one to the token's key (field 1) or gen (field 2).
fn bump_field(token: &str, field: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let n: u64 = parts[field].parse().unwrap();
    parts[field] = (n + 1).to_string();
    parts.join(".")
}

#[test]
fn mint_pair_returns_fresh_unguessable_ids() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = c.request("POST", "/v1/pairs", &[], None);
        let j = assert_json(&r, 201);
        assert_eq!(j.keys(), vec!["pair"], "{r:?}");
        let id = j.str("pair").to_string();
        assert!(
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "minted id out of pair syntax: {id}"
        );
        // 128 bits need at least 22 characters of a 64-character alphabet.
        assert!(
            id.len() >= 22,
            "minted id too short for 128 random bits: {id}"
        );
        assert!(!seen.contains(&id), "minted id repeated: {id}");
        seen.push(id);
    }
    // A minted id is usable.
    let a = join(&mut c, &seen[0], "a");
    assert_eq!(a.peer, "offline");
}

#[test]
fn first_join_gets_201_with_defaults_and_peer_offline() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = join_raw(&mut c, "first", "a", None);
    let a = check_join(&r, 201, "first", "a");
    assert_eq!(a.peer, "offline");
    assert_eq!(a.poll_timeout_ms, 25000);
    assert_eq!(a.session_ttl_ms, 60000);
    assert_token_shape(&a.token, "local");
}

#[test]
fn join_reports_configured_poll_timeout_and_ttl() {
    let server = Server::start(&["--poll-timeout", "1500ms", "--session-ttl", "3s"]);
    let mut c = server.conn();
    let a = join(&mut c, "conf", "b");
    assert_eq!(a.poll_timeout_ms, 1500);
    assert_eq!(a.session_ttl_ms, 3000);
}

#[test]
fn join_body_is_ignored() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request(
        "POST",
        "/v1/pairs/body/a",
        &[],
        Some(b"{\"whatever\": true}"),
    );
    check_join(&r, 201, "body", "a");
    let r = c.request(
        "POST",
        "/v1/pairs/body/b",
        &[("Transfer-Encoding", "chunked")],
        Some(b"3\r\nabc\r\n0\r\n\r\n"),
    );
    check_join(&r, 201, "body", "b");
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
}

#[test]
fn second_side_sees_peer_online_and_both_get_peer_online() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "meet");
    let pa = poll(&mut c, &a, 0, 0);
    assert_eq!(
        pa,
        Poll {
            peer: "online".into(),
            events: vec![Event::Online(1)]
        }
    );
    let pb = poll(&mut c, &b, 0, 0);
    assert_eq!(
        pb,
        Poll {
            peer: "online".into(),
            events: vec![Event::Online(1)]
        }
    );
}

#[test]
fn tokens_are_distinct_per_session() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "distinct");
    assert_ne!(a.token, b.token);
    leave(&mut c, &a);
    let a2 = join(&mut c, "distinct", "a");
    assert_ne!(a2.token, a.token);
    let (x, _) = pair_up(&mut c, "distinct2");
    assert_ne!(x.token, a.token);
    assert_ne!(
        x.token.rsplit('.').next(),
        a.token.rsplit('.').next(),
        "secrets must differ"
    );
}

#[test]
fn joining_a_taken_side_is_409_side_taken() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "taken", "a");
    let r = join_raw(&mut c, "taken", "a", None);
    assert_error(&r, 409, "side_taken");
    // The holder is untouched.
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(
        p,
        Poll {
            peer: "offline".into(),
            events: vec![]
        }
    );
    // The other side is free.
    let b = join(&mut c, "taken", "b");
    assert_eq!(b.peer, "online");
}

#[test]
fn join_with_own_token_resumes_with_200_and_keeps_events() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "resume");
    send(&mut c, &b, "while you were away");
    let r = join_raw(&mut c, "resume", "a", Some(&a.token));
    let again = check_join(&r, 200, "resume", "a");
    assert_eq!(again.token, a.token, "resume returns the same token");
    assert_eq!(again.peer, "online");
    assert_eq!(again.poll_timeout_ms, a.poll_timeout_ms);
    assert_eq!(again.session_ttl_ms, a.session_ttl_ms);
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(
        p.events,
        vec![Event::Online(1), msg(2, "while you were away")]
    );
    // Resuming did not disturb the peer: no offline/online flap for b.
    let pb = poll(&mut c, &b, 0, 0);
    assert_eq!(pb.events, vec![Event::Online(1)]);
    // Resume works again and again, and on a side whose peer is absent.
    let lone = join(&mut c, "resume-lone", "b");
    for _ in 0..3 {
        let r = join_raw(&mut c, "resume-lone", "b", Some(&lone.token));
        let j = check_join(&r, 200, "resume-lone", "b");
        assert_eq!(j.token, lone.token);
        assert_eq!(j.peer, "offline");
    }
}

#[test]
fn join_with_a_dead_token_is_an_ordinary_join() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "dead", "a");
    leave(&mut c, &a);
    let r = join_raw(&mut c, "dead", "a", Some(&a.token));
    let a2 = check_join(&r, 201, "dead", "a");
    assert_ne!(a2.token, a.token);
    // A token with the right shape but a wrong secret: also ordinary.
    let r = join_raw(&mut c, "dead", "b", Some(&wrong_secret(&a2.token)));
    let b = check_join(&r, 201, "dead", "b");
    assert_eq!(b.peer, "online");
}

#[test]
fn join_with_another_live_sessions_token_is_409() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "other");
    let r = join_raw(&mut c, "other", "b", Some(&a.token));
    assert_error(&r, 409, "side_taken");
    let r = join_raw(&mut c, "other", "a", Some(&b.token));
    assert_error(&r, 409, "side_taken");
    let x = join(&mut c, "elsewhere", "a");
    let r = join_raw(&mut c, "other", "a", Some(&x.token));
    assert_error(&r, 409, "side_taken");
    // Nobody was resumed or replaced.
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(p.events, vec![Event::Online(1)]);
}

#[test]
fn poll_returns_unacknowledged_events_and_after_acknowledges() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "acks");
    for m in ["one", "two", "three"] {
        send(&mut c, &b, m);
    }
    let all = vec![
        Event::Online(1),
        msg(2, "one"),
        msg(3, "two"),
        msg(4, "three"),
    ];
    assert_eq!(poll(&mut c, &a, 0, 0).events, all);
    // Not acknowledged: returned again.
    assert_eq!(poll(&mut c, &a, 0, 0).events, all);
    assert_eq!(poll(&mut c, &a, 2, 0).events, all[2..].to_vec());
    assert_eq!(poll(&mut c, &a, 2, 0).events, all[2..].to_vec());
    assert_eq!(poll(&mut c, &a, 4, 0).events, vec![]);
    // The next event continues the seq.
    send(&mut c, &b, "four");
    assert_eq!(poll(&mut c, &a, 4, 0).events, vec![msg(5, "four")]);
    // Messages go both ways, with independent seqs.
    send(&mut c, &a, "back");
    assert_eq!(poll(&mut c, &b, 1, 0).events, vec![msg(2, "back")]);
}

#[test]
fn send_answers_only_once_the_message_is_buffered() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "buffered");
    let mut c2 = server.conn();
    for i in 0..20 {
        let text = format!("m{i}");
        send(&mut c2, &b, &text);
        let p = poll(&mut c, &a, 1 + i, 0);
        assert_eq!(
            p.events,
            vec![Event::Message(2 + i, text)],
            "after the 202 the event is there at once"
        );
    }
}

#[test]
fn poll_waits_until_an_event_arrives() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "wait");
    let mut waiter = server.conn();
    let t = Instant::now();
    write_poll(
        &mut waiter,
        "wait",
        "a",
        &a.token,
        "after=1&timeout_ms=8000",
    );
    std::thread::sleep(Duration::from_millis(400));
    send(&mut c, &b, "ping");
    let sent_at = ms_since(t);
    let r = waiter.read_response();
    let answered_at = ms_since(t);
    let p = parse_poll(&r);
    assert_eq!(
        p,
        Poll {
            peer: "online".into(),
            events: vec![msg(2, "ping")]
        }
    );
    assert!(
        answered_at >= 350,
        "the poll answered before the message: {answered_at} ms"
    );
    assert!(
        answered_at - sent_at < 1000,
        "poll answered {} ms after the send",
        answered_at - sent_at
    );
}

#[test]
fn poll_times_out_with_no_events() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "timeout", "a");
    let t = Instant::now();
    let p = poll(&mut c, &a, 0, 500);
    let elapsed = ms_since(t);
    assert_eq!(
        p,
        Poll {
            peer: "offline".into(),
            events: vec![]
        }
    );
    assert!(
        (450..2500).contains(&elapsed),
        "timeout_ms=500 answered after {elapsed} ms"
    );
}

/// A poll's timeout is a lower bound: counted from before the request is
/// sent, no answer comes sooner (the server's millisecond clock rounds up,
/// so its deadline is never a fraction of a millisecond early).
#[test]
fn a_poll_timeout_is_never_early() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "never-early", "a");
    for i in 0..100 {
        let t = Instant::now();
        let p = poll(&mut c, &a, 0, 20);
        let elapsed = t.elapsed();
        assert_eq!(p.events, vec![]);
        assert!(
            elapsed >= Duration::from_millis(20),
            "poll {i} with timeout_ms=20 answered after {elapsed:?}"
        );
    }
}

#[test]
fn poll_default_timeout_comes_from_the_flag() {
    let server = Server::start(&["--poll-timeout", "700ms"]);
    let mut c = server.conn();
    let a = join(&mut c, "deftimeout", "a");
    let t = Instant::now();
    let r = poll_raw(&mut c, "deftimeout", "a", &a.token, "");
    let elapsed = ms_since(t);
    assert_eq!(parse_poll(&r).events, vec![]);
    assert!(
        (600..3000).contains(&elapsed),
        "default poll timeout 700ms answered after {elapsed} ms"
    );
    // `after` alone also uses the default.
    let t = Instant::now();
    let r = poll_raw(&mut c, "deftimeout", "a", &a.token, "after=0");
    assert_eq!(parse_poll(&r).events, vec![]);
    assert!(ms_since(t) >= 600);
}

#[test]
fn poll_with_timeout_zero_answers_at_once() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "zero", "a");
    let t = Instant::now();
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(p.events, vec![]);
    assert!(ms_since(t) < 500, "timeout_ms=0 took {} ms", ms_since(t));
}

#[test]
fn timeout_ms_above_the_cap_is_accepted() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "cap");
    for t in ["120001", "999999999", "99999999999999999999999"] {
        let mut waiter = server.conn();
        write_poll(
            &mut waiter,
            "cap",
            "a",
            &a.token,
            &format!("after=1&timeout_ms={t}"),
        );
        std::thread::sleep(Duration::from_millis(200));
        send(&mut c, &b, t);
        let p = parse_poll(&waiter.read_response());
        assert_eq!(p.events.len(), 1, "timeout_ms={t}: {p:?}");
        assert_eq!(
            p.events[0],
            Event::Message(p.events[0].seq(), t.to_string())
        );
        // Acknowledge for the next round.
        assert_eq!(poll(&mut c, &a, p.events[0].seq(), 0).events, vec![]);
    }
}

#[test]
fn a_newer_poll_answers_the_older_at_once() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "newer", "a");
    let mut old = server.conn();
    write_poll(&mut old, "newer", "a", &a.token, "after=0&timeout_ms=8000");
    std::thread::sleep(Duration::from_millis(300));
    let mut new = server.conn();
    let t = Instant::now();
    write_poll(&mut new, "newer", "a", &a.token, "after=0&timeout_ms=600");
    let r = old.read_response();
    let superseded_at = ms_since(t);
    assert_eq!(
        parse_poll(&r),
        Poll {
            peer: "offline".into(),
            events: vec![]
        }
    );
    assert!(
        superseded_at < 500,
        "older poll answered {superseded_at} ms after the newer one arrived"
    );
    // The newer one waits its own timeout.
    let r = new.read_response();
    assert_eq!(parse_poll(&r).events, vec![]);
    assert!(
        ms_since(t) >= 500,
        "newer poll answered after {} ms",
        ms_since(t)
    );
    // Both connections stay usable.
    assert_eq!(old.request("GET", "/healthz", &[], None).status, 200);
    assert_eq!(new.request("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn a_newer_poll_gets_the_events() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "newer-events");
    let mut old = server.conn();
    write_poll(
        &mut old,
        "newer-events",
        "a",
        &a.token,
        "after=1&timeout_ms=8000",
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut new = server.conn();
    write_poll(
        &mut new,
        "newer-events",
        "a",
        &a.token,
        "after=1&timeout_ms=8000",
    );
    assert_eq!(parse_poll(&old.read_response()).events, vec![]);
    send(&mut c, &b, "to the newest");
    assert_eq!(
        parse_poll(&new.read_response()).events,
        vec![msg(2, "to the newest")]
    );
}

#[test]
fn peer_field_follows_the_peer() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "presence", "a");
    assert_eq!(poll(&mut c, &a, 0, 0).peer, "offline");
    let b = join(&mut c, "presence", "b");
    assert_eq!(poll(&mut c, &a, 0, 0).peer, "online");
    leave(&mut c, &b);
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(
        p,
        Poll {
            peer: "offline".into(),
            events: vec![Event::Online(1), offline(2, "left")]
        }
    );
}

#[test]
fn send_without_a_peer_is_409_peer_offline() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "alone", "a");
    let r = send_raw(&mut c, &a, b"anyone?", None);
    assert_error(&r, 409, "peer_offline");
    // After the peer left, too.
    let b = join(&mut c, "alone", "b");
    send(&mut c, &a, "hi");
    leave(&mut c, &b);
    let r = send_raw(&mut c, &a, b"gone?", None);
    assert_error(&r, 409, "peer_offline");
}

#[test]
fn empty_body_is_an_empty_message() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "empty");
    let r = send_raw(&mut c, &b, b"", None);
    assert_accepted(&r);
    // Without any Content-Length at all, too.
    let auth = bearer(&b.token);
    let r = c.request(
        "POST",
        "/v1/pairs/empty/b/messages",
        &[("Authorization", &auth)],
        None,
    );
    assert_accepted(&r);
    assert_eq!(poll(&mut c, &a, 1, 0).events, vec![msg(2, ""), msg(3, "")]);
}

#[test]
fn message_text_round_trips_exactly_through_json() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "escape");
    let tricky = "quote \" backslash \\ slash / newline \n tab \t cr \r nul \u{0} bell \u{7} \
                  esc \u{1b} unit \u{1f} del \u{7f} e-acute é cjk 漢字 emoji 😀 ls \u{2028} ps \u{2029} \
                  bom \u{feff} script </script> {\"json\":[1,2]}";
    let cases = [
        tricky,
        "\\u0041 is not an escape here",
        "\"",
        "\\",
        "\n",
        "ünïcödé",
    ];
    for m in cases {
        send(&mut c, &b, m);
    }
    let p = poll(&mut c, &a, 1, 0);
    let want: Vec<Event> = cases
        .iter()
        .enumerate()
        .map(|(i, m)| msg(2 + i as u64, m))
        .collect();
    assert_eq!(p.events, want);
}

#[test]
fn invalid_utf8_is_400_bad_utf8() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "utf8");
    let cases: [&[u8]; 6] = [
        b"\xff",
        b"ok then \xfe\xff",
        b"\xc0\xaf",         // overlong '/'
        b"\xed\xa0\x80",     // a surrogate
        b"\xe2\x82",         // truncated
        b"\xf4\x90\x80\x80", // above U+10FFFF
    ];
    for body in cases {
        let r = send_raw(&mut c, &b, body, None);
        assert_error(&r, 400, "bad_utf8");
        assert_close_consistent(&mut c, &r);
        c = server.conn();
    }
    assert_eq!(
        poll(&mut c, &a, 1, 0).events,
        vec![],
        "nothing invalid was delivered"
    );
}

#[test]
fn idempotency_key_retry_is_not_delivered_twice() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "idem");
    for _ in 0..3 {
        let r = send_raw(&mut c, &b, b"once", Some("key-1"));
        assert_accepted(&r);
    }
    assert_accepted(&send_raw(&mut c, &b, b"twice", Some("key-2")));
    // The same text without a key is a new message.
    assert_accepted(&send_raw(&mut c, &b, b"once", None));
    assert_eq!(
        poll(&mut c, &a, 1, 0).events,
        vec![msg(2, "once"), msg(3, "twice"), msg(4, "once")]
    );
    // Still recognized after the receiver acknowledged it.
    poll(&mut c, &a, 4, 0);
    assert_accepted(&send_raw(&mut c, &b, b"once", Some("key-1")));
    assert_eq!(poll(&mut c, &a, 4, 0).events, vec![]);
    // Keys belong to the sender's session: a's use of key-1 is new.
    assert_accepted(&send_raw(&mut c, &a, b"from a", Some("key-1")));
    assert_eq!(poll(&mut c, &b, 1, 0).events, vec![msg(2, "from a")]);
}

#[test]
fn idempotency_keys_cover_the_last_64_messages() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "idem64");
    for i in 0..65 {
        assert_accepted(&send_raw(
            &mut c,
            &b,
            format!("m{i}").as_bytes(),
            Some(&format!("k{i}")),
        ));
    }
    // k1..k64 are the last 64: retries are not delivered.
    for i in [1, 30, 64] {
        assert_accepted(&send_raw(
            &mut c,
            &b,
            format!("m{i}").as_bytes(),
            Some(&format!("k{i}")),
        ));
    }
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(
        p.events.len(),
        65,
        "65 distinct messages, no retry delivered"
    );
    assert_eq!(p.events.last(), Some(&msg(66, "m64")));
}

#[test]
fn idempotency_key_syntax() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "idemsyntax");
    // 1 to 64 visible ASCII characters are fine.
    let k64 = "k".repeat(64);
    for key in ["x", "~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", k64.as_str()] {
        assert_accepted(&send_raw(&mut c, &b, key.as_bytes(), Some(key)));
    }
    let k65 = "k".repeat(65);
    // DEL is not even a valid field value, so a plain bad_request is fair.
    let bad: [(&[u8], &[&str]); 6] = [
        (b"", &["bad_idempotency_key"]),
        (k65.as_bytes(), &["bad_idempotency_key"]),
        (b"a b", &["bad_idempotency_key"]),
        (b"tab\there", &["bad_idempotency_key"]),
        ("caf\u{e9}".as_bytes(), &["bad_idempotency_key"]),
        (b"del\x7f", &["bad_idempotency_key", "bad_request"]),
    ];
    for (key, codes) in bad {
        let auth = bearer(&b.token);
        let mut raw = format!(
            "POST /v1/pairs/idemsyntax/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Length: 3\r\nIdempotency-Key: "
        )
        .into_bytes();
        raw.extend_from_slice(key);
        raw.extend_from_slice(b"\r\n\r\nbad");
        let mut c2 = server.conn();
        c2.send(&raw);
        let r = c2.read_response();
        assert_eq!(
            r.status,
            400,
            "key {:?}: {r:?}",
            String::from_utf8_lossy(key)
        );
        let code = r.json().str("error").to_string();
        assert!(
            codes.contains(&code.as_str()),
            "key {:?}: {r:?}",
            String::from_utf8_lossy(key)
        );
        assert_error(&r, 400, &code);
        // A malformed header (API.md): the connection closes after it.
        assert_closes(&mut c2, &r);
    }
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(
        p.events.len(),
        3,
        "only the good keys were delivered: {p:?}"
    );
}

#[test]
fn leave_is_204_and_tells_the_peer_left() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "bye");
    let mut waiter = server.conn();
    write_poll(&mut waiter, "bye", "a", &a.token, "after=1&timeout_ms=8000");
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    leave(&mut c, &b);
    let p = parse_poll(&waiter.read_response());
    assert!(
        ms_since(t) < 1000,
        "peer told {} ms after the leave",
        ms_since(t)
    );
    assert_eq!(
        p,
        Poll {
            peer: "offline".into(),
            events: vec![offline(2, "left")]
        }
    );
}

#[test]
fn leave_answers_the_sessions_own_pending_poll() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, _b) = pair_up(&mut c, "ownpoll");
    let mut waiter = server.conn();
    write_poll(
        &mut waiter,
        "ownpoll",
        "a",
        &a.token,
        "after=1&timeout_ms=8000",
    );
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    leave(&mut c, &a);
    let r = waiter.read_response();
    assert!(
        ms_since(t) < 1000,
        "pending poll answered {} ms after the leave",
        ms_since(t)
    );
    let j = assert_json(&r, 200);
    assert_eq!(j.arr("events"), &[] as &[Json], "{r:?}");
    assert_eq!(waiter.request("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn a_left_session_is_gone() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "gone");
    leave(&mut c, &a);
    let r = poll_raw(&mut c, "gone", "a", &a.token, "timeout_ms=0");
    assert_error(&r, 404, "no_session");
    let r = send_raw(&mut c, &a, b"x", None);
    assert_error(&r, 404, "no_session");
    let r = leave_raw(&mut c, "gone", "a", &a.token);
    assert_error(&r, 404, "no_session");
    // And the peer can no longer send to it.
    let r = send_raw(&mut c, &b, b"x", None);
    assert_error(&r, 409, "peer_offline");
}

#[test]
fn a_side_can_be_rejoined_and_the_peer_sees_it_come_back() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "again");
    leave(&mut c, &b);
    let b2 = join(&mut c, "again", "b");
    assert_eq!(b2.peer, "online");
    assert_eq!(
        poll(&mut c, &a, 0, 0),
        Poll {
            peer: "online".into(),
            events: vec![Event::Online(1), offline(2, "left"), Event::Online(3)]
        }
    );
    // The new session starts its own seq at 1.
    assert_eq!(poll(&mut c, &b2, 0, 0).events, vec![Event::Online(1)]);
    send(&mut c, &a, "welcome back");
    assert_eq!(poll(&mut c, &b2, 1, 0).events, vec![msg(2, "welcome back")]);
}

#[test]
fn events_keep_their_order_across_a_leave() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "order-leave");
    send(&mut c, &b, "last words");
    leave(&mut c, &b);
    let b2 = join(&mut c, "order-leave", "b");
    send(&mut c, &b2, "new words");
    assert_eq!(
        poll(&mut c, &a, 0, 0),
        Poll {
            peer: "online".into(),
            events: vec![
                Event::Online(1),
                msg(2, "last words"),
                offline(3, "left"),
                Event::Online(4),
                msg(5, "new words"),
            ]
        }
    );
}

#[test]
fn leave_without_a_peer_is_204() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "solo", "a");
    leave(&mut c, &a);
    let a2 = join(&mut c, "solo", "a");
    assert_eq!(a2.peer, "offline");
}

#[test]
fn idle_session_expires_and_the_peer_is_told() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "expiry");
    // a keeps itself alive with waiting polls; b does nothing.
    let t = Instant::now();
    let mut got = Vec::new();
    for _ in 0..10 {
        let p = poll(&mut c, &a, 1, 800);
        if !p.events.is_empty() {
            assert_eq!(p.peer, "offline", "{p:?}");
            got = p.events;
            break;
        }
        if ms_since(t) > 5000 {
            break;
        }
    }
    let elapsed = ms_since(t);
    assert_eq!(
        got,
        vec![offline(2, "expired")],
        "peer_offline expired expected"
    );
    assert!(
        (700..4000).contains(&elapsed),
        "b expired after {elapsed} ms with a 1 s TTL"
    );
    let r = poll_raw(&mut c, "expiry", "b", &b.token, "timeout_ms=0");
    assert_error(&r, 404, "no_session");
    // The side is free again, and a sees the peer come back.
    let b2 = join(&mut c, "expiry", "b");
    assert_eq!(b2.peer, "online");
    assert_eq!(poll(&mut c, &a, 2, 0).events, vec![Event::Online(3)]);
}

#[test]
fn expiry_frees_a_lone_side() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let mut c = server.conn();
    let a = join(&mut c, "lone-expiry", "a");
    std::thread::sleep(Duration::from_millis(2500));
    let r = poll_raw(&mut c, "lone-expiry", "a", &a.token, "timeout_ms=0");
    assert_error(&r, 404, "no_session");
    let a2 = join(&mut c, "lone-expiry", "a");
    assert_ne!(a2.token, a.token);
}

#[test]
fn a_waiting_poll_keeps_the_session_alive() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let mut c = server.conn();
    let a = join(&mut c, "alive", "a");
    // One poll that waits longer than the TTL.
    let p = poll(&mut c, &a, 0, 2500);
    assert_eq!(p.events, vec![]);
    let r = poll_raw(&mut c, "alive", "a", &a.token, "timeout_ms=0");
    assert_eq!(
        parse_poll(&r).events,
        vec![],
        "session survived its waiting poll"
    );
}

#[test]
fn authenticated_calls_keep_the_session_alive() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "busy");
    // b only sends, a only polls with timeout 0 (no poll waits): both
    // make an authenticated call every 300 ms for 2.4 s.
    let mut sent = 0;
    for i in 0..8 {
        send(&mut c, &b, &format!("tick{i}"));
        sent += 1;
        let p = poll(&mut c, &a, 1 + i, 0);
        assert_eq!(
            p.events,
            vec![Event::Message(2 + i, format!("tick{i}"))],
            "a at round {i}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sent, 8);
    let pb = poll(&mut c, &b, 1, 0);
    assert_eq!(
        pb,
        Poll {
            peer: "online".into(),
            events: vec![]
        }
    );
    // A resume is an authenticated call too.
    std::thread::sleep(Duration::from_millis(600));
    let r = join_raw(&mut c, "busy", "b", Some(&b.token));
    check_join(&r, 200, "busy", "b");
    std::thread::sleep(Duration::from_millis(600));
    let r = join_raw(&mut c, "busy", "b", Some(&b.token));
    check_join(&r, 200, "busy", "b");
}

#[test]
fn bad_after_is_400() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "after", "a");
    // Nothing issued yet: after=1 is from another session.
    let r = poll_raw(&mut c, "after", "a", &a.token, "after=1&timeout_ms=0");
    assert_error(&r, 400, "bad_after");
    assert_close_consistent(&mut c, &r);
    let mut c = server.conn();
    let _b = join(&mut c, "after", "b");
    assert_eq!(poll(&mut c, &a, 1, 0).events, vec![]);
    let r = poll_raw(&mut c, "after", "a", &a.token, "after=2&timeout_ms=0");
    assert_error(&r, 400, "bad_after");
    let mut c = server.conn();
    let r = poll_raw(
        &mut c,
        "after",
        "a",
        &a.token,
        "after=18446744073709551615&timeout_ms=0",
    );
    assert_error(&r, 400, "bad_after");
}

#[test]
fn malformed_query_is_400_bad_query() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "query", "a");
    let cases = [
        "after=abc",
        "after=-1",
        "after=+1",
        "after=",
        "after=1.0",
        "after=0x1",
        "after=1&after=1",
        "after=0&after=1",
        "timeout_ms=abc",
        "timeout_ms=-5",
        "timeout_ms=",
        "timeout_ms=1e3",
        "timeout_ms=0&timeout_ms=0",
        "after=%20",
    ];
    for q in cases {
        let mut c = server.conn();
        let r = poll_raw(&mut c, "query", "a", &a.token, q);
        assert_eq!(r.status, 400, "query {q:?}: {r:?}");
        assert_error(&r, 400, "bad_query");
        assert_closes(&mut c, &r);
    }
}

#[test]
fn unknown_query_parameters_are_ignored() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "unknownq", "a");
    for q in [
        "foo=bar&after=0&timeout_ms=0",
        "timeout_ms=0&_=1234567",
        "cb=&timeout_ms=0&x=1&y=2",
        // Percent-escapes decode to what they stand for (RFC 3986).
        "timeout%5Fms=%30",
        "after=%30&timeout_ms=0",
    ] {
        let r = poll_raw(&mut c, "unknownq", "a", &a.token, q);
        assert_eq!(parse_poll(&r).events, vec![], "query {q:?}");
    }
}

#[test]
fn bad_pair_ids_are_400_bad_pair() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let ok = join(&mut c, "fine", "a");
    let long = "p".repeat(65);
    let bad = [
        long.as_str(),
        "a.b",
        "a%20b",
        "a+b",
        "a~b",
        "%C3%A4",
        "a!b",
        "a*b",
        "..",
        "a:b",
    ];
    for p in bad {
        for (method, rest) in [
            ("POST", ""),
            ("DELETE", ""),
            ("GET", "/events?timeout_ms=0"),
            ("POST", "/messages"),
        ] {
            let target = format!("/v1/pairs/{p}/a{rest}");
            let auth = bearer(&ok.token);
            let mut c = server.conn();
            let r = c.request(method, &target, &[("Authorization", &auth)], Some(b""));
            assert_eq!(r.status, 400, "{method} {target}: {r:?}");
            assert_error(&r, 400, "bad_pair");
            assert_closes(&mut c, &r);
        }
    }
    // 64 characters of the alphabet are fine.
    let max = format!("{}_-Zz09", "p".repeat(58));
    assert_eq!(max.len(), 64);
    let mut c = server.conn();
    join(&mut c, &max, "a");
}

#[test]
fn bad_sides_are_400_bad_side() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let ok = join(&mut c, "sides", "a");
    for s in ["c", "A", "B", "ab", "aa", "0", "a.", "%"] {
        for (method, rest) in [
            ("POST", ""),
            ("DELETE", ""),
            ("GET", "/events?timeout_ms=0"),
            ("POST", "/messages"),
        ] {
            let target = format!("/v1/pairs/sides/{s}{rest}");
            let auth = bearer(&ok.token);
            let mut c = server.conn();
            let r = c.request(method, &target, &[("Authorization", &auth)], Some(b""));
            assert_eq!(r.status, 400, "{method} {target}: {r:?}");
            assert_error(&r, 400, "bad_side");
            assert_closes(&mut c, &r);
        }
    }
}

#[test]
fn validation_order_path_then_query_then_auth_then_after() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "order", "a");
    let good = bearer(&a.token);
    let wrong = bearer(&wrong_secret(&a.token));
    let cases: [(&str, Option<&str>, u16, &str); 12] = [
        ("/v1/pairs/bad.pair/c/events?after=x", None, 400, "bad_pair"),
        (
            "/v1/pairs/bad.pair/c/events?after=x",
            Some(&good),
            400,
            "bad_pair",
        ),
        ("/v1/pairs/bad.pair/a/events?after=x", None, 400, "bad_pair"),
        ("/v1/pairs/order/c/events?after=x", None, 400, "bad_side"),
        (
            "/v1/pairs/order/c/events?after=99",
            Some(&good),
            400,
            "bad_side",
        ),
        ("/v1/pairs/order/a/events?after=x", None, 400, "bad_query"),
        (
            "/v1/pairs/order/a/events?after=x",
            Some(&wrong),
            400,
            "bad_query",
        ),
        (
            "/v1/pairs/order/a/events?after=99&timeout_ms=0",
            None,
            401,
            "unauthorized",
        ),
        (
            "/v1/pairs/order/a/events?after=99&timeout_ms=0",
            Some("Bearer garbage"),
            401,
            "unauthorized",
        ),
        (
            "/v1/pairs/order/a/events?after=99&timeout_ms=0",
            Some(&wrong),
            404,
            "no_session",
        ),
        (
            "/v1/pairs/order/b/events?after=99&timeout_ms=0",
            Some(&good),
            404,
            "no_session",
        ),
        (
            "/v1/pairs/order/a/events?after=99&timeout_ms=0",
            Some(&good),
            400,
            "bad_after",
        ),
    ];
    for (target, auth, status, code) in cases {
        let mut c = server.conn();
        let headers: Vec<(&str, &str)> = auth.map(|v| ("Authorization", v)).into_iter().collect();
        let r = c.request("GET", target, &headers, None);
        assert_eq!(
            (r.status, r.json().str("error").to_string()),
            (status, code.to_string()),
            "{target} {auth:?}: {r:?}"
        );
        assert_error(&r, status, code);
    }
    // The same order on the other endpoints.
    for (method, rest) in [("POST", "/messages"), ("DELETE", "")] {
        let mut c = server.conn();
        let r = c.request(
            method,
            &format!("/v1/pairs/bad.pair/zz{rest}"),
            &[],
            Some(b""),
        );
        assert_error(&r, 400, "bad_pair");
        let mut c = server.conn();
        let r = c.request(method, &format!("/v1/pairs/order/zz{rest}"), &[], Some(b""));
        assert_error(&r, 400, "bad_side");
        let mut c = server.conn();
        let r = c.request(method, &format!("/v1/pairs/order/a{rest}"), &[], Some(b""));
        assert_error(&r, 401, "unauthorized");
    }
    let r = server.request("POST", "/v1/pairs/bad.pair/zz", &[], Some(b""));
    assert_error(&r, 400, "bad_pair");
}

#[test]
fn malformed_credentials_are_401_unauthorized() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, _b) = pair_up(&mut c, "creds");
    let t = &a.token;
    let secret = t.rsplit('.').next().unwrap();
    let head: Vec<&str> = t.split('.').collect();
    let values: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Bearer garbage".into()),
        Some("Bearer a.b".into()),
        Some(format!("Basic {t}")),
        Some(format!("Token {t}")),
        Some(t.clone()),
        Some(format!("Bearer  {t}")),
        Some(format!("Bearer {t} extra")),
        Some(format!("Bearer {t}.x")),
        Some(format!("Bearer {}", &t[..t.len() - 1])),
        Some(format!("Bearer {t}A")),
        Some(format!("Bearer {}.x.{}.{}", head[0], head[2], secret)),
        Some(format!("Bearer {}.{}.x.{}", head[0], head[1], secret)),
        Some(format!(
            "Bearer {}.{}.{}.{}!",
            head[0],
            head[1],
            head[2],
            &secret[..21]
        )),
        Some(format!("Bearer {}", "x".repeat(129))),
    ];
    // Each value against a pair of its own, all failures reported at once:
    // a DELETE wrongly accepted must not spoil the next cases.
    let mut failures = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let pair = format!("creds{i}");
        let (a, _b) = pair_up(&mut c, &pair);
        let v = v.as_ref().map(|v| v.replace(&t.to_string(), &a.token));
        let headers: Vec<(&str, &str)> = v
            .as_deref()
            .map(|v| ("Authorization", v))
            .into_iter()
            .collect();
        for (method, rest) in [
            ("GET", "/events?timeout_ms=0"),
            ("POST", "/messages"),
            ("DELETE", ""),
        ] {
            let mut c = server.conn();
            let r = c.request(
                method,
                &format!("/v1/pairs/{pair}/a{rest}"),
                &headers,
                Some(b"x"),
            );
            let code = Json::parse(&r.body)
                .ok()
                .and_then(|j| j.get("error").cloned());
            if r.status != 401 || code != Some(Json::Str("unauthorized".into())) {
                failures.push(format!(
                    "{method} /v1/pairs/{pair}/a{rest} with Authorization {v:?}: expected 401 unauthorized, got {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            } else {
                assert_error(&r, 401, "unauthorized");
            }
        }
        if failures.is_empty() {
            // Nothing above touched the session.
            assert_eq!(poll(&mut c, &a, 0, 0).events, vec![Event::Online(1)]);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases not 401:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn well_formed_tokens_of_no_session_are_404_no_session() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "nosess");
    let x = join(&mut c, "nosess-other", "a");
    let cases: Vec<(String, &str, &str)> = vec![
        (wrong_secret(&a.token), "nosess", "a"),
        (bump_field(&a.token, 1), "nosess", "a"),
        (bump_field(&a.token, 2), "nosess", "a"),
        (b.token.clone(), "nosess", "a"),
        (a.token.clone(), "nosess", "b"),
        (x.token.clone(), "nosess", "a"),
        (a.token.clone(), "nosess-other", "a"),
    ];
    for (token, pair, side) in &cases {
        let auth = bearer(token);
        for (method, rest) in [
            ("GET", "/events?timeout_ms=0"),
            ("POST", "/messages"),
            ("DELETE", ""),
        ] {
            let mut c = server.conn();
            let r = c.request(
                method,
                &format!("/v1/pairs/{pair}/{side}{rest}"),
                &[("Authorization", &auth)],
                Some(b"x"),
            );
            assert_eq!(
                r.status, 404,
                "{method} {pair}/{side}{rest} with {token}: {r:?}"
            );
            assert_error(&r, 404, "no_session");
            assert!(!r.says_close(), "{r:?}");
        }
    }
    // No session was ended or messaged by the above.
    assert_eq!(poll(&mut c, &a, 0, 0).events, vec![Event::Online(1)]);
    assert_eq!(poll(&mut c, &b, 0, 0).events, vec![Event::Online(1)]);
    assert_eq!(poll(&mut c, &x, 0, 0).events, vec![]);
}

#[test]
fn full_session_buffer_is_429_peer_busy_and_nothing_is_dropped() {
    // A buffer below the default message limit (65536) is a valid setting.
    let server = Server::start(&["--max-session-buffer", "1000"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "busy");
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let text = format!("{i:03}{}", "x".repeat(197));
        let r = send_raw(&mut c, &b, text.as_bytes(), None);
        if r.status == 202 {
            assert_accepted(&r);
            accepted.push(text);
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("20 sends of 200 bytes never hit a 1000-byte buffer");
    assert_error(&r, 429, "peer_busy");
    assert!(
        (3..=6).contains(&accepted.len()),
        "{} messages of 200 bytes accepted into a 1000-byte buffer",
        accepted.len()
    );
    // Still refused while nothing is acknowledged.
    let r = send_raw(&mut c, &b, b"more", None);
    assert_error(&r, 429, "peer_busy");
    // Everything accepted is there, in order; nothing refused is.
    let p = poll(&mut c, &a, 0, 0);
    let mut want = vec![Event::Online(1)];
    want.extend(
        accepted
            .iter()
            .enumerate()
            .map(|(i, m)| msg(2 + i as u64, m)),
    );
    assert_eq!(p.events, want);
    // Acknowledging frees the buffer.
    let last = want.last().unwrap().seq();
    assert_eq!(poll(&mut c, &a, last, 0).events, vec![]);
    send(&mut c, &b, "room again");
    assert_eq!(
        poll(&mut c, &a, last, 0).events,
        vec![msg(last + 1, "room again")]
    );
    // Both sessions lived through it.
    assert_eq!(poll(&mut c, &b, 1, 0).peer, "online");
}

#[test]
fn full_node_buffer_is_429_peer_busy() {
    // Node limit 2000 bytes, each session may hold 2000 too: pair 1 takes
    // about 1300 of the node's bytes, so pair 2 hits the node limit while its
    // own session buffer is far below 2000.
    let server = Server::start(&[
        "--max-total-buffer",
        "2000",
        "--max-session-buffer",
        "2000",
        "--max-message-bytes",
        "300",
    ]);
    let mut c = server.conn();
    let (a1, b1) = pair_up(&mut c, "total1");
    let (a2, b2) = pair_up(&mut c, "total2");
    for i in 0..4 {
        let r = send_raw(
            &mut c,
            &b1,
            format!("{i:03}{}", "y".repeat(297)).as_bytes(),
            None,
        );
        assert_accepted(&r);
    }
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..10 {
        let r = send_raw(
            &mut c,
            &b2,
            format!("{i:03}{}", "z".repeat(297)).as_bytes(),
            None,
        );
        if r.status == 202 {
            accepted += 1;
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("10 more sends of 300 bytes never hit a 2000-byte node buffer");
    assert_error(&r, 429, "peer_busy");
    assert!(
        accepted <= 3,
        "{accepted} messages of 300 bytes accepted on pair 2 with 1200 of 2000 node bytes held by pair 1"
    );
    // Pair 1 is refused too now.
    let r = send_raw(&mut c, &b1, &[b'q'; 300], None);
    assert_error(&r, 429, "peer_busy");
    // Acknowledging on pair 1 frees room for pair 2.
    let p = poll(&mut c, &a1, 0, 0);
    assert_eq!(p.events.len(), 5, "peer_online and 4 messages: {p:?}");
    assert_eq!(poll(&mut c, &a1, 5, 0).events, vec![]);
    let p2 = poll(&mut c, &a2, 0, 0);
    assert_eq!(
        p2.events.len(),
        1 + accepted,
        "nothing refused was delivered: {p2:?}"
    );
    send(&mut c, &b2, "fits now");
    assert_eq!(
        poll(&mut c, &a2, 1 + accepted as u64, 0).events,
        vec![msg(2 + accepted as u64, "fits now")]
    );
}
