//! The HTTP API of API.md §2 on top of the node core: routing, validation,
//! and turning the core's answers into responses. Sans-IO like the core:
//! time and randomness are passed in.

use crate::config::PeerSpec;
use crate::core::{CancelKey, Node, Reply, Started};
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, SECRET_BYTES, TOKEN_BYTES_MAX};
use crate::metrics::{self, Metrics, PeerCounts};
use crate::proto::cut;
use crate::proto::http::{Method, Request};
use crate::proto::ids::{self, Side, Token, TokenCache};
use crate::proto::json;
use crate::proto::query;
use crate::proto::response::Response;

/// Settings of the HTTP side.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// `Access-Control-Allow-Origin`, when CORS is on.
    pub cors_origin: Option<String>,
    /// The cluster peers, as configured, for `/v1/cluster`.
    pub peers: Vec<PeerSpec>,
}

/// A cluster peer's connection state, as `/v1/cluster` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Connected and authenticated.
    Up,
    /// Unreachable; being retried.
    Down,
    /// Being dialled or handshaking.
    Connecting,
}

impl PeerState {
    /// `up`, `down` or `connecting`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Down => "down",
            PeerState::Connecting => "connecting",
        }
    }
}

/// What handling a request gives.
#[derive(Debug)]
pub enum Handled {
    /// Respond now.
    Respond(Response),
    /// The answer comes later as a core output; the key, if any, cancels
    /// the request when its client goes away.
    Wait(Option<CancelKey>),
}

/// The API: the node core plus the HTTP-side counters.
#[derive(Debug)]
pub struct Api<W> {
    /// The node's handlers.
    pub node: Node<W>,
    /// HTTP counters.
    pub metrics: Metrics,
    /// Cluster peers by state, kept up to date by the driver.
    pub peer_counts: PeerCounts,
    /// Each configured peer's state, in configuration order.
    pub peer_states: Vec<PeerState>,
    /// Each configured peer's last heartbeat round trip, in milliseconds.
    pub peer_rtt_ms: Vec<Option<u64>>,
    config: ApiConfig,
}

/// Where a request goes.
enum Route<'a> {
    Healthz,
    Metrics,
    Cluster,
    Pairs,
    Session(&'a [u8], &'a [u8]),
    Events(&'a [u8], &'a [u8]),
    Messages(&'a [u8], &'a [u8]),
}

impl Route<'_> {
    /// The methods of the route, with and without CORS preflights.
    fn allow(&self, cors: bool) -> &'static str {
        match (self, cors) {
            (Route::Healthz | Route::Metrics | Route::Cluster, false) => "GET, HEAD",
            (Route::Healthz | Route::Metrics | Route::Cluster, true) => "GET, HEAD, OPTIONS",
            (Route::Pairs | Route::Messages(..), false) => "POST",
            (Route::Pairs | Route::Messages(..), true) => "POST, OPTIONS",
            (Route::Session(..), false) => "POST, DELETE",
            (Route::Session(..), true) => "POST, DELETE, OPTIONS",
            (Route::Events(..), false) => "GET",
            (Route::Events(..), true) => "GET, OPTIONS",
        }
    }
}

fn route(path: &[u8]) -> Option<Route<'_>> {
    match path {
        b"/healthz" => return Some(Route::Healthz),
        b"/metrics" => return Some(Route::Metrics),
        b"/v1/cluster" => return Some(Route::Cluster),
        b"/v1/pairs" => return Some(Route::Pairs),
        _ => {}
    }
    let rest = path.strip_prefix(b"/v1/pairs/")?;
    let (pair, rest) = cut(rest, b'/')?;
    let route = match cut(rest, b'/') {
        None => Route::Session(pair, rest),
        Some((side, b"events")) => Route::Events(pair, side),
        Some((side, b"messages")) => Route::Messages(pair, side),
        Some(_) => return None,
    };
    Some(route)
}

/// The path and query of a request target: an absolute-form target
/// (`http://host/path?query`, RFC 9112 §3.2.2, which a server MUST accept)
/// is cut to its path and query; the host in it, like `Host`, chooses
/// nothing here.
fn origin_form(target: &[u8]) -> &[u8] {
    if target.starts_with(b"/") {
        return target; // origin-form, nearly every request
    }
    let scheme = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return target;
    };
    let rest = &target[scheme..];
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) if rest[i] == b'/' => &rest[i..],
        // No path: the root, which serves nothing here.
        _ => b"/",
    }
}

/// A 400 for a malformed request: API.md lists ids, the query and headers
/// with the request line, and "a malformed request closes its connection
/// after the error response".
#[cold]
#[inline(never)]
fn malformed(code: &'static str, message: &'static str) -> Response {
    let mut r = Response::error(400, code, message);
    r.close = true;
    r
}

/// A 400 for the pair and side in a path; `bad_pair` wins. The pair id
/// comes back checked, not copied: only a join keeps it.
fn parse_ids<'a>(pair: &'a [u8], side: &[u8]) -> Result<(&'a [u8], Side), Response> {
    if !ids::is_pair(pair) {
        return Err(malformed(
            "bad_pair",
            "a pair id is 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    let Some(side) = Side::parse(side) else {
        return Err(malformed("bad_side", "the side is a or b"));
    };
    Ok((pair, side))
}

/// The bearer token of a request, or 401.
fn bearer<'c>(request: &Request, tokens: &'c mut TokenCache) -> Result<&'c Token, Response> {
    bearer_token(request, tokens).ok_or_else(|| {
        Response::error(
            401,
            "unauthorized",
            "send Authorization: Bearer <session token>",
        )
    })
}

/// The bearer token of a request, if it has one of this server's form;
/// `tokens` remembers the connection's last one.
fn bearer_token<'c>(request: &Request, tokens: &'c mut TokenCache) -> Option<&'c Token> {
    tokens.parse(bearer_value(request.authorization?)?)
}

/// The token bytes of `Bearer <token>` (scheme case-insensitive).
fn bearer_value(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    // Exactly one space: `Bearer  x` is not of the form (the framer has
    // already trimmed the value's outer whitespace).
    (!rest.is_empty() && rest.len() <= TOKEN_BYTES_MAX).then_some(rest)
}

/// The response for a reply of the core.
pub fn reply_response(reply: Reply) -> Response {
    let mut r = Response::json(reply.status, reply.body);
    r.retry_after = matches!(reply.status, 429 | 503);
    r
}

impl<W> Api<W> {
    /// An API over `node`.
    pub fn new(node: Node<W>, config: ApiConfig) -> Self {
        let peer_states = vec![PeerState::Connecting; config.peers.len()];
        let peer_counts = PeerCounts {
            connecting: config.peers.len() as u64,
            ..PeerCounts::default()
        };
        let peer_rtt_ms = vec![None; config.peers.len()];
        Api {
            node,
            metrics: Metrics::default(),
            peer_counts,
            peer_states,
            peer_rtt_ms,
            config,
        }
    }

    /// Records peer `i`'s (configuration order) connection state.
    pub fn set_peer_state(&mut self, i: usize, state: PeerState) {
        if let Some(slot) = self.peer_states.get_mut(i) {
            *slot = state;
        }
        let mut counts = PeerCounts::default();
        for s in &self.peer_states {
            match s {
                PeerState::Up => counts.up += 1,
                PeerState::Down => counts.down += 1,
                PeerState::Connecting => counts.connecting += 1,
            }
        }
        self.peer_counts = counts;
    }

    /// The configured CORS origin.
    pub fn cors_origin(&self) -> Option<&str> {
        self.config.cors_origin.as_deref()
    }

    /// Handles one request at `now` (monotonic) and `wall_ms` (wall clock,
    /// for claims). `tokens` is the connection's memo of its last token;
    /// `secret` draws fresh randomness (for a token or a pair id);
    /// `make_waiter` is called when the answer comes later.
    pub fn handle(
        &mut self,
        now: u64,
        wall_ms: u64,
        request: &Request,
        tokens: &mut TokenCache,
        secret: &mut dyn FnMut() -> Option<[u8; SECRET_BYTES]>,
        make_waiter: impl FnOnce() -> W,
    ) -> Handled {
        match self.dispatch(now, wall_ms, request, tokens, secret, make_waiter) {
            Ok(Started::Done(reply)) => Handled::Respond(reply_response(reply)),
            Ok(Started::Waiting(cancel)) => Handled::Wait(cancel),
            Err(response) => Handled::Respond(response),
        }
    }

    fn dispatch(
        &mut self,
        now: u64,
        wall_ms: u64,
        request: &Request,
        tokens: &mut TokenCache,
        secret: &mut dyn FnMut() -> Option<[u8; SECRET_BYTES]>,
        make_waiter: impl FnOnce() -> W,
    ) -> Result<Started, Response> {
        let target = origin_form(request.target);
        let (path, query) = cut(target, b'?').unwrap_or((target, b""));
        let Some(route) = route(path) else {
            return Err(Response::error(404, "not_found", "no such path"));
        };
        let method = request.method;
        let cors = self.config.cors_origin.is_some();
        let allowed = match (&route, method) {
            (Route::Healthz | Route::Metrics | Route::Cluster, Method::Get | Method::Head) => true,
            (Route::Pairs, Method::Post) => true,
            (Route::Session(..), Method::Post | Method::Delete) => true,
            (Route::Events(..), Method::Get) => true,
            (Route::Messages(..), Method::Post) => true,
            (_, Method::Options) if cors => {
                let mut r = Response::no_content();
                r.preflight = true;
                r.allow = Some(route.allow(true));
                return Err(r);
            }
            _ => false,
        };
        if !allowed {
            let mut r =
                Response::error(405, "method_not_allowed", "method not allowed on this path");
            r.allow = Some(route.allow(cors));
            return Err(r);
        }
        if self.node.draining() {
            let mut r = Response::error(503, "shutting_down", "the node is shutting down");
            r.close = true;
            return Err(r);
        }
        let started = match route {
            Route::Healthz => return Err(Response::text(200, "ok")),
            Route::Metrics => {
                let mut r = Response::text(200, "");
                let rtts: Vec<(&str, Option<u64>)> = self
                    .config
                    .peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .zip(self.peer_rtt_ms.iter().copied())
                    .collect();
                r.body = metrics::render(&self.metrics, &self.node, self.peer_counts, &rtts).into();
                r.content_type = crate::proto::response::ContentType::Prometheus;
                return Err(r);
            }
            Route::Cluster => return Err(Response::json(200, self.cluster_body())),
            Route::Pairs => {
                let bytes = secret().ok_or_else(no_randomness)?;
                let mut id = String::with_capacity(24);
                ids::base64url(&bytes, &mut id);
                let mut body = b"{\"pair\":".to_vec();
                json::write_str(&mut body, &id);
                body.push(b'}');
                Started::Done(Reply {
                    status: 201,
                    body: body.into(),
                })
            }
            Route::Session(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                if method == Method::Delete {
                    let token = bearer(request, tokens)?;
                    self.node.leave(now, &pair, side, token, make_waiter)
                } else {
                    // A join is not an authenticated call: a token that is
                    // not ours is just not a resume.
                    let auth = bearer_token(request, tokens);
                    let fresh = secret().ok_or_else(no_randomness)?;
                    let pair = ids::parse_pair(pair).ok_or_else(|| {
                        Response::error(500, "internal", "a checked pair id did not parse")
                    })?;
                    self.node
                        .join(now, wall_ms, &pair, side, auth, fresh, make_waiter)
                }
            }
            Route::Events(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                let q = query::parse_poll(query).map_err(|m| malformed("bad_query", m))?;
                let token = bearer(request, tokens)?;
                self.node
                    .poll(now, &pair, side, token, q.after, q.timeout_ms, make_waiter)
            }
            Route::Messages(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                let key = request.idempotency_key;
                if key.is_some_and(|k| {
                    k.is_empty()
                        || k.len() > IDEMPOTENCY_KEY_BYTES_MAX
                        || !k.iter().all(|b| (0x21..=0x7E).contains(b))
                }) {
                    return Err(malformed(
                        "bad_idempotency_key",
                        "Idempotency-Key is 1 to 64 visible ASCII characters",
                    ));
                }
                let data = std::str::from_utf8(request.body).map_err(|_| {
                    Response::error(400, "bad_utf8", "the message body must be UTF-8 text")
                })?;
                let token = bearer(request, tokens)?;
                self.node
                    .send(now, &pair, side, token, key, data.into(), make_waiter)
            }
        };
        Ok(started)
    }

    fn cluster_body(&self) -> Vec<u8> {
        let mut body = b"{\"node\":".to_vec();
        json::write_str(&mut body, &self.node.config().name);
        body.extend_from_slice(b",\"peers\":[");
        for (i, peer) in self.config.peers.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"node\":");
            json::write_str(&mut body, &peer.name);
            body.extend_from_slice(b",\"addr\":");
            json::write_str(&mut body, &peer.addr);
            body.extend_from_slice(b",\"state\":\"");
            let state = self
                .peer_states
                .get(i)
                .copied()
                .unwrap_or(PeerState::Connecting);
            body.extend_from_slice(state.as_str().as_bytes());
            body.extend_from_slice(b"\"}");
        }
        body.extend_from_slice(b"]}");
        body
    }
}

fn no_randomness() -> Response {
    Response::error(500, "internal", "the OS random source failed")
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
