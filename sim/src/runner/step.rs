//! Runs a world event by event: each step feeds one host, then the oracles check.

use super::outcome::{MAX_EVENTS, QUEUE_CAPACITY};
use super::world::World;
use crate::faults::Control;
use crate::host::{Cx, Node, Phase};
use crate::net::{Ev, NodeId, Side, StreamNews};
use crate::server::ServerHost;

impl World {
    pub(super) fn run(&mut self) {
        while let Some((at, ev)) = self.net.queue.pop() {
            if !self.clock.advance_to(at) {
                self.oracle
                    .fail("time_monotonic", format!("event at {at:?} before now"));
                break;
            }
            self.events += 1;
            if self.events > MAX_EVENTS {
                self.oracle
                    .fail("progress_bounded", format!("more than {MAX_EVENTS} events"));
                break;
            }
            let end = matches!(ev, Ev::Control(Control::End));
            self.step(ev);
            let now = self.clock.now();
            let hosts: Vec<&ServerHost> = self.nodes[..self.servers]
                .iter()
                .filter_map(|n| match n {
                    Node::Server(h) => Some(&**h),
                    _ => None,
                })
                .collect();
            self.oracle.after_step(now, &hosts);
            for (node, h) in hosts.iter().enumerate() {
                // What the driver holds towards its cores is what the network still has
                // open on its side: a stream it closed (a failed TLS handshake, say) is
                // closed for the core as well, and no close goes unheard.
                let open = self.net.accepted_open(node);
                if open != h.open_conns() as u64 {
                    self.oracle.fail(
                        "stream_table_matches_network",
                        format!(
                            "{}: the driver holds {} streams, the network {open}",
                            h.name,
                            h.open_conns()
                        ),
                    );
                }
            }
            if self.net.overflow {
                self.oracle.fail(
                    "sim_queue_bounded",
                    format!("more than {QUEUE_CAPACITY} events waiting"),
                );
            }
            if self.oracle.violation().is_some() || end {
                break;
            }
        }
    }

    /// Handles one event.
    pub(super) fn step(&mut self, ev: Ev) {
        let now = self.clock.now();
        self.oracle.set_now(now);
        match ev {
            Ev::Datagram {
                to_node,
                from,
                to,
                data,
            } => {
                self.digest.record(b'D', now);
                self.digest.write(from.to_string().as_bytes());
                self.digest.write(to.to_string().as_bytes());
                self.digest.write(&data);
                self.trace.note(
                    now,
                    format!("datagram {from} -> {to} ({} bytes)", data.len()),
                );
                self.oracle
                    .datagram_delivered(from.ip(), to_node, to.ip(), data.len());
                self.with(to_node, |n, cx| n.on_datagram(cx, from, to, data));
            }
            Ev::Syn(sid) => {
                let Some([(_, local), (acceptor, remote)]) = self.net.ends(sid) else {
                    return;
                };
                self.digest.record(b'S', now);
                self.digest.write_u64(sid.0);
                self.trace.note(
                    now,
                    format!("connect {local} -> {remote} (stream {})", sid.0),
                );
                if acceptor == usize::MAX {
                    return;
                }
                let mut accepted = false;
                self.with(acceptor, |n, cx| {
                    accepted = n.on_syn(cx, sid, remote, local)
                });
                self.net.answer_syn(now, sid, accepted);
            }
            Ev::SynAck(sid) => {
                let Some([(connector, _), _]) = self.net.ends(sid) else {
                    return;
                };
                self.digest.record(b'A', now);
                self.digest.write_u64(sid.0);
                self.with(connector, |n, cx| n.on_established(cx, sid));
            }
            Ev::Refused(sid) => {
                let Some([(connector, _), (_, remote)]) = self.net.ends(sid) else {
                    return;
                };
                self.digest.record(b'R', now);
                self.digest.write_u64(sid.0);
                self.trace
                    .note(now, format!("stream {} to {remote} refused", sid.0));
                self.net.refused(sid);
                self.with(connector, |n, cx| {
                    n.on_stream_closed(cx, sid, Side::Connector)
                });
            }
            Ev::Deliver(sid, writer) => {
                if let Some(StreamNews::Data(node, side, bytes)) =
                    self.net.take_delivery(now, sid, writer)
                {
                    self.digest.record(b'B', now);
                    self.digest.write_u64(sid.0);
                    self.digest.write(&bytes);
                    self.trace.note(
                        now,
                        format!(
                            "stream {} delivers {} bytes to host {node}",
                            sid.0,
                            bytes.len()
                        ),
                    );
                    self.with(node, |n, cx| n.on_stream_data(cx, sid, side, bytes));
                }
            }
            Ev::Fin(sid, closer) => {
                if let Some(StreamNews::Closed(node, side)) = self.net.take_fin(now, sid, closer) {
                    self.digest.record(b'F', now);
                    self.digest.write_u64(sid.0);
                    self.trace
                        .note(now, format!("stream {} closed for host {node}", sid.0));
                    self.with(node, |n, cx| n.on_stream_closed(cx, sid, side));
                }
            }
            Ev::Reset(sid, side) => {
                if let Some(StreamNews::Closed(node, side)) = self.net.take_reset(sid, side) {
                    self.digest.record(b'X', now);
                    self.digest.write_u64(sid.0);
                    self.trace
                        .note(now, format!("stream {} reset for host {node}", sid.0));
                    self.with(node, |n, cx| n.on_stream_closed(cx, sid, side));
                }
            }
            Ev::Wake(node) => {
                if self.armed.get(node).copied().flatten() != Some(now) {
                    return;
                }
                self.armed[node] = None;
                self.digest.record(b'W', now);
                self.digest.write_u64(node as u64);
                self.with(node, |n, cx| n.on_wake(cx));
            }
            Ev::Loop { node, msg } => {
                self.digest.record(b'L', now);
                self.digest.write_u64(
                    node as u64 | u64::from(msg.from.0) << 32 | u64::from(msg.to.0) << 48,
                );
                self.with(node, |n, cx| n.on_loop_message(cx, msg));
            }
            Ev::Control(c) => {
                self.digest.record(b'C', now);
                let line = format!("control {c:?}");
                self.digest.write(line.as_bytes());
                self.trace.note(now, line);
                self.control(&c);
                for node in 0..self.nodes.len() {
                    self.with(node, |n, cx| n.on_control(cx, &c));
                }
            }
        }
    }

    pub(super) fn control(&mut self, c: &Control) {
        let now = self.clock.now();
        match *c {
            Control::WallJump { server, by_ms } => {
                if let Some(w) = self.shared.walls.get_mut(server) {
                    w.jump(by_ms);
                }
            }
            Control::Phase(Phase::Liveness) => {
                self.shared.phase = Phase::Liveness;
                self.shared.bind_addr_in_use = 0.0;
                self.shared.tls_failure = 0.0;
                self.net.healed_from = Some(now);
                // Faults stop: servers get their file descriptors back.
                for &(s, start, stop) in &self.fd_windows {
                    if start <= now && now < stop {
                        self.net.schedule(
                            now,
                            Ev::Control(Control::FdExhaustion {
                                server: s,
                                on: false,
                            }),
                        );
                    }
                }
            }
            Control::IssuerRotates { server, ref secret } => {
                if let (Some(t), Some(g)) = (
                    self.shared.secrets.get_mut(server),
                    self.shared.generations.get_mut(server),
                ) {
                    t.clone_from(&secret.text);
                    *g = secret.generation;
                }
            }
            Control::Phase(p) => self.shared.phase = p,
            _ => {}
        }
    }

    /// Runs `f` on host `node` with a context, then re-arms its timer.
    pub(super) fn with(&mut self, node: NodeId, f: impl FnOnce(&mut Node, &mut Cx)) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let mut cx = Cx {
            now: self.clock.now(),
            me: node,
            net: &mut self.net,
            rng: &mut self.rng,
            seeds: &mut self.seeds,
            oracle: &mut self.oracle,
            trace: &mut self.trace,
            digest: &mut self.digest,
            shared: &self.shared,
            board: &mut self.board,
        };
        f(n, &mut cx);
        self.api();
        self.arm(node);
    }

    /// The HTTP API of the first server: issues the ICE configurations asked for.
    pub(super) fn api(&mut self) {
        if self.board.requests.is_empty() {
            return;
        }
        let now = self.clock.now();
        let secret = self.shared.secrets.first().cloned().unwrap_or_default();
        let generation = self.shared.generations.first().copied().unwrap_or(0);
        for (browser, expiry, label) in std::mem::take(&mut self.board.requests) {
            if let Some(Node::Server(h)) = self.nodes.first_mut() {
                let issued = h.issue(now, &secret, expiry, &label);
                self.oracle.rotation.issued(&issued.username, generation);
                self.trace.note(
                    now,
                    format!(
                        "API issues {} (udp port {:?}) to browser {browser}",
                        issued.username, issued.udp_port
                    ),
                );
                self.board.answers.insert(browser, issued);
            }
        }
        self.arm(0);
    }

    /// Schedules a host's wake-up if its wish changed.
    pub(super) fn arm(&mut self, node: NodeId) {
        let Some(want) = self.nodes.get(node).and_then(Node::next_wake) else {
            return;
        };
        let at = want.max(self.clock.now());
        if self.armed[node] != Some(at) {
            self.armed[node] = Some(at);
            self.net.schedule(at, Ev::Wake(node));
        }
    }
}
