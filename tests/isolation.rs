//! One bad or slow client never disturbs the others (API.md §2 "Limits and
//! bad input": every limit "leaves the node serving others").

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn slowloris_gets_408_while_another_poll_and_session_keep_working() {
    let server = Server::start(&["--header-timeout", "1s"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "iso");
    let mut wa = server.conn();
    write_poll(&mut wa, "iso", "a", &a.token, "after=1&timeout_ms=8000");

    // The slow client dribbles one header byte every 100 ms, forever.
    let mut slow = server.conn();
    let mut writer = slow.try_clone_stream();
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let t = Instant::now();
    let dribbler = std::thread::spawn(move || {
        if writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .is_err()
        {
            return;
        }
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b"a").is_err() {
                return;
            }
        }
    });

    std::thread::sleep(Duration::from_millis(300));
    let mut cb = server.conn();
    let sent_at = Instant::now();
    send(&mut cb, &b, "through the storm");
    let pa = parse_poll(&wa.read_response());
    assert_eq!(
        pa,
        Poll {
            peer: "online".into(),
            events: vec![msg(2, "through the storm")]
        }
    );
    assert!(
        ms_since(sent_at) < 1000,
        "poll answered {} ms after the send",
        ms_since(sent_at)
    );

    let r = slow.read_response();
    let elapsed = ms_since(t);
    assert_error(&r, 408, "request_timeout");
    assert!(
        (900..3000).contains(&elapsed),
        "slowloris got 408 after {elapsed} ms with a 1 s header timeout"
    );
    assert_closes(&mut slow, &r);
    dribbler.join().unwrap();

    // The session is intact both ways.
    let mut c = server.conn();
    send(&mut c, &a, "and back");
    assert_eq!(poll(&mut c, &b, 1, 0).events, vec![msg(2, "and back")]);
    assert_eq!(
        poll(&mut c, &a, 2, 0),
        Poll {
            peer: "online".into(),
            events: vec![]
        }
    );
}

#[test]
fn many_stalled_clients_do_not_slow_the_others() {
    let server = Server::start(&["--header-timeout", "1500ms"]);
    let mut stalled = Vec::new();
    for i in 0..30 {
        let mut s = server.conn();
        s.send(
            format!("POST /v1/pairs/stall{i}/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-").as_bytes(),
        );
        stalled.push(s);
    }
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "busyday");
    for i in 0..10 {
        let t = Instant::now();
        send(&mut c, &b, &format!("m{i}"));
        assert_eq!(
            poll(&mut c, &a, 1 + i, 0).events,
            vec![Event::Message(2 + i, format!("m{i}"))]
        );
        assert!(
            ms_since(t) < 500,
            "a send and a poll took {} ms next to 30 stalled clients",
            ms_since(t)
        );
    }
    for (i, s) in stalled.iter_mut().enumerate() {
        let r = s.read_response();
        assert_eq!(r.status, 408, "stalled client {i}: {r:?}");
        assert_error(&r, 408, "request_timeout");
        s.expect_closed(Duration::from_secs(2));
    }
    // None of the stalled joins created a session.
    let mut c = server.conn();
    for i in 0..30 {
        join(&mut c, &format!("stall{i}"), "a");
    }
}

#[test]
fn malformed_clients_never_disturb_a_waiting_poll() {
    let server = Server::start(&["--header-timeout", "2s"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "calm");
    let mut wa = server.conn();
    let t = Instant::now();
    write_poll(&mut wa, "calm", "a", &a.token, "after=1&timeout_ms=8000");
    std::thread::sleep(Duration::from_millis(200));

    let auth = bearer(&a.token);
    let wrong = {
        let (head, secret) = a.token.rsplit_once('.').unwrap();
        let first = if secret.starts_with('A') { 'B' } else { 'A' };
        format!("Bearer {head}.{first}{}", &secret[1..])
    };
    let junk: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe\x80 garbage\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /v1/pairs/calm/a/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n folded\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/7.0\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        b"GET /v1/pairs/calm/a/events HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        vec![b'X'; 20_000],
        format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "u".repeat(9000)).into_bytes(),
        // Requests against a's own session that are refused must not count
        // as a newer poll.
        format!("GET /v1/pairs/calm/a/events?after=x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
        format!("GET /v1/pairs/calm/a/events?after=99&timeout_ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
        format!("GET /v1/pairs/calm/a/events?after=1&timeout_ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {wrong}\r\n\r\n").into_bytes(),
        format!("DELETE /v1/pairs/calm/a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {wrong}\r\n\r\n").into_bytes(),
        b"GET /v1/pairs/calm/a/events?after=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer garbage\r\n\r\n".to_vec(),
    ];
    for (i, bytes) in junk.iter().enumerate() {
        let mut j = server.conn();
        let _ = j.try_send(bytes);
        match j.try_read_response() {
            Ok(r) => {
                assert!((400..600).contains(&r.status), "junk {i}: {r:?}");
            }
            Err(ReadError::Closed(_)) | Err(ReadError::Reset(_)) => {}
            Err(e) => panic!("junk {i}: {}", describe(&e)),
        }
    }
    // Half a request, then the client goes away.
    for _ in 0..5 {
        let j = server.conn();
        let mut w = j.try_clone_stream();
        let _ = w.write_all(b"POST /v1/pairs/calm/b/messages HTTP/1.1\r\nContent-Le");
        j.shutdown_write();
        drop(j);
    }
    // The waiting poll is still waiting ...
    wa.expect_silent(Duration::from_millis(200));
    // ... and gets the next message at once.
    let mut cb = server.conn();
    send(&mut cb, &b, "after the storm");
    let pa = parse_poll(&wa.read_response());
    assert_eq!(
        pa,
        Poll {
            peer: "online".into(),
            events: vec![msg(2, "after the storm")]
        }
    );
    assert!(
        ms_since(t) < 7000,
        "poll answered at its timeout, not by the message"
    );
}

#[test]
fn a_client_vanishing_mid_poll_loses_nothing() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "vanish");
    for _ in 0..3 {
        let mut wa = server.conn();
        write_poll(&mut wa, "vanish", "a", &a.token, "after=1&timeout_ms=8000");
        std::thread::sleep(Duration::from_millis(100));
        drop(wa);
    }
    std::thread::sleep(Duration::from_millis(100));
    send(&mut c, &b, "still delivered");
    // A half-sent message from b is not delivered.
    let mut half = server.conn();
    let _ = half.try_send(
        format!(
            "POST /v1/pairs/vanish/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 10\r\n\r\nhalf",
            b.token
        )
        .as_bytes(),
    );
    drop(half);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = server.conn();
    assert_eq!(
        poll(&mut c, &a, 1, 0),
        Poll {
            peer: "online".into(),
            events: vec![msg(2, "still delivered")]
        }
    );
    assert_eq!(poll(&mut c, &b, 1, 0).peer, "online");
}

#[test]
fn a_client_that_never_reads_does_not_block_the_others() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "reader");
    // Thousands of pipelined /metrics requests whose answers are never read.
    let hog = server.conn();
    let mut w = hog.try_clone_stream();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let flood = std::thread::spawn(move || {
        let one = build_request("GET", "/metrics", &[], None);
        let mut burst = Vec::new();
        for _ in 0..200 {
            burst.extend_from_slice(&one);
        }
        for _ in 0..50 {
            if w.write_all(&burst).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut c = server.conn();
    for i in 0..10 {
        let t = Instant::now();
        send(&mut c, &b, &format!("r{i}"));
        assert_eq!(
            poll(&mut c, &a, 1 + i, 0).events,
            vec![Event::Message(2 + i, format!("r{i}"))]
        );
        assert!(
            ms_since(t) < 1000,
            "send and poll took {} ms next to a client that never reads",
            ms_since(t)
        );
    }
    flood.join().unwrap();
    drop(hog);
    server.assert_serving();
}

#[test]
fn many_idle_connections_do_not_block_the_others() {
    let server = Server::start(&[]);
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(server.conn());
    }
    let t = Instant::now();
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "crowd");
    send(&mut c, &b, "hello crowd");
    assert_eq!(poll(&mut c, &a, 1, 0).events, vec![msg(2, "hello crowd")]);
    assert!(
        ms_since(t) < 2000,
        "took {} ms next to 200 idle connections",
        ms_since(t)
    );
    drop(idle);
    server.assert_serving();
}

#[test]
fn answers_that_wait_for_a_slow_reader_arrive_whole_and_in_order() {
    // Enough pipelined /metrics answers to fill the socket buffers, so
    // that most of them are written in parts once the client reads; each
    // must then arrive whole, in order, and the connection keep working.
    let server = Server::start(&[]);
    let mut c = server.conn();
    let writer = c.try_clone_stream();
    const REQUESTS: usize = 3000;
    let flood = std::thread::spawn(move || {
        let mut w = writer;
        w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let one = build_request("GET", "/metrics", &[], None);
        for _ in 0..REQUESTS {
            if w.write_all(&one).is_err() {
                return false;
            }
        }
        true
    });
    // Let the answers back up before reading any.
    std::thread::sleep(Duration::from_millis(500));
    c.set_read_timeout(Duration::from_secs(10));
    for i in 0..REQUESTS {
        let r = c.read_response();
        assert_eq!(r.status, 200, "answer {i}");
        assert!(r.text().contains("pairlink_"), "answer {i} is metrics");
    }
    assert!(flood.join().unwrap(), "every request was written");
    let (a, b) = pair_up(&mut c, "slowreader");
    send(&mut c, &b, "after");
    assert_eq!(poll(&mut c, &a, 1, 0).events, vec![msg(2, "after")]);
    server.assert_serving();
}
