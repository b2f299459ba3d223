//! Writing HTTP/1.1 responses.
//!
//! Every response carries `Cache-Control: no-store`, and every one but 204
//! a `Content-Length` (API.md §2).

use crate::core::Body;
use crate::limits::RETRY_AFTER_S;

/// The kind of body, for `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// `application/json`
    Json,
    /// `text/plain; charset=utf-8`
    Text,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

/// A response, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes; must be empty for 204.
    pub body: Body,
    /// `Content-Type` of a non-empty body.
    pub content_type: ContentType,
    /// Add `Retry-After`.
    pub retry_after: bool,
    /// `Allow` header, for 405 and preflights.
    pub allow: Option<&'static str>,
    /// Answer a CORS preflight (adds the `Access-Control-Allow-*` set).
    pub preflight: bool,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Body>) -> Response {
        Response {
            status,
            body: body.into(),
            content_type: ContentType::Json,
            retry_after: false,
            allow: None,
            preflight: false,
            close: false,
        }
    }

    /// A JSON error `{"error":code,"message":message}`; 503 and 429 carry
    /// `Retry-After`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let mut r = Response::json(status, crate::proto::json::error_body(code, message));
        r.retry_after = matches!(status, 429 | 503);
        r
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: &'static str) -> Response {
        let mut r = Response::json(status, body.as_bytes());
        r.content_type = ContentType::Text;
        r
    }

    /// A 204 response.
    pub fn no_content() -> Response {
        Response::json(204, &b""[..])
    }
}

/// The status line and `Cache-Control` of the statuses the API answers
/// most, written as one copy.
fn status_lines(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        200 => b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n",
        201 => b"HTTP/1.1 201 Created\r\nCache-Control: no-store\r\n",
        202 => b"HTTP/1.1 202 Accepted\r\nCache-Control: no-store\r\n",
        204 => b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n",
        _ => return None,
    })
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Headers every API response carries when CORS is configured.
pub struct Cors<'a> {
    /// The allowed origin.
    pub origin: &'a str,
}

/// Appends `response` to `out`. `head_only` leaves out the body (for HEAD)
/// but keeps its `Content-Length`.
pub fn write(out: &mut Vec<u8>, response: &Response, cors: Option<&Cors<'_>>, head_only: bool) {
    out.reserve(160 + response.body.len());
    match status_lines(response.status) {
        Some(lines) => out.extend_from_slice(lines),
        None => {
            out.extend_from_slice(b"HTTP/1.1 ");
            crate::proto::json::write_u64(out, u64::from(response.status));
            out.push(b' ');
            out.extend_from_slice(reason(response.status).as_bytes());
            out.extend_from_slice(b"\r\nCache-Control: no-store\r\n");
        }
    }
    if response.status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        crate::proto::json::write_u64(out, response.body.len() as u64);
        out.extend_from_slice(b"\r\n");
        if !response.body.is_empty() {
            out.extend_from_slice(match response.content_type {
                ContentType::Json => b"Content-Type: application/json\r\n".as_slice(),
                ContentType::Text => b"Content-Type: text/plain; charset=utf-8\r\n",
                ContentType::Prometheus => {
                    b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                }
            });
        }
    }
    if response.retry_after {
        out.extend_from_slice(b"Retry-After: ");
        crate::proto::json::write_u64(out, u64::from(RETRY_AFTER_S));
        out.extend_from_slice(b"\r\n");
    }
    if let Some(allow) = response.allow {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cors) = cors {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(cors.origin.as_bytes());
        out.extend_from_slice(b"\r\nVary: Origin\r\n");
        if response.preflight {
            out.extend_from_slice(b"Access-Control-Allow-Methods: ");
            out.extend_from_slice(
                response
                    .allow
                    .unwrap_or("GET, POST, DELETE, OPTIONS")
                    .as_bytes(),
            );
            out.extend_from_slice(
                b"\r\nAccess-Control-Allow-Headers: Authorization, Content-Type, Idempotency-Key\r\n\
                  Access-Control-Max-Age: 86400\r\n",
            );
        }
    }
    if response.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response, cors: Option<&Cors<'_>>) -> String {
        let mut out = Vec::new();
        write(&mut out, r, cors, false);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_response() {
        let r = Response::json(200, b"{}".to_vec());
        assert_eq!(
            text(&r, None),
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\
             Content-Type: application/json\r\n\r\n{}"
        );
    }

    #[test]
    fn no_content_has_no_length() {
        let t = text(&Response::no_content(), None);
        assert_eq!(
            t,
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\r\n"
        );
    }

    #[test]
    fn errors_carry_retry_after_and_close() {
        let mut r = Response::error(503, "overloaded", "too many");
        r.close = true;
        let t = text(&r, None);
        assert!(t.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(t.contains("\r\nRetry-After: 1\r\n"));
        assert!(t.contains("\r\nConnection: close\r\n"));
        assert!(t.ends_with("\r\n\r\n{\"error\":\"overloaded\",\"message\":\"too many\"}"));
    }

    #[test]
    fn cors_preflight() {
        let mut r = Response::no_content();
        r.preflight = true;
        r.allow = Some("GET, OPTIONS");
        let t = text(
            &r,
            Some(&Cors {
                origin: "https://app.example",
            }),
        );
        assert!(t.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
        assert!(t.contains("Access-Control-Allow-Methods: GET, OPTIONS\r\n"));
        assert!(t.contains(
            "Access-Control-Allow-Headers: Authorization, Content-Type, Idempotency-Key\r\n"
        ));
        assert!(t.contains("Access-Control-Max-Age: 86400\r\n"));
    }
}
