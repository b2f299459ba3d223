//! The command line of `pairlink-bench`.

use super::http::Url;
use std::ffi::OsString;
use std::time::Duration;

/// Pairs, sessions or concurrency beyond this are refused: each needs at
/// least one socket, and the soft limit of open files is far below.
pub const COUNT_MAX: u64 = 1_000_000;
/// Longest run accepted for any phase.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Largest message the relay sends.
pub const MESSAGE_BYTES_MAX: usize = 65_536;
/// Shortest message: it carries the message number and the send time.
pub const MESSAGE_BYTES_MIN: usize = 24;

/// The usage text.
pub const HELP: &str = "\
pairlink-bench: load generator for pairlink (and for nginx + Nchan)

Usage: pairlink-bench WORKLOAD [OPTIONS]

Workloads:
  relay     P pairs ping-pong messages for D seconds, both sides always
            keeping a poll waiting. Messages/s and one-way latency (send
            start to the poll answer that carries the message).
  pairing   N pairs at concurrency C: a joins and polls, b joins, a's poll
            returns peer_online, both leave. Latency from b's join start
            to a's peer_online, and pairings/s.
  idle      N sessions each with one poll waiting; the server's RSS before
            and with them (needs --pid), bytes per waiting poll.

Options:
  --url URL            server, http://HOST:PORT[/prefix]; repeat for
                       several nodes: side a and side b then go to
                       different nodes        (default http://127.0.0.1:8080)
  --target T           pairlink | nchan       (default pairlink)
  --pairs N            relay pairs (64) / pairing pairs (1000)
  --duration DUR       relay: measured time (10s); pairing: no pairing
                       starts after it (60s); idle: how long the polls
                       are held (2s)
  --warmup DUR         relay: time before measuring starts (1s)
  --concurrency N      pairing: pairs in flight; idle: joins in flight (64)
  --sessions N         idle: waiting polls (1000)
  --message-bytes N    relay: message size, 24..65536 (32)
  --idempotency-keys   relay: send each message with an Idempotency-Key
                       (pairlink only; off, as Nchan has no such check)
  --timeout DUR        deadline of every request but polls (5s)
  --poll-timeout DUR   how long a poll may wait, sent as timeout_ms; the
                       poll's deadline is this plus --timeout (20s).
                       Nchan holds a poll for its own timeout (20s in
                       benches/nchan/nginx.conf) whatever this says.
  --pid PID            the server's process; repeat to sum several (nginx
                       master and worker). Adds CPU seconds and RSS.
  --seed N             names the pairs of this run (default: from the clock)
  --allow-remote       accept URLs that are not loopback addresses
  -h, --help

--target nchan (nginx + Nchan, benches/nchan/): a pair p is two channels,
p-a (a's inbox) and p-b. A poll is GET /sub/p-a (Nchan long-poll, its
Last-Modified/Etag cursor), a send POST /pub/p-b, a leave DELETE /pub/p-a;
joins send nothing. Nchan has no presence, so in the pairing workload b's
join is POST /pub/p-a with the body \"peer_online\", and a's poll returning
it is the peer_online event; then both channels are deleted.

Every request has a deadline, failures are counted by kind, and a run
ends within its durations plus its requests' deadlines (set-up at most
2 minutes). The generator raises its own open-file limit (soft, up to the
hard one) to what the run needs; the server needs as many (pairlink:
--max-connections above the sessions; Nchan: start.sh sets it).

DUR is a whole number with ms, s or m (500ms, 10s, 1m).
Each run prints one JSON line of figures on stdout, then a short summary
on stderr. Exit status: 0 when the workload ran, 1 when it could not
complete anything, 2 for bad options or a run that cannot start (the
open-file limit).
";

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Ping-pong between the two sides of each pair.
    Relay,
    /// Join, meet, leave, as fast as the concurrency allows.
    Pairing,
    /// Many waiting polls, measuring the server's memory.
    Idle,
}

impl Workload {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Relay => "relay",
            Workload::Pairing => "pairing",
            Workload::Idle => "idle",
        }
    }
}

/// Which server protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// pairlink's API (API.md).
    Pairlink,
    /// nginx with the Nchan module: a pair is two channels.
    Nchan,
}

impl Target {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Pairlink => "pairlink",
            Target::Nchan => "nchan",
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Args {
    /// The workload.
    pub workload: Workload,
    /// The protocol.
    pub target: Target,
    /// The servers, as given.
    pub url_texts: Vec<String>,
    /// The servers, parsed.
    pub urls: Vec<Url>,
    /// Pairs (relay, pairing).
    pub pairs: u64,
    /// Measured time (relay), time bound (pairing), hold time (idle).
    pub duration: Duration,
    /// Relay warm-up.
    pub warmup: Duration,
    /// Pairs (pairing) or joins (idle) in flight.
    pub concurrency: u64,
    /// Idle sessions.
    pub sessions: u64,
    /// Relay message size.
    pub message_bytes: usize,
    /// Relay sends carry `Idempotency-Key` (pairlink).
    pub idempotency_keys: bool,
    /// Deadline of requests that are not polls.
    pub timeout: Duration,
    /// Poll wait.
    pub poll_timeout: Duration,
    /// Server processes to measure.
    pub pids: Vec<u32>,
    /// Names the run's pairs.
    pub seed: u64,
}

/// What the command line asks for.
pub enum Parsed {
    /// Run a workload.
    Run(Args),
    /// Print the help and exit 0.
    Help,
}

/// Parses the arguments (without the program name). `clock_seed` is the
/// seed used when `--seed` is absent.
pub fn parse(args: impl IntoIterator<Item = OsString>, clock_seed: u64) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut workload = None;
    let mut target = Target::Pairlink;
    let mut url_texts = Vec::new();
    let mut pairs = None;
    let mut duration = None;
    let mut warmup = Duration::from_secs(1);
    let mut concurrency = 64;
    let mut sessions = 1000;
    let mut message_bytes = 32;
    let mut timeout = Duration::from_secs(5);
    let mut poll_timeout = Duration::from_secs(20);
    let mut pids = Vec::new();
    let mut seed = clock_seed;
    let mut allow_remote = false;
    let mut idempotency_keys = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("url") => url_texts.push(text(&mut p, "--url")?),
            Long("target") => {
                target = match text(&mut p, "--target")?.as_str() {
                    "pairlink" => Target::Pairlink,
                    "nchan" => Target::Nchan,
                    other => return Err(format!("--target: {other:?} is not pairlink or nchan")),
                }
            }
            Long("pairs") => pairs = Some(count(&mut p, "--pairs")?),
            Long("duration") => duration = Some(dur(&mut p, "--duration")?),
            Long("warmup") => warmup = dur_or_zero(&mut p, "--warmup")?,
            Long("concurrency") => concurrency = count(&mut p, "--concurrency")?,
            Long("sessions") => sessions = count(&mut p, "--sessions")?,
            Long("message-bytes") => {
                let n = count(&mut p, "--message-bytes")? as usize;
                if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_MAX).contains(&n) {
                    return Err(format!(
                        "--message-bytes: {n} is outside {MESSAGE_BYTES_MIN}..={MESSAGE_BYTES_MAX}"
                    ));
                }
                message_bytes = n;
            }
            Long("timeout") => timeout = dur(&mut p, "--timeout")?,
            Long("poll-timeout") => {
                poll_timeout = dur(&mut p, "--poll-timeout")?;
                if poll_timeout > Duration::from_secs(120) {
                    return Err("--poll-timeout: at most 120s (pairlink's cap)".into());
                }
            }
            Long("pid") => {
                let t = text(&mut p, "--pid")?;
                pids.push(
                    t.parse()
                        .map_err(|_| format!("--pid: {t:?} is not a process id"))?,
                );
            }
            Long("seed") => {
                let t = text(&mut p, "--seed")?;
                seed = t
                    .parse()
                    .map_err(|_| format!("--seed: {t:?} is not a number"))?;
            }
            Long("allow-remote") => allow_remote = true,
            Long("idempotency-keys") => idempotency_keys = true,
            Value(v) if workload.is_none() => {
                workload = Some(match v.to_string_lossy().as_ref() {
                    "relay" => Workload::Relay,
                    "pairing" => Workload::Pairing,
                    "idle" => Workload::Idle,
                    other => {
                        return Err(format!(
                            "unknown workload {other:?} (relay, pairing or idle)"
                        ))
                    }
                })
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let workload = workload.ok_or("missing the workload: relay, pairing or idle")?;
    if url_texts.is_empty() {
        url_texts.push("http://127.0.0.1:8080".into());
    }
    let urls = url_texts
        .iter()
        .map(|u| Url::parse(u, allow_remote))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--url: {e}"))?;
    let (pairs_default, duration_default) = match workload {
        Workload::Relay => (64, Duration::from_secs(10)),
        Workload::Pairing => (1000, Duration::from_secs(60)),
        Workload::Idle => (0, Duration::from_secs(2)),
    };
    Ok(Parsed::Run(Args {
        workload,
        target,
        url_texts,
        urls,
        pairs: pairs.unwrap_or(pairs_default),
        duration: duration.unwrap_or(duration_default),
        warmup,
        concurrency,
        sessions,
        message_bytes,
        idempotency_keys,
        timeout,
        poll_timeout,
        pids,
        seed,
    }))
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    p.value()
        .map_err(|e| format!("{flag}: {e}"))?
        .into_string()
        .map_err(|_| format!("{flag}: not UTF-8"))
}

fn count(p: &mut lexopt::Parser, flag: &str) -> Result<u64, String> {
    let t = text(p, flag)?;
    match t.parse::<u64>() {
        Ok(n) if (1..=COUNT_MAX).contains(&n) && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("{flag}: {t:?} is not a number in 1..={COUNT_MAX}")),
    }
}

fn dur(p: &mut lexopt::Parser, flag: &str) -> Result<Duration, String> {
    let d = dur_or_zero(p, flag)?;
    if d.is_zero() {
        return Err(format!("{flag}: must be above zero"));
    }
    Ok(d)
}

fn dur_or_zero(p: &mut lexopt::Parser, flag: &str) -> Result<Duration, String> {
    let t = text(p, flag)?;
    parse_duration(&t)
        .ok_or_else(|| format!("{flag}: invalid duration {t:?} (use e.g. 500ms, 10s, 1m)"))
}

/// `500ms`, `10s`, `1m`; at most [`DURATION_MAX`].
pub fn parse_duration(t: &str) -> Option<Duration> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let d = match &t[digits..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return None,
    };
    (d <= DURATION_MAX).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(OsString::from), 7)? {
            Parsed::Run(a) => Ok(a),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let a = run(&["relay"]).unwrap();
        assert_eq!(a.pairs, 64);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.seed, 7);
        assert_eq!(a.urls[0].addr.port(), 8080);
        let a = run(&[
            "pairing",
            "--pairs",
            "5",
            "--url",
            "http://127.0.0.1:1",
            "--url",
            "http://127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(a.pairs, 5);
        assert_eq!(a.urls.len(), 2);
        assert!(run(&["relay", "--url", "http://192.0.2.1:80"]).is_err());
        assert!(run(&["relay", "--url", "http://192.0.2.1:80", "--allow-remote"]).is_ok());
        assert!(run(&["relay", "--duration", "5"]).is_err());
        assert!(run(&["relay", "--pairs", "0"]).is_err());
        assert_eq!(
            run(&["pairing", "--target", "nchan"]).unwrap().target,
            Target::Nchan
        );
        assert!(run(&["nope"]).is_err());
        assert!(run(&[]).is_err());
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("-1s"), None);
    }
}
