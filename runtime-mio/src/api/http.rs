//! A small HTTP/1.1 server side for the API (RFC 9112): requests parsed with `httparse`,
//! keep-alive, bounded sizes, JSON errors.
//!
//! Bounds: a request head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers, a body
//! of at most [`MAX_BODY`] bytes (Content-Length only: chunked bodies are refused with 411
//! — no API client needs them), and a connection that has not sent a whole request within
//! [`REQUEST_TIMEOUT`] of its first byte, or stays idle for [`IDLE_TIMEOUT`], is closed.

use crate::config::Secret;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;
/// Longest request body.
pub const MAX_BODY: usize = 16 * 1024;
/// A request must arrive whole within this time of its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with nothing to do is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of responses waiting for a slow client, beyond which it is dropped.
pub const MAX_PENDING_OUTPUT: usize = 4 * 1024 * 1024;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// The `Authorization` header as sent (hidden from `Debug`: it may hold the token).
    pub authorization: Option<Secret>,
    /// The client asked to close after this request (or spoke HTTP/1.0 without
    /// keep-alive).
    pub close: bool,
}

/// The outcome of trying to parse the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Partial,
    /// A whole request, and how many bytes it took.
    Complete(Request, usize),
    /// A request that cannot be served: answer this and close.
    Error(Response),
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, v: &Value) -> Response {
        let mut body = v.to_string().into_bytes();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// A JSON error: `{"error": {"status": N, "message": "..."}}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(
            status,
            &json!({"error": {"status": status, "reason": reason(status), "message": message}}),
        )
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }

    /// With an extra header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The bytes on the wire; `close` adds `Connection: close`. `head_only` leaves the
    /// body out (HEAD).
    pub fn encode(&self, close: bool, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Parse::Error(Response::error(431, "request head too large"));
            }
            return Parse::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parse::Error(Response::error(431, "too many headers"))
        }
        Err(e) => return Parse::Error(Response::error(400, &format!("bad request: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Parse::Error(Response::error(431, "request head too large"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parse::Error(Response::error(400, "bad request line"));
    };
    let mut length: Option<usize> = None;
    let mut keep_alive = version == 1;
    let mut authorization = None;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "authorization" {
            // A second one is refused: which of the two would be checked is ambiguous.
            if authorization.is_some() {
                return Parse::Error(Response::error(400, "more than one Authorization header"));
            }
            authorization = Some(Secret(String::from_utf8_lossy(h.value).trim().to_string()));
            continue;
        }
        let value = String::from_utf8_lossy(h.value).trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                // RFC 9112 §6.3: differing lengths, or one that is not a number, are an
                // error (request smuggling otherwise).
                let Ok(n) = value.parse::<usize>() else {
                    return Parse::Error(Response::error(400, "bad Content-Length"));
                };
                if length.is_some_and(|l| l != n) {
                    return Parse::Error(Response::error(400, "conflicting Content-Length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                return Parse::Error(Response::error(
                    411,
                    "Transfer-Encoding is not supported: send Content-Length",
                ))
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token == "close" {
                        keep_alive = false;
                    } else if token == "keep-alive" {
                        keep_alive = true;
                    }
                }
            }
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Parse::Error(Response::error(
            413,
            &format!("body larger than {MAX_BODY} bytes"),
        ));
    }
    let total = head_len + length;
    let Some(body) = buf.get(head_len..total) else {
        return Parse::Partial;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    Parse::Complete(
        Request {
            method: method.to_string(),
            path,
            query,
            body: body.to_vec(),
            authorization,
            close: !keep_alive,
        },
        total,
    )
}

/// What the bytes buffered on a connection hold next (RFC 9112 §9.3: requests may be
/// pipelined on one keep-alive connection).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// No whole request yet: read more.
    Wait,
    /// A whole request, already taken off the buffer.
    Request(Request),
    /// A request that cannot be served: answer this and close (nothing more is read).
    Refuse(Response),
}

/// Longest run of unparsed bytes a connection may buffer: one whole request.
pub const MAX_REQUEST: usize = MAX_HEAD + MAX_BODY;

/// Takes the next request off `input` (the bytes a connection has received and not yet
/// used). A buffer that has grown beyond [`MAX_REQUEST`] without holding a whole request
/// is refused with 413, so the caller's memory per connection stays bounded.
pub fn next_request(input: &mut Vec<u8>) -> Next {
    if input.is_empty() {
        return Next::Wait;
    }
    match parse(input) {
        Parse::Partial if input.len() > MAX_REQUEST => {
            Next::Refuse(Response::error(413, "request too large"))
        }
        Parse::Partial => Next::Wait,
        Parse::Error(r) => Next::Refuse(r),
        Parse::Complete(req, used) => {
            input.drain(..used.min(input.len()));
            Next::Request(req)
        }
    }
}

/// Feeds `pieces` in order to one connection's reader, as the API server does (reading
/// stops once a refusal is due, or once more than [`MAX_REQUEST`] bytes wait unparsed),
/// and returns the requests served and the status of the refusal that closed the
/// connection, if any. For tests and fuzzing: however the same bytes are cut into pieces,
/// the result is the same.
pub fn read_requests(pieces: &[&[u8]]) -> (Vec<Request>, Option<u16>) {
    let mut input = Vec::new();
    let mut requests = Vec::new();
    for piece in pieces {
        let mut piece: &[u8] = piece;
        while !piece.is_empty() {
            // As the server reads: at most 4 KiB at a time, never beyond one request's
            // worth of unparsed bytes.
            if input.len() > MAX_REQUEST {
                break;
            }
            let n = piece.len().min(4096);
            let (now, rest) = piece.split_at(n);
            input.extend_from_slice(now);
            piece = rest;
            loop {
                match next_request(&mut input) {
                    Next::Wait => break,
                    Next::Request(r) => {
                        let close = r.close;
                        requests.push(r);
                        if close {
                            return (requests, None);
                        }
                    }
                    Next::Refuse(r) => return (requests, Some(r.status)),
                }
            }
        }
    }
    (requests, None)
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> (Request, usize) {
        match parse(b) {
            Parse::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    fn status(b: &[u8]) -> u16 {
        match parse(b) {
            Parse::Error(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_with_keep_alive_and_pipelining() {
        let two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\n\r\n";
        let (r, n) = complete(two);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/health"));
        assert!(!r.close);
        let (r2, n2) = complete(&two[n..]);
        assert_eq!(r2.path, "/metrics");
        assert_eq!(r2.query.as_deref(), Some("x=1"));
        assert_eq!(n + n2, two.len());
    }

    #[test]
    fn bodies_wait_for_content_length() {
        let req = b"POST /v1/ice-servers HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut]), Parse::Partial, "cut at {cut}");
        }
        let (r, n) = complete(req);
        assert_eq!(r.body, b"{\"a\":1}");
        assert_eq!(n, req.len());
    }

    #[test]
    fn connection_close_and_http_1_0() {
        let (r, _) = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(r.close);
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(r.close);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(!r.close);
    }

    #[test]
    fn limits_and_malformed_requests() {
        // Head too large, even before it ends.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; MAX_HEAD + 1]);
        assert_eq!(status(&big), 431);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(status(&many), 431);
        let body_too_big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status(body_too_big.as_bytes()), 413);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(status(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), 400);
        assert_eq!(status(b"GET / FTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn responses_encode_with_length_and_close() {
        let r = Response::error(404, "no such route");
        let text = String::from_utf8(r.encode(true, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["status"], 404);
        assert_eq!(v["error"]["message"], "no such route");
        let head = String::from_utf8(r.encode(false, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && !head.contains("Connection"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u32 = 12345;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn the_reader_serves_pipelined_requests_however_they_are_cut() {
        let body = br#"{"username":"alice"}"#;
        let mut bytes = format!(
            "POST /v1/ice-servers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"GET /metrics HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
        let (whole, refused) = read_requests(&[&bytes]);
        assert_eq!(refused, None);
        let paths: Vec<&str> = whole.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/v1/ice-servers", "/metrics", "/health"]);
        assert_eq!(whole[0].body, body);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(read_requests(&bytewise), (whole, None));
        // A chunked body is refused, and nothing after it is served.
        let chunked = b"POST /v1/ice-servers HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(read_requests(&[chunked]), (vec![], Some(411)));
    }
}
