//! Unit tests of routing and validation, without sockets.

use super::*;
use crate::core::NodeConfig;
use crate::proto::http::Version;

fn api(cors: Option<&str>) -> Api<u32> {
    let node = Node::new(NodeConfig {
        name: ids::parse_node_name("n1").unwrap(),
        peers: Vec::new(),
        lookup_timeout_ms: 1000,
        session_ttl_ms: 60_000,
        poll_timeout_ms: 25_000,
        max_sessions: 10,
        max_session_buffer: 1000,
        max_total_buffer: 10_000,
    });
    Api::new(
        node,
        ApiConfig {
            cors_origin: cors.map(str::to_string),
            peers: Vec::new(),
        },
    )
}

fn request<'a>(
    method: Method,
    target: &'a str,
    auth: Option<&'a str>,
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method,
        target: target.as_bytes(),
        version: Version::Http11,
        keep_alive: true,
        authorization: auth.map(str::as_bytes),
        idempotency_key: None,
        host_fields: 1,
        host_valid: true,
        body,
    }
}

fn respond(api: &mut Api<u32>, req: &Request) -> Response {
    let mut n = 0u8;
    let mut secret = move || {
        n += 1;
        Some([n; 16])
    };
    match api.handle(0, 0, req, &mut TokenCache::default(), &mut secret, || 1) {
        Handled::Respond(r) => r,
        Handled::Wait(h) => panic!("waiting: {h:?}"),
    }
}

fn code(r: &Response) -> String {
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    body.split("\"error\":\"")
        .nth(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .unwrap_or_default()
}

fn token_of(r: &Response) -> String {
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    crate::proto::ids::session_in_join_body(&body).to_string()
}

#[test]
fn routes_and_methods() {
    let mut api = api(None);
    let cases: &[(Method, &str, u16, &str)] = &[
        (Method::Get, "/healthz", 200, ""),
        (Method::Head, "/healthz", 200, ""),
        (Method::Get, "/nope", 404, "not_found"),
        (Method::Get, "/v1/pairs/p/a/x", 404, "not_found"),
        (Method::Get, "/v1/pairs/p/a/events/x", 404, "not_found"),
        (Method::Put, "/v1/pairs/p/a", 405, "method_not_allowed"),
        (Method::Get, "/v1/pairs", 405, "method_not_allowed"),
        (Method::Options, "/v1/pairs", 405, "method_not_allowed"),
        (Method::Post, "/v1/pairs/bad.id/a", 400, "bad_pair"),
        (Method::Post, "/v1/pairs/bad.id/c", 400, "bad_pair"),
        (Method::Post, "/v1/pairs/p/c", 400, "bad_side"),
        (Method::Post, "/v1/pairs//a", 400, "bad_pair"),
        (Method::Get, "/v1/pairs/p/a/events", 401, "unauthorized"),
        (
            Method::Get,
            "/v1/pairs/p/a/events?after=x",
            400,
            "bad_query",
        ),
        (Method::Delete, "/v1/pairs/p/a", 401, "unauthorized"),
        // Absolute-form targets (RFC 9112 §3.2.2) are their path.
        (Method::Get, "http://example/healthz", 200, ""),
        (Method::Get, "HTTPS://example:8080/healthz", 200, ""),
        (
            Method::Get,
            "http://example/v1/pairs/p/a/events",
            401,
            "unauthorized",
        ),
        (Method::Get, "http://example", 404, "not_found"),
        (Method::Get, "http://example?/healthz", 404, "not_found"),
        (Method::Get, "ftp://example/healthz", 404, "not_found"),
    ];
    for &(method, target, status, want) in cases {
        let r = respond(&mut api, &request(method, target, None, b""));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, want),
            "{method:?} {target}"
        );
        if status == 405 {
            assert!(r.allow.is_some());
        }
        // A malformed request (ids, query) closes its connection.
        assert_eq!(r.close, status == 400, "{method:?} {target}");
    }
}

#[test]
fn join_send_poll() {
    let mut api = api(None);
    let a = respond(
        &mut api,
        &request(Method::Post, "/v1/pairs/p/a", None, b"ignored"),
    );
    assert_eq!(a.status, 201);
    let ta = token_of(&a);
    let body = String::from_utf8(a.body.to_vec()).unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"pair":"p","side":"a","session":"{ta}","peer":"offline","poll_timeout_ms":25000,"session_ttl_ms":60000}}"#
        )
    );
    let b = respond(&mut api, &request(Method::Post, "/v1/pairs/p/b", None, b""));
    let tb = token_of(&b);
    assert!(String::from_utf8(b.body.into_owned())
        .unwrap()
        .contains(r#""peer":"online""#));
    let auth_b = format!("Bearer {tb}");
    let sent = respond(
        &mut api,
        &request(
            Method::Post,
            "/v1/pairs/p/b/messages",
            Some(&auth_b),
            "héllo\n".as_bytes(),
        ),
    );
    assert_eq!((sent.status, sent.body.as_ref()), (202, b"{}".as_slice()));
    let auth_a = format!("bearer {ta}");
    let polled = respond(
        &mut api,
        &request(
            Method::Get,
            "/v1/pairs/p/a/events?after=1&timeout_ms=0",
            Some(&auth_a),
            b"",
        ),
    );
    assert_eq!(
        String::from_utf8(polled.body.into_owned()).unwrap(),
        "{\"peer\":\"online\",\"events\":[{\"seq\":2,\"type\":\"message\",\"data\":\"héllo\\n\"}]}"
    );
    // Resume with the own token: 200, same token.
    let again = respond(
        &mut api,
        &request(Method::Post, "/v1/pairs/p/a", Some(&auth_a), b""),
    );
    assert_eq!((again.status, token_of(&again)), (200, ta.clone()));
    let bad_after = respond(
        &mut api,
        &request(
            Method::Get,
            "/v1/pairs/p/a/events?after=9",
            Some(&auth_a),
            b"",
        ),
    );
    assert_eq!(
        (bad_after.status, code(&bad_after).as_str()),
        (400, "bad_after")
    );
    let wrong_side = respond(
        &mut api,
        &request(
            Method::Get,
            "/v1/pairs/p/b/events?timeout_ms=0",
            Some(&auth_a),
            b"",
        ),
    );
    assert_eq!(
        (wrong_side.status, code(&wrong_side).as_str()),
        (404, "no_session")
    );
    let left = respond(
        &mut api,
        &request(Method::Delete, "/v1/pairs/p/a", Some(&auth_a), b""),
    );
    assert_eq!(left.status, 204);
    let gone = respond(
        &mut api,
        &request(Method::Post, "/v1/pairs/p/b/messages", Some(&auth_b), b"x"),
    );
    assert_eq!((gone.status, code(&gone).as_str()), (409, "peer_offline"));
}

#[test]
fn send_validation() {
    let mut api = api(None);
    let a = respond(&mut api, &request(Method::Post, "/v1/pairs/p/a", None, b""));
    let auth = format!("Bearer {}", token_of(&a));
    let bad_utf8 = respond(
        &mut api,
        &request(Method::Post, "/v1/pairs/p/a/messages", Some(&auth), b"\xff"),
    );
    assert_eq!(code(&bad_utf8), "bad_utf8");
    assert!(
        !bad_utf8.close,
        "a body that is not UTF-8 is not a malformed request"
    );
    for key in [&b""[..], b"has space", &[b'k'; 65], b"\x7f"] {
        let mut req = request(Method::Post, "/v1/pairs/p/a/messages", Some(&auth), b"x");
        req.idempotency_key = Some(key);
        let r = respond(&mut api, &req);
        assert_eq!(code(&r), "bad_idempotency_key");
        assert!(r.close, "a malformed header closes the connection");
    }
    for bad in ["Basic abc", "Bearer", "Bearer garbage", "Token x"] {
        let r = respond(
            &mut api,
            &request(Method::Post, "/v1/pairs/p/a/messages", Some(bad), b"x"),
        );
        assert_eq!(
            (r.status, code(&r).as_str()),
            (401, "unauthorized"),
            "{bad}"
        );
    }
}

#[test]
fn cors_preflight_when_configured() {
    let mut api = api(Some("https://app.example"));
    let r = respond(
        &mut api,
        &request(Method::Options, "/v1/pairs/p/a/events", None, b""),
    );
    assert_eq!(
        (r.status, r.preflight, r.allow),
        (204, true, Some("GET, OPTIONS"))
    );
}

#[test]
fn minted_pair_ids_are_valid_and_distinct() {
    let mut api = api(None);
    let one = respond(&mut api, &request(Method::Post, "/v1/pairs", None, b""));
    assert_eq!(one.status, 201);
    let body = String::from_utf8(one.body.into_owned()).unwrap();
    let id = body
        .trim_start_matches("{\"pair\":\"")
        .trim_end_matches("\"}");
    assert_eq!(id.len(), 22);
    assert!(ids::parse_pair(id).is_some());
}
