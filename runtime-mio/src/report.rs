//! The core's events and the runtime's own warnings, turned into human log lines
//! (`log`) and event-log records (JSON lines).
//!
//! Lines caused by remote input (failed authentication, rejected streams, denied peers...)
//! go through a [`LogLimiter`]: one per source and kind per interval, with the count of
//! lines held back. Allocation lifecycle records are not limited: an allocation needs
//! valid credentials, and the operator wants every one of them in the event log. Their
//! human lines are written one by one up to [`LIFECYCLE_LINES_PER_S`] a second; beyond
//! that (allocation churn, where formatting and writing the lines would cost more than
//! the allocations themselves) they are counted, and a summary line at the next flush
//! (about once a second) says how many allocations came and went unseen.

use crate::event_log::{rfc3339_ms, EventLog};
use crate::log_limit::{LogLimiter, Verdict};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use turnpike_core::event::{ClientInfo, Event};
use turnpike_core::{AllocationId, ConnId};

/// Where events go.
#[derive(Debug)]
pub struct Reporter {
    limiter: LogLimiter,
    event_log: Option<EventLog>,
    /// Relayed addresses of live allocations, for their `allocation_deleted` record.
    relayed: HashMap<AllocationId, Vec<SocketAddr>>,
    lifecycle: LifecycleLines,
    /// Streams that are TLS (the core knows them as streams): their clients' records say
    /// `"tls": true` and their log lines `tls`.
    tls_streams: HashSet<ConnId>,
    /// TLS streams closed, forgotten after the events their closing caused.
    tls_gone: Vec<ConnId>,
}

/// Allocation created/deleted lines written one by one per second at most (every one at
/// debug level, and every one as a record in the event log).
pub const LIFECYCLE_LINES_PER_S: u32 = 100;

/// The budget of allocation lifecycle lines in the current one-second window, and the
/// lines held back since the last summary.
#[derive(Debug, Default)]
struct LifecycleLines {
    window_start_ms: u64,
    written: u32,
    held_created: u64,
    held_deleted: u64,
}

impl LifecycleLines {
    /// Whether one more line may be written at `unix_ms`; if not, it is counted.
    fn admit(&mut self, unix_ms: u64, created: bool) -> bool {
        if unix_ms.saturating_sub(self.window_start_ms) >= 1000 || unix_ms < self.window_start_ms {
            self.window_start_ms = unix_ms;
            self.written = 0;
        }
        // Who turned on debug logging wants every line.
        if self.written < LIFECYCLE_LINES_PER_S || log::log_enabled!(log::Level::Debug) {
            self.written = self.written.saturating_add(1);
            return true;
        }
        if created {
            self.held_created += 1;
        } else {
            self.held_deleted += 1;
        }
        false
    }

    /// The counts held back since the last call, zeroed.
    fn take_held(&mut self) -> (u64, u64) {
        let held = (self.held_created, self.held_deleted);
        self.held_created = 0;
        self.held_deleted = 0;
        held
    }
}

/// The source used for warnings that concern the whole relay, not one remote.
const RELAY_WIDE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Reporter {
    /// A reporter writing records to `event_log`, if any.
    pub fn new(event_log: Option<EventLog>) -> Self {
        Reporter {
            limiter: LogLimiter::default(),
            event_log,
            relayed: HashMap::new(),
            lifecycle: LifecycleLines::default(),
            tls_streams: HashSet::new(),
            tls_gone: Vec::new(),
        }
    }

    /// Stream `conn` is TLS.
    pub fn tls_stream(&mut self, conn: ConnId) {
        self.tls_streams.insert(conn);
    }

    /// TLS stream `conn` was closed: it is forgotten at the next [`Reporter::forget_closed`],
    /// once the events of its closing are reported.
    pub fn tls_stream_closed(&mut self, conn: ConnId) {
        if self.tls_streams.contains(&conn) {
            self.tls_gone.push(conn);
        }
    }

    /// Forgets the TLS streams closed so far (after the core's outputs were drained).
    pub fn forget_closed(&mut self) {
        for c in self.tls_gone.drain(..) {
            self.tls_streams.remove(&c);
        }
    }

    /// Whether `c` came over TLS.
    fn over_tls(&self, c: &ClientInfo) -> bool {
        c.conn.is_some_and(|k| self.tls_streams.contains(&k))
    }

    /// The transport of `c` for log lines: `udp`, `tcp` or `tls`.
    fn transport_name(&self, c: &ClientInfo) -> &'static str {
        if self.over_tls(c) {
            "tls"
        } else {
            c.transport.as_str()
        }
    }

    /// `body` with the client's fields added (`"tls": true` for a TLS stream).
    fn client_fields(&self, body: Value, c: &ClientInfo) -> Value {
        let mut body = with_client(body, c);
        if self.over_tls(c) {
            if let Value::Object(m) = &mut body {
                m.insert("tls".into(), json!(true));
            }
        }
        body
    }

    /// Logs and records one event of the core at wall time `unix_ms`.
    pub fn event(&mut self, unix_ms: u64, ev: &Event) {
        match ev {
            Event::AllocationCreated {
                id,
                client,
                username,
                relayed,
                lifetime_s,
            } => {
                if log::log_enabled!(log::Level::Info) && self.lifecycle.admit(unix_ms, true) {
                    log::info!(
                        "allocation {} created: client {} over {}, user {:?}, relayed {}, lifetime {}s",
                        id.0,
                        client.addr,
                        self.transport_name(client),
                        username,
                        Joined(relayed),
                        lifetime_s
                    );
                }
                // The JSON record (and the relayed addresses its deletion record repeats)
                // only when there is an event log to write it to: allocation churn is a
                // hot path of its own.
                if self.event_log.is_some() {
                    // Bounded by the core's total quota.
                    self.relayed.insert(*id, relayed.clone());
                    self.record(unix_ms, "allocation_created", self.client_fields(json!({"id": id.0, "username": username, "relayed": addrs(relayed), "lifetime_s": lifetime_s}), client));
                }
            }
            Event::AllocationRefreshed { id, lifetime_s } => {
                log::debug!("allocation {} refreshed: lifetime {}s", id.0, lifetime_s);
            }
            Event::AllocationDeleted {
                id,
                client,
                username,
                reason,
                traffic,
                age_ms,
            } => {
                if log::log_enabled!(log::Level::Info) && self.lifecycle.admit(unix_ms, false) {
                    log::info!(
                        "allocation {} deleted ({}): client {}, user {:?}, after {} ms; to peers {} packets {} bytes, from peers {} packets {} bytes, dropped {}",
                        id.0,
                        reason.as_str(),
                        client.addr,
                        username,
                        age_ms,
                        traffic.to_peer_packets,
                        traffic.to_peer_bytes,
                        traffic.from_peer_packets,
                        traffic.from_peer_bytes,
                        traffic.dropped_packets
                    );
                }
                if self.event_log.is_none() {
                    return;
                }
                let relayed = self.relayed.remove(id).unwrap_or_default();
                let body = json!({
                    "id": id.0,
                    "username": username,
                    "relayed": addrs(&relayed),
                    "reason": reason.as_str(),
                    "age_ms": age_ms,
                    "to_peer_packets": traffic.to_peer_packets,
                    "to_peer_bytes": traffic.to_peer_bytes,
                    "from_peer_packets": traffic.from_peer_packets,
                    "from_peer_bytes": traffic.from_peer_bytes,
                    "dropped_packets": traffic.dropped_packets,
                });
                self.record(
                    unix_ms,
                    "allocation_deleted",
                    self.client_fields(body, client),
                );
            }
            Event::AllocationFailed {
                client,
                username,
                code,
            } => {
                let msg = format!(
                    "allocation refused with {code}: client {} user {}",
                    client.addr,
                    user(username)
                );
                let rec = self.client_fields(json!({"code": code, "username": username}), client);
                self.remote(
                    unix_ms,
                    client.addr.ip(),
                    "allocation_failed",
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
            Event::AllocationRedirected {
                client,
                username,
                to,
            } => {
                let msg = format!(
                    "allocation redirected to {to} (300): client {} user {:?}",
                    client.addr, username
                );
                let rec =
                    self.client_fields(json!({"username": username, "to": to.to_string()}), client);
                self.remote(
                    unix_ms,
                    client.addr.ip(),
                    "allocation_redirected",
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
            // The node logs and records its drain once (event_loop::draining); each loop's
            // core reports its own start.
            Event::DrainStarted => log::debug!("loop draining"),
            Event::AuthFailed {
                client,
                username,
                reason,
            } => {
                let msg = format!(
                    "authentication failed ({}): client {} user {}",
                    reason.as_str(),
                    client.addr,
                    user(username)
                );
                let rec = self.client_fields(
                    json!({"reason": reason.as_str(), "username": username}),
                    client,
                );
                self.remote(
                    unix_ms,
                    client.addr.ip(),
                    "auth_failed",
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
            Event::PeerDenied { id, peer, reason } => {
                let msg = format!(
                    "allocation {}: peer {} denied ({})",
                    id.0,
                    peer,
                    reason.as_str()
                );
                let rec = json!({"id": id.0, "peer": peer.to_string(), "reason": reason.as_str()});
                self.remote(
                    unix_ms,
                    peer.ip(),
                    "peer_denied",
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
            Event::PortsExhausted { client } => {
                let msg = format!(
                    "relay ports exhausted: allocation for {} refused with 508",
                    client.addr
                );
                let rec = self.client_fields(json!({}), client);
                self.remote(
                    unix_ms,
                    RELAY_WIDE,
                    "ports_exhausted",
                    log::Level::Warn,
                    &msg,
                    rec,
                );
            }
            Event::ProxyAccepted {
                conn,
                proxy,
                client,
            } => {
                log::debug!(
                    "stream {}: PROXY header from {} gives client {}",
                    conn.0,
                    proxy,
                    client
                );
            }
            Event::StreamRejected {
                conn,
                remote,
                reason,
            } => {
                let msg = format!(
                    "stream {} from {} closed: {}",
                    conn.0,
                    remote,
                    reason.as_str()
                );
                let rec = json!({"conn": conn.0, "remote": remote.to_string(), "reason": reason.as_str()});
                self.remote(
                    unix_ms,
                    remote.ip(),
                    reason.as_str(),
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
        }
    }

    /// A warning caused by `source` (a remote): logged and recorded at most once per
    /// interval per source and `kind`.
    pub fn remote(
        &mut self,
        unix_ms: u64,
        source: IpAddr,
        kind: &'static str,
        level: log::Level,
        msg: &str,
        mut record: Value,
    ) {
        let Verdict::Log { suppressed, shared } = self.limiter.check(unix_ms, source, kind) else {
            return;
        };
        let mut note = String::new();
        if shared {
            note.push_str(" [rate-limited together with many sources]");
        }
        if suppressed > 0 {
            note.push_str(&format!(" [{suppressed} similar lines held back]"));
        }
        log::log!(level, "{msg}{note}");
        if let Value::Object(m) = &mut record {
            m.insert("suppressed".into(), json!(suppressed));
        }
        self.record(unix_ms, kind, record);
    }

    /// A warning about the relay itself (not caused by one remote), rate-limited per kind.
    pub fn relay_warning(&mut self, unix_ms: u64, kind: &'static str, msg: &str, record: Value) {
        self.remote(unix_ms, RELAY_WIDE, kind, log::Level::Warn, msg, record);
    }

    /// Appends a record `{"time", "event": kind, ...body}` to the event log, if there is one.
    pub fn record(&mut self, unix_ms: u64, kind: &str, body: Value) {
        let Some(log) = self.event_log.as_mut() else {
            return;
        };
        let mut rec = serde_json::Map::new();
        rec.insert("time".into(), json!(rfc3339_ms(unix_ms)));
        rec.insert("event".into(), json!(kind));
        if let Value::Object(m) = body {
            rec.extend(m);
        }
        log.write(&Value::Object(rec));
    }

    /// Writes the summary of allocation lines held back, and flushes the event log.
    /// Called about once a second, and at exit.
    pub fn flush(&mut self) {
        let (created, deleted) = self.lifecycle.take_held();
        if created + deleted > 0 {
            let where_ = if self.event_log.is_some() {
                "every one is in the event log"
            } else {
                "set event_log for a record of every one"
            };
            log::info!(
                "{created} allocations created and {deleted} deleted without a line each (more than {LIFECYCLE_LINES_PER_S} such lines a second; {where_})"
            );
        }
        if let Some(l) = self.event_log.as_mut() {
            l.flush();
        }
    }
}

/// `body` with the client's fields added.
fn with_client(mut body: Value, c: &ClientInfo) -> Value {
    if let Value::Object(m) = &mut body {
        m.insert("client".into(), json!(c.addr.to_string()));
        m.insert("transport".into(), json!(c.transport.as_str()));
        m.insert("listener".into(), json!(c.listener.0));
        if let Some(conn) = c.conn {
            m.insert("conn".into(), json!(conn.0));
        }
    }
    body
}

/// A username as logged: quoted and escaped (it came from the network), or `-`.
fn user(name: &Option<String>) -> String {
    name.as_ref()
        .map_or_else(|| "-".to_string(), |n| format!("{n:?}"))
}

fn addrs(list: &[SocketAddr]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// Addresses shown comma-separated, formatted straight into the log line.
struct Joined<'a>(&'a [SocketAddr]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_core::event::{DeleteReason, TrafficCounters};
    use turnpike_core::{ConnId, ListenerId, Transport};

    fn client() -> ClientInfo {
        ClientInfo {
            transport: Transport::Tcp,
            addr: "203.0.113.7:40000".parse().unwrap(),
            listener: ListenerId(1),
            conn: Some(ConnId(9)),
        }
    }

    #[test]
    fn a_tls_client_is_marked_until_its_closing_events_are_out() {
        let mut r = Reporter::new(None);
        let c = client();
        assert!(r.client_fields(json!({}), &c).get("tls").is_none());
        r.tls_stream(ConnId(9));
        assert_eq!(r.transport_name(&c), "tls");
        r.tls_stream_closed(ConnId(9));
        // The events its closing caused still say so...
        assert_eq!(r.client_fields(json!({}), &c)["tls"], true);
        r.forget_closed();
        // ...and then it is forgotten.
        assert_eq!(r.transport_name(&c), "tcp");
        assert!(r.tls_streams.is_empty() && r.tls_gone.is_empty());
    }

    #[test]
    fn allocation_lifecycle_is_recorded_with_bytes_and_real_client() {
        let path =
            std::env::temp_dir().join(format!("turnpike-report-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut r = Reporter::new(Some(EventLog::open(&path).unwrap()));
        let relay: SocketAddr = "192.0.2.10:40001".parse().unwrap();
        r.event(
            1000,
            &Event::AllocationCreated {
                id: AllocationId(3),
                client: client(),
                username: "alice".into(),
                relayed: vec![relay],
                lifetime_s: 600,
            },
        );
        let traffic = TrafficCounters {
            to_peer_packets: 2,
            to_peer_bytes: 200,
            from_peer_packets: 3,
            from_peer_bytes: 300,
            dropped_packets: 1,
        };
        r.event(
            2000,
            &Event::AllocationDeleted {
                id: AllocationId(3),
                client: client(),
                username: "alice".into(),
                reason: DeleteReason::StreamClosed,
                traffic,
                age_ms: 1000,
            },
        );
        assert!(r.relayed.is_empty());
        r.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["event"], "allocation_created");
        assert_eq!(recs[0]["client"], "203.0.113.7:40000");
        assert_eq!(recs[0]["transport"], "tcp");
        assert_eq!(recs[0]["time"], "1970-01-01T00:00:01.000Z");
        assert_eq!(recs[1]["event"], "allocation_deleted");
        assert_eq!(recs[1]["relayed"][0], "192.0.2.10:40001");
        assert_eq!(recs[1]["from_peer_bytes"], 300);
        assert_eq!(recs[1]["to_peer_bytes"], 200);
        assert_eq!(recs[1]["reason"], "stream_closed");
        assert_eq!(recs[1]["conn"], 9);
    }

    #[test]
    fn lifecycle_lines_beyond_the_budget_are_counted_for_the_summary() {
        let mut l = LifecycleLines::default();
        let t0 = 1_000_000;
        for i in 0..LIFECYCLE_LINES_PER_S {
            assert!(l.admit(t0 + u64::from(i % 7), i % 2 == 0));
        }
        assert!(!l.admit(t0 + 10, true));
        assert!(!l.admit(t0 + 999, false));
        assert!(!l.admit(t0 + 999, false));
        assert_eq!(l.take_held(), (1, 2));
        assert_eq!(l.take_held(), (0, 0));
        // A new second, a new budget; a clock stepping back starts one too.
        assert!(l.admit(t0 + 1000, true));
        assert!(l.admit(t0 - 5000, true));
    }

    #[test]
    fn without_an_event_log_nothing_is_kept_per_allocation() {
        let mut r = Reporter::new(None);
        r.event(
            1000,
            &Event::AllocationCreated {
                id: AllocationId(1),
                client: client(),
                username: "alice".into(),
                relayed: vec!["192.0.2.10:40001".parse().unwrap()],
                lifetime_s: 600,
            },
        );
        assert!(r.relayed.is_empty());
        assert_eq!(
            Joined(&[
                "192.0.2.10:40001".parse().unwrap(),
                "[2001:db8::1]:40002".parse().unwrap()
            ])
            .to_string(),
            "192.0.2.10:40001, [2001:db8::1]:40002"
        );
    }

    #[test]
    fn remote_warnings_are_rate_limited_in_the_event_log_too() {
        let path =
            std::env::temp_dir().join(format!("turnpike-report-rl-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut r = Reporter::new(Some(EventLog::open(&path).unwrap()));
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        for t in 0..100 {
            r.remote(t, src, "not_turn", log::Level::Info, "garbage", json!({}));
        }
        r.remote(
            20_000,
            src,
            "not_turn",
            log::Level::Info,
            "garbage",
            json!({}),
        );
        r.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1]["suppressed"], 99);
    }
}
