//! Command line and `PAIRLINK_*` environment into a [`Config`] (API.md §4).
//!
//! Parsing runs in three steps, so that every failure is one line naming the
//! option (or environment variable) it came from:
//!
//! 1. [`lexopt`] walks the arguments and keeps each flag's raw text.
//!    `--help` and `--version` answer as soon as they are reached; only the
//!    arguments before them must be well formed.
//! 2. Each option is taken from its flag, else from `PAIRLINK_<NAME>`, else
//!    from its default, and parsed on its own (syntax and sanity caps).
//! 3. Rules between options are checked (peers need a cluster address, the
//!    cluster needs a cookie, buffers must hold a message), and last the
//!    cookie file is read, so that a typo in a cheap option is reported
//!    without touching the file system.
//!
//! Nothing here panics on input: every user-supplied value is echoed with
//! `{:?}`, which escapes control characters, so an error stays one line.

use std::ffi::OsString;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::limits::{NODE_NAME_BYTES_MAX, POLL_TIMEOUT_MS_MAX};

/// Largest accepted `--max-connections`. Each connection costs a socket and
/// buffers; far above this an operator has almost surely mistyped.
pub const MAX_CONNECTIONS_MAX: u64 = 1_000_000;
/// Largest accepted `--max-sessions`; it keeps slab keys far below `u32::MAX`.
pub const MAX_SESSIONS_MAX: u64 = 10_000_000;
/// Largest accepted `--max-message-bytes` (4 MiB). Long polling relays
/// small messages; a larger body is better sent some other way. It also
/// keeps any one message, JSON-escaped (up to 6 times longer), within one
/// `ForwardReply` frame, so a poll through another node always gets it.
pub const MAX_MESSAGE_BYTES_MAX: u64 = 4 * 1024 * 1024;

const _: () = assert!(
    MAX_MESSAGE_BYTES_MAX as usize * crate::proto::json::ESCAPED_BYTES_PER_BYTE_MAX + 4096
        <= crate::cluster::frame::FORWARD_REPLY_BODY_BYTES_MAX
);
/// Largest accepted `--max-session-buffer` (1 TiB): a sanity cap that keeps
/// sums of buffer sizes far from overflowing.
pub const MAX_SESSION_BUFFER_MAX: u64 = 1 << 40;
/// Largest accepted `--max-total-buffer` (1 TiB), for the same reason.
pub const MAX_TOTAL_BUFFER_MAX: u64 = 1 << 40;
/// Longest accepted duration for any DUR option (24 hours, in ms). Deadlines
/// are computed as `now + duration`; a bound keeps that far from overflow.
pub const DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Fewest bytes a cookie may have after trimming (API.md §4).
pub const COOKIE_BYTES_MIN: usize = 16;
/// Largest cookie file read. A cookie is a short secret; a bigger file is
/// most likely the wrong path, and reading it whole would waste memory.
pub const COOKIE_FILE_BYTES_MAX: u64 = 4096;
/// Most cluster peers. The cluster is small (every join asks every node),
/// and the bound keeps per-peer tables and lookups bounded.
pub const PEERS_MAX: usize = 256;
/// Longest `--cors-origin`; a real origin (scheme, host, port) is far shorter.
pub const CORS_ORIGIN_BYTES_MAX: usize = 256;
/// Longest host name in `--peer` (the DNS limit for a full name).
const PEER_HOST_BYTES_MAX: usize = 253;

const _: () = assert!(POLL_TIMEOUT_MS_MAX <= DURATION_MS_MAX);
const _: () = assert!(MAX_MESSAGE_BYTES_MAX <= MAX_SESSION_BUFFER_MAX);
const _: () = assert!(MAX_SESSION_BUFFER_MAX <= MAX_TOTAL_BUFFER_MAX);
const _: () = assert!(COOKIE_BYTES_MIN as u64 <= COOKIE_FILE_BYTES_MAX);

/// A cluster peer given with `--peer NAME=HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's node name.
    pub name: String,
    /// The address exactly as given (shown by `/v1/cluster`).
    pub addr: String,
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// This node's name.
    pub node: String,
    /// Node-to-node listen address; `None` for a single node.
    pub cluster_listen: Option<SocketAddr>,
    /// Cluster peers.
    pub peers: Vec<PeerSpec>,
    /// The cookie file's path.
    pub cookie_file: Option<PathBuf>,
    /// The cookie, trimmed (at least 16 bytes), when a cookie file is given.
    pub cookie: Option<Vec<u8>>,
    /// Default poll wait.
    pub poll_timeout: Duration,
    /// Idle session lifetime.
    pub session_ttl: Duration,
    /// Node heartbeat interval.
    pub heartbeat: Duration,
    /// Time allowed to send a request's headers (and again its body).
    pub header_timeout: Duration,
    /// Open HTTP connections.
    pub max_connections: usize,
    /// Live sessions.
    pub max_sessions: usize,
    /// Message body limit in bytes.
    pub max_message_bytes: usize,
    /// Unacknowledged bytes per session.
    pub max_session_buffer: usize,
    /// Unacknowledged bytes per node.
    pub max_total_buffer: usize,
    /// Allowed browser origin for CORS.
    pub cors_origin: Option<String>,
    /// Log level.
    pub log_level: log::LevelFilter,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the server.
    Run(Box<Config>),
    /// Print this help text and exit 0.
    Help(String),
    /// Print this version line and exit 0.
    Version(String),
}

/// A bad option: one line for stderr; the process exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses arguments (without the program name) and the environment.
///
/// `env` is asked for `PAIRLINK_*` variables only; an empty value counts as
/// unset. A flag beats its variable, and a variable is not even parsed when
/// its flag is given, so a bad variable can be overridden on the command
/// line. Repeating a flag other than `--peer` keeps the last value.
///
/// # Errors
///
/// A [`ConfigError`] with one line naming the option or variable for: an
/// unknown flag, a positional argument, a missing value, a value that does
/// not parse or is out of range, a broken rule between options, or an
/// unreadable or too short cookie file.
///
/// Logs a warning (the configuration still succeeds) when the cookie file is
/// readable or writable by group or others; the logger should be installed
/// before this is called for that warning to be seen.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    match read_flags(args)? {
        FlagsRead::Help => Ok(Parsed::Help(help_text())),
        FlagsRead::Version => Ok(Parsed::Version(format!(
            "pairlink {}",
            env!("CARGO_PKG_VERSION")
        ))),
        FlagsRead::Run(flags) => {
            let sources = Sources {
                flags: *flags,
                env: &env,
            };
            build(&sources).map(|config| Parsed::Run(Box::new(config)))
        }
    }
}

/// The options that take a value, in the order of [`OPTIONS`] and of the
/// help screen; `key as usize` indexes both [`OPTIONS`] and [`Flags::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Listen,
    Node,
    ClusterListen,
    Peer,
    CookieFile,
    PollTimeout,
    SessionTtl,
    Heartbeat,
    HeaderTimeout,
    MaxConnections,
    MaxSessions,
    MaxMessageBytes,
    MaxSessionBuffer,
    MaxTotalBuffer,
    CorsOrigin,
    LogLevel,
}

/// How many [`Key`]s there are.
const KEY_COUNT: usize = 16;

/// One option's names, help line and default. Keeping them in one table
/// keeps the parser, the environment names and the help screen in step.
struct Opt {
    key: Key,
    /// The flag without its leading `--`.
    long: &'static str,
    /// The environment variable (for `--peer`, the list `PAIRLINK_PEERS`).
    env: &'static str,
    metavar: &'static str,
    about: &'static str,
    /// The default as the user would type it, parsed like any other value
    /// so that the help screen cannot disagree with the behaviour; `""` when
    /// the option has none.
    default: &'static str,
    /// What the help screen says instead when there is no default.
    no_default: &'static str,
}

static OPTIONS: [Opt; KEY_COUNT] = [
    Opt {
        key: Key::Listen,
        long: "listen",
        env: "PAIRLINK_LISTEN",
        metavar: "ADDR",
        about: "HTTP address",
        default: "127.0.0.1:8080",
        no_default: "",
    },
    Opt {
        key: Key::Node,
        long: "node",
        env: "PAIRLINK_NODE",
        metavar: "NAME",
        about: "this node's name",
        default: "local",
        no_default: "",
    },
    Opt {
        key: Key::ClusterListen,
        long: "cluster-listen",
        env: "PAIRLINK_CLUSTER_LISTEN",
        metavar: "ADDR",
        about: "node-to-node address",
        default: "",
        no_default: "(default: none, single node)",
    },
    Opt {
        key: Key::Peer,
        long: "peer",
        env: "PAIRLINK_PEERS",
        metavar: "NAME=HOST:PORT",
        about: "a cluster peer; repeat for each",
        default: "",
        no_default: "",
    },
    Opt {
        key: Key::CookieFile,
        long: "cookie-file",
        env: "PAIRLINK_COOKIE_FILE",
        metavar: "PATH",
        about: "shared cluster secret",
        default: "",
        no_default: "(required with --cluster-listen)",
    },
    Opt {
        key: Key::PollTimeout,
        long: "poll-timeout",
        env: "PAIRLINK_POLL_TIMEOUT",
        metavar: "DUR",
        about: "default poll wait",
        default: "25s",
        no_default: "",
    },
    Opt {
        key: Key::SessionTtl,
        long: "session-ttl",
        env: "PAIRLINK_SESSION_TTL",
        metavar: "DUR",
        about: "idle session lifetime",
        default: "60s",
        no_default: "",
    },
    Opt {
        key: Key::Heartbeat,
        long: "heartbeat",
        env: "PAIRLINK_HEARTBEAT",
        metavar: "DUR",
        about: "node heartbeat interval",
        default: "1s",
        no_default: "",
    },
    Opt {
        key: Key::HeaderTimeout,
        long: "header-timeout",
        env: "PAIRLINK_HEADER_TIMEOUT",
        metavar: "DUR",
        about: "time to send request headers",
        default: "10s",
        no_default: "",
    },
    Opt {
        key: Key::MaxConnections,
        long: "max-connections",
        env: "PAIRLINK_MAX_CONNECTIONS",
        metavar: "N",
        about: "open HTTP connections",
        default: "10000",
        no_default: "",
    },
    Opt {
        key: Key::MaxSessions,
        long: "max-sessions",
        env: "PAIRLINK_MAX_SESSIONS",
        metavar: "N",
        about: "live sessions",
        default: "100000",
        no_default: "",
    },
    Opt {
        key: Key::MaxMessageBytes,
        long: "max-message-bytes",
        env: "PAIRLINK_MAX_MESSAGE_BYTES",
        metavar: "N",
        about: "message body limit",
        default: "65536",
        no_default: "",
    },
    Opt {
        key: Key::MaxSessionBuffer,
        long: "max-session-buffer",
        env: "PAIRLINK_MAX_SESSION_BUFFER",
        metavar: "N",
        about: "unacknowledged bytes per session",
        default: "262144",
        no_default: "",
    },
    Opt {
        key: Key::MaxTotalBuffer,
        long: "max-total-buffer",
        env: "PAIRLINK_MAX_TOTAL_BUFFER",
        metavar: "N",
        about: "unacknowledged bytes per node",
        default: "67108864",
        no_default: "",
    },
    Opt {
        key: Key::CorsOrigin,
        long: "cors-origin",
        env: "PAIRLINK_CORS_ORIGIN",
        metavar: "ORIGIN",
        about: "allowed browser origin",
        default: "",
        no_default: "(default: none)",
    },
    Opt {
        key: Key::LogLevel,
        long: "log-level",
        env: "PAIRLINK_LOG_LEVEL",
        metavar: "LEVEL",
        about: "error|warn|info|debug|trace",
        default: "info",
        no_default: "",
    },
];

fn opt(key: Key) -> &'static Opt {
    // In bounds by construction: `Key` has KEY_COUNT variants and the table
    // KEY_COUNT entries, in the same order (checked by a test).
    &OPTIONS[key as usize]
}

/// The raw flag values, before any parsing of their content.
struct Flags {
    /// The last value of each flag given, by [`Key`]; unused for `--peer`.
    values: [Option<OsString>; KEY_COUNT],
    /// Every `--peer` value, in order.
    peers: Vec<String>,
}

enum FlagsRead {
    // Boxed: the flags are large and the other answers carry nothing.
    Run(Box<Flags>),
    Help,
    Version,
}

fn read_flags(args: impl IntoIterator<Item = OsString>) -> Result<FlagsRead, ConfigError> {
    use lexopt::Arg;

    let mut flags = Flags {
        values: Default::default(),
        peers: Vec::new(),
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(lexopt_error)? {
        let found = match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(FlagsRead::Help),
            Arg::Short('V') | Arg::Long("version") => return Ok(FlagsRead::Version),
            Arg::Long(name) => OPTIONS.iter().find(|o| o.long == name),
            _ => None,
        };
        let Some(found) = found else {
            return Err(lexopt_error(arg.unexpected()));
        };
        let value = parser.value().map_err(lexopt_error)?;
        if found.key == Key::Peer {
            // The arguments are in memory already, but the bound keeps the
            // peer list (and the checks over it) as small as the cluster.
            if flags.peers.len() >= PEERS_MAX {
                return Err(ConfigError(format!("--peer: more than {PEERS_MAX} peers")));
            }
            flags.peers.push(utf8(found, value)?);
        } else {
            flags.values[found.key as usize] = Some(value);
        }
    }
    Ok(FlagsRead::Run(Box::new(flags)))
}

fn lexopt_error(error: lexopt::Error) -> ConfigError {
    ConfigError(format!("{error} (see --help)"))
}

fn utf8(opt: &Opt, value: OsString) -> Result<String, ConfigError> {
    value
        .into_string()
        .map_err(|value| ConfigError(format!("--{}: not valid UTF-8: {value:?}", opt.long)))
}

/// A parsed value and the name of the flag or variable it came from, for
/// messages about rules between options.
struct Labeled<T> {
    value: T,
    label: String,
}

/// Where option values come from: flags first, then the environment.
struct Sources<'a, E> {
    flags: Flags,
    env: &'a E,
}

impl<E: Fn(&str) -> Option<String>> Sources<'_, E> {
    /// The raw text of an option and its label, from the flag, else the
    /// environment, else the default; `None` if there is none of these.
    fn raw(&self, key: Key) -> Result<Option<(String, String)>, ConfigError> {
        let opt = opt(key);
        if let Some(value) = &self.flags.values[key as usize] {
            let value = utf8(opt, value.clone())?;
            return Ok(Some((format!("--{}", opt.long), value)));
        }
        if let Some(value) = self.env_var(opt.env) {
            return Ok(Some((opt.env.to_string(), value)));
        }
        if !opt.default.is_empty() {
            return Ok(Some((format!("--{}", opt.long), opt.default.to_string())));
        }
        Ok(None)
    }

    /// An environment variable; empty counts as unset, because service
    /// managers and container templates write `NAME=` to mean "not set".
    fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.is_empty())
    }

    /// An option parsed by `parse_fn`; errors are prefixed with its label.
    fn get<T>(
        &self,
        key: Key,
        parse_fn: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<Labeled<T>>, ConfigError> {
        let Some((label, raw)) = self.raw(key)? else {
            return Ok(None);
        };
        match parse_fn(&raw) {
            Ok(value) => Ok(Some(Labeled { value, label })),
            Err(message) => Err(ConfigError(format!("{label}: {message}"))),
        }
    }

    /// Like [`Sources::get`] for an option that has a default.
    fn get_defaulted<T>(
        &self,
        key: Key,
        parse_fn: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Labeled<T>, ConfigError> {
        // Only reachable if the table lost a default, which a test guards;
        // still an error value rather than a panic.
        self.get(key, parse_fn)?
            .ok_or_else(|| ConfigError(format!("--{}: no value and no default", opt(key).long)))
    }

    /// The cookie file's path, kept as an `OsString` from the flag because
    /// paths need not be UTF-8.
    fn cookie_file(&self) -> Option<PathBuf> {
        let opt = opt(Key::CookieFile);
        if let Some(value) = &self.flags.values[Key::CookieFile as usize] {
            return Some(PathBuf::from(value));
        }
        self.env_var(opt.env).map(PathBuf::from)
    }

    /// The peers and their label: every `--peer` flag if any is given
    /// (they replace the variable's list entirely), else the list of
    /// `PAIRLINK_PEERS` or, by the general rule's name for `--peer`,
    /// `PAIRLINK_PEER` (the same comma-separated form; not both).
    fn peers(&self) -> Result<Labeled<Vec<PeerSpec>>, ConfigError> {
        let opt = opt(Key::Peer);
        let env_list;
        let (label, items) = if self.flags.peers.is_empty() {
            let (name, list) = match (self.env_var(opt.env), self.env_var(PEER_ENV_SINGULAR)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(format!(
                        "{} and {PEER_ENV_SINGULAR} are both set; use one",
                        opt.env
                    )))
                }
                (None, Some(list)) => (PEER_ENV_SINGULAR, list),
                (list, None) => (opt.env, list.unwrap_or_default()),
            };
            env_list = list;
            (name.to_string(), peer_list_items(&env_list))
        } else {
            let items = self.flags.peers.iter().map(String::as_str).collect();
            (format!("--{}", opt.long), items)
        };
        if items.len() > PEERS_MAX {
            return Err(ConfigError(format!("{label}: more than {PEERS_MAX} peers")));
        }
        let mut peers = Vec::with_capacity(items.len());
        for item in items {
            let peer =
                parse_peer(item).map_err(|message| ConfigError(format!("{label}: {message}")))?;
            peers.push(peer);
        }
        Ok(Labeled {
            value: peers,
            label,
        })
    }
}

/// Parses every option, then checks the rules between them.
fn build<E: Fn(&str) -> Option<String>>(sources: &Sources<'_, E>) -> Result<Config, ConfigError> {
    let listen = sources.get_defaulted(Key::Listen, parse_socket_addr)?;
    let node = sources.get_defaulted(Key::Node, |s| parse_node_name(s).map(str::to_string))?;
    let cluster_listen = sources.get(Key::ClusterListen, parse_socket_addr)?;
    let peers = sources.peers()?;
    let cookie_file = sources.cookie_file();

    let poll_timeout = sources.get_defaulted(Key::PollTimeout, |s| {
        parse_duration_max(s, POLL_TIMEOUT_MS_MAX)
    })?;
    let session_ttl =
        sources.get_defaulted(Key::SessionTtl, |s| parse_duration_max(s, DURATION_MS_MAX))?;
    let heartbeat =
        sources.get_defaulted(Key::Heartbeat, |s| parse_duration_max(s, DURATION_MS_MAX))?;
    let header_timeout = sources.get_defaulted(Key::HeaderTimeout, |s| {
        parse_duration_max(s, DURATION_MS_MAX)
    })?;

    let max_connections =
        sources.get_defaulted(Key::MaxConnections, |s| parse_count(s, MAX_CONNECTIONS_MAX))?;
    let max_sessions =
        sources.get_defaulted(Key::MaxSessions, |s| parse_count(s, MAX_SESSIONS_MAX))?;
    let max_message_bytes = sources.get_defaulted(Key::MaxMessageBytes, |s| {
        parse_count(s, MAX_MESSAGE_BYTES_MAX)
    })?;
    let max_session_buffer = sources.get_defaulted(Key::MaxSessionBuffer, |s| {
        parse_count(s, MAX_SESSION_BUFFER_MAX)
    })?;
    let max_total_buffer = sources.get_defaulted(Key::MaxTotalBuffer, |s| {
        parse_count(s, MAX_TOTAL_BUFFER_MAX)
    })?;

    let cors_origin = sources.get(Key::CorsOrigin, |s| {
        parse_cors_origin(s).map(str::to_string)
    })?;
    let log_level = sources.get_defaulted(Key::LogLevel, parse_log_level)?;

    // A peer list means "be part of a cluster", which is pointless (and
    // surely a forgotten flag) without an address the peers can reach.
    if !peers.value.is_empty() && cluster_listen.is_none() {
        return Err(ConfigError(format!(
            "{} needs --cluster-listen",
            peers.label
        )));
    }
    if let Some(cluster) = &cluster_listen {
        // Node-to-node traffic must be authenticated (API.md §3).
        if cookie_file.is_none() {
            return Err(ConfigError(format!(
                "{} needs --cookie-file",
                cluster.label
            )));
        }
        // Both listeners on one fixed address would fail at bind time with
        // a less clear message; port 0 asks for two different free ports.
        if cluster.value == listen.value && cluster.value.port() != 0 {
            return Err(ConfigError(format!(
                "{}: {} is also the HTTP address ({})",
                cluster.label, cluster.value, listen.label
            )));
        }
    }
    check_peer_names(&peers, &node)?;

    // No order is asked between the message limit and the buffers: a
    // buffer refuses sends once it has reached its limit, so a message
    // larger than a buffer is still accepted into an empty one.

    // The file system is touched last, once everything cheap is known good.
    let cookie = match &cookie_file {
        Some(path) => Some(read_cookie(path).map_err(|message| {
            ConfigError(format!("{}: {message}", cookie_file_label(sources)))
        })?),
        None => None,
    };

    Ok(Config {
        listen: listen.value,
        node: node.value,
        cluster_listen: cluster_listen.map(|c| c.value),
        peers: peers.value,
        cookie_file,
        cookie,
        poll_timeout: poll_timeout.value,
        session_ttl: session_ttl.value,
        heartbeat: heartbeat.value,
        header_timeout: header_timeout.value,
        max_connections: max_connections.value,
        max_sessions: max_sessions.value,
        max_message_bytes: max_message_bytes.value,
        max_session_buffer: max_session_buffer.value,
        max_total_buffer: max_total_buffer.value,
        cors_origin: cors_origin.map(|c| c.value),
        log_level: log_level.value,
    })
}

fn cookie_file_label<E: Fn(&str) -> Option<String>>(sources: &Sources<'_, E>) -> String {
    let opt = opt(Key::CookieFile);
    if sources.flags.values[Key::CookieFile as usize].is_some() {
        format!("--{}", opt.long)
    } else {
        opt.env.to_string()
    }
}

/// Peer names must be unique and differ from this node's: names route
/// session tokens to nodes, so two nodes with one name would misroute.
fn check_peer_names(
    peers: &Labeled<Vec<PeerSpec>>,
    node: &Labeled<String>,
) -> Result<(), ConfigError> {
    for (i, peer) in peers.value.iter().enumerate() {
        if peer.name == node.value {
            return Err(ConfigError(format!(
                "{}: peer {:?} has this node's own name ({})",
                peers.label, peer.name, node.label
            )));
        }
        if peers.value[..i]
            .iter()
            .any(|earlier| earlier.name == peer.name)
        {
            return Err(ConfigError(format!(
                "{}: peer {:?} is given twice",
                peers.label, peer.name
            )));
        }
    }
    Ok(())
}

const DURATION_HINT: &str = "use e.g. 1500ms, 2s, 1m";

/// Parses DUR: ASCII digits then exactly `ms`, `s` or `m`. Signs, spaces,
/// fractions and bare numbers are refused, so `5` is never silently read as
/// five milliseconds or five seconds. The result is above zero and at most
/// `max_ms` (overflow counts as above the maximum).
fn parse_duration_max(text: &str, max_ms: u64) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} ({DURATION_HINT})");
    let digits_end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(invalid()),
    };
    let too_large = || format!("{text:?} is more than the maximum of {}s", max_ms / 1000);
    // Digits only, so the only way this fails is overflow.
    let count: u64 = digits.parse().map_err(|_| too_large())?;
    let ms = count.checked_mul(ms_per_unit).ok_or_else(too_large)?;
    if ms == 0 {
        return Err(format!("duration {text:?} must be more than zero"));
    }
    if ms > max_ms {
        return Err(too_large());
    }
    Ok(Duration::from_millis(ms))
}

/// Parses N: ASCII digits only, at least 1, at most `max` (and at most what
/// a `usize` holds on this platform). Overflow counts as above the maximum.
fn parse_count(text: &str, max: u64) -> Result<usize, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid number {text:?} (use decimal digits, e.g. 10000)"
        ));
    }
    let max = max.min(u64::try_from(usize::MAX).unwrap_or(u64::MAX));
    let too_large = || format!("{text:?} is more than the maximum of {max}");
    let count: u64 = text.parse().map_err(|_| too_large())?;
    if count == 0 {
        return Err(format!("{text:?} must be at least 1"));
    }
    if count > max {
        return Err(too_large());
    }
    usize::try_from(count).map_err(|_| too_large())
}

/// Parses ADDR: a literal socket address, else `HOST:PORT` resolved through
/// the system resolver (first address), so `localhost:8080` works.
fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Never hand blanks or control characters to the resolver.
    if text.is_empty() || !text.bytes().all(is_visible_ascii) {
        return Err(format!(
            "invalid address {text:?} (use HOST:PORT, e.g. 127.0.0.1:8080)"
        ));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(error) => Err(format!(
            "invalid address {text:?}: {error} (use HOST:PORT, e.g. 127.0.0.1:8080)"
        )),
    }
}

/// Checks a node name: 1..=NODE_NAME_BYTES_MAX of `[A-Za-z0-9_-]`, because
/// it is embedded in session tokens and must survive in them unescaped.
fn parse_node_name(text: &str) -> Result<&str, String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if text.is_empty() || text.len() > NODE_NAME_BYTES_MAX || !text.bytes().all(allowed) {
        return Err(format!(
            "invalid node name {text:?} (use 1 to {NODE_NAME_BYTES_MAX} of A-Z a-z 0-9 _ -)"
        ));
    }
    Ok(text)
}

/// Whether `name` is a variable the server reads (every option's, and
/// both spellings of the peer list's). Others starting with `PAIRLINK_`
/// are probably typos, which the binary warns about.
pub fn is_known_env(name: &str) -> bool {
    name == PEER_ENV_SINGULAR || OPTIONS.iter().any(|opt| opt.env == name)
}

/// `PAIRLINK_` and `--peer`'s name, as the general rule for variables
/// makes it; read like `PAIRLINK_PEERS`.
const PEER_ENV_SINGULAR: &str = "PAIRLINK_PEER";

/// The items of `PAIRLINK_PEERS`: comma-separated, blanks around items and
/// empty items (from a trailing comma) ignored.
fn peer_list_items(list: &str) -> Vec<&str> {
    list.split(',')
        .map(|item| item.trim_matches(|c: char| c.is_ascii_whitespace()))
        .filter(|item| !item.is_empty())
        .collect()
}

/// Parses `NAME=HOST:PORT`. The address is not resolved here (a peer may be
/// down or not yet in DNS at start-up) and is kept exactly as given, but its
/// form is checked so a typo fails now rather than at every reconnect.
fn parse_peer(text: &str) -> Result<PeerSpec, String> {
    let invalid = || format!("invalid peer {text:?} (use NAME=HOST:PORT)");
    let (name, addr) = text.split_once('=').ok_or_else(invalid)?;
    let name = parse_node_name(name).map_err(|e| format!("peer {text:?}: {e}"))?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    if !is_peer_host(host) {
        return Err(format!(
            "peer {text:?}: invalid host {host:?} (use a name, an IPv4 address or [IPv6])"
        ));
    }
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(format!(
            "peer {text:?}: invalid port {port:?} (use 1 to 65535)"
        ));
    }
    Ok(PeerSpec {
        name: name.to_string(),
        addr: addr.to_string(),
    })
}

/// A host name or IPv4 address (letters, digits, `.`, `-`, `_`), or a
/// bracketed IPv6 address, as a resolver accepts in `HOST:PORT`.
fn is_peer_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
    !host.is_empty() && host.len() <= PEER_HOST_BYTES_MAX && host.bytes().all(allowed)
}

/// Checks an origin: it is copied into a response header, so only visible
/// ASCII (no blank, CR or LF) is allowed, which makes header injection
/// impossible.
fn parse_cors_origin(text: &str) -> Result<&str, String> {
    if text.is_empty() || text.len() > CORS_ORIGIN_BYTES_MAX || !text.bytes().all(is_visible_ascii)
    {
        return Err(format!(
            "invalid origin {text:?} (use 1 to {CORS_ORIGIN_BYTES_MAX} visible ASCII characters, \
             e.g. https://example.com)"
        ));
    }
    Ok(text)
}

fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    let levels = [
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("info", log::LevelFilter::Info),
        ("debug", log::LevelFilter::Debug),
        ("trace", log::LevelFilter::Trace),
    ];
    levels
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, level)| level)
        .ok_or_else(|| {
            format!("invalid log level {text:?} (use error, warn, info, debug or trace)")
        })
}

/// Reads the cookie: at most COOKIE_FILE_BYTES_MAX bytes, trimmed of ASCII
/// whitespace (an editor's final newline must not become part of the
/// secret), at least COOKIE_BYTES_MIN bytes left.
fn read_cookie(path: &Path) -> Result<Vec<u8>, String> {
    let cannot_read = |error: std::io::Error| format!("cannot read {path:?}: {error}");
    // Looked at before opening: opening a FIFO for reading would wait for
    // a writer, for ever. (Checked again on the open file below.)
    if !std::fs::metadata(path).map_err(cannot_read)?.is_file() {
        return Err(format!("{path:?} is not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let metadata = file.metadata().map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err(format!("{path:?} is not a regular file"));
    }
    let too_large =
        || format!("{path:?} is larger than {COOKIE_FILE_BYTES_MAX} bytes; is it the cookie?");
    if metadata.len() > COOKIE_FILE_BYTES_MAX {
        return Err(too_large());
    }
    let mut content = Vec::new();
    // The file may grow between the check above and this read.
    file.take(COOKIE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut content)
        .map_err(cannot_read)?;
    if content.len() as u64 > COOKIE_FILE_BYTES_MAX {
        return Err(too_large());
    }
    let cookie = content.trim_ascii();
    if cookie.len() < COOKIE_BYTES_MIN {
        return Err(format!(
            "the cookie in {path:?} is {} bytes after trimming whitespace; at least {COOKIE_BYTES_MIN} are needed",
            cookie.len()
        ));
    }
    warn_if_exposed(path, &metadata);
    Ok(cookie.to_vec())
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    if mode_is_exposed(mode) {
        // Not an error: the cluster still works, and refusing to start
        // over a mode would turn a hardening hint into an outage.
        log::warn!(
            "cookie file {path:?} has mode {:o}: others on this host can read or change the \
             cluster secret; chmod 600 it",
            mode & 0o7777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path, _metadata: &std::fs::Metadata) {}

/// Whether group or others may read (learn) or write (replace) the secret.
#[cfg_attr(not(unix), allow(dead_code))]
fn mode_is_exposed(mode: u32) -> bool {
    mode & 0o066 != 0
}

fn help_text() -> String {
    let mut text = String::from("pairlink [OPTIONS]\n");
    for opt in &OPTIONS {
        let flag = format!("--{} {}", opt.long, opt.metavar);
        let default = if opt.default.is_empty() {
            opt.no_default.to_string()
        } else {
            format!("(default {})", opt.default)
        };
        let line = format!("  {flag:<23} {:<23} {default}", opt.about);
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.push_str(
        "  -h, --help              print this help and exit\n\
         \x20 -V, --version           print the version and exit\n\
         \n\
         DUR is a whole number followed by ms, s or m (1500ms, 2s, 1m).\n\
         N is a whole number of at least 1.\n\
         Each option can also come from the environment as PAIRLINK_ plus its\n\
         name in capitals with _ for - (PAIRLINK_SESSION_TTL=30s);\n\
         PAIRLINK_PEERS takes a comma-separated list of NAME=HOST:PORT.\n\
         A flag beats the environment.",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Parses `args` with an environment holding exactly `env`.
    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(OsString::from), |name| {
            env.get(name).cloned()
        })
        .map_err(|e| e.0)
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        match parse_with(args, env)? {
            Parsed::Run(config) => Ok(*config),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn run_err(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse_with(args, env) {
            Ok(parsed) => panic!("{args:?} {env:?}: expected an error, got {parsed:?}"),
            Err(message) => {
                assert!(!message.contains('\n'), "not one line: {message:?}");
                assert!(!message.starts_with("pairlink:"), "{message}");
                message
            }
        }
    }

    /// A file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(content: &[u8], mode: u32) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pairlink-config-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, content).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            #[cfg(not(unix))]
            let _ = mode;
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const COOKIE: &[u8] = b"0123456789abcdef0123";

    fn cookie_file() -> TempFile {
        TempFile::new(COOKIE, 0o600)
    }

    #[test]
    fn table_is_in_key_order_with_derived_env_names() {
        for (i, opt) in OPTIONS.iter().enumerate() {
            assert_eq!(opt.key as usize, i, "--{}", opt.long);
            let derived = format!(
                "PAIRLINK_{}",
                opt.long.to_ascii_uppercase().replace('-', "_")
            );
            if opt.key == Key::Peer {
                assert_eq!(opt.env, "PAIRLINK_PEERS");
            } else {
                assert_eq!(opt.env, derived);
            }
            // An option without a default says so on the help screen,
            // unless it is the repeatable --peer.
            assert!(
                !opt.default.is_empty() || !opt.no_default.is_empty() || opt.key == Key::Peer,
                "--{}",
                opt.long
            );
        }
    }

    #[test]
    fn defaults_match_the_api() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.node, "local");
        assert_eq!(c.cluster_listen, None);
        assert!(c.peers.is_empty());
        assert_eq!(c.cookie_file, None);
        assert_eq!(c.cookie, None);
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert_eq!(c.session_ttl, Duration::from_secs(60));
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_sessions, 100_000);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.max_session_buffer, 262_144);
        assert_eq!(c.max_total_buffer, 67_108_864);
        assert_eq!(c.cors_origin, None);
        assert_eq!(c.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn durations_good() {
        let table: &[(&str, u64)] = &[
            ("1ms", 1),
            ("1500ms", 1500),
            ("2s", 2000),
            ("1m", 60_000),
            ("0001s", 1000),
            ("86400s", DURATION_MS_MAX),
            ("1440m", DURATION_MS_MAX),
            ("86400000ms", DURATION_MS_MAX),
        ];
        for &(text, ms) in table {
            assert_eq!(
                parse_duration_max(text, DURATION_MS_MAX),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_bad() {
        let invalid = [
            "", "5", "s", "ms", "1.5s", "-1s", "+1s", " 1s", "1s ", "1 s", "1h", "1S", "1MS",
            "1ms2", "1sec", "1min", "1e3ms", "１s", "0x10s", "1_000ms", "s1",
        ];
        for text in invalid {
            let message = parse_duration_max(text, DURATION_MS_MAX).unwrap_err();
            assert!(
                message.starts_with("invalid duration"),
                "{text:?}: {message}"
            );
            assert!(message.contains("1500ms, 2s, 1m"), "{message}");
        }
        for text in ["0s", "0ms", "0m", "000ms"] {
            let message = parse_duration_max(text, DURATION_MS_MAX).unwrap_err();
            assert!(message.contains("more than zero"), "{text:?}: {message}");
        }
        let too_large = [
            "86401s",
            "86400001ms",
            "1441m",
            "18446744073709551615ms",
            "18446744073709551616s",
            "307445734561825861m", // fits u64, overflows when made ms
            "99999999999999999999999999999m",
        ];
        for text in too_large {
            let message = parse_duration_max(text, DURATION_MS_MAX).unwrap_err();
            assert!(message.contains("maximum of 86400s"), "{text:?}: {message}");
        }
    }

    #[test]
    fn poll_timeout_is_capped_at_the_api_maximum() {
        let c = run(&["--poll-timeout", "120s"], &[]).unwrap();
        assert_eq!(c.poll_timeout, Duration::from_secs(120));
        let c = run(&["--poll-timeout", "2m"], &[]).unwrap();
        assert_eq!(c.poll_timeout, Duration::from_secs(120));
        for bad in ["120001ms", "121s", "3m"] {
            let message = run_err(&["--poll-timeout", bad], &[]);
            assert!(message.starts_with("--poll-timeout: "), "{message}");
            assert!(message.contains("maximum of 120s"), "{message}");
        }
    }

    #[test]
    fn each_duration_option_is_parsed_and_checked() {
        let c = run(
            &[
                "--session-ttl",
                "30s",
                "--heartbeat=250ms",
                "--header-timeout",
                "1m",
                "--poll-timeout=1500ms",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(30));
        assert_eq!(c.heartbeat, Duration::from_millis(250));
        assert_eq!(c.header_timeout, Duration::from_secs(60));
        assert_eq!(c.poll_timeout, Duration::from_millis(1500));
        for flag in [
            "--session-ttl",
            "--heartbeat",
            "--header-timeout",
            "--poll-timeout",
        ] {
            let message = run_err(&[flag, "0s"], &[]);
            assert_eq!(
                message,
                format!("{flag}: duration \"0s\" must be more than zero")
            );
            let message = run_err(&[flag, "x"], &[]);
            assert_eq!(
                message,
                format!("{flag}: invalid duration \"x\" (use e.g. 1500ms, 2s, 1m)")
            );
            let message = run_err(&[flag, "25h"], &[]);
            assert!(
                message.starts_with(&format!("{flag}: invalid duration")),
                "{message}"
            );
            let message = run_err(&[flag, "1441m"], &[]);
            assert!(message.starts_with(&format!("{flag}: ")), "{message}");
        }
    }

    #[test]
    fn counts_good() {
        let table: &[(&str, usize)] = &[
            ("1", 1),
            ("10000", 10_000),
            ("007", 7),
            ("1000000", 1_000_000),
        ];
        for &(text, n) in table {
            assert_eq!(parse_count(text, MAX_CONNECTIONS_MAX), Ok(n), "{text}");
        }
    }

    #[test]
    fn counts_bad() {
        for text in [
            "", "-1", "+1", "1.0", "1e3", " 1", "1 ", "1_000", "１", "0x10", "ten",
        ] {
            let message = parse_count(text, MAX_CONNECTIONS_MAX).unwrap_err();
            assert!(message.starts_with("invalid number"), "{text:?}: {message}");
        }
        for text in ["0", "000"] {
            let message = parse_count(text, MAX_CONNECTIONS_MAX).unwrap_err();
            assert!(message.contains("at least 1"), "{text:?}: {message}");
        }
        for text in [
            "1000001",
            "18446744073709551616",
            "999999999999999999999999999",
        ] {
            let message = parse_count(text, MAX_CONNECTIONS_MAX).unwrap_err();
            assert!(
                message.contains("maximum of 1000000"),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn each_count_option_has_its_cap() {
        let caps = [
            ("--max-connections", MAX_CONNECTIONS_MAX),
            ("--max-sessions", MAX_SESSIONS_MAX),
            ("--max-message-bytes", MAX_MESSAGE_BYTES_MAX),
            ("--max-session-buffer", MAX_SESSION_BUFFER_MAX),
            ("--max-total-buffer", MAX_TOTAL_BUFFER_MAX),
        ];
        for (flag, cap) in caps {
            let over = (cap + 1).to_string();
            let message = run_err(&[flag, &over], &[]);
            assert!(message.starts_with(&format!("{flag}: ")), "{message}");
            assert!(message.contains("maximum"), "{message}");
            let message = run_err(&[flag, "0"], &[]);
            assert_eq!(message, format!("{flag}: \"0\" must be at least 1"));
            let message = run_err(&[flag, "many"], &[]);
            assert!(
                message.starts_with(&format!("{flag}: invalid number")),
                "{message}"
            );
        }
        // Every cap is accepted when the buffers around it allow it.
        let c = run(
            &[
                "--max-connections",
                &MAX_CONNECTIONS_MAX.to_string(),
                "--max-sessions",
                &MAX_SESSIONS_MAX.to_string(),
                "--max-message-bytes",
                &MAX_MESSAGE_BYTES_MAX.to_string(),
                "--max-session-buffer",
                &MAX_SESSION_BUFFER_MAX.to_string(),
                "--max-total-buffer",
                &MAX_TOTAL_BUFFER_MAX.to_string(),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.max_connections as u64, MAX_CONNECTIONS_MAX);
        assert_eq!(c.max_sessions as u64, MAX_SESSIONS_MAX);
        assert_eq!(c.max_message_bytes as u64, MAX_MESSAGE_BYTES_MAX);
        assert_eq!(c.max_session_buffer as u64, MAX_SESSION_BUFFER_MAX);
        assert_eq!(c.max_total_buffer as u64, MAX_TOTAL_BUFFER_MAX);
    }

    #[test]
    fn buffers_must_hold_a_message() {
        let c = run(
            &[
                "--max-message-bytes=100",
                "--max-session-buffer=100",
                "--max-total-buffer=100",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (
                c.max_message_bytes,
                c.max_session_buffer,
                c.max_total_buffer
            ),
            (100, 100, 100)
        );

        // Any order of the three limits starts: API.md asks none, and a
        // buffer takes one message past its limit (see the send path).
        let c = run(
            &["--max-message-bytes=101", "--max-session-buffer=100"],
            &[],
        )
        .unwrap();
        assert_eq!((c.max_message_bytes, c.max_session_buffer), (101, 100));
        let c = run(&["--max-total-buffer=1000"], &[]).unwrap();
        assert_eq!((c.max_session_buffer, c.max_total_buffer), (262_144, 1000));
        let c = run(&[], &[("PAIRLINK_MAX_SESSION_BUFFER", "1000")]).unwrap();
        assert_eq!((c.max_message_bytes, c.max_session_buffer), (65_536, 1000));
    }

    #[test]
    fn listen_addresses() {
        let table = [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0.0.0.0:80", "0.0.0.0:80"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::]:65535", "[::]:65535"),
        ];
        for (text, want) in table {
            assert_eq!(parse_socket_addr(text), Ok(want.parse().unwrap()), "{text}");
        }
        let resolved = parse_socket_addr("localhost:8080").unwrap();
        assert!(resolved.ip().is_loopback(), "{resolved}");
        assert_eq!(resolved.port(), 8080);

        for bad in [
            "",
            "127.0.0.1",
            "localhost",
            "127.0.0.1:99999",
            "a b:80",
            ":80",
            "::1:80x",
            "127.0.0.1:-1",
        ] {
            let message = parse_socket_addr(bad).unwrap_err();
            assert!(message.starts_with("invalid address"), "{bad:?}: {message}");
        }
        let c = run(&["--listen", "[::1]:9000"], &[]).unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse::<SocketAddr>().unwrap());
        let message = run_err(&["--listen=nope"], &[]);
        assert!(
            message.starts_with("--listen: invalid address \"nope\""),
            "{message}"
        );
        let message = run_err(&["--cluster-listen=nope"], &[]);
        assert!(
            message.starts_with("--cluster-listen: invalid address"),
            "{message}"
        );
    }

    #[test]
    fn node_names() {
        let longest = "a".repeat(NODE_NAME_BYTES_MAX);
        for good in ["a", "n1", "node-1_X", "_", "-", longest.as_str()] {
            assert_eq!(parse_node_name(good), Ok(good));
            assert_eq!(run(&["--node", good], &[]).unwrap().node, good);
        }
        let too_long = "a".repeat(NODE_NAME_BYTES_MAX + 1);
        for bad in [
            "",
            too_long.as_str(),
            "a b",
            "a.b",
            "é",
            "a/b",
            "a=b",
            "n\n1",
            "a:b",
        ] {
            let message = run_err(&["--node", bad], &[]);
            assert!(
                message.starts_with("--node: invalid node name"),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn peers_good() {
        let table = [
            ("n2=127.0.0.1:9002", "n2", "127.0.0.1:9002"),
            ("n2=[::1]:9002", "n2", "[::1]:9002"),
            ("n-2_x=host.example:1", "n-2_x", "host.example:1"),
            ("n2=my_host:65535", "n2", "my_host:65535"),
            ("n2=h:0009", "n2", "h:0009"),
        ];
        for (text, name, addr) in table {
            assert_eq!(
                parse_peer(text),
                Ok(PeerSpec {
                    name: name.into(),
                    addr: addr.into()
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn peers_bad() {
        let table = [
            ("n2", "invalid peer"),
            ("n2=", "invalid peer"),
            ("n2=h", "invalid peer"),
            ("=h:1", "invalid node name"),
            ("bad name=h:1", "invalid node name"),
            ("n.2=h:1", "invalid node name"),
            ("n2=h:", "invalid port"),
            ("n2=h:0", "invalid port"),
            ("n2=h:65536", "invalid port"),
            ("n2=h:+1", "invalid port"),
            ("n2=h:1x", "invalid port"),
            ("n2=:9002", "invalid host"),
            ("n2=h h:1", "invalid host"),
            ("n2=h/x:1", "invalid host"),
            ("n2=[nonsense]:1", "invalid host"),
            ("n2=::1:9002", "invalid host"),
            ("n2=[::1:9002", "invalid host"),
            ("n2=a=b:1", "invalid host"),
        ];
        for (text, want) in table {
            let message = parse_peer(text).unwrap_err();
            assert!(message.contains(want), "{text:?}: {message}");
        }
        let long_host = format!("n2={}:1", "h".repeat(PEER_HOST_BYTES_MAX + 1));
        assert!(parse_peer(&long_host).unwrap_err().contains("invalid host"));
    }

    #[test]
    fn cluster_flags_give_peers_and_cookie() {
        let cookie = cookie_file();
        let c = run(
            &[
                "--node=n1",
                "--cluster-listen=127.0.0.1:9001",
                "--cookie-file",
                cookie.path(),
                "--peer",
                "n2=127.0.0.1:9002",
                "--peer=n3=localhost:9003",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(c.cluster_listen, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(
            c.peers,
            vec![
                PeerSpec {
                    name: "n2".into(),
                    addr: "127.0.0.1:9002".into()
                },
                PeerSpec {
                    name: "n3".into(),
                    addr: "localhost:9003".into()
                },
            ]
        );
        assert_eq!(c.cookie_file.as_deref(), Some(cookie.0.as_path()));
        assert_eq!(c.cookie.as_deref(), Some(COOKIE));
    }

    #[test]
    fn cluster_rules() {
        let cookie = cookie_file();
        let cl = "--cluster-listen=127.0.0.1:9001";
        let cf = format!("--cookie-file={}", cookie.path());

        assert_eq!(
            run_err(&["--peer=n2=h:1"], &[]),
            "--peer needs --cluster-listen"
        );
        assert_eq!(
            run_err(&[], &[("PAIRLINK_PEERS", "n2=h:1")]),
            "PAIRLINK_PEERS needs --cluster-listen"
        );
        assert_eq!(run_err(&[cl], &[]), "--cluster-listen needs --cookie-file");
        assert_eq!(
            run_err(&[], &[("PAIRLINK_CLUSTER_LISTEN", "127.0.0.1:9001")]),
            "PAIRLINK_CLUSTER_LISTEN needs --cookie-file"
        );
        assert_eq!(
            run_err(
                &["--node=n1", cl, &cf, "--peer=n2=h:1", "--peer=n2=g:2"],
                &[]
            ),
            "--peer: peer \"n2\" is given twice"
        );
        assert_eq!(
            run_err(&["--node=n1", cl, &cf, "--peer=n1=h:1"], &[]),
            "--peer: peer \"n1\" has this node's own name (--node)"
        );
        // The default node name counts too.
        assert_eq!(
            run_err(&[cl, &cf, "--peer=local=h:1"], &[]),
            "--peer: peer \"local\" has this node's own name (--node)"
        );
        let message = run_err(&["--listen=127.0.0.1:9001", cl, &cf], &[]);
        assert_eq!(
            message,
            "--cluster-listen: 127.0.0.1:9001 is also the HTTP address (--listen)"
        );
        // Port 0 twice means two different free ports.
        let c = run(
            &["--listen=127.0.0.1:0", "--cluster-listen=127.0.0.1:0", &cf],
            &[],
        )
        .unwrap();
        assert_eq!(c.cluster_listen, Some("127.0.0.1:0".parse().unwrap()));
        // A cluster address without peers is fine (the first node of a cluster).
        let c = run(&[cl, &cf], &[]).unwrap();
        assert!(c.peers.is_empty());
        // A bad peer through the flag names the flag.
        let message = run_err(&[cl, &cf, "--peer=n2"], &[]);
        assert!(
            message.starts_with("--peer: invalid peer \"n2\""),
            "{message}"
        );
    }

    #[test]
    fn too_many_peers() {
        let cookie = cookie_file();
        let cf = format!("--cookie-file={}", cookie.path());
        let peers: Vec<String> = (0..=PEERS_MAX)
            .map(|i| format!("--peer=p{i}=h:1"))
            .collect();
        let mut args = vec!["--cluster-listen=127.0.0.1:9001", cf.as_str()];
        args.extend(peers.iter().map(String::as_str));
        assert_eq!(
            run_err(&args, &[]),
            format!("--peer: more than {PEERS_MAX} peers")
        );
        let list: Vec<String> = (0..=PEERS_MAX).map(|i| format!("p{i}=h:1")).collect();
        let list = list.join(",");
        assert_eq!(
            run_err(&args[..2], &[("PAIRLINK_PEERS", &list)]),
            format!("PAIRLINK_PEERS: more than {PEERS_MAX} peers")
        );
        // Exactly PEERS_MAX is accepted.
        let c = run(&args[..args.len() - 1], &[]).unwrap();
        assert_eq!(c.peers.len(), PEERS_MAX);
    }

    #[test]
    fn peer_list_from_the_environment() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            (",", &[]),
            (" , ,", &[]),
            ("n2=h:1", &["n2=h:1"]),
            ("n2=h:1,n3=g:2", &["n2=h:1", "n3=g:2"]),
            (" n2=h:1 ,\tn3=g:2 , ", &["n2=h:1", "n3=g:2"]),
            ("n2=h:1,,n3=g:2,", &["n2=h:1", "n3=g:2"]),
        ];
        for &(list, want) in table {
            assert_eq!(peer_list_items(list), want, "{list:?}");
        }

        let cookie = cookie_file();
        let env = [
            ("PAIRLINK_NODE", "n1"),
            ("PAIRLINK_CLUSTER_LISTEN", "127.0.0.1:9001"),
            ("PAIRLINK_COOKIE_FILE", cookie.path()),
            ("PAIRLINK_PEERS", "n2=127.0.0.1:9002, n3=[::1]:9003 ,"),
        ];
        let c = run(&[], &env).unwrap();
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        assert_eq!(c.peers[1].addr, "[::1]:9003");
        assert_eq!(c.cookie.as_deref(), Some(COOKIE));

        // Any --peer flag replaces the whole list.
        let c = run(&["--peer", "n9=x:9"], &env).unwrap();
        assert_eq!(
            c.peers,
            vec![PeerSpec {
                name: "n9".into(),
                addr: "x:9".into()
            }]
        );

        let mut bad = env;
        bad[3] = ("PAIRLINK_PEERS", "n2=h:1,oops");
        let message = run_err(&[], &bad);
        assert!(
            message.starts_with("PAIRLINK_PEERS: invalid peer \"oops\""),
            "{message}"
        );
        bad[3] = ("PAIRLINK_PEERS", "n2=h:1,n2=h:2");
        assert_eq!(
            run_err(&[], &bad),
            "PAIRLINK_PEERS: peer \"n2\" is given twice"
        );
        bad[3] = ("PAIRLINK_PEERS", "n1=h:1");
        assert_eq!(
            run_err(&[], &bad),
            "PAIRLINK_PEERS: peer \"n1\" has this node's own name (PAIRLINK_NODE)"
        );

        // PAIRLINK_PEER, --peer's variable by the general rule, is read the
        // same way; setting both is refused rather than one ignored.
        let mut singular = env;
        singular[3] = ("PAIRLINK_PEER", "n2=h:1, n3=g:2");
        let c = run(&[], &singular).unwrap();
        let names: Vec<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        singular[3] = ("PAIRLINK_PEER", "n2=h:1,oops");
        assert!(run_err(&[], &singular).starts_with("PAIRLINK_PEER: invalid peer"));
        let both = [env[0], env[1], env[2], env[3], ("PAIRLINK_PEER", "n4=h:4")];
        assert_eq!(
            run_err(&[], &both),
            "PAIRLINK_PEERS and PAIRLINK_PEER are both set; use one"
        );
        assert_eq!(run(&["--peer", "n9=x:9"], &both).unwrap().peers.len(), 1);
    }

    #[test]
    fn every_option_comes_from_the_environment() {
        let cookie = cookie_file();
        let env = [
            ("PAIRLINK_LISTEN", "127.0.0.1:7000"),
            ("PAIRLINK_NODE", "envnode"),
            ("PAIRLINK_CLUSTER_LISTEN", "127.0.0.1:7001"),
            ("PAIRLINK_PEERS", "n2=h:2"),
            ("PAIRLINK_COOKIE_FILE", cookie.path()),
            ("PAIRLINK_POLL_TIMEOUT", "5s"),
            ("PAIRLINK_SESSION_TTL", "30s"),
            ("PAIRLINK_HEARTBEAT", "500ms"),
            ("PAIRLINK_HEADER_TIMEOUT", "3s"),
            ("PAIRLINK_MAX_CONNECTIONS", "11"),
            ("PAIRLINK_MAX_SESSIONS", "12"),
            ("PAIRLINK_MAX_MESSAGE_BYTES", "13"),
            ("PAIRLINK_MAX_SESSION_BUFFER", "14"),
            ("PAIRLINK_MAX_TOTAL_BUFFER", "15"),
            ("PAIRLINK_CORS_ORIGIN", "https://example.com"),
            ("PAIRLINK_LOG_LEVEL", "debug"),
        ];
        // Every option of the table is covered here.
        for opt in &OPTIONS {
            assert!(env.iter().any(|(name, _)| *name == opt.env), "{}", opt.env);
        }
        let c = run(&[], &env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.node, "envnode");
        assert_eq!(c.cluster_listen, Some("127.0.0.1:7001".parse().unwrap()));
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.cookie_file.as_deref(), Some(cookie.0.as_path()));
        assert_eq!(c.poll_timeout, Duration::from_secs(5));
        assert_eq!(c.session_ttl, Duration::from_secs(30));
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert_eq!(c.header_timeout, Duration::from_secs(3));
        assert_eq!(
            (
                c.max_connections,
                c.max_sessions,
                c.max_message_bytes,
                c.max_session_buffer,
                c.max_total_buffer
            ),
            (11, 12, 13, 14, 15)
        );
        assert_eq!(c.cors_origin.as_deref(), Some("https://example.com"));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn a_flag_beats_the_environment() {
        let env = [
            ("PAIRLINK_LISTEN", "127.0.0.1:7000"),
            ("PAIRLINK_SESSION_TTL", "30s"),
            ("PAIRLINK_MAX_CONNECTIONS", "11"),
            ("PAIRLINK_LOG_LEVEL", "debug"),
            ("PAIRLINK_CORS_ORIGIN", "https://env.example"),
        ];
        let c = run(
            &[
                "--listen=127.0.0.1:7100",
                "--session-ttl",
                "5s",
                "--max-connections=22",
                "--log-level=warn",
                "--cors-origin=https://flag.example",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7100".parse::<SocketAddr>().unwrap());
        assert_eq!(c.session_ttl, Duration::from_secs(5));
        assert_eq!(c.max_connections, 22);
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.cors_origin.as_deref(), Some("https://flag.example"));
        // Options without a flag still come from the environment.
        let c = run(&["--listen=127.0.0.1:7100"], &env).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(30));
    }

    #[test]
    fn a_bad_variable_is_an_error_naming_it() {
        let table = [
            (
                "PAIRLINK_SESSION_TTL",
                "x",
                "PAIRLINK_SESSION_TTL: invalid duration \"x\" (use e.g. 1500ms, 2s, 1m)",
            ),
            (
                "PAIRLINK_POLL_TIMEOUT",
                "5",
                "PAIRLINK_POLL_TIMEOUT: invalid duration \"5\"",
            ),
            (
                "PAIRLINK_HEARTBEAT",
                " 1s",
                "PAIRLINK_HEARTBEAT: invalid duration",
            ),
            (
                "PAIRLINK_MAX_CONNECTIONS",
                "0",
                "PAIRLINK_MAX_CONNECTIONS: \"0\" must be at least 1",
            ),
            (
                "PAIRLINK_MAX_SESSIONS",
                "lots",
                "PAIRLINK_MAX_SESSIONS: invalid number",
            ),
            (
                "PAIRLINK_LISTEN",
                "nope",
                "PAIRLINK_LISTEN: invalid address",
            ),
            ("PAIRLINK_NODE", "a b", "PAIRLINK_NODE: invalid node name"),
            (
                "PAIRLINK_LOG_LEVEL",
                "loud",
                "PAIRLINK_LOG_LEVEL: invalid log level \"loud\"",
            ),
            (
                "PAIRLINK_CORS_ORIGIN",
                "a\r\nb",
                "PAIRLINK_CORS_ORIGIN: invalid origin",
            ),
        ];
        for (name, value, want) in table {
            let message = run_err(&[], &[(name, value)]);
            assert!(message.starts_with(want), "{name}={value:?}: {message}");
        }
        // The flag wins, so a bad variable it overrides is not even read.
        let c = run(&["--session-ttl=2s"], &[("PAIRLINK_SESSION_TTL", "x")]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(2));
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let env = [
            ("PAIRLINK_SESSION_TTL", ""),
            ("PAIRLINK_CORS_ORIGIN", ""),
            ("PAIRLINK_CLUSTER_LISTEN", ""),
            ("PAIRLINK_COOKIE_FILE", ""),
            ("PAIRLINK_PEERS", ""),
        ];
        let c = run(&[], &env).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(60));
        assert_eq!(c.cors_origin, None);
        assert_eq!(c.cluster_listen, None);
        assert_eq!(c.cookie_file, None);
    }

    #[test]
    fn cors_origins() {
        let longest = "a".repeat(CORS_ORIGIN_BYTES_MAX);
        for good in [
            "https://example.com",
            "http://localhost:3000",
            "*",
            "null",
            longest.as_str(),
        ] {
            assert_eq!(
                run(&["--cors-origin", good], &[])
                    .unwrap()
                    .cors_origin
                    .as_deref(),
                Some(good)
            );
        }
        let too_long = "a".repeat(CORS_ORIGIN_BYTES_MAX + 1);
        let bad = [
            "",
            "a b",
            "https://x\r\nSet-Cookie: a=b",
            "https://x\n",
            "\t",
            "é",
            "a\u{7f}",
            "a\0",
            too_long.as_str(),
        ];
        for text in bad {
            let message = run_err(&["--cors-origin", text], &[]);
            assert!(
                message.starts_with("--cors-origin: invalid origin"),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn log_levels() {
        let table = [
            ("error", log::LevelFilter::Error),
            ("warn", log::LevelFilter::Warn),
            ("info", log::LevelFilter::Info),
            ("debug", log::LevelFilter::Debug),
            ("trace", log::LevelFilter::Trace),
            ("DEBUG", log::LevelFilter::Debug),
            ("Info", log::LevelFilter::Info),
        ];
        for (text, level) in table {
            assert_eq!(
                run(&["--log-level", text], &[]).unwrap().log_level,
                level,
                "{text}"
            );
        }
        for bad in ["", "off", "verbose", "warning", " info", "1"] {
            let message = run_err(&["--log-level", bad], &[]);
            assert!(
                message.starts_with("--log-level: invalid log level"),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn command_line_errors() {
        let table: &[(&[&str], &str)] = &[
            (&["--bogus"], "invalid option '--bogus' (see --help)"),
            (&["-x"], "invalid option '-x' (see --help)"),
            (&["extra"], "unexpected argument \"extra\" (see --help)"),
            (
                &["--listen"],
                "missing argument for option '--listen' (see --help)",
            ),
            (
                &["--node=n1", "--max-sessions"],
                "missing argument for option '--max-sessions' (see --help)",
            ),
            (
                &["--listen=127.0.0.1:1", "x"],
                "unexpected argument \"x\" (see --help)",
            ),
            (&["--peers=n2=h:1"], "invalid option '--peers' (see --help)"),
        ];
        for &(args, want) in table {
            assert_eq!(run_err(args, &[]), want, "{args:?}");
        }
        // A value may look like an option; it is then judged as a value.
        let message = run_err(&["--listen", "--node"], &[]);
        assert!(
            message.starts_with("--listen: invalid address \"--node\""),
            "{message}"
        );
    }

    #[test]
    fn repeated_flag_keeps_the_last_value() {
        let c = run(&["--node=a", "--node", "b"], &[]).unwrap();
        assert_eq!(c.node, "b");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'n', 0xff]);
        let result = parse([OsString::from("--node"), bad.clone()], |_| None);
        let message = result.unwrap_err().0;
        assert!(message.starts_with("--node: not valid UTF-8"), "{message}");
        let result = parse([OsString::from("--peer"), bad.clone()], |_| None);
        assert!(result.unwrap_err().0.starts_with("--peer: not valid UTF-8"));
        // A cookie path need not be UTF-8: it is read as given (and here
        // does not exist).
        let result = parse([OsString::from("--cookie-file"), bad], |_| None);
        let message = result.unwrap_err().0;
        assert!(
            message.starts_with("--cookie-file: cannot read"),
            "{message}"
        );
    }

    #[test]
    fn help_and_version() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["--node=n1", "--help"],
            &["--help", "--bogus"],
            &["--help", "extra"],
        ] {
            let Ok(Parsed::Help(text)) = parse_with(args, &[("PAIRLINK_SESSION_TTL", "x")]) else {
                panic!("{args:?}: expected help");
            };
            assert!(text.starts_with("pairlink [OPTIONS]\n"), "{text}");
        }
        let Ok(Parsed::Help(text)) = parse_with(&["-h"], &[]) else {
            panic!("expected help");
        };
        for opt in &OPTIONS {
            assert!(
                text.contains(&format!("  --{} {}", opt.long, opt.metavar)),
                "--{}",
                opt.long
            );
            if !opt.default.is_empty() {
                assert!(
                    text.contains(&format!("(default {})", opt.default)),
                    "--{}",
                    opt.long
                );
            }
        }
        for needle in [
            "  --listen ADDR           HTTP address            (default 127.0.0.1:8080)\n",
            "  --max-session-buffer N  unacknowledged bytes per session (default 262144)\n",
            "(required with --cluster-listen)",
            "PAIRLINK_",
            "PAIRLINK_PEERS",
            "1500ms",
            "--version",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        assert!(
            text.lines()
                .all(|line| line.len() <= 90 && line == line.trim_end()),
            "{text}"
        );

        let version = format!("pairlink {}", env!("CARGO_PKG_VERSION"));
        for args in [&["--version"][..], &["-V"], &["-V", "--bogus"]] {
            match parse_with(args, &[]) {
                Ok(Parsed::Version(line)) => assert_eq!(line, version),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        // Arguments before --help are still checked, in order.
        assert_eq!(
            run_err(&["--bogus", "--help"], &[]),
            "invalid option '--bogus' (see --help)"
        );
    }

    #[test]
    fn known_variables() {
        for name in [
            "PAIRLINK_PEERS",
            "PAIRLINK_PEER",
            "PAIRLINK_LISTEN",
            "PAIRLINK_LOG_LEVEL",
        ] {
            assert!(is_known_env(name), "{name}");
        }
        for name in ["PAIRLINK_LISTN", "PAIRLINK_", "PAIRLINK_HELP", "LISTEN"] {
            assert!(!is_known_env(name), "{name}");
        }
    }

    #[test]
    fn cookie_is_trimmed() {
        let file = TempFile::new(b"\n\t  0123456789abcdef xyz \r\n\n", 0o600);
        let cookie = read_cookie(&file.0).unwrap();
        assert_eq!(cookie, b"0123456789abcdef xyz");
        let file = TempFile::new(b"0123456789abcdef", 0o600);
        assert_eq!(read_cookie(&file.0).unwrap(), b"0123456789abcdef");
        // Binary content is kept byte for byte.
        let file = TempFile::new(&[0xff; 20], 0o600);
        assert_eq!(read_cookie(&file.0).unwrap(), vec![0xff; 20]);
    }

    #[test]
    fn cookie_too_short() {
        for content in [
            &b""[..],
            b"   \n",
            b"0123456789abcde",
            b"  0123456789abcde\n\n\n",
        ] {
            let file = TempFile::new(content, 0o600);
            let message = read_cookie(&file.0).unwrap_err();
            assert!(
                message.contains("at least 16 are needed"),
                "{content:?}: {message}"
            );
        }
        let file = TempFile::new(b"short\n", 0o600);
        let message = run_err(&["--cookie-file", file.path()], &[]);
        assert_eq!(
            message,
            format!(
                "--cookie-file: the cookie in {:?} is 5 bytes after trimming whitespace; \
                 at least 16 are needed",
                file.0
            )
        );
    }

    #[test]
    fn cookie_file_missing_or_wrong() {
        let path = std::env::temp_dir().join(format!(
            "pairlink-config-test-missing-{}",
            std::process::id()
        ));
        let path_text = path.to_str().unwrap();
        let message = run_err(&["--cookie-file", path_text], &[]);
        assert!(
            message.starts_with(&format!("--cookie-file: cannot read {path:?}: ")),
            "{message}"
        );
        assert!(message.contains("os error"), "{message}");
        let message = run_err(&[], &[("PAIRLINK_COOKIE_FILE", path_text)]);
        assert!(
            message.starts_with("PAIRLINK_COOKIE_FILE: cannot read"),
            "{message}"
        );

        let message = run_err(
            &["--cookie-file", std::env::temp_dir().to_str().unwrap()],
            &[],
        );
        assert!(message.contains("not a regular file"), "{message}");

        // A FIFO is refused at once: opening it would wait for a writer.
        let fifo =
            std::env::temp_dir().join(format!("pairlink-config-test-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {fifo:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        let arg = fifo.to_str().unwrap().to_string();
        std::thread::spawn(move || {
            let _ = tx.send(run_err(&["--cookie-file", &arg], &[]));
        });
        let message = rx.recv_timeout(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_file(&fifo);
        let message = message.expect("reading a FIFO as the cookie still waits after 5 s");
        assert!(message.contains("not a regular file"), "{message}");

        let big = vec![b'x'; COOKIE_FILE_BYTES_MAX as usize + 1];
        let file = TempFile::new(&big, 0o600);
        let message = run_err(&["--cookie-file", file.path()], &[]);
        assert!(message.contains("is larger than 4096 bytes"), "{message}");
        let exact = vec![b'x'; COOKIE_FILE_BYTES_MAX as usize];
        let file = TempFile::new(&exact, 0o600);
        assert_eq!(read_cookie(&file.0).unwrap(), exact);
    }

    #[test]
    fn cookie_file_without_cluster_is_still_checked() {
        let file = cookie_file();
        let c = run(&["--cookie-file", file.path()], &[]).unwrap();
        assert_eq!(c.cookie.as_deref(), Some(COOKIE));
        assert_eq!(c.cluster_listen, None);
    }

    #[test]
    fn exposed_modes() {
        for mode in [0o600, 0o400, 0o700, 0o100600, 0o4700] {
            assert!(!mode_is_exposed(mode), "{mode:o}");
        }
        for mode in [0o640, 0o604, 0o644, 0o620, 0o602, 0o666, 0o100644] {
            assert!(mode_is_exposed(mode), "{mode:o}");
        }
        // A readable cookie only warns; the configuration still succeeds.
        let file = TempFile::new(COOKIE, 0o644);
        let c = run(&["--cookie-file", file.path()], &[]).unwrap();
        assert_eq!(c.cookie.as_deref(), Some(COOKIE));
    }

    #[test]
    fn errors_are_one_line_for_hostile_input() {
        let hostile = "a\r\nb\u{1b}[31mc";
        for flag in [
            "--listen",
            "--node",
            "--cluster-listen",
            "--poll-timeout",
            "--max-sessions",
            "--cors-origin",
            "--log-level",
        ] {
            let message = run_err(&[flag, hostile], &[]);
            assert!(
                !message.contains('\r') && !message.contains('\u{1b}'),
                "{message:?}"
            );
        }
        let message = run_err(
            &[
                "--cluster-listen=127.0.0.1:1",
                "--cookie-file=x",
                "--peer",
                hostile,
            ],
            &[],
        );
        assert!(!message.contains('\r'), "{message:?}");
    }
}
