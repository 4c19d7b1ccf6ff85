//! The core's events and the runtime's own warnings, turned into human log lines
//! (`log`) and event-log records (JSON lines).
//!
//! Lines caused by remote input (failed authentication, rejected streams, denied peers...)
//! go through a [`LogLimiter`]: one per source and kind per interval, with the count of
//! lines held back. Allocation lifecycle lines are not limited: an allocation needs valid
//! credentials, and the operator wants every one of them in the event log.

use crate::event_log::{rfc3339_ms, EventLog};
use crate::log_limit::{LogLimiter, Verdict};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use turnpike_core::event::{ClientInfo, Event};
use turnpike_core::AllocationId;

/// Where events go.
#[derive(Debug)]
pub struct Reporter {
    limiter: LogLimiter,
    event_log: Option<EventLog>,
    /// Relayed addresses of live allocations, for their `allocation_deleted` record.
    relayed: HashMap<AllocationId, Vec<SocketAddr>>,
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
        }
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
                log::info!(
                    "allocation {} created: client {} over {}, user {:?}, relayed {}, lifetime {}s",
                    id.0,
                    client.addr,
                    client.transport.as_str(),
                    username,
                    join(relayed),
                    lifetime_s
                );
                // Bounded by the core's total quota.
                self.relayed.insert(*id, relayed.clone());
                self.record(unix_ms, "allocation_created", with_client(json!({"id": id.0, "username": username, "relayed": addrs(relayed), "lifetime_s": lifetime_s}), client));
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
                let relayed = self.relayed.remove(id).unwrap_or_default();
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
                self.record(unix_ms, "allocation_deleted", with_client(body, client));
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
                let rec = with_client(json!({"code": code, "username": username}), client);
                self.remote(
                    unix_ms,
                    client.addr.ip(),
                    "allocation_failed",
                    log::Level::Info,
                    &msg,
                    rec,
                );
            }
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
                let rec = with_client(
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
                let rec = with_client(json!({}), client);
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

    /// Flushes the event log.
    pub fn flush(&mut self) {
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

fn join(list: &[SocketAddr]) -> String {
    addrs(list).join(", ")
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
