//! HTTP framing as API.md §2 fixes it: keep-alive, pipelining, HTTP/1.0,
//! request bodies (Content-Length, chunked, 100-continue), strict parsing,
//! the limits 413/414/431/505, and the header timeout.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A request line and headers that would be accepted, for framing cases:
/// a join (its body is ignored).
const JOIN_HEAD: &str = "POST /v1/pairs/framing/a HTTP/1.1\r\nHost: 127.0.0.1\r\n";

#[test]
fn every_response_has_cache_control_and_content_length() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
    assert_common_headers(&r);
    let r = c.request("POST", "/v1/pairs", &[], None);
    assert_json(&r, 201);
    let a = join(&mut c, "hdrs", "a");
    let r = c.request("GET", "/nope", &[], None);
    assert_error(&r, 404, "not_found");
    let r = c.request("PUT", "/v1/pairs/hdrs/a", &[], Some(b""));
    assert_error(&r, 405, "method_not_allowed");
    let r = poll_raw(&mut c, "hdrs", "a", &a.token, "timeout_ms=0");
    parse_poll(&r);
    let r = c.request("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    assert_common_headers(&r);
    let r = leave_raw(&mut c, "hdrs", "a", &a.token);
    assert_eq!(r.status, 204);
    assert_common_headers(&r);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    for i in 0..20 {
        let r = c.request("GET", "/healthz", &[], None);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.version, "HTTP/1.1");
        assert!(!r.says_close(), "keep-alive response must not close: {r:?}");
    }
    c.expect_silent(Duration::from_millis(200));
}

#[test]
fn keep_alive_survives_ordinary_client_errors() {
    // 401, 404, 405, 409 are answers, not malformed requests: the
    // connection goes on.
    let server = Server::start(&[]);
    let mut c = server.conn();
    join(&mut c, "ka", "a");
    let r = c.request("GET", "/v2", &[], None);
    assert_error(&r, 404, "not_found");
    assert!(!r.says_close(), "{r:?}");
    let r = c.request("PUT", "/v1/pairs/ka/a", &[], Some(b"x"));
    assert_error(&r, 405, "method_not_allowed");
    assert!(!r.says_close(), "{r:?}");
    let r = c.request("GET", "/v1/pairs/ka/a/events?timeout_ms=0", &[], None);
    assert_error(&r, 401, "unauthorized");
    assert!(!r.says_close(), "{r:?}");
    let r = join_raw(&mut c, "ka", "a", None);
    assert_error(&r, 409, "side_taken");
    assert!(!r.says_close(), "{r:?}");
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let mut burst = Vec::new();
    for i in 0..30 {
        let target = if i % 3 == 2 { "/nope" } else { "/healthz" };
        burst.extend_from_slice(&build_request("GET", target, &[], None));
    }
    c.send(&burst);
    for i in 0..30 {
        let r = c.read_response();
        let want = if i % 3 == 2 { 404 } else { 200 };
        assert_eq!(r.status, want, "pipelined response {i}: {r:?}");
    }
    c.expect_silent(Duration::from_millis(200));
}

/// A request whole in one read is answered straight from the read; one
/// split over reads, or one whole with part of the next behind it, is
/// kept until it is whole. Every mix of the three on one connection gives
/// the same answers, in order.
#[test]
fn requests_whole_split_or_straddling_reads_are_answered_alike() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let health = build_request("GET", "/healthz", &[], None);
    let missing = build_request("GET", "/nope", &[], None);
    let pause = || std::thread::sleep(Duration::from_millis(40));
    // Whole.
    c.send(&health);
    assert_eq!(c.read_response().status, 200);
    // Split in three reads, the cut inside the request line and then
    // inside the headers.
    for piece in [&missing[..7], &missing[7..20], &missing[20..]] {
        c.send(piece);
        pause();
    }
    assert_error(&c.read_response(), 404, "not_found");
    // Whole, with the first half of the next one behind it in the same
    // read; then the rest.
    let mut burst = health.clone();
    burst.extend_from_slice(&missing[..missing.len() / 2]);
    c.send(&burst);
    pause();
    c.send(&missing[missing.len() / 2..]);
    assert_eq!(c.read_response().status, 200);
    assert_error(&c.read_response(), 404, "not_found");
    // Whole again, after the buffer emptied.
    c.send(&missing);
    assert_error(&c.read_response(), 404, "not_found");
    c.expect_silent(Duration::from_millis(100));
}

#[test]
fn pipelined_request_behind_a_waiting_poll_waits_for_it() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "pipe", "a");
    let mut burst = build_request(
        "GET",
        "/v1/pairs/pipe/a/events?after=0&timeout_ms=400",
        &[("Authorization", &bearer(&a.token))],
        None,
    );
    burst.extend_from_slice(&build_request("POST", "/v1/pairs/pipe/b", &[], Some(b"")));
    burst.extend_from_slice(&build_request("GET", "/healthz", &[], None));
    let t = Instant::now();
    c.send(&burst);
    // The join of b (second in line) produces an event for a, but the poll
    // is answered first; whatever it holds, its answer comes first.
    let first = c.read_response();
    let p = parse_poll(&first);
    assert!(
        p.events.is_empty() || p.events == vec![Event::Online(1)],
        "the poll answers first, with nothing or b's peer_online: {first:?}"
    );
    let second = c.read_response();
    let b = check_join(&second, 201, "pipe", "b");
    assert_eq!(b.peer, "online");
    let third = c.read_response();
    assert_eq!(third.status, 200, "{third:?}");
    assert_eq!(third.text(), "ok");
    assert!(ms_since(t) < 5000);
}

#[test]
fn http10_request_is_answered_then_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok");
    assert_common_headers(&r);
    assert_closes(&mut c, &r);
}

#[test]
fn http10_closes_even_when_asking_keep_alive() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    c.send(b"POST /v1/pairs HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    let r = c.read_response();
    let j = assert_json(&r, 201);
    assert!(j.get("pair").is_some(), "{r:?}");
    assert_closes(&mut c, &r);
}

#[test]
fn connection_close_request_is_answered_then_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &[("Connection", "close")], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_closes(&mut c, &r);
}

#[test]
fn request_with_both_content_length_and_chunked_is_400_and_closed() {
    let server = Server::start(&[]);
    for order in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let raw = format!("{JOIN_HEAD}{order}\r\n0\r\n\r\n");
        expect_error_and_close(&server, raw.as_bytes(), 400, "bad_request");
    }
    server.assert_serving();
}

#[test]
fn malformed_content_length_is_400_and_closed() {
    let server = Server::start(&[]);
    let cases = [
        "Content-Length: +5\r\n",
        "Content-Length: -5\r\n",
        "Content-Length: 5,5\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 5.0\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: \r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ];
    for case in cases {
        let raw = format!("{JOIN_HEAD}{case}\r\nhello!");
        expect_error_and_close(&server, raw.as_bytes(), 400, "bad_request");
    }
    server.assert_serving();
}

#[test]
fn identical_duplicate_content_length_is_accepted() {
    // API.md forbids "duplicates that differ"; equal ones are one length.
    let server = Server::start(&[]);
    let mut c = server.conn();
    c.send(format!("{JOIN_HEAD}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello").as_bytes());
    let r = c.read_response();
    check_join(&r, 201, "framing", "a");
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "the 5 body bytes were consumed: {r:?}");
}

#[test]
fn huge_content_length_is_refused_and_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    c.send(format!("{JOIN_HEAD}Content-Length: 99999999999999999999999999\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert!(
        r.status == 400 || r.status == 413,
        "overflowing Content-Length: {r:?}"
    );
    assert_error(
        &r,
        r.status,
        if r.status == 400 {
            "bad_request"
        } else {
            "too_large"
        },
    );
    assert_closes(&mut c, &r);
    server.assert_serving();
}

#[test]
fn transfer_encoding_other_than_chunked_is_501_or_400_and_closed() {
    let server = Server::start(&[]);
    for te in [
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "chunked, chunked",
        "deflate",
    ] {
        let raw = format!("{JOIN_HEAD}Transfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let mut c = server.conn();
        c.send(raw.as_bytes());
        let r = c.read_response();
        match r.status {
            501 => assert_error(&r, 501, "not_implemented"),
            400 => assert_error(&r, 400, "bad_request"),
            _ => panic!("Transfer-Encoding {te:?}: expected 501 or 400, got {r:?}"),
        }
        assert_closes(&mut c, &r);
    }
    server.assert_serving();
}

#[test]
fn obsolete_header_folding_is_400_and_closed() {
    let server = Server::start(&[]);
    for fold in ["X-Long: one\r\n two\r\n", "X-Long: one\r\n\ttwo\r\n"] {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fold}\r\n");
        expect_error_and_close(&server, raw.as_bytes(), 400, "bad_request");
    }
    // A fold right after the request line is no better.
    expect_error_and_close(
        &server,
        b"GET /healthz HTTP/1.1\r\n Host: 127.0.0.1\r\n\r\n",
        400,
        "bad_request",
    );
    server.assert_serving();
}

#[test]
fn malformed_request_lines_are_400_and_closed() {
    let server = Server::start(&[]);
    let lines = [
        "GET  /healthz HTTP/1.1",
        "GET /healthz  HTTP/1.1",
        "GET /healthz HTTP/1.1 ",
        " GET /healthz HTTP/1.1",
        "GET\t/healthz HTTP/1.1",
        "GET /healthz\tHTTP/1.1",
        "GET /healthz",
        "GET",
        "GET /healthz HTTP/1.1 extra",
        "GET /healthz HTTP/1",
        "GET /healthz HTTP/11",
        "GET /healthz HTTP/1.1x",
        "GET /healthz http/1.1",
        "GET /healthz FTP/1.1",
        "GET /heal thz HTTP/1.1",
        "G(T /healthz HTTP/1.1",
    ];
    for line in lines {
        let raw = format!("{line}\r\nHost: 127.0.0.1\r\n\r\n");
        expect_error_and_close(&server, raw.as_bytes(), 400, "bad_request");
    }
    server.assert_serving();
}

#[test]
fn malformed_header_lines_are_400_and_closed() {
    let server = Server::start(&[]);
    let headers = [
        "NoColonHere\r\n",
        "Host : 127.0.0.1\r\n",
        "X Bad: 1\r\n",
        ": empty-name\r\n",
        "X-(bad): 1\r\n",
    ];
    for h in headers {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{h}\r\n");
        expect_error_and_close(&server, raw.as_bytes(), 400, "bad_request");
    }
    server.assert_serving();
}

#[test]
fn unsupported_http_versions_are_505_and_closed() {
    let server = Server::start(&[]);
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"] {
        let raw = format!("GET /healthz {v}\r\nHost: 127.0.0.1\r\n\r\n");
        expect_error_and_close(&server, raw.as_bytes(), 505, "http_version_not_supported");
    }
    server.assert_serving();
}

#[test]
fn request_target_over_8_kib_is_414() {
    let server = Server::start(&[]);
    // Exactly 8 KiB is allowed (an unknown path: 404).
    let target = format!("/{}", "x".repeat(8191));
    assert_eq!(target.len(), 8192);
    let mut c = server.conn();
    let r = c.request("GET", &target, &[], None);
    assert_error(&r, 404, "not_found");
    // One byte more is 414.
    let target = format!("/{}", "x".repeat(8192));
    let mut c = server.conn();
    let r = c.request("GET", &target, &[], None);
    assert_error(&r, 414, "uri_too_long");
    assert_close_consistent(&mut c, &r);
    // Also in a query string.
    let target = format!("/v1/pairs/p/a/events?pad={}", "y".repeat(9000));
    let mut c = server.conn();
    let r = c.request("GET", &target, &[], None);
    assert_error(&r, 414, "uri_too_long");
    assert_close_consistent(&mut c, &r);
    server.assert_serving();
}

#[test]
fn headers_over_16_kib_are_431() {
    let server = Server::start(&[]);
    let pad = |total: usize| -> Vec<(String, String)> {
        (0..total / 1000)
            .map(|i| (format!("X-Pad-{i:03}"), "p".repeat(985)))
            .collect()
    };
    // About 15 KB of headers is fine.
    let small = pad(15_000);
    let hs: Vec<(&str, &str)> = small
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &hs, None);
    assert_eq!(r.status, 200, "15 KB of headers: {r:?}");
    // About 17 KB is over the limit.
    let big = pad(17_000);
    let hs: Vec<(&str, &str)> = big.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &hs, None);
    assert_error(&r, 431, "headers_too_large");
    assert_close_consistent(&mut c, &r);
    // Many short header lines under 16 KiB are fine, however many.
    let many: Vec<(String, String)> = (0..1000).map(|i| (format!("X{i}"), "y".into())).collect();
    let hs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &hs, None);
    assert_eq!(r.status, 200, "1000 short header lines: {r:?}");
    // A single huge header too.
    let huge = "h".repeat(20_000);
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &[("X-Huge", &huge)], None);
    assert_error(&r, 431, "headers_too_large");
    server.assert_serving();
}

#[test]
fn chunked_message_body_is_delivered_whole() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "chunky");
    let head = format!(
        "POST /v1/pairs/chunky/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        b.token
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(b"3\r\nhel\r\n4\r\nlo, \r\nA\r\n0123456789\r\n0\r\n\r\n");
    // A request pipelined right after the chunked body.
    raw.extend_from_slice(&build_request("GET", "/healthz", &[], None));
    c.send(&raw);
    assert_accepted(&c.read_response());
    let r = c.read_response();
    assert_eq!(r.status, 200, "request after the chunked body: {r:?}");
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "hello, 0123456789")]);
}

#[test]
fn chunked_body_sent_in_pieces_is_delivered_whole() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "pieces");
    let head = format!(
        "POST /v1/pairs/pieces/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        b.token
    );
    c.send(head.as_bytes());
    for piece in [
        &b"5\r"[..],
        b"\nab",
        b"cde\r\n",
        b"2\r\nfg",
        b"\r\n0\r",
        b"\n\r\n",
    ] {
        std::thread::sleep(Duration::from_millis(30));
        c.send(piece);
    }
    assert_accepted(&c.read_response());
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "abcdefg")]);
}

#[test]
fn malformed_chunked_bodies_are_400_and_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (_a, b) = pair_up(&mut c, "badchunk");
    let head = format!(
        "POST /v1/pairs/badchunk/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        b.token
    );
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"3\r\nhelXX0\r\n\r\n",
        b"-3\r\nhel\r\n0\r\n\r\n",
        b"\r\nhel\r\n0\r\n\r\n",
    ] {
        let mut raw = head.clone().into_bytes();
        raw.extend_from_slice(body);
        let mut c = server.conn();
        c.send(&raw);
        let r = c.read_response();
        assert_error(&r, 400, "bad_request");
        assert_closes(&mut c, &r);
    }
    server.assert_serving();
}

#[test]
fn chunk_size_overflow_is_refused_and_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (_a, b) = pair_up(&mut c, "overflow");
    let raw = format!(
        "POST /v1/pairs/overflow/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\nabc",
        b.token
    );
    let mut c = server.conn();
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert!(r.status == 400 || r.status == 413, "{r:?}");
    assert_error(
        &r,
        r.status,
        if r.status == 400 {
            "bad_request"
        } else {
            "too_large"
        },
    );
    assert_closes(&mut c, &r);
}

#[test]
fn body_over_message_limit_is_413() {
    let server = Server::start(&["--max-message-bytes", "10"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "big");
    // Exactly the limit is accepted.
    send(&mut c, &b, "0123456789");
    let r = send_raw(&mut c, &b, b"0123456789X", None);
    assert_error(&r, 413, "too_large");
    assert_close_consistent(&mut c, &r);
    // Chunked over the limit too.
    let raw = format!(
        "POST /v1/pairs/big/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n",
        b.token
    );
    let mut c = server.conn();
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_error(&r, 413, "too_large");
    assert_close_consistent(&mut c, &r);
    // Nothing of the refused bodies reached the peer.
    let mut c = server.conn();
    let p = poll(&mut c, &a, 0, 0);
    assert_eq!(p.events, vec![Event::Online(1), msg(2, "0123456789")]);
}

#[test]
fn default_message_limit_is_65536_bytes() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "default-limit");
    let max = "m".repeat(65536);
    send(&mut c, &b, &max);
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![Event::Message(2, max)]);
    let over = vec![b'm'; 65537];
    let mut c = server.conn();
    let r = send_raw(&mut c, &b, &over, None);
    assert_error(&r, 413, "too_large");
}

#[test]
fn expect_100_continue_gets_interim_response_before_body() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "cont");
    let head = format!(
        "POST /v1/pairs/cont/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        b.token
    );
    c.send(head.as_bytes());
    let interim = c.read_response();
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before sending the body: {interim:?}"
    );
    assert_eq!(
        interim.raw_head,
        b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        "{interim:?}"
    );
    c.send(b"howdy");
    assert_accepted(&c.read_response());
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "howdy")]);
}

#[test]
fn expect_100_continue_with_chunked_body() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "cont-chunked");
    let head = format!(
        "POST /v1/pairs/cont-chunked/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b.token
    );
    c.send(head.as_bytes());
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"4\r\nyoyo\r\n0\r\n\r\n");
    assert_accepted(&c.read_response());
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "yoyo")]);
}

#[test]
fn expect_100_continue_with_body_sent_at_once_still_works() {
    // A client that does not wait for the 100 sends the body right away.
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "cont-eager");
    let raw = format!(
        "POST /v1/pairs/cont-eager/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
        b.token
    );
    c.send(raw.as_bytes());
    let mut r = c.read_response();
    if r.status == 100 {
        r = c.read_response();
    }
    assert_accepted(&r);
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "abc")]);
}

#[test]
fn header_timeout_partial_headers_get_408_and_close() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    let t = Instant::now();
    c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    let r = c.read_response();
    let elapsed = ms_since(t);
    assert_error(&r, 408, "request_timeout");
    assert!(
        (400..3000).contains(&elapsed),
        "408 after {elapsed} ms, header timeout 500 ms"
    );
    assert_closes(&mut c, &r);
    server.assert_serving();
}

#[test]
fn header_timeout_bounds_the_body_too() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "slowbody");
    let head = format!(
        "POST /v1/pairs/slowbody/b/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 10\r\n\r\nabc",
        b.token
    );
    let mut c2 = server.conn();
    let t = Instant::now();
    c2.send(head.as_bytes());
    let r = c2.read_response();
    let elapsed = ms_since(t);
    assert_error(&r, 408, "request_timeout");
    assert!(
        (400..3000).contains(&elapsed),
        "408 after {elapsed} ms, header timeout 500 ms"
    );
    assert_closes(&mut c2, &r);
    // The partial message was not delivered. (A fresh connection: `c` sat
    // idle longer than the header timeout and was closed.)
    let mut c = server.conn();
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![]);
}

#[test]
fn idle_keep_alive_connection_is_closed_without_response() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
    assert_closed_once_idle(&mut c);
}

/// `c`, idle from now, is closed by a server with a 500 ms header timeout:
/// within 3 s, and not before 300 ms.
fn assert_closed_once_idle(c: &mut Conn) {
    let t = Instant::now();
    c.expect_closed(Duration::from_secs(3));
    let elapsed = ms_since(t);
    assert!(
        elapsed >= 300,
        "idle connection closed after only {elapsed} ms"
    );
}

/// The idle deadline moves with every request: a connection used more
/// often than the header timeout stays open however long it is used (the
/// server extends its idle timer lazily, so the deadline of an earlier
/// request still fires and must be recognised as moved), and closes once
/// it falls idle.
#[test]
fn connection_in_use_outlives_the_idle_deadline_of_earlier_requests() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    for i in 0..6 {
        let r = c.request("GET", "/healthz", &[], None);
        assert_eq!(r.status, 200, "request {i} after {} ms", i * 300);
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "the connection was closed while in use");
    assert_closed_once_idle(&mut c);
}

#[test]
fn fresh_connection_sending_nothing_is_closed() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    let got = c
        .read_until_closed(Duration::from_secs(3))
        .unwrap_or_else(|b| panic!("silent new connection still open after 3 s (bytes {b:?})"));
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "a silent connection gets nothing or a 408: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn slow_but_timely_headers_are_fine() {
    let server = Server::start(&["--header-timeout", "1s"]);
    let mut c = server.conn();
    for piece in [
        "GET /hea",
        "lthz HTTP/1.1\r",
        "\nHost: 127.0.0.1\r\n",
        "\r\n",
    ] {
        c.send(piece.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn host_is_required_once_in_http_1_1() {
    // "Parsing is strict, as RFC 9112 asks of a server": §3.2 asks 400 for
    // an HTTP/1.1 request without Host and for any with two Host lines.
    let server = Server::start(&[]);
    for raw in [
        &b"GET /healthz HTTP/1.1\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        // ... and "a Host header field with an invalid field value".
        b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a/b?c\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a@b\r\n\r\n",
    ] {
        expect_error_and_close(&server, raw, 400, "bad_request");
    }
    for host in [
        "example.com:8080",
        "[::1]:80",
        "127.0.0.1",
        "xn--bcher-kva.example",
    ] {
        let raw = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut c = server.conn();
        c.send(raw.as_bytes());
        assert_eq!(c.read_response().status, 200, "Host: {host}");
    }
    // HTTP/1.0 may leave it out; an empty one is a valid Host.
    for raw in [
        &b"GET /healthz HTTP/1.0\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    ] {
        let mut c = server.conn();
        c.send(raw);
        let r = c.read_response();
        assert_eq!(r.status, 200, "{:?}: {r:?}", String::from_utf8_lossy(raw));
    }
    server.assert_serving();
}

#[test]
fn absolute_form_targets_are_served() {
    // RFC 9112 §3.2.2: a server MUST accept the absolute-form.
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request("GET", "http://127.0.0.1/healthz", &[], None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r:?}");
    let r = c.request("POST", "HTTP://example:1/v1/pairs", &[], Some(b""));
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn the_header_timeout_runs_from_a_requests_first_byte() {
    // API.md: the header timeout bounds receiving a request's headers; an
    // idle time before them is bounded separately (and closes silently).
    let server = Server::start(&["--header-timeout", "1s"]);
    let mut c = server.conn();
    assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
    // Idle for most of the timeout, then a head that takes most of it.
    std::thread::sleep(Duration::from_millis(700));
    c.send(b"GET /hea");
    std::thread::sleep(Duration::from_millis(600));
    c.send(b"lthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_waiting_poll_is_not_cut_by_the_header_timeout() {
    // The header timeout bounds receiving a request, not waiting for the
    // answer of a long poll.
    let server = Server::start(&["--header-timeout", "300ms"]);
    let mut c = server.conn();
    let a = join(&mut c, "longwait", "a");
    let t = Instant::now();
    let p = poll(&mut c, &a, 0, 1200);
    assert_eq!(p.events, vec![]);
    assert!(
        ms_since(t) >= 1100,
        "poll answered after {} ms",
        ms_since(t)
    );
    let r = c.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
}

#[test]
fn get_with_a_body_is_framed_correctly() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let mut raw =
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nGET ".to_vec();
    raw.extend_from_slice(&build_request("GET", "/nope", &[], None));
    c.send(&raw);
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.read_response();
    assert_error(&r, 404, "not_found");
}

#[test]
fn header_names_are_case_insensitive() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "case");
    let raw = format!(
        "POST /v1/pairs/case/b/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nAUTHORIZATION: Bearer {}\r\ncontent-LENGTH: 2\r\n\r\nhi",
        b.token
    );
    c.send(raw.as_bytes());
    assert_accepted(&c.read_response());
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "hi")]);
}

#[test]
fn unknown_paths_are_404() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    for path in [
        "/",
        "/v2",
        "/v1",
        "/v1/",
        "/v1/pair",
        "/v1/pairs/p/a/unknown",
        "/v1/pairs/p/a/events/x",
        "/v1/pairs/p/a/b/c/d",
        "/healthz/x",
        "/v1/clusterx",
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let r = c.request(method, path, &[], Some(b""));
            assert_eq!(r.status, 404, "{method} {path}: {r:?}");
            assert_error(&r, 404, "not_found");
            assert!(!r.says_close(), "404 keeps the connection: {r:?}");
        }
    }
}

#[test]
fn query_strings_on_other_endpoints_are_ignored() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request("GET", "/healthz?probe=1", &[], None);
    assert_eq!((r.status, r.text()), (200, "ok".to_string()), "{r:?}");
    let r = c.request("POST", "/v1/pairs?x=1", &[], None);
    assert_json(&r, 201);
    let r = c.request("POST", "/v1/pairs/q/a?utm=1", &[], Some(b""));
    let a = check_join(&r, 201, "q", "a");
    let r = c.request("POST", "/v1/pairs/q/b?", &[], Some(b""));
    let b = check_join(&r, 201, "q", "b");
    let auth = bearer(&b.token);
    let r = c.request(
        "POST",
        "/v1/pairs/q/b/messages?x=1",
        &[("Authorization", &auth)],
        Some(b"hi"),
    );
    assert_accepted(&r);
    let p = poll(&mut c, &a, 1, 0);
    assert_eq!(p.events, vec![msg(2, "hi")]);
    let r = c.request(
        "DELETE",
        "/v1/pairs/q/b?x=1",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = c.request("GET", "/v1/cluster?x=1", &[], None);
    assert_json(&r, 200);
}

fn allow_set(r: &common::Response) -> Vec<String> {
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {r:?}"));
    allow.split(',').map(|m| m.trim().to_string()).collect()
}

#[test]
fn wrong_methods_are_405_with_allow() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let cases: [(&str, &str, &[&str]); 9] = [
        ("PUT", "/v1/pairs/p/a", &["POST", "DELETE"]),
        ("GET", "/v1/pairs/p/a", &["POST", "DELETE"]),
        ("PATCH", "/v1/pairs/p/b", &["POST", "DELETE"]),
        ("GET", "/v1/pairs", &["POST"]),
        ("DELETE", "/v1/pairs/p/a/events", &["GET"]),
        ("POST", "/v1/pairs/p/a/events", &["GET"]),
        ("GET", "/v1/pairs/p/a/messages", &["POST"]),
        ("POST", "/healthz", &["GET"]),
        ("DELETE", "/metrics", &["GET"]),
    ];
    for (method, path, must) in cases {
        let r = c.request(method, path, &[], Some(b""));
        assert_error(&r, 405, "method_not_allowed");
        let allow = allow_set(&r);
        for m in must {
            assert!(
                allow.iter().any(|a| a == m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(
            !allow.iter().any(|a| a == method),
            "{method} {path}: Allow {allow:?} lists the refused method"
        );
        assert!(!r.says_close(), "405 keeps the connection: {r:?}");
    }
    let r = c.request("POST", "/v1/cluster", &[], Some(b""));
    assert_error(&r, 405, "method_not_allowed");
    assert!(allow_set(&r).iter().any(|a| a == "GET"));
}

/// A waiting poll answered by another connection's send (with keep-alive
/// and nothing behind the poll, the send's step writes the answer itself:
/// `src/io/answer_tests.rs`) gets the usual response; its connection then
/// idles from that moment, and a client that sends nothing more is closed
/// after the header timeout.
/// The poll waits past one header timeout first, so the idle timer has
/// already fired once during the wait and must have been set again.
#[test]
fn a_poll_answered_by_a_send_idles_out_from_its_answer() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "direct");
    let mut waiting = server.conn();
    write_poll(
        &mut waiting,
        &b.pair,
        &b.side,
        &b.token,
        "after=1&timeout_ms=5000",
    );
    std::thread::sleep(Duration::from_millis(800));
    // A fresh connection: `c` sat idle past the header timeout.
    let mut c = server.conn();
    let t = Instant::now();
    send(&mut c, &a, "over");
    let r = waiting.read_response();
    assert!(
        ms_since(t) < 1000,
        "answered {} ms after the send",
        ms_since(t)
    );
    assert_common_headers(&r);
    assert!(!r.says_close(), "{r:?}");
    assert_eq!(parse_poll(&r).events, vec![msg(2, "over")]);
    assert_closed_once_idle(&mut waiting);
    // The session lives on.
    let mut c = server.conn();
    let p = poll(&mut c, &b, 2, 0);
    assert_eq!(p.events, vec![]);
}

/// The connection of a poll answered where the answer is made reads its
/// next request as usual, and answers it.
#[test]
fn a_poll_answered_by_a_send_reads_its_next_request() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "direct2");
    let mut waiting = server.conn();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let seq = 2 + i as u64;
        write_poll(
            &mut waiting,
            &b.pair,
            &b.side,
            &b.token,
            &format!("after={}&timeout_ms=5000", seq - 1),
        );
        std::thread::sleep(Duration::from_millis(50));
        send(&mut c, &a, text);
        let r = waiting.read_response();
        assert_eq!(parse_poll(&r).events, vec![msg(seq, text)], "{r:?}");
    }
    let r = waiting.request("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200);
}

/// A poll that asked to close (HTTP/1.0 here) is answered, then closed,
/// when a send answers it while it waits.
#[test]
fn a_closing_poll_answered_by_a_send_is_answered_then_closed() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "direct3");
    let mut waiting = server.conn();
    let target = session_path(&b.pair, &b.side, "/events?after=1&timeout_ms=5000");
    let raw = format!(
        "GET {target} HTTP/1.0\r\nAuthorization: {}\r\n\r\n",
        bearer(&b.token)
    );
    waiting.send(raw.as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    send(&mut c, &a, "bye");
    let r = waiting.read_response();
    assert_eq!(parse_poll(&r).events, vec![msg(2, "bye")], "{r:?}");
    assert_closes(&mut waiting, &r);
}
