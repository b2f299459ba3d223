//! The HTTP API of API.md §2 on top of the node core: routing, validation,
//! and turning the core's answers into responses. Sans-IO like the core:
//! time and randomness are passed in.

use crate::core::{ApiError, Joined, Node, PollHandle, Polled};
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, SECRET_BYTES, TOKEN_BYTES_MAX};
use crate::metrics::{self, Metrics, PeerCounts};
use crate::proto::http::{Method, Request};
use crate::proto::ids::{self, PairId, Side, Token};
use crate::proto::json;
use crate::proto::query;
use crate::proto::response::Response;

/// Settings of the HTTP side.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `Access-Control-Allow-Origin`, when CORS is on.
    pub cors_origin: Option<String>,
}

/// What handling a request gives.
#[derive(Debug)]
pub enum Handled {
    /// Respond now.
    Respond(Response),
    /// A long poll waits; its answer comes as a core output.
    Wait(PollHandle),
}

/// The API: the node core plus the HTTP-side counters.
#[derive(Debug)]
pub struct Api<W> {
    /// The node's handlers.
    pub node: Node<W>,
    /// HTTP counters.
    pub metrics: Metrics,
    config: ApiConfig,
}

const ALLOW_PAIRS: &str = "POST, OPTIONS";
const ALLOW_SESSION: &str = "POST, DELETE, OPTIONS";
const ALLOW_EVENTS: &str = "GET, OPTIONS";
const ALLOW_MESSAGES: &str = "POST, OPTIONS";
const ALLOW_OPS: &str = "GET, HEAD";

/// Where a request goes.
enum Route<'a> {
    Healthz,
    Metrics,
    Cluster,
    Pairs,
    Session(&'a str, &'a str),
    Events(&'a str, &'a str),
    Messages(&'a str, &'a str),
}

impl Route<'_> {
    fn allow(&self) -> &'static str {
        match self {
            Route::Healthz | Route::Metrics | Route::Cluster => ALLOW_OPS,
            Route::Pairs => ALLOW_PAIRS,
            Route::Session(..) => ALLOW_SESSION,
            Route::Events(..) => ALLOW_EVENTS,
            Route::Messages(..) => ALLOW_MESSAGES,
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/healthz" => return Some(Route::Healthz),
        "/metrics" => return Some(Route::Metrics),
        "/v1/cluster" => return Some(Route::Cluster),
        "/v1/pairs" => return Some(Route::Pairs),
        _ => {}
    }
    let rest = path.strip_prefix("/v1/pairs/")?;
    let mut parts = rest.split('/');
    let pair = parts.next()?;
    let side = parts.next()?;
    let route = match parts.next() {
        None => Route::Session(pair, side),
        Some("events") => Route::Events(pair, side),
        Some("messages") => Route::Messages(pair, side),
        Some(_) => return None,
    };
    parts.next().is_none().then_some(route)
}

/// A 400 for the pair and side in a path; `bad_pair` wins.
fn parse_ids(pair: &str, side: &str) -> Result<(PairId, Side), Response> {
    let Some(pair) = ids::parse_pair(pair) else {
        return Err(Response::error(
            400,
            "bad_pair",
            "a pair id is 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    };
    let Some(side) = Side::parse(side) else {
        return Err(Response::error(400, "bad_side", "the side is a or b"));
    };
    Ok((pair, side))
}

/// The bearer token of a request, or 401.
fn bearer(request: &Request) -> Result<Token, Response> {
    let unauthorized = || {
        Response::error(
            401,
            "unauthorized",
            "send Authorization: Bearer <session token>",
        )
    };
    let value = request.authorization.as_deref().ok_or_else(unauthorized)?;
    let token = bearer_value(value).ok_or_else(unauthorized)?;
    Token::parse(token).ok_or_else(unauthorized)
}

/// The token bytes of `Bearer <token>` (scheme case-insensitive).
fn bearer_value(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && token.len() <= TOKEN_BYTES_MAX).then_some(token)
}

fn error(e: ApiError) -> Response {
    Response::error(e.status(), e.code(), e.message())
}

/// The response to a poll answered later by the core.
pub fn poll_answer(result: Result<Vec<u8>, ApiError>) -> Response {
    match result {
        Ok(body) => Response::json(200, body),
        Err(e) => error(e),
    }
}

impl<W> Api<W> {
    /// An API over `node`.
    pub fn new(node: Node<W>, config: ApiConfig) -> Self {
        Api {
            node,
            metrics: Metrics::default(),
            config,
        }
    }

    /// The configured CORS origin.
    pub fn cors_origin(&self) -> Option<&str> {
        self.config.cors_origin.as_deref()
    }

    /// Handles one request at `now`. `secret` draws fresh randomness (for a
    /// token or a pair id); `make_waiter` is called when a poll waits.
    pub fn handle(
        &mut self,
        now: u64,
        request: &Request,
        secret: &mut dyn FnMut() -> Option<[u8; SECRET_BYTES]>,
        make_waiter: impl FnOnce() -> W,
    ) -> Handled {
        match self.dispatch(now, request, secret, make_waiter) {
            Ok(handled) => handled,
            Err(response) => Handled::Respond(response),
        }
    }

    fn dispatch(
        &mut self,
        now: u64,
        request: &Request,
        secret: &mut dyn FnMut() -> Option<[u8; SECRET_BYTES]>,
        make_waiter: impl FnOnce() -> W,
    ) -> Result<Handled, Response> {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        let Some(route) = route(path) else {
            return Err(Response::error(404, "not_found", "no such path"));
        };
        let method = request.method;
        let allowed = match (&route, method) {
            (Route::Healthz | Route::Metrics | Route::Cluster, Method::Get | Method::Head) => true,
            (Route::Pairs, Method::Post) => true,
            (Route::Session(..), Method::Post | Method::Delete) => true,
            (Route::Events(..), Method::Get) => true,
            (Route::Messages(..), Method::Post) => true,
            (
                Route::Pairs | Route::Session(..) | Route::Events(..) | Route::Messages(..),
                Method::Options,
            ) => {
                if self.config.cors_origin.is_some() {
                    let mut r = Response::no_content();
                    r.preflight = true;
                    r.allow = Some(route.allow());
                    return Ok(Handled::Respond(r));
                }
                false
            }
            _ => false,
        };
        if !allowed {
            let mut r =
                Response::error(405, "method_not_allowed", "method not allowed on this path");
            r.allow = Some(route.allow());
            return Err(r);
        }
        if self.node.draining() {
            let mut r = Response::error(503, "shutting_down", "the node is shutting down");
            r.close = true;
            return Err(r);
        }
        let response = match route {
            Route::Healthz => Response::text(200, "ok"),
            Route::Metrics => {
                let mut r = Response::text(200, "");
                r.body = metrics::render(&self.metrics, &self.node, PeerCounts::default());
                r.content_type = crate::proto::response::ContentType::Prometheus;
                r
            }
            Route::Cluster => self.cluster(),
            Route::Pairs => {
                let bytes = secret().ok_or_else(no_randomness)?;
                let mut id = String::with_capacity(24);
                ids::base64url(&bytes, &mut id);
                let mut body = b"{\"pair\":".to_vec();
                json::write_str(&mut body, &id);
                body.push(b'}');
                Response::json(201, body)
            }
            Route::Session(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                if method == Method::Delete {
                    let token = bearer(request)?;
                    self.node.leave(now, &pair, side, &token).map_err(error)?;
                    Response::no_content()
                } else {
                    self.join(now, &pair, side, request, secret)?
                }
            }
            Route::Events(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                let q =
                    query::parse_poll(query).map_err(|m| Response::error(400, "bad_query", m))?;
                let token = bearer(request)?;
                return match self.node.poll(
                    now,
                    &pair,
                    side,
                    &token,
                    q.after,
                    q.timeout_ms,
                    make_waiter,
                ) {
                    Ok(Polled::Ready(body)) => Ok(Handled::Respond(Response::json(200, body))),
                    Ok(Polled::Waiting(handle)) => Ok(Handled::Wait(handle)),
                    Err(e) => Err(error(e)),
                };
            }
            Route::Messages(pair, side) => {
                let (pair, side) = parse_ids(pair, side)?;
                let key = request.idempotency_key.as_deref();
                if key.is_some_and(|k| {
                    k.is_empty()
                        || k.len() > IDEMPOTENCY_KEY_BYTES_MAX
                        || !k.iter().all(|b| (0x21..=0x7E).contains(b))
                }) {
                    return Err(Response::error(
                        400,
                        "bad_idempotency_key",
                        "Idempotency-Key is 1 to 64 visible ASCII characters",
                    ));
                }
                let data = std::str::from_utf8(&request.body).map_err(|_| {
                    Response::error(400, "bad_utf8", "the message body must be UTF-8 text")
                })?;
                let token = bearer(request)?;
                self.node
                    .send(now, &pair, side, &token, key, data.into())
                    .map_err(error)?;
                Response::json(202, b"{}".to_vec())
            }
        };
        Ok(Handled::Respond(response))
    }

    fn join(
        &mut self,
        now: u64,
        pair: &PairId,
        side: Side,
        request: &Request,
        secret: &mut dyn FnMut() -> Option<[u8; SECRET_BYTES]>,
    ) -> Result<Response, Response> {
        // A join is not an authenticated call: a token that is not ours is
        // just not a resume.
        let auth = bearer(request).ok();
        let fresh = secret().ok_or_else(no_randomness)?;
        let Joined {
            token,
            peer_online,
            resumed,
        } = self
            .node
            .join(now, pair, side, auth.as_ref(), fresh)
            .map_err(error)?;
        let config = self.node.config();
        let mut body = Vec::with_capacity(200);
        body.extend_from_slice(b"{\"pair\":");
        json::write_str(&mut body, pair);
        body.extend_from_slice(b",\"side\":\"");
        body.extend_from_slice(side.as_str().as_bytes());
        body.extend_from_slice(b"\",\"session\":");
        json::write_str(&mut body, &token.to_string());
        body.extend_from_slice(if peer_online {
            b",\"peer\":\"online\"".as_slice()
        } else {
            b",\"peer\":\"offline\""
        });
        body.extend_from_slice(b",\"poll_timeout_ms\":");
        json::write_u64(&mut body, config.poll_timeout_ms);
        body.extend_from_slice(b",\"session_ttl_ms\":");
        json::write_u64(&mut body, config.session_ttl_ms);
        body.push(b'}');
        Ok(Response::json(if resumed { 200 } else { 201 }, body))
    }

    fn cluster(&self) -> Response {
        let mut body = b"{\"node\":".to_vec();
        json::write_str(&mut body, &self.node.config().name);
        body.extend_from_slice(b",\"peers\":[]}");
        Response::json(200, body)
    }
}

fn no_randomness() -> Response {
    Response::error(500, "internal", "the OS random source failed")
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
