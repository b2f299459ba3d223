//! Short runs of each `pairlink-bench` workload against real servers, so
//! the load generator never rots: one node, a two-node cluster (side a and
//! side b on different nodes), nginx + Nchan when it is installed, a
//! server that is not there, and bad options. Small numbers, a second or
//! so each; nothing here asserts a speed, only that each run completes,
//! exits as documented, does all the work it was given without errors, and
//! reports it in one JSON line.

mod common;

use common::{Json, Server};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run that takes longer than this is stuck: it is killed and fails.
const RUN_TIME_MAX: Duration = Duration::from_secs(60);
/// Bound on both nodes of the test cluster seeing each other up.
const CLUSTER_UP_WITHIN: Duration = Duration::from_secs(10);
/// Cluster start attempts (a port picked as free may be taken meanwhile).
const START_TRIES_MAX: u32 = 5;

/// What one run printed.
struct Run {
    json: Json,
    stderr: String,
    code: Option<i32>,
}

/// Runs `pairlink-bench` with `args` to its end (killed after
/// [`RUN_TIME_MAX`]) and parses its one line of stdout.
fn run_bench(args: &[String]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pairlink-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairlink-bench");
    let deadline = Instant::now() + RUN_TIME_MAX;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pairlink-bench {args:?} still running after {RUN_TIME_MAX:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The outputs are a few hundred bytes, well inside a pipe's buffer, so
    // reading them after the exit cannot deadlock.
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one JSON line on stdout: {stdout:?}\nstderr: {stderr}"
    );
    let json = Json::parse(lines[0].as_bytes())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}\nstderr: {stderr}"));
    assert!(
        !stderr.trim().is_empty(),
        "{args:?}: a human summary on stderr"
    );
    Run {
        json,
        stderr,
        code: status.code(),
    }
}

/// Where and how the workloads run.
struct Setup<'a> {
    urls: &'a [String],
    /// Server processes, for `--pid`.
    pids: &'a [u32],
    /// Added to every run (`--target nchan`).
    extra: &'a [&'a str],
}

/// Runs a workload as `setup` says and checks that it exited 0 without a
/// single error.
fn bench(setup: &Setup, args: &[&str]) -> Json {
    let (urls, pids) = (setup.urls, setup.pids);
    let mut all: Vec<String> = args
        .iter()
        .chain(setup.extra)
        .map(|s| s.to_string())
        .collect();
    for u in urls {
        all.push("--url".into());
        all.push(u.clone());
    }
    for p in pids {
        all.push("--pid".into());
        all.push(p.to_string());
    }
    let run = run_bench(&all);
    assert_eq!(
        run.code,
        Some(0),
        "{all:?} exit status\n{:?}\nstderr: {}",
        run.json,
        run.stderr
    );
    assert_eq!(
        run.json.u64("errors_total"),
        0,
        "{all:?}: errors\n{:?}\nstderr: {}",
        run.json,
        run.stderr
    );
    assert!(
        run.json.get("errors").is_some(),
        "errors by kind: {:?}",
        run.json
    );
    run.json
}

/// The number member `key` (an integer or a float).
fn num(j: &Json, key: &str) -> f64 {
    match j.get(key) {
        Some(Json::Num(n)) => n
            .parse()
            .unwrap_or_else(|_| panic!("{key}: not a number: {n}")),
        other => panic!("member {key:?} is not a number ({other:?}) in {j:?}"),
    }
}

/// Latency figures present, in order, and one sample per `count`.
fn check_latency(j: &Json, count: u64) {
    let l = j
        .get("latency_us")
        .unwrap_or_else(|| panic!("no latency_us: {j:?}"));
    assert_eq!(l.u64("samples"), count, "{j:?}");
    let (p50, p90, p99, max) = (num(l, "p50"), num(l, "p90"), num(l, "p99"), num(l, "max"));
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "quantiles out of order: {j:?}"
    );
}

/// The three workloads, small.
fn run_all(setup: &Setup) {
    let relay = bench(
        setup,
        &[
            "relay",
            "--pairs",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
        ],
    );
    assert_eq!(relay.str("workload"), "relay");
    let target = if setup.extra.contains(&"nchan") {
        "nchan"
    } else {
        "pairlink"
    };
    assert_eq!(relay.str("target"), target, "{relay:?}");
    assert_eq!(relay.u64("pairs_ready"), 2, "{relay:?}");
    // At least two round trips per pair: the ping-pong goes on (a count
    // any working build reaches in far less than the half second).
    let messages = relay.u64("messages");
    assert!(messages >= 8, "{relay:?}");
    check_latency(&relay, messages);
    let server = relay
        .get("server")
        .unwrap_or_else(|| panic!("CPU read with --pid: {relay:?}"));
    assert!(num(server, "cpu_s") >= 0.0, "{relay:?}");
    let steal = num(&relay, "host_steal_pct");
    assert!((0.0..=100.0).contains(&steal), "{relay:?}");

    let pairing = bench(setup, &["pairing", "--pairs", "6", "--concurrency", "2"]);
    assert_eq!(pairing.u64("pairings"), 6, "{pairing:?}");
    check_latency(&pairing, 6);

    let idle = bench(setup, &["idle", "--sessions", "10", "--duration", "200ms"]);
    assert_eq!(idle.u64("joined"), 10, "{idle:?}");
    assert_eq!(idle.u64("polls"), 10, "{idle:?}");
    let memory = idle
        .get("server_memory")
        .unwrap_or_else(|| panic!("RSS read with --pid: {idle:?}"));
    assert!(memory.u64("rss_with_polls_bytes") > 0, "{idle:?}");
}

/// Every run left its sessions: none live or waiting afterwards.
fn assert_all_left(server: &Server) {
    let m = common::metrics(server);
    assert_eq!(m.value("pairlink_sessions_live", ""), Some(0.0), "{m:?}");
    assert_eq!(m.value("pairlink_polls_waiting", ""), Some(0.0), "{m:?}");
    server.assert_serving();
}

#[test]
fn one_node() {
    let server = Server::start(&[]);
    run_all(&Setup {
        urls: &[format!("http://{}", server.addr)],
        pids: &[server.pid()],
        extra: &[],
    });
    assert_all_left(&server);
}

/// Two real nodes, `n1` and `n2`, on loopback, each seeing the other up.
fn start_two_nodes() -> (Server, Server) {
    let mut last_error = String::new();
    for _ in 0..START_TRIES_MAX {
        let dir = common::scratch_directory();
        let cookie = dir.join("cookie");
        common::write_cookie(
            &cookie,
            &format!("bench-smoke-cookie-{}\n", std::process::id()),
        );
        let cookie = cookie.to_string_lossy().into_owned();
        let ports = common::free_ports(4);
        let node_args = |me: usize, other: usize| -> Vec<String> {
            vec![
                "--node".into(),
                format!("n{}", me + 1),
                "--cluster-listen".into(),
                format!("127.0.0.1:{}", ports[2 + me]),
                "--peer".into(),
                format!("n{}=127.0.0.1:{}", other + 1, ports[2 + other]),
                "--cookie-file".into(),
                cookie.clone(),
            ]
        };
        let n1 = match Server::try_start_on(ports[0], &node_args(0, 1)) {
            Ok(s) => s,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        let n2 = match Server::try_start_on(ports[1], &node_args(1, 0)) {
            Ok(s) => s,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        let deadline = Instant::now() + CLUSTER_UP_WITHIN;
        loop {
            let up = [&n1, &n2].iter().all(|s| {
                let r = s.get("/v1/cluster");
                r.status == 200 && r.json().arr("peers").iter().all(|p| p.str("state") == "up")
            });
            if up {
                return (n1, n2);
            }
            if Instant::now() >= deadline {
                last_error = format!("nodes not up within {CLUSTER_UP_WITHIN:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("cluster did not start after {START_TRIES_MAX} tries: {last_error}");
}

#[test]
fn two_node_cluster_cross_node() {
    let (n1, n2) = start_two_nodes();
    let urls = [format!("http://{}", n1.addr), format!("http://{}", n2.addr)];
    run_all(&Setup {
        urls: &urls,
        pids: &[n1.pid(), n2.pid()],
        extra: &[],
    });
    // Side a and side b went to different nodes: every join found its
    // peer on the other node, never on its own.
    let mut remote = 0.0;
    for node in [&n1, &n2] {
        let m = common::metrics(node);
        assert_eq!(
            m.value("pairlink_lookups_total", "outcome=\"local\""),
            Some(0.0),
            "a pair met on one node: {m:?}"
        );
        remote += m
            .value("pairlink_lookups_total", "outcome=\"remote\"")
            .unwrap_or(0.0);
        assert_all_left(node);
    }
    assert!(remote > 0.0, "no pair met across the nodes");
}

/// nginx with the Nchan module, started by benches/nchan/start.sh and
/// stopped by stop.sh when dropped.
struct Nchan {
    prefix: String,
    port: u16,
    pids: Vec<u32>,
}

impl Nchan {
    /// Starts it, or `None` (with a note) when nginx or the module is not
    /// installed here.
    fn start() -> Option<Nchan> {
        let installed = Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so").exists()
            && Command::new("nginx")
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("nginx + Nchan not installed: the Nchan smoke run is skipped");
            return None;
        }
        let port = common::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/nchan/start.sh");
        let out = Command::new(script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run benches/nchan/start.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_string)
        };
        let prefix = value("NCHAN_PREFIX=");
        let nchan = prefix.clone().map(|prefix| Nchan {
            prefix,
            port,
            pids: ["NCHAN_MASTER_PID=", "NCHAN_WORKER_PID="]
                .iter()
                .filter_map(|k| value(k)?.parse().ok())
                .collect(),
        });
        assert!(
            out.status.success() && nchan.as_ref().is_some_and(|n| n.pids.len() == 2),
            "start.sh failed: {out:?}"
        );
        nchan
    }
}

impl Drop for Nchan {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/nchan/stop.sh");
        let _ = Command::new(script).arg(&self.prefix).status();
    }
}

#[test]
fn nchan_when_installed() {
    let Some(nchan) = Nchan::start() else {
        return;
    };
    // The same runs, the same checks: the Nchan mapping must do all the
    // work without an error too.
    run_all(&Setup {
        urls: &[format!("http://127.0.0.1:{}", nchan.port)],
        pids: &nchan.pids,
        extra: &["--target", "nchan"],
    });
}

#[test]
fn no_server_is_counted_and_exits_1() {
    // A port nobody listens on: every connect is refused.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let run = run_bench(&[
        "relay".into(),
        "--pairs".into(),
        "1".into(),
        "--duration".into(),
        "100ms".into(),
        "--url".into(),
        url,
    ]);
    assert_eq!(run.code, Some(1), "{:?}\n{}", run.json, run.stderr);
    assert_eq!(run.json.u64("messages"), 0, "{:?}", run.json);
    let errors = run.json.get("errors").expect("errors by kind");
    assert!(errors.u64("connect") >= 1, "{:?}", run.json);
}

#[test]
fn bad_options_exit_2() {
    for args in [
        &["nope"][..],
        &["relay", "--url", "http://192.0.2.1:80"],
        &["relay", "--duration", "5"],
        &["relay", "--target", "nope"],
        &["relay", "--message-bytes", "10"],
        &["idle", "--sessions", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pairlink-bench"))
            .args(args)
            .output()
            .expect("run pairlink-bench");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: {out:?}");
    }
}
