//! `event_webhook_url`: allocation events posted as JSON to an HTTP endpoint.
//!
//! No event loop ever waits for the endpoint: every loop holds a clone of the sending side
//! and puts its events into one bounded queue ([`QUEUE`] deep) that one background thread
//! drains, one `POST` per event with short
//! timeouts. When the queue is full the event is dropped and counted; delivery failures
//! are counted too, never retried (the event log keeps every event).

use super::ice::label_of;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use turnpike_core::event::Event;

/// Events waiting for delivery, at most.
pub const QUEUE: usize = 1024;
/// Connect, write and read timeout of one delivery.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where to post: host, port, path of an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address, as written (for the Host header).
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, `/` at least.
    pub path: String,
}

/// Parses an `http://host[:port][/path]` URL. `https://` is refused: the webhook is
/// meant for a local collector; put a proxy in front for anything further. Only visible
/// ASCII is accepted (what the path goes into is a request line: a space, CR or LF would
/// split it), so anything else must be percent-encoded.
///
/// Hand-written rather than the `url` crate: what is accepted is this one narrow form,
/// checked at start from the operator's own file, and `url` would bring IDNA and Unicode
/// normalization tables for host names a local collector does not need.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{url:?}: only visible ASCII characters (percent-encode the rest)"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            None if after.is_empty() => 80,
            None => return Err(format!("`{url}`: bad authority")),
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) || port == 0 {
        return Err(format!("`{url}`: bad host or port"));
    }
    Ok(Target {
        host,
        port,
        path: path.to_string(),
    })
}

/// Delivery counters, shared with the worker thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Delivered (2xx answer).
    pub sent: AtomicU64,
    /// Failed (connection, timeout, non-2xx).
    pub failed: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The sending side: one clone per event loop (and the API's, for the counters).
#[derive(Clone, Debug)]
pub struct Webhook {
    tx: SyncSender<Value>,
    counters: Arc<Counters>,
}

impl Webhook {
    /// Starts the worker thread for `target`.
    pub fn start(target: Target) -> std::io::Result<Webhook> {
        let (tx, rx) = sync_channel::<Value>(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                // Ends when the last clone of the sender is dropped.
                while let Ok(ev) = rx.recv() {
                    match post(&target, &ev) {
                        Ok(()) => c.sent.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::debug!("webhook: {e}");
                            c.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })?;
        Ok(Webhook { tx, counters })
    }

    /// Queues an event; never blocks. False (and counted) when the queue is full.
    pub fn push(&self, ev: Value) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues the record of `ev` if it is an allocation created or deleted; never blocks.
    pub fn event(&self, unix_ms: u64, ev: &Event) {
        if let Some(body) = record(unix_ms, ev) {
            self.push(body);
        }
    }

    /// (sent, failed, dropped) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.sent.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The JSON posted for `ev`: allocations created and deleted only.
pub fn record(unix_ms: u64, ev: &Event) -> Option<Value> {
    let body = match ev {
        Event::AllocationCreated {
            id,
            client,
            username,
            relayed,
            lifetime_s,
        } => json!({
            "type": "allocation_created",
            "unix_ms": unix_ms,
            "id": id.0,
            "client": client.addr.to_string(),
            "transport": client.transport.as_str(),
            "username": username,
            "label": label_of(username),
            "relayed": relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "lifetime_s": lifetime_s,
        }),
        Event::AllocationDeleted {
            id,
            client,
            username,
            reason,
            traffic,
            age_ms,
        } => json!({
            "type": "allocation_deleted",
            "unix_ms": unix_ms,
            "id": id.0,
            "client": client.addr.to_string(),
            "transport": client.transport.as_str(),
            "username": username,
            "label": label_of(username),
            "reason": reason.as_str(),
            "age_ms": age_ms,
            "to_peer_bytes": traffic.to_peer_bytes,
            "from_peer_bytes": traffic.from_peer_bytes,
        }),
        _ => return None,
    };
    Some(body)
}

/// One POST; Ok on a 2xx answer.
fn post(t: &Target, ev: &Value) -> Result<(), String> {
    let addr: SocketAddr = (t.host.trim_matches(['[', ']']), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", t.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", t.host))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    let _ = s.set_write_timeout(Some(TIMEOUT));
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let body = ev.to_string();
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        t.path,
        t.host,
        t.port,
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; ANSWER_HEAD];
    let mut got = 0;
    loop {
        let n = match head.get_mut(got..) {
            Some(free) if !free.is_empty() => s.read(free).map_err(|e| e.to_string())?,
            _ => return Err("no status line in the answer's first bytes".into()),
        };
        if n == 0 {
            return Err("closed before answering".into());
        }
        got += n;
        match answer_status(head.get(..got).unwrap_or_default())? {
            Some(code) if (200..300).contains(&code) => return Ok(()),
            Some(code) => return Err(format!("answered {code}")),
            None => continue,
        }
    }
}

/// Most bytes of the collector's answer read to find its status line.
const ANSWER_HEAD: usize = 1024;

/// The status code of an HTTP/1.x answer, parsed by httparse (as the API's requests are),
/// once its status line has arrived; None while it has not.
fn answer_status(bytes: &[u8]) -> Result<Option<u16>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        // The code is known as soon as the status line is, whatever the headers.
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Ok(resp.code),
        Err(e) => Err(format!("malformed answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1"),
            Ok(Target {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hook?x=1".into()
            })
        );
        assert_eq!(parse_url("http://collector").unwrap().port, 80);
        assert_eq!(parse_url("http://collector").unwrap().path, "/");
        let v6 = parse_url("http://[::1]:9000/e").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 9000));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://x:0/",
            "http://x:99999/",
            "http://u@x/",
            "http://[::1/",
            "http://x/a\r\nX-Injected: 1",
            "http://x/a b",
            "http://x/caf\u{e9}",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_parsed_by_httparse() {
        assert_eq!(
            answer_status(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(Some(204))
        );
        assert_eq!(
            answer_status(b"HTTP/1.0 500 Oops\r\nX: y\r\n"),
            Ok(Some(500))
        );
        assert_eq!(answer_status(b"HTTP/1.1 20"), Ok(None));
        assert_eq!(answer_status(b""), Ok(None));
        assert!(answer_status(b"HTTP/1.1 2000 x\r\n\r\n").is_err());
        assert!(answer_status(b"SSH-2.0-OpenSSH\r\n").is_err());
        // The previous reader took any three characters starting with 2 for success.
        assert!(answer_status(b"xx 2xx\r\n").is_err());
    }

    #[test]
    fn events_are_posted_and_a_full_queue_drops() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hook =
            Webhook::start(parse_url(&format!("http://127.0.0.1:{port}/ev")).unwrap()).unwrap();
        assert!(hook.push(json!({"type": "allocation_created", "id": 1})));
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&buf).contains("allocation_created\"}") {
            let n = c.read(&mut chunk).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("POST /ev HTTP/1.1\r\n"), "{text}");
        c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        drop(c);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hook.counts().0 == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(hook.counts().0, 1);
        // The listener no longer accepts: the worker blocks on connects that time out
        // or fail, and the queue fills; pushing never blocks.
        let start = std::time::Instant::now();
        for i in 0..(QUEUE + 50) {
            hook.push(json!({"id": i}));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(hook.counts().2 >= 1, "{:?}", hook.counts());
    }
}
