//! `GET /metrics`: the core's counters, the runtime's and the API's, in the Prometheus
//! text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per family, then
//! its samples; counters end in `_total`.

use std::fmt::Write as _;
use turnpike_core::server::{Stats, UnauthCounters};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters of the runtime around the core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RuntimeMetrics {
    /// How late the last housekeeping tick ran, seconds (event-loop lag).
    pub loop_lag_s: f64,
    /// The largest lag seen since start, seconds.
    pub loop_lag_max_s: f64,
    /// Streams closed for not reading.
    pub slow_readers_closed: u64,
    /// Datagrams dropped because the socket buffer was full.
    pub send_would_block: u64,
    /// Datagrams that failed to send otherwise.
    pub send_errors: u64,
    /// Datagrams received larger than the receive slot: dropped.
    pub recv_truncated: u64,
    /// Relay sockets that failed to bind.
    pub relay_bind_failures: u64,
    /// ICE configurations issued.
    pub ice_issued: u64,
    /// Dynamic UDP ports open now.
    pub dynamic_ports: u64,
    /// Issuances refused because no dynamic port could be opened.
    pub dynamic_ports_exhausted: u64,
    /// API requests refused because the peer was not on loopback.
    pub api_refused_peers: u64,
    /// Webhook events delivered.
    pub webhook_sent: u64,
    /// Webhook events that failed to deliver.
    pub webhook_failed: u64,
    /// Webhook events dropped because the queue was full.
    pub webhook_dropped: u64,
    /// 1 while the node drains (SIGTERM or `POST /v1/drain`), else 0.
    pub draining: u64,
    /// Threads the event loops run on now (`pack_loops`); 0 when packing is off.
    pub loop_threads: u64,
    /// Configuration reloads (SIGHUP) that took effect.
    pub reloads_ok: u64,
    /// Configuration reloads that failed and changed nothing.
    pub reloads_failed: u64,
    /// Event loops that read a poll round's UDP sockets with io_uring now (`io_uring`).
    pub io_uring_udp_receive: u64,
    /// Event loops that send a poll round's datagrams with io_uring now.
    pub io_uring_udp_send: u64,
    /// Event loops that read and write a poll round's streams with io_uring now.
    pub io_uring_streams: u64,
}

impl RuntimeMetrics {
    /// Adds another event loop's counters to these: sums, and the largest lag.
    pub fn add(&mut self, o: &RuntimeMetrics) {
        self.loop_lag_s = self.loop_lag_s.max(o.loop_lag_s);
        self.loop_lag_max_s = self.loop_lag_max_s.max(o.loop_lag_max_s);
        self.slow_readers_closed += o.slow_readers_closed;
        self.send_would_block += o.send_would_block;
        self.send_errors += o.send_errors;
        self.recv_truncated += o.recv_truncated;
        self.relay_bind_failures += o.relay_bind_failures;
        self.ice_issued += o.ice_issued;
        self.dynamic_ports += o.dynamic_ports;
        self.dynamic_ports_exhausted += o.dynamic_ports_exhausted;
        self.draining = self.draining.max(o.draining);
        self.loop_threads = self.loop_threads.max(o.loop_threads);
        self.api_refused_peers += o.api_refused_peers;
        self.webhook_sent += o.webhook_sent;
        self.webhook_failed += o.webhook_failed;
        self.webhook_dropped += o.webhook_dropped;
        self.reloads_ok += o.reloads_ok;
        self.reloads_failed += o.reloads_failed;
        self.io_uring_udp_receive += o.io_uring_udp_receive;
        self.io_uring_udp_send += o.io_uring_udp_send;
        self.io_uring_streams += o.io_uring_streams;
    }
}

/// The counters of one event loop ([`crate::workers`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopStats {
    /// The loop's index.
    pub index: usize,
    /// Its core's counters.
    pub core: Stats,
    /// Its runtime's counters.
    pub runtime: RuntimeMetrics,
}

/// The relay's counters: the sum over its loops.
pub fn sum(loops: &[LoopStats]) -> (Stats, RuntimeMetrics) {
    let mut s = Stats::default();
    let mut r = RuntimeMetrics::default();
    for l in loops {
        s.add(&l.core);
        r.add(&l.runtime);
    }
    (s, r)
}

/// Per-loop families (label `loop`), appended to [`render`]'s when several loops run:
/// how the kernel spread the clients.
pub fn render_loops(loops: &[LoopStats]) -> String {
    let mut m = Writer::default();
    let per = |f: &dyn Fn(&LoopStats) -> f64| -> Vec<(String, f64)> {
        loops
            .iter()
            .map(|l| (format!("loop=\"{}\"", l.index), f(l)))
            .collect()
    };
    m.family(
        "turnpike_loop_allocations",
        "gauge",
        "Allocations now, by event loop.",
        &per(&|l| l.core.allocations as f64),
    );
    m.family(
        "turnpike_loop_allocations_created_total",
        "counter",
        "Allocations created since start, by event loop.",
        &per(&|l| l.core.allocations_created as f64),
    );
    m.family(
        "turnpike_loop_streams_opened_total",
        "counter",
        "TCP streams accepted since start, by event loop.",
        &per(&|l| l.core.streams_opened as f64),
    );
    m.family(
        "turnpike_loop_relayed_packets_total",
        "counter",
        "Packets relayed (both transports, both directions), by event loop.",
        &per(&|l| {
            let (u, t) = (&l.core.udp, &l.core.tcp);
            (u.to_peer_packets + u.from_peer_packets + t.to_peer_packets + t.from_peer_packets)
                as f64
        }),
    );
    m.family(
        "turnpike_loop_messages_sent_total",
        "counter",
        "Messages sent to the other event loops of the node (tokens, quotas, borrowing), by event loop.",
        &per(&|l| l.core.loop_messages_sent as f64),
    );
    m.family(
        "turnpike_loop_messages_received_total",
        "counter",
        "Messages received from the other event loops of the node, by event loop.",
        &per(&|l| l.core.loop_messages_received as f64),
    );
    m.family(
        "turnpike_loop_quota_credits",
        "gauge",
        "Allocations of total_quota the loop may hold now (its share, plus borrowed, minus lent), by event loop.",
        &per(&|l| l.core.quota_credits as f64),
    );
    m.family(
        "turnpike_loop_relay_ports_free",
        "gauge",
        "Relay ports free now (IPv4 and IPv6), by event loop; a loop that runs out borrows from the others.",
        &per(&|l| f64::from(l.core.ports_v4.free + l.core.ports_v6.free)),
    );
    m.family(
        "turnpike_loop_lag_seconds",
        "gauge",
        "How late the last housekeeping tick ran, by event loop.",
        &per(&|l| l.runtime.loop_lag_s),
    );
    m.out
}

/// The whole exposition.
pub fn render(s: &Stats, r: &RuntimeMetrics) -> String {
    let mut m = Writer::default();
    m.family(
        "turnpike_allocations",
        "gauge",
        "Allocations now.",
        &[(String::new(), s.allocations as f64)],
    );
    m.family(
        "turnpike_allocations_pending",
        "gauge",
        "Allocations waiting for their relay socket.",
        &[(String::new(), s.allocations_pending as f64)],
    );
    m.counter(
        "turnpike_allocations_created_total",
        "Allocations created since start.",
        s.allocations_created,
    );
    m.counter(
        "turnpike_allocations_deleted_total",
        "Allocations ended since start.",
        s.allocations_deleted,
    );
    let failures: Vec<(String, f64)> = s
        .allocation_failures
        .iter()
        .map(|(code, n)| (format!("code=\"{code}\""), *n as f64))
        .collect();
    m.family(
        "turnpike_allocation_failures_total",
        "counter",
        "Allocate requests that failed, by error code.",
        &failures,
    );
    m.family(
        "turnpike_permissions",
        "gauge",
        "Permissions installed now.",
        &[(String::new(), s.permissions as f64)],
    );
    m.family(
        "turnpike_channels",
        "gauge",
        "Channel bindings now.",
        &[(String::new(), s.channels as f64)],
    );
    m.family(
        "turnpike_streams",
        "gauge",
        "TCP streams open now.",
        &[(String::new(), s.streams as f64)],
    );
    m.counter(
        "turnpike_streams_opened_total",
        "TCP streams accepted since start.",
        s.streams_opened,
    );
    m.counter(
        "turnpike_streams_rejected_total",
        "TCP streams closed by the relay (bad input, timeouts, limits).",
        s.streams_rejected,
    );
    m.counter(
        "turnpike_streams_over_source_cap_total",
        "TCP streams refused because their source had max_streams_per_source open.",
        s.streams_over_source_cap,
    );
    m.counter(
        "turnpike_streams_unauth_buffer_full_total",
        "TCP streams without an allocation closed at unauth_stream_buffer_bytes.",
        s.streams_unauth_buffer_full,
    );
    m.counter(
        "turnpike_bandwidth_dropped_bytes_total",
        "Relayed bytes dropped by the max_bps / total_max_bps caps.",
        s.dropped.bandwidth_bytes,
    );
    let mut packets = Vec::new();
    let mut bytes = Vec::new();
    for (transport, t) in [("udp", &s.udp), ("tcp", &s.tcp)] {
        for (direction, p, b) in [
            ("to_peer", t.to_peer_packets, t.to_peer_bytes),
            ("from_peer", t.from_peer_packets, t.from_peer_bytes),
        ] {
            let labels = format!("transport=\"{transport}\",direction=\"{direction}\"");
            packets.push((labels.clone(), p as f64));
            bytes.push((labels, b as f64));
        }
    }
    m.family(
        "turnpike_relayed_packets_total",
        "counter",
        "Packets relayed, by client transport and direction.",
        &packets,
    );
    m.family(
        "turnpike_relayed_bytes_total",
        "counter",
        "Payload bytes relayed, by client transport and direction.",
        &bytes,
    );
    m.counter(
        "turnpike_unauthorized_total",
        "401 answers sent.",
        s.unauthorized,
    );
    m.counter(
        "turnpike_stale_nonce_total",
        "438 answers sent.",
        s.stale_nonce,
    );
    m.counter(
        "turnpike_auth_failures_total",
        "Authentication failures (bad password, unknown user, expired, wrong port).",
        s.auth_failures,
    );
    m.counter(
        "turnpike_insufficient_capacity_total",
        "508 answers sent.",
        s.insufficient_capacity,
    );
    m.counter(
        "turnpike_redirects_total",
        "New Allocates redirected to an alternate server with 300 (draining or full).",
        s.redirects,
    );
    m.counter(
        "turnpike_peers_denied_total",
        "Peers refused by the policy (403).",
        s.peers_denied,
    );
    m.family(
        "turnpike_proxy_headers_total",
        "counter",
        "PROXY protocol headers, by outcome.",
        &[
            ("result=\"accepted\"".into(), s.proxy_accepted as f64),
            ("result=\"rejected\"".into(), s.proxy_rejected as f64),
        ],
    );
    m.counter(
        "turnpike_retransmissions_total",
        "Retransmitted requests answered from the cache.",
        s.retransmissions,
    );
    render_unauth(&mut m, &s.unauth);
    let d = &s.dropped;
    let dropped: Vec<(String, f64)> = [
        ("malformed", d.malformed),
        ("unexpected", d.unexpected),
        ("no_allocation", d.no_allocation),
        ("no_permission", d.no_permission),
        ("unbound_channel", d.unbound_channel),
        ("too_large", d.too_large),
        ("denied_peer", d.denied_peer),
        ("rate_limited", d.rate_limited),
        ("queue_full", d.queue_full),
        ("unknown_relay", d.unknown_relay),
        ("bandwidth", d.bandwidth),
    ]
    .iter()
    .map(|(r, n)| (format!("reason=\"{r}\""), *n as f64))
    .collect();
    m.family(
        "turnpike_dropped_total",
        "counter",
        "Inputs dropped without an answer, by reason.",
        &dropped,
    );
    let mut ports = Vec::new();
    for (family, p) in [("ipv4", &s.ports_v4), ("ipv6", &s.ports_v6)] {
        for (state, n) in [
            ("free", p.free),
            ("in_use", p.in_use),
            ("quarantined", p.quarantined),
            ("reserved", p.reserved),
        ] {
            ports.push((
                format!("family=\"{family}\",state=\"{state}\""),
                f64::from(n),
            ));
        }
    }
    m.family(
        "turnpike_relay_ports",
        "gauge",
        "Relay ports of the pool, by family and state.",
        &ports,
    );
    m.family(
        "turnpike_event_loop_lag_seconds",
        "gauge",
        "How late the event loop ran its last once-a-second tick.",
        &[(String::new(), r.loop_lag_s)],
    );
    m.family(
        "turnpike_event_loop_lag_max_seconds",
        "gauge",
        "The largest event-loop lag seen since start.",
        &[(String::new(), r.loop_lag_max_s)],
    );
    m.counter(
        "turnpike_slow_readers_closed_total",
        "TCP streams closed because they did not read what they were sent.",
        r.slow_readers_closed,
    );
    m.family(
        "turnpike_send_failures_total",
        "counter",
        "Datagrams that could not be sent, by cause.",
        &[
            ("cause=\"buffer_full\"".into(), r.send_would_block as f64),
            ("cause=\"error\"".into(), r.send_errors as f64),
        ],
    );
    m.counter(
        "turnpike_datagrams_truncated_total",
        "Datagrams dropped because they were larger than the receive buffer.",
        r.recv_truncated,
    );
    m.counter(
        "turnpike_relay_bind_failures_total",
        "Relay sockets that failed to bind.",
        r.relay_bind_failures,
    );
    m.counter(
        "turnpike_ice_issued_total",
        "ICE configurations issued.",
        r.ice_issued,
    );
    m.family(
        "turnpike_dynamic_udp_ports",
        "gauge",
        "UDP ports opened for one issued configuration each, open now.",
        &[(String::new(), r.dynamic_ports as f64)],
    );
    m.family(
        "turnpike_draining",
        "gauge",
        "1 while the relay drains: no new allocations, live ones go on.",
        &[(String::new(), r.draining as f64)],
    );
    m.family(
        "turnpike_loop_threads",
        "gauge",
        "Threads the event loops run on now: fewer than the loops while their load is light (pack_loops); 0 when packing is off.",
        &[(String::new(), r.loop_threads as f64)],
    );
    m.family(
        "turnpike_io_uring_loops",
        "gauge",
        "Event loops on io_uring now, by path (io_uring = \"auto\" or \"on\" and the kernel allows it); the others use recvmmsg, sendmmsg and one read or write per connection.",
        &[
            ("path=\"udp_receive\"".into(), r.io_uring_udp_receive as f64),
            ("path=\"udp_send\"".into(), r.io_uring_udp_send as f64),
            ("path=\"streams\"".into(), r.io_uring_streams as f64),
        ],
    );
    m.counter(
        "turnpike_dynamic_udp_ports_exhausted_total",
        "Issuances refused because no dynamic UDP port could be opened.",
        r.dynamic_ports_exhausted,
    );
    m.counter(
        "turnpike_api_refused_peers_total",
        "API connections refused because the peer was not on loopback.",
        r.api_refused_peers,
    );
    m.family(
        "turnpike_webhook_events_total",
        "counter",
        "Events for the webhook, by outcome.",
        &[
            ("result=\"sent\"".into(), r.webhook_sent as f64),
            ("result=\"failed\"".into(), r.webhook_failed as f64),
            ("result=\"dropped\"".into(), r.webhook_dropped as f64),
        ],
    );
    m.family(
        "turnpike_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by outcome (an error changes nothing).",
        &[
            ("result=\"ok\"".into(), r.reloads_ok as f64),
            ("result=\"error\"".into(), r.reloads_failed as f64),
        ],
    );
    m.out
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help, &[(String::new(), v as f64)]);
    }

    /// One family: HELP, TYPE, then a sample per label set.
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.out, "{name} {v}");
            } else {
                let _ = writeln!(self.out, "{name}{{{labels}}} {v}");
            }
        }
    }
}

/// Unauthenticated answers (anti-amplification, RFC 8656 §21.2) and the streams closed
/// for failing authentication.
fn render_unauth(m: &mut Writer, u: &UnauthCounters) {
    let by_transport = |udp: u64, tcp: u64| {
        [
            ("transport=\"udp\"".to_string(), udp as f64),
            ("transport=\"tcp\"".to_string(), tcp as f64),
        ]
    };
    m.family(
        "turnpike_unauth_answers_total",
        "counter",
        "Answers to unauthenticated requests (401, 438, 400, Binding) sent, by transport.",
        &by_transport(u.udp_answers, u.stream_answers),
    );
    m.family(
        "turnpike_unauth_answer_bytes_total",
        "counter",
        "Bytes of answers to unauthenticated requests sent, by transport.",
        &by_transport(u.udp_answer_bytes, u.stream_answer_bytes),
    );
    m.counter(
        "turnpike_unauth_udp_request_bytes_total",
        "Bytes of requests from UDP sources: each pays for unauth_amplification_factor times as many bytes of answers.",
        u.udp_request_bytes,
    );
    m.family(
        "turnpike_unauth_held_back_total",
        "counter",
        "Answers to unauthenticated UDP requests held back, by the limit that held them: the amplification factor, unauth_source_bytes_per_s, unauth_node_bytes_per_s.",
        &[
            ("limit=\"factor\"".into(), u.held_back_factor as f64),
            (
                "limit=\"source_ceiling\"".into(),
                u.held_back_source_ceiling as f64,
            ),
            (
                "limit=\"node_ceiling\"".into(),
                u.held_back_node_ceiling as f64,
            ),
        ],
    );
    m.counter(
        "turnpike_unauth_held_back_bytes_total",
        "Bytes of the answers to unauthenticated UDP requests held back.",
        u.held_back_bytes,
    );
    m.counter(
        "turnpike_streams_closed_auth_failures_total",
        "TCP streams closed after stream_max_auth_failures failed authentications in a row.",
        u.streams_closed_auth_failures,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A strict reader of the text format: every sample belongs to the family announced
    /// just before it by HELP and TYPE, names and labels are well formed, values parse,
    /// no family appears twice and no sample is repeated.
    fn check_exposition(text: &str) -> Result<BTreeMap<String, f64>, String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut samples = BTreeMap::new();
        let mut families = std::collections::BTreeSet::new();
        let mut current: Option<(String, String)> = None;
        let mut help_for: Option<String> = None;
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !name_ok(name) || !families.insert(name.to_string()) {
                    return Err(format!("bad or repeated family: {line}"));
                }
                help_for = Some(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut p = rest.split(' ');
                let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
                if help_for.as_deref() != Some(name) {
                    return Err(format!("TYPE without HELP: {line}"));
                }
                if !["counter", "gauge"].contains(&kind) {
                    return Err(format!("bad type: {line}"));
                }
                if kind == "counter" && !name.ends_with("_total") {
                    return Err(format!("counter without _total: {line}"));
                }
                current = Some((name.to_string(), kind.to_string()));
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("no value: {line}"))?;
            let v: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
            let name = series.split('{').next().unwrap_or("");
            let Some((fam, kind)) = &current else {
                return Err(format!("sample before TYPE: {line}"));
            };
            if name != fam {
                return Err(format!("sample of another family: {line}"));
            }
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .ok_or_else(|| format!("bad labels: {line}"))?;
                    for pair in inner.split(',') {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| format!("bad label: {line}"))?;
                        if !(name_ok(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2) {
                            return Err(format!("bad label: {line}"));
                        }
                    }
                }
            }
            if kind == "counter" && v < 0.0 {
                return Err(format!("negative counter: {line}"));
            }
            if samples.insert(series.to_string(), v).is_some() {
                return Err(format!("repeated sample: {line}"));
            }
        }
        Ok(samples)
    }

    #[test]
    fn loops_add_up_and_are_listed_by_index() {
        let mut a = LoopStats::default();
        a.core.allocations = 2;
        a.core.udp.to_peer_packets = 5;
        a.core.allocation_failures.insert(508, 1);
        a.runtime.loop_lag_s = 0.002;
        a.runtime.send_errors = 1;
        a.runtime.io_uring_udp_receive = 1;
        a.runtime.io_uring_streams = 1;
        let mut b = LoopStats {
            index: 1,
            ..LoopStats::default()
        };
        b.core.allocations = 3;
        b.core.tcp.from_peer_packets = 7;
        b.core.allocation_failures.insert(508, 2);
        b.core.ports_v4.free = 10;
        b.runtime.loop_lag_s = 0.001;
        b.runtime.send_errors = 2;
        b.runtime.io_uring_udp_receive = 1;
        let (s, r) = sum(&[a.clone(), b.clone()]);
        assert_eq!(s.allocations, 5);
        assert_eq!(s.allocation_failures.get(&508), Some(&3));
        assert_eq!((s.udp.to_peer_packets, s.tcp.from_peer_packets), (5, 7));
        assert_eq!(s.ports_v4.free, 10);
        assert_eq!((r.loop_lag_s, r.send_errors), (0.002, 3));
        let text = format!("{}{}", render(&s, &r), render_loops(&[a, b]));
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        // Loops on io_uring are counted per path.
        for (path, n) in [("udp_receive", 2.0), ("udp_send", 0.0), ("streams", 1.0)] {
            let series = format!("turnpike_io_uring_loops{{path=\"{path}\"}}");
            assert_eq!(samples.get(&series), Some(&n), "{series} in\n{text}");
        }
        assert_eq!(
            samples.get("turnpike_loop_allocations{loop=\"0\"}"),
            Some(&2.0)
        );
        assert_eq!(
            samples.get("turnpike_loop_allocations{loop=\"1\"}"),
            Some(&3.0)
        );
        assert_eq!(
            samples.get("turnpike_loop_relayed_packets_total{loop=\"1\"}"),
            Some(&7.0)
        );
        assert_eq!(
            samples.get("turnpike_loop_relay_ports_free{loop=\"1\"}"),
            Some(&10.0)
        );
        assert!(samples.contains_key("turnpike_loop_messages_sent_total{loop=\"0\"}"));
    }

    #[test]
    fn exposition_is_well_formed_and_complete() {
        let mut s = Stats {
            allocations: 3,
            allocations_created: 10,
            unauthorized: 4,
            insufficient_capacity: 1,
            ..Stats::default()
        };
        s.allocation_failures.insert(401, 2);
        s.allocation_failures.insert(508, 1);
        s.udp.to_peer_bytes = 1500;
        s.tcp.from_peer_packets = 7;
        s.ports_v4.free = 100;
        s.ports_v4.quarantined = 2;
        s.dropped.no_permission = 9;
        s.unauth.udp_answers = 11;
        s.unauth.stream_answer_bytes = 1200;
        s.unauth.udp_request_bytes = 280;
        s.unauth.held_back_source_ceiling = 12;
        s.unauth.held_back_bytes = 1800;
        s.unauth.streams_closed_auth_failures = 2;
        let r = RuntimeMetrics {
            loop_lag_s: 0.0015,
            webhook_dropped: 5,
            recv_truncated: 6,
            ..RuntimeMetrics::default()
        };
        let text = render(&s, &r);
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (series, v) in [
            ("turnpike_allocations", 3.0),
            ("turnpike_datagrams_truncated_total", 6.0),
            ("turnpike_allocations_created_total", 10.0),
            ("turnpike_allocation_failures_total{code=\"401\"}", 2.0),
            ("turnpike_allocation_failures_total{code=\"508\"}", 1.0),
            ("turnpike_unauthorized_total", 4.0),
            ("turnpike_insufficient_capacity_total", 1.0),
            (
                "turnpike_relayed_bytes_total{transport=\"udp\",direction=\"to_peer\"}",
                1500.0,
            ),
            (
                "turnpike_relayed_packets_total{transport=\"tcp\",direction=\"from_peer\"}",
                7.0,
            ),
            (
                "turnpike_relay_ports{family=\"ipv4\",state=\"free\"}",
                100.0,
            ),
            (
                "turnpike_relay_ports{family=\"ipv4\",state=\"quarantined\"}",
                2.0,
            ),
            ("turnpike_dropped_total{reason=\"no_permission\"}", 9.0),
            ("turnpike_proxy_headers_total{result=\"rejected\"}", 0.0),
            ("turnpike_peers_denied_total", 0.0),
            ("turnpike_permissions", 0.0),
            ("turnpike_channels", 0.0),
            ("turnpike_streams", 0.0),
            ("turnpike_event_loop_lag_seconds", 0.0015),
            ("turnpike_webhook_events_total{result=\"dropped\"}", 5.0),
            ("turnpike_unauth_answers_total{transport=\"udp\"}", 11.0),
            (
                "turnpike_unauth_answer_bytes_total{transport=\"tcp\"}",
                1200.0,
            ),
            ("turnpike_unauth_udp_request_bytes_total", 280.0),
            (
                "turnpike_unauth_held_back_total{limit=\"source_ceiling\"}",
                12.0,
            ),
            ("turnpike_unauth_held_back_total{limit=\"factor\"}", 0.0),
            ("turnpike_unauth_held_back_bytes_total", 1800.0),
            ("turnpike_streams_closed_auth_failures_total", 2.0),
        ] {
            assert_eq!(samples.get(series), Some(&v), "{series} in\n{text}");
        }
    }

    #[test]
    fn the_checker_catches_mistakes() {
        assert!(check_exposition("x 1\n").is_err());
        assert!(check_exposition("# HELP a_total h\n# TYPE a_total counter\na_total 1").is_err());
        assert!(check_exposition("# HELP a h\n# TYPE a counter\na 1\n").is_err());
        assert!(check_exposition("# HELP a h\n# TYPE a gauge\nb 1\n").is_err());
        assert!(check_exposition("# HELP a h\n# TYPE a gauge\na{x=1} 1\n").is_err());
        assert!(check_exposition("# HELP a h\n# TYPE a gauge\na 1\na 2\n").is_err());
        assert!(check_exposition("# HELP a h\n# TYPE a gauge\na{x=\"1\"} 1\n").is_ok());
    }
}
