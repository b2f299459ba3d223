//! Operations as API.md §2 "Operations" and §4 fix them: /healthz,
//! /metrics, /v1/cluster, CORS, the command line and environment, the
//! connection and session limits, and the SIGTERM/SIGINT drain.

mod common;

use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn healthz_is_200_ok_text_plain() {
    let server = Server::start(&[]);
    let r = server.get("/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_common_headers(&r);
    assert_eq!(r.text(), "ok");
    let ct = r.header("content-type").expect("Content-Type");
    assert!(ct.starts_with("text/plain"), "{r:?}");
    // HTTP/1.0 clients get it too.
    let mut c = server.conn();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));
}

#[test]
fn metrics_are_prometheus_text_with_help_and_type() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    join(&mut c, "m", "a");
    let m = metrics(&server);
    assert!(!m.samples.is_empty(), "no samples");
    for s in &m.samples {
        assert!(
            s.name.starts_with("pairlink_"),
            "metric without the pairlink_ prefix: {s:?}"
        );
        let family = m
            .family_of(&s.name)
            .unwrap_or_else(|| panic!("sample without a TYPE line: {s:?}"));
        assert!(
            m.help.contains(&family),
            "family {family} without a HELP line"
        );
    }
    for (name, _) in &m.types {
        assert!(
            name.starts_with("pairlink_"),
            "TYPE of a name without the prefix: {name}"
        );
    }
    for part in [
        "connections",
        "sessions",
        "polls",
        "messages",
        "lookups",
        "http_responses",
        "peers",
    ] {
        assert!(
            m.types.iter().any(|(n, _)| n.contains(part)),
            "no metric family named like pairlink_*{part}*: {:?}",
            m.types
        );
    }
}

/// Samples whose name contains `part` and whose value moved by `delta`.
fn moved(before: &Metrics, after: &Metrics, part: &str, delta: f64) -> Vec<String> {
    after
        .samples
        .iter()
        .filter(|s| s.name.contains(part))
        .filter(|s| {
            let old = before.value(&s.name, &s.labels).unwrap_or(0.0);
            (s.value - old - delta).abs() < 1e-9
        })
        .map(|s| format!("{}{{{}}}", s.name, s.labels))
        .collect()
}

#[test]
fn metrics_live_sessions_follow_joins_and_leaves() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let m0 = metrics(&server);
    let a = join(&mut c, "gauge", "a");
    let m1 = metrics(&server);
    assert!(
        !moved(&m0, &m1, "sessions", 1.0).is_empty(),
        "no sessions metric rose by 1 after a join"
    );
    let _b = join(&mut c, "gauge", "b");
    let m2 = metrics(&server);
    assert!(
        !moved(&m1, &m2, "sessions", 1.0).is_empty(),
        "no sessions metric rose by 1 after a second join"
    );
    leave(&mut c, &a);
    let m3 = metrics(&server);
    assert!(
        !moved(&m2, &m3, "sessions", -1.0).is_empty(),
        "no sessions metric fell by 1 after a leave"
    );
}

#[test]
fn metrics_waiting_polls_gauge() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let a = join(&mut c, "polls", "a");
    let m0 = metrics(&server);
    let mut waiter = server.conn();
    write_poll(
        &mut waiter,
        "polls",
        "a",
        &a.token,
        "after=0&timeout_ms=5000",
    );
    std::thread::sleep(Duration::from_millis(300));
    let m1 = metrics(&server);
    let up = moved(&m0, &m1, "polls", 1.0);
    assert!(
        !up.is_empty(),
        "no polls metric rose by 1 while a poll waits"
    );
    leave(&mut c, &a);
    parse_poll(&waiter.read_response());
    let m2 = metrics(&server);
    let back: Vec<String> = moved(&m1, &m2, "polls", -1.0);
    assert!(
        up.iter().any(|u| back.contains(u)),
        "waiting polls gauge {up:?} did not fall back: {back:?}"
    );
}

#[test]
fn metrics_count_messages_and_responses_by_status() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let (_a, b) = pair_up(&mut c, "count");
    let m0 = metrics(&server);
    send(&mut c, &b, "one");
    send(&mut c, &b, "two");
    let r = c.request("GET", "/nope", &[], None);
    assert_eq!(r.status, 404);
    let m1 = metrics(&server);
    assert!(
        !moved(&m0, &m1, "messages", 2.0).is_empty(),
        "no messages metric rose by 2 after 2 sends"
    );
    let by_404: Vec<String> = moved(&m0, &m1, "http_responses", 1.0)
        .into_iter()
        .filter(|s| s.contains("\"404\""))
        .collect();
    assert!(
        !by_404.is_empty(),
        "no http_responses series labelled \"404\" rose by 1"
    );
    let by_202: Vec<String> = moved(&m0, &m1, "http_responses", 2.0)
        .into_iter()
        .filter(|s| s.contains("\"202\""))
        .collect();
    assert!(
        !by_202.is_empty(),
        "no http_responses series labelled \"202\" rose by 2"
    );
}

#[test]
fn metrics_open_connections() {
    let server = Server::start(&[]);
    let m0 = metrics(&server);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = server.conn();
        assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
        open.push(c);
    }
    let m1 = metrics(&server);
    assert!(
        !moved(&m0, &m1, "connections", 3.0).is_empty(),
        "no connections metric rose by 3 with 3 more open"
    );
}

#[test]
fn cluster_of_one_node() {
    let server = Server::start(&[]);
    let r = server.get("/v1/cluster");
    let j = assert_json(&r, 200);
    assert_eq!(
        j,
        Json::parse(br#"{"node":"local","peers":[]}"#).unwrap(),
        "{r:?}"
    );
    let named = Server::start(&["--node", "n7"]);
    let r = named.get("/v1/cluster");
    let j = assert_json(&r, 200);
    assert_eq!(
        j,
        Json::parse(br#"{"node":"n7","peers":[]}"#).unwrap(),
        "{r:?}"
    );
    // The node name is the token's home.
    let mut c = named.conn();
    let a = join(&mut c, "home", "a");
    assert_token_shape(&a.token, "n7");
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn cors_preflights_and_headers_when_origin_is_set() {
    let origin = "https://app.example";
    let server = Server::start(&["--cors-origin", origin]);
    let cases: [(&str, &str, &[&str]); 4] = [
        ("/v1/pairs", "POST", &["post"]),
        ("/v1/pairs/p/a", "POST", &["post", "delete"]),
        ("/v1/pairs/p/a/events", "GET", &["get"]),
        ("/v1/pairs/p/b/messages", "POST", &["post"]),
    ];
    for (path, method, must) in cases {
        let mut c = server.conn();
        let r = c.request(
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type, idempotency-key",
                ),
            ],
            None,
        );
        assert_eq!(r.status, 204, "preflight {path}: {r:?}");
        assert_common_headers(&r);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{r:?}"
        );
        let methods = list(r.header("access-control-allow-methods"));
        for m in must {
            assert!(
                methods.iter().any(|x| x == m),
                "preflight {path}: Allow-Methods {methods:?} lacks {m}"
            );
        }
        let headers = list(r.header("access-control-allow-headers"));
        for h in ["authorization", "content-type", "idempotency-key"] {
            assert!(
                headers.iter().any(|x| x == h),
                "preflight {path}: Allow-Headers {headers:?} lacks {h}"
            );
        }
        let age = r
            .header("access-control-max-age")
            .unwrap_or_else(|| panic!("no Max-Age: {r:?}"));
        assert!(
            !age.is_empty() && age.bytes().all(|b| b.is_ascii_digit()),
            "Max-Age {age:?}"
        );
        // The connection goes on after a preflight.
        assert_eq!(c.request("GET", "/healthz", &[], None).status, 200);
    }
    // API responses carry the origin, errors included.
    let mut c = server.conn();
    let o = [("Origin", origin)];
    let r = c.request("POST", "/v1/pairs", &o, None);
    assert_json(&r, 201);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let r = c.request("POST", "/v1/pairs/cors/a", &o, Some(b""));
    let a = check_join(&r, 201, "cors", "a");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let r = c.request("POST", "/v1/pairs/cors/a", &o, Some(b""));
    assert_error(&r, 409, "side_taken");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let auth = bearer(&a.token);
    let r = c.request(
        "GET",
        "/v1/pairs/cors/a/events?timeout_ms=0",
        &[("Origin", origin), ("Authorization", &auth)],
        None,
    );
    parse_poll(&r);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let r = c.request("GET", "/v1/pairs/cors/a/events?timeout_ms=0", &o, None);
    assert_error(&r, 401, "unauthorized");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let r = c.request(
        "POST",
        "/v1/pairs/cors/a/messages",
        &[("Origin", origin), ("Authorization", &auth)],
        Some(b"x"),
    );
    assert_error(&r, 409, "peer_offline");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    let r = c.request(
        "DELETE",
        "/v1/pairs/cors/a",
        &[("Origin", origin), ("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
}

#[test]
fn no_cors_without_the_flag() {
    let server = Server::start(&[]);
    let mut c = server.conn();
    let r = c.request(
        "POST",
        "/v1/pairs/nocors/a",
        &[("Origin", "https://app.example")],
        Some(b""),
    );
    check_join(&r, 201, "nocors", "a");
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
    let r = c.request(
        "OPTIONS",
        "/v1/pairs/nocors/a",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_error(&r, 405, "method_not_allowed");
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
}

#[test]
fn help_lists_every_option_and_exits_0() {
    let out = run_to_exit(&["--help"], &[], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for opt in [
        "--listen",
        "--node",
        "--cluster-listen",
        "--peer",
        "--cookie-file",
        "--poll-timeout",
        "--session-ttl",
        "--heartbeat",
        "--header-timeout",
        "--max-connections",
        "--max-sessions",
        "--max-message-bytes",
        "--max-session-buffer",
        "--max-total-buffer",
        "--cors-origin",
        "--log-level",
        "--help",
        "--version",
    ] {
        assert!(
            out.stdout.contains(opt),
            "--help does not mention {opt}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn version_prints_the_version_and_exits_0() {
    let out = run_to_exit(&["--version"], &[], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out:?}");
    assert!(out.stdout.contains("pairlink"), "{out:?}");
}

fn normalize(s: &str) -> String {
    s.to_ascii_lowercase().replace('_', "-")
}

#[test]
fn bad_options_exit_2_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("pairlink-badopts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short_cookie = dir.join("short-cookie");
    std::fs::write(&short_cookie, "  short secret \n").unwrap();
    let short_cookie = short_cookie.to_str().unwrap().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // (args, env, a word the line must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--bogus"], vec![], "bogus"),
        (vec!["--listen", "nonsense"], vec![], "listen"),
        (vec!["--listen"], vec![], "listen"),
        (vec!["--poll-timeout", "5"], vec![], "poll-timeout"),
        (vec!["--poll-timeout", "5h"], vec![], "poll-timeout"),
        (vec!["--poll-timeout", "-1s"], vec![], "poll-timeout"),
        (vec!["--session-ttl", "abc"], vec![], "session-ttl"),
        (vec!["--header-timeout", ""], vec![], "header-timeout"),
        (vec!["--heartbeat", "1x"], vec![], "heartbeat"),
        (vec!["--max-connections", "x"], vec![], "max-connections"),
        (vec!["--max-connections", "-1"], vec![], "max-connections"),
        (vec!["--max-sessions", "1.5"], vec![], "max-sessions"),
        (
            vec!["--max-message-bytes", "lots"],
            vec![],
            "max-message-bytes",
        ),
        (
            vec!["--max-session-buffer", ""],
            vec![],
            "max-session-buffer",
        ),
        (
            vec!["--max-total-buffer", "1e9"],
            vec![],
            "max-total-buffer",
        ),
        (vec!["--log-level", "loud"], vec![], "log-level"),
        (vec!["--cluster-listen", "127.0.0.1:0"], vec![], "cookie"),
        (
            vec![
                "--cluster-listen",
                "127.0.0.1:0",
                "--cookie-file",
                "/nonexistent/pairlink/cookie",
            ],
            vec![],
            "cookie",
        ),
        (
            vec![
                "--cluster-listen",
                "127.0.0.1:0",
                "--cookie-file",
                &short_cookie,
            ],
            vec![],
            "cookie",
        ),
        (vec!["--peer", "noequals"], vec![], "peer"),
        (vec!["stray-argument"], vec![], "stray-argument"),
        // A node name is embedded in tokens of [A-Za-z0-9._~-] split at '.'.
        (vec!["--node", "has space"], vec![], "node"),
        (vec!["--node", "dot.ted"], vec![], "node"),
        (vec!["--node", ""], vec![], "node"),
        (vec![], vec![("PAIRLINK_SESSION_TTL", "zz")], "session-ttl"),
        (
            vec![],
            vec![("PAIRLINK_MAX_CONNECTIONS", "many")],
            "max-connections",
        ),
        (vec![], vec![("PAIRLINK_LOG_LEVEL", "shouty")], "log-level"),
    ];
    let mut failures = Vec::new();
    for (args, env, word) in cases {
        let mut all: Vec<&str> = args.clone();
        if !args.iter().any(|a| a.starts_with("--listen")) {
            all.extend(["--listen", listen.as_str()]);
        }
        let out = run_to_exit(&all, &env, Duration::from_secs(5));
        let line = out.stderr.trim_end();
        let ok = out.status.code() == Some(2)
            && !line.is_empty()
            && !line.contains('\n')
            && normalize(line).contains(word);
        if !ok {
            failures.push(format!(
                "{all:?} env {env:?}: expected exit 2 and one line naming {word:?}; got {:?}, stderr {:?}",
                out.status.code(),
                out.stderr
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} bad cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_log_level_is_accepted() {
    for level in ["error", "warn", "info", "debug", "trace"] {
        let server = Server::start(&["--log-level", level]);
        let mut c = server.conn();
        let (_a, b) = pair_up(&mut c, "logs");
        send(&mut c, &b, "x");
        assert_eq!(server.stdout(), "", "logs go to stderr (level {level})");
    }
}

#[test]
fn durations_take_ms_s_and_m() {
    let server = Server::start(&["--poll-timeout", "1500ms", "--session-ttl", "1m"]);
    let mut c = server.conn();
    let a = join(&mut c, "units", "a");
    assert_eq!((a.poll_timeout_ms, a.session_ttl_ms), (1500, 60_000));
    let server = Server::start(&[
        "--poll-timeout",
        "2s",
        "--session-ttl",
        "90s",
        "--header-timeout",
        "2500ms",
        "--heartbeat",
        "250ms",
    ]);
    let mut c = server.conn();
    let a = join(&mut c, "units", "a");
    assert_eq!((a.poll_timeout_ms, a.session_ttl_ms), (2000, 90_000));
}

#[test]
fn environment_configures_the_server() {
    let origin = "https://env.example";
    let server = Server::start_with(
        &[],
        &[
            ("PAIRLINK_SESSION_TTL", "2s"),
            ("PAIRLINK_POLL_TIMEOUT", "1500ms"),
            ("PAIRLINK_NODE", "envnode"),
            ("PAIRLINK_MAX_SESSIONS", "2"),
            ("PAIRLINK_CORS_ORIGIN", origin),
            ("PAIRLINK_MAX_MESSAGE_BYTES", "4"),
        ],
        ListenVia::Env,
    );
    let mut c = server.conn();
    let r = c.request("POST", "/v1/pairs/env/a", &[("Origin", origin)], Some(b""));
    let a = check_join(&r, 201, "env", "a");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    assert_eq!((a.poll_timeout_ms, a.session_ttl_ms), (1500, 2000));
    assert_token_shape(&a.token, "envnode");
    let j = assert_json(&server.get("/v1/cluster"), 200);
    assert_eq!(j.str("node"), "envnode");
    let b = join(&mut c, "env", "b");
    let r = join_raw(&mut c, "env2", "a", None);
    assert_error(&r, 503, "overloaded");
    send(&mut c, &b, "1234");
    let r = send_raw(&mut c, &b, b"12345", None);
    assert_error(&r, 413, "too_large");
}

#[test]
fn a_misspelt_variable_is_named_in_the_log() {
    let server = Server::start_with(&[], &[("PAIRLINK_MAX_CONECTIONS", "5")], ListenVia::Flag);
    server.assert_serving();
    let log = server.stderr();
    assert!(
        log.contains("PAIRLINK_MAX_CONECTIONS is not a pairlink variable; ignored"),
        "{log}"
    );
}

#[test]
fn a_flag_beats_the_environment() {
    let server = Server::start_with(
        &[
            "--session-ttl",
            "3s",
            "--node",
            "flagnode",
            "--poll-timeout",
            "700ms",
        ],
        &[
            ("PAIRLINK_SESSION_TTL", "9s"),
            ("PAIRLINK_NODE", "envnode"),
            ("PAIRLINK_POLL_TIMEOUT", "5s"),
            // The flag --listen (added by the harness) must win over this.
            ("PAIRLINK_LISTEN", "127.0.0.1:1"),
        ],
        ListenVia::Flag,
    );
    let mut c = server.conn();
    let a = join(&mut c, "flags", "a");
    assert_eq!((a.poll_timeout_ms, a.session_ttl_ms), (700, 3000));
    assert_token_shape(&a.token, "flagnode");
    let j = assert_json(&server.get("/v1/cluster"), 200);
    assert_eq!(j.str("node"), "flagnode");
}

/// A connection the server has accepted (it answered /healthz on it);
/// retries while earlier connections are still being closed.
fn accepted_conn(server: &Server) -> Conn {
    for _ in 0..40 {
        let mut c = server.conn();
        match c.try_send(&build_request("GET", "/healthz", &[], None)) {
            Ok(()) => {}
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        if let Ok(r) = c.try_read_response() {
            if r.status == 200 {
                return c;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no connection was accepted within 2 s");
}

#[test]
fn over_max_connections_new_connections_get_503_then_close() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut c1 = accepted_conn(&server);
    let mut c2 = accepted_conn(&server);
    let mut c3 = server.conn();
    // The 503 comes without a request; a server that waits for one gets it.
    c3.set_read_timeout(Duration::from_millis(1500));
    let r = match c3.try_read_response() {
        Ok(r) => r,
        Err(ReadError::Timeout(b)) if b.is_empty() => {
            c3.set_read_timeout(IO_TIMEOUT);
            c3.send(&build_request("GET", "/healthz", &[], None));
            c3.read_response()
        }
        Err(e) => panic!("third connection: {}", describe(&e)),
    };
    assert_error(&r, 503, "overloaded");
    assert_closes(&mut c3, &r);
    // The two admitted connections are unaffected.
    assert_eq!(c1.request("GET", "/healthz", &[], None).status, 200);
    assert_eq!(c2.request("GET", "/healthz", &[], None).status, 200);
    // Once one closes, a new connection is admitted.
    drop(c1);
    let mut c4 = accepted_conn(&server);
    assert_eq!(c4.request("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn out_of_file_descriptors_new_connections_get_503_not_silence() {
    // 48 open files, far below what --max-connections 10000 needs: the
    // node says so at start, and connections past what it can hold get
    // 503 from its spare descriptor instead of waiting unanswered.
    let server = Server::start_with_open_files(48, &[]);
    let mut conns: Vec<Conn> = (0..80)
        .map(|_| {
            let mut c = server.conn();
            c.send(&build_request("GET", "/healthz", &[], None));
            c
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in &mut conns {
        c.set_read_timeout(Duration::from_secs(5));
        let status = match c.try_read_response() {
            Ok(r) => {
                if r.status == 503 {
                    assert_error(&r, 503, "overloaded");
                }
                r.status
            }
            Err(e) => panic!("a connection got no answer: {}", describe(&e)),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(statuses.get(&200).is_some_and(|&n| n >= 10), "{statuses:?}");
    assert!(statuses.get(&503).is_some_and(|&n| n >= 1), "{statuses:?}");
    assert_eq!(statuses.values().sum::<i32>(), 80, "{statuses:?}");
    drop(conns);
    // The node frees their descriptors as it reads the closes, which may
    // take a moment on a busy machine: then it serves again.
    let served = (0..20).any(|_| {
        let ok = server.get("/healthz").status == 200;
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(
        served,
        "no /healthz 200 within 2 s of closing the connections"
    );
    let log = server.stderr();
    assert!(log.contains("the open-file limit is 48"), "{log}");
    let failures = log.matches("accept failed").count();
    assert!(
        (1..=3).contains(&failures),
        "{failures} accept failure lines:\n{log}"
    );
}

#[test]
fn over_max_sessions_joins_get_503_overloaded() {
    let server = Server::start(&["--max-sessions", "2"]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "full");
    let r = join_raw(&mut c, "other", "a", None);
    assert_error(&r, 503, "overloaded");
    assert!(
        !r.says_close(),
        "an overloaded join is an ordinary answer: {r:?}"
    );
    // Resuming an existing session creates none: still allowed.
    let r = join_raw(&mut c, "full", "a", Some(&a.token));
    check_join(&r, 200, "full", "a");
    // The live sessions work as usual.
    send(&mut c, &b, "still here");
    assert_eq!(poll(&mut c, &a, 1, 0).events, vec![msg(2, "still here")]);
    // A leave frees a slot.
    leave(&mut c, &b);
    let x = join(&mut c, "other", "a");
    assert_eq!(x.peer, "offline");
    let r = join_raw(&mut c, "other", "b", None);
    assert_error(&r, 503, "overloaded");
}

/// Reads an answer the drain gave to a waiting poll: 200, with nothing or
/// with `peer_offline` `shutdown` as its one event.
fn drained_poll(c: &mut Conn, next_seq: u64) -> Poll {
    let r = c.read_response();
    let p = parse_poll(&r);
    assert!(
        p.events.is_empty() || p.events == vec![offline(next_seq, "shutdown")],
        "a poll answered by the drain holds nothing or peer_offline shutdown: {r:?}"
    );
    p
}

fn drain_test(signal: &str) {
    let mut server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "drain");
    let mut wa = server.conn();
    write_poll(&mut wa, "drain", "a", &a.token, "after=1&timeout_ms=20000");
    let mut wb = server.conn();
    write_poll(&mut wb, "drain", "b", &b.token, "after=1&timeout_ms=20000");
    // A keep-alive connection that is open, idle, when the drain starts.
    let mut idle = server.conn();
    assert_eq!(idle.request("GET", "/healthz", &[], None).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal(signal);
    let pa = drained_poll(&mut wa, 2);
    let pb = drained_poll(&mut wb, 2);
    assert!(
        ms_since(t) < 3000,
        "waiting polls answered {} ms after SIG{signal}",
        ms_since(t)
    );
    eprintln!("SIG{signal}: a's poll got {pa:?}, b's poll got {pb:?}");
    // No new session during the drain: 503 shutting_down, or the
    // connection is already closed.
    let sent = idle.try_send(&build_request("POST", "/v1/pairs/late/a", &[], Some(b"")));
    if sent.is_ok() {
        match idle.try_read_response() {
            Ok(r) => assert_error(&r, 503, "shutting_down"),
            Err(ReadError::Closed(b)) | Err(ReadError::Reset(b)) if b.is_empty() => {}
            Err(e) => panic!("request during the drain: {}", describe(&e)),
        }
    }
    let status = server.wait_exit(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIG{signal}"));
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
    assert!(ms_since(t) < 5000);
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
        "still accepting after exit"
    );
    assert_eq!(server.stdout(), "", "logs go to stderr, nothing to stdout");
    assert!(!server.stderr().is_empty(), "the server logs to stderr");
}

#[test]
fn sigterm_drains_answers_waiting_polls_and_exits_0() {
    drain_test("TERM");
}

#[test]
fn sigint_drains_answers_waiting_polls_and_exits_0() {
    drain_test("INT");
}

#[test]
fn sighup_drains_too() {
    // No configuration to reload: a hang-up (a closed terminal) drains
    // rather than killing the node without a word.
    drain_test("HUP");
}

/// Requests already coming in when the drain starts are answered, not cut
/// off: one whose body is still arriving, and one pipelined behind a
/// waiting poll. Both get `503 shutting_down` (API.md: "new requests
/// during a drain get 503"), the poll its `200`.
#[test]
fn requests_received_during_a_drain_are_answered_503() {
    let mut server = Server::start(&[]);
    let mut c = server.conn();
    let (a, b) = pair_up(&mut c, "dr503");
    // A send whose head has arrived, and 3 of its 10 body bytes.
    let path = session_path("dr503", "a", "/messages");
    let auth = bearer(&a.token);
    let mut slow = server.conn();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Length: 10\r\n\r\nabc"
    );
    slow.send(head.as_bytes());
    // A waiting poll with a send pipelined behind it.
    let mut piped = server.conn();
    write_poll(
        &mut piped,
        "dr503",
        "b",
        &b.token,
        "after=1&timeout_ms=20000",
    );
    let bpath = session_path("dr503", "b", "/messages");
    let bauth = bearer(&b.token);
    let headers = [("Authorization", bauth.as_str())];
    piped.send(&build_request("POST", &bpath, &headers, Some(b"behind")));
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    slow.send(b"defghij");
    let r = slow.read_response();
    assert_error(&r, 503, "shutting_down");
    drained_poll(&mut piped, 2);
    let r = piped.read_response();
    assert_error(&r, 503, "shutting_down");
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM");
}

#[test]
fn sighup_ignored_at_start_stays_ignored() {
    // `nohup` starts a program with SIGHUP ignored: it asked the node to
    // outlive the terminal, so a hang-up must not drain it.
    let mut server = Server::start_after_shell("trap '' HUP", &[]);
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.is_running(),
        "SIGHUP ended a node started with it ignored"
    );
    server.assert_serving();
}

#[test]
fn sigterm_with_nothing_going_on_exits_0_quickly() {
    let mut server = Server::start(&[]);
    let t = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(ms_since(t) < 3000, "idle drain took {} ms", ms_since(t));
}
