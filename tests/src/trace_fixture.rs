//! A small trace, recorded deterministically in memory, for the format-compatibility test
//! (`tests/data/trace-v1.bin`): a core driven the way the runtime drives it (inputs
//! recorded before they are fed, a checkpoint before an input that arrives mid-drain and
//! at the end of every drain), talking to two sans-IO clients, one over UDP and one over a
//! stream (with a PROXY v1 header), each allocating, permitting a peer, relaying both ways
//! with Send indications and a channel, then releasing. Fixed seed, salt and times: the
//! bytes are the same on every run.

use std::net::SocketAddr;
use turnpike_core::auth::Credentials;
use turnpike_core::client::{Client, ClientConfig};
use turnpike_core::config::{Config, ListenerConfig};
use turnpike_core::event::Output;
use turnpike_core::trace::mask::Masker;
use turnpike_core::trace::{
    encode_header_version, encode_record, ConfigDescription, Header, Input, OutputDigest, Payload,
    Record,
};
use turnpike_core::{ConnId, Forward, Instant, ListenerId, Server, Transport, HEADROOM, TAILROOM};

/// The password in `tests/data/trace-v1.toml`.
pub const PASSWORD: &str = "correct-horse";

/// A STUN Binding request (for readiness probes).
pub fn binding_request() -> Vec<u8> {
    crate::turn::binding_request()
}

/// The bytes of the fixture trace, as format version 1 wrote them (the header of version
/// 1; the records are alike in every version).
pub fn record() -> Vec<u8> {
    let server_addr: SocketAddr = "127.0.0.1:3478".parse().unwrap_or_else(|_| unreachable!());
    let mut cr = Credentials::new("turn.test");
    cr.add_user("alice", PASSWORD);
    let mut config = Config::new(cr, server_addr.ip());
    config.listeners = vec![
        ListenerConfig {
            id: ListenerId(0),
            transport: Transport::Udp,
            local: server_addr,
            proxy_protocol: false,
        },
        ListenerConfig {
            id: ListenerId(1),
            transport: Transport::Tcp,
            local: server_addr,
            proxy_protocol: true,
        },
    ];
    config.software = Some("turnpike fixture".into());
    config.relay_port_min = 50000;
    config.relay_port_max = 50009;
    config.peer_policy.allow_loopback = true;
    config.proxy_protocol_trusted = vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
    let salt = [5u8; 16];
    let start = Instant::from_secs(1);
    let header = Header {
        seed: [42; 32],
        start,
        start_unix_ms: 1_700_000_000_000,
        salt,
        producer: "turnpike fixture".into(),
        payloads: false,
        segment: 0,
        place: turnpike_core::node::NodePlace::SOLE,
        config: ConfigDescription::of(&config, &salt),
        version: 1,
    };
    let server = Server::new(config, header.seed, start).unwrap_or_else(|e| panic!("{e}"));
    let mut d = Driver {
        server,
        rec: Recording::default(),
        now: start,
        udp_client: None,
        tcp_client: None,
        masker: Masker::stream(true),
        scratch: Vec::new(),
    };
    encode_header_version(&header, 1, &mut d.rec.out).unwrap_or_else(|e| panic!("{e}"));
    d.rec.input(&Input::WallClock {
        now: start,
        unix_ms: 1_700_000_000_000,
    });
    d.server.set_wall_clock(start, 1_700_000_000_000);

    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap_or_else(|_| unreachable!());
    let udp_from: SocketAddr = "127.0.0.1:40000".parse().unwrap_or_else(|_| unreachable!());
    let conn = ConnId(0);
    let mut udp = Client::new(
        ClientConfig::new(server_addr, Transport::Udp, "alice", PASSWORD),
        [1; 32],
        start,
    );
    let mut tcp = Client::new(
        ClientConfig::new(server_addr, Transport::Tcp, "alice", PASSWORD),
        [2; 32],
        start,
    );
    udp.allocate(start);
    tcp.allocate(start);
    d.udp_client = Some(udp);
    d.tcp_client = Some(tcp);
    d.stream_open(
        conn,
        "127.0.0.1:41000".parse().unwrap_or_else(|_| unreachable!()),
    );
    let proxy = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 3478\r\n".to_vec();
    d.stream_data(conn, &proxy);
    d.pump(udp_from, conn);
    for step in 0..6u64 {
        d.now = d.now + core::time::Duration::from_millis(50);
        let now = d.now;
        if let (Some(u), Some(t)) = (d.udp_client.as_mut(), d.tcp_client.as_mut()) {
            match step {
                0 => {
                    u.create_permission(now, &[peer.ip()]);
                    t.create_permission(now, &[peer.ip()]);
                }
                1 => {
                    u.send_indication(now, peer, b"hello over udp");
                    t.send_indication(now, peer, b"hello over tcp");
                }
                2 => {
                    u.channel_bind(now, peer);
                    t.channel_bind(now, peer);
                }
                3 => {
                    u.send(now, peer, b"channel data udp");
                    t.send(now, peer, b"channel data tcp!");
                }
                4 => {}
                _ => {
                    u.refresh(now, 0);
                    t.refresh(now, 0);
                }
            }
        }
        d.pump(udp_from, conn);
        if step == 4 {
            // The peer answers on both relayed addresses.
            let relays: Vec<turnpike_core::RelayId> = (1..=2).map(turnpike_core::RelayId).collect();
            for r in relays {
                d.relay_datagram(r, peer, b"pong from the peer");
            }
            d.pump(udp_from, conn);
        }
    }
    d.now = d.now + core::time::Duration::from_secs(700);
    let now = d.now;
    d.rec.input(&Input::Timeout { now });
    d.server.handle_timeout(now);
    d.drain(udp_from, conn);
    d.stream_closed(conn);
    encode_record(&Record::End { reason: "shutdown" }, &mut d.rec.out);
    d.rec.out
}

/// A trace being written the way the runtime's recorder writes it: inputs before the
/// core sees them, a checkpoint before an input that arrives mid-drain and at the end of
/// every drain.
#[derive(Default)]
struct Recording {
    out: Vec<u8>,
    digest: OutputDigest,
    popped: u32,
    dirty: bool,
}

impl Recording {
    fn output(&mut self, o: &Output) {
        self.digest.output(o);
        self.popped += 1;
        self.dirty = true;
    }

    /// The end of a drain: a checkpoint if anything happened since the last one.
    fn end_drain(&mut self) {
        if self.dirty {
            self.checkpoint(true);
        }
    }

    /// Answers `BindRelay` for `relay` with success, recorded.
    fn bind(&mut self, server: &mut Server, now: Instant, relay: turnpike_core::RelayId) {
        self.input(&Input::RelayBound {
            now,
            relay,
            result: Ok(()),
        });
        server.handle_relay_bound(now, relay, Ok(()));
    }

    fn input(&mut self, i: &Input<'_>) {
        if self.popped > 0 {
            self.checkpoint(false);
        }
        encode_record(&Record::Input(i.clone()), &mut self.out);
        self.dirty = true;
    }

    fn checkpoint(&mut self, drained: bool) {
        encode_record(
            &Record::Outputs {
                count: self.popped,
                drained,
                digest: self.digest.value(),
            },
            &mut self.out,
        );
        self.popped = 0;
        self.dirty = false;
    }
}

struct Driver {
    server: Server,
    rec: Recording,
    now: Instant,
    udp_client: Option<Client>,
    tcp_client: Option<Client>,
    masker: Masker,
    scratch: Vec<u8>,
}

impl Driver {
    fn stream_open(&mut self, conn: ConnId, remote: SocketAddr) {
        let local = "127.0.0.1:3478".parse().unwrap_or_else(|_| unreachable!());
        let now = self.now;
        self.rec.input(&Input::StreamOpen {
            now,
            conn,
            listener: ListenerId(1),
            local,
            remote,
        });
        self.server
            .handle_stream_open(now, conn, ListenerId(1), local, remote);
    }

    fn stream_data(&mut self, conn: ConnId, data: &[u8]) {
        let now = self.now;
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = Payload::stream_data(data, Some(&mut self.masker), &mut scratch);
        self.rec.input(&Input::StreamData {
            now,
            conn,
            data: payload,
        });
        self.scratch = scratch;
        let digest = &mut self.rec.digest;
        self.server
            .handle_stream_data(now, conn, data, &mut |relay, peer, p| {
                digest.to_peer(relay, peer, p.len())
            });
    }

    fn stream_closed(&mut self, conn: ConnId) {
        let now = self.now;
        self.rec.input(&Input::StreamClosed { now, conn });
        self.server.handle_stream_closed(now, conn);
        self.rec.checkpoint(true);
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) -> Option<Forward> {
        let now = self.now;
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = Payload::client_datagram(data, false, &mut scratch);
        self.rec.input(&Input::Datagram {
            now,
            listener: ListenerId(0),
            from,
            payload,
        });
        self.scratch = scratch;
        let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
        let f = self.server.handle_datagram(
            now,
            ListenerId(0),
            from,
            &mut buf,
            HEADROOM..HEADROOM + data.len(),
        );
        if let Some(f) = &f {
            self.rec.digest.forward(f);
        }
        f
    }

    fn relay_datagram(&mut self, relay: turnpike_core::RelayId, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = Payload::peer_datagram(data, false, &mut scratch);
        self.rec.input(&Input::RelayDatagram {
            now,
            relay,
            from,
            payload,
        });
        self.scratch = scratch;
        let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
        if let Some(f) = self.server.handle_relay_datagram(
            now,
            relay,
            from,
            &mut buf,
            HEADROOM..HEADROOM + data.len(),
        ) {
            self.rec.digest.forward(&f);
            match &f {
                Forward::ToClient { range, .. } => {
                    if let Some(u) = self.udp_client.as_mut() {
                        u.handle_input(now, &buf[range.clone()]);
                    }
                }
                Forward::ToStream { range, .. } => {
                    if let Some(t) = self.tcp_client.as_mut() {
                        t.handle_input(now, &buf[range.clone()]);
                    }
                }
                Forward::ToPeer { .. } => {}
            }
        }
        self.drain_after();
    }

    fn drain_after(&mut self) {
        // Outputs of a relay datagram (events, if any).
        while let Some(o) = self.server.poll_output() {
            self.rec.output(&o);
        }
        self.rec.end_drain();
    }

    /// Moves messages between the clients and the server until both are quiet.
    fn pump(&mut self, udp_from: SocketAddr, conn: ConnId) {
        for _ in 0..50 {
            let mut moved = false;
            while let Some(bytes) = self.udp_client.as_mut().and_then(Client::poll_transmit) {
                moved = true;
                self.datagram(udp_from, &bytes);
                self.drain(udp_from, conn);
            }
            while let Some(bytes) = self.tcp_client.as_mut().and_then(Client::poll_transmit) {
                moved = true;
                // Split every message in two, as TCP may.
                let half = bytes.len() / 2;
                self.stream_data(conn, &bytes[..half]);
                self.drain(udp_from, conn);
                self.stream_data(conn, &bytes[half..]);
                self.drain(udp_from, conn);
            }
            if !moved {
                break;
            }
        }
        for c in [self.udp_client.as_mut(), self.tcp_client.as_mut()]
            .into_iter()
            .flatten()
        {
            while c.poll_event().is_some() {}
        }
    }

    fn drain(&mut self, _udp_from: SocketAddr, conn: ConnId) {
        let now = self.now;
        while let Some(o) = self.server.poll_output() {
            self.rec.output(&o);
            match o {
                Output::Transmit { data, .. } => {
                    if let Some(u) = self.udp_client.as_mut() {
                        u.handle_input(now, &data);
                    }
                }
                Output::StreamWrite { conn: c, data } if c == conn => {
                    if let Some(t) = self.tcp_client.as_mut() {
                        t.handle_input(now, &data);
                    }
                }
                Output::BindRelay { relay, .. } => {
                    self.rec.bind(&mut self.server, now, relay);
                }
                _ => {}
            }
        }
        self.rec.end_drain();
    }
}

/// The trace files of a node of two event loops (loop 0's first), recorded in memory the
/// way the runtime records each loop: cores told their place (`Config::node`), loop 1
/// counting allocation ids from its base and signing nonces with the key of loop 0's
/// seed, messages between the cores carried in order and recorded by the receiving loop
/// before its core sees them. Six UDP clients of one user, spread over the loops, each
/// allocating (the user's quota is counted at her home loop; the node's `total_quota` of
/// 4 is split 2 + 2, so the fifth and sixth allocations make a loop borrow, and the
/// sixth is refused), sending to a peer, and releasing. Fixed seeds, salt and times.
pub fn record_node() -> Vec<Vec<u8>> {
    use turnpike_core::node::{allocation_id_base, NodePlace};
    use turnpike_core::trace::encode_header;
    let server_addr: SocketAddr = "127.0.0.1:3478".parse().unwrap_or_else(|_| unreachable!());
    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap_or_else(|_| unreachable!());
    let main_seed = [42u8; 32];
    let salt = [6u8; 16];
    let start = Instant::from_secs(1);
    let count = 2u16;
    let mut loops: Vec<LoopRecording> = (0..count)
        .map(|index| {
            let mut cr = Credentials::new("turn.test");
            cr.add_user("alice", PASSWORD);
            let mut config = Config::new(cr, server_addr.ip());
            config.listeners = vec![ListenerConfig {
                id: ListenerId(0),
                transport: Transport::Udp,
                local: server_addr,
                proxy_protocol: false,
            }];
            config.relay_port_min = 50000;
            config.relay_port_max = 50127;
            config.peer_policy.allow_loopback = true;
            config.user_quota = 10;
            config.total_quota = 4;
            config.node = NodePlace { index, count };
            let seed = if index == 0 {
                main_seed
            } else {
                config.nonce_key = Some(Server::nonce_key_of_seed(main_seed));
                [index as u8; 32]
            };
            let header = Header {
                seed,
                start,
                start_unix_ms: 1_700_000_000_000,
                salt,
                producer: "turnpike fixture".into(),
                payloads: false,
                segment: 0,
                place: NodePlace { index, count },
                config: ConfigDescription::of(&config, &salt),
                version: turnpike_core::trace::FORMAT_VERSION,
            };
            let mut server = Server::new(config, seed, start).unwrap_or_else(|e| panic!("{e}"));
            if index > 0 {
                server.set_allocation_id_base(allocation_id_base(index));
            }
            let mut out = Vec::new();
            encode_header(&header, &mut out);
            let mut l = LoopRecording {
                server,
                rec: Recording {
                    out,
                    ..Recording::default()
                },
            };
            l.rec.input(&Input::WallClock {
                now: start,
                unix_ms: 1_700_000_000_000,
            });
            l.server.set_wall_clock(start, 1_700_000_000_000);
            l
        })
        .collect();
    let mut clients: Vec<(SocketAddr, usize, Client)> = (0..6u16)
        .map(|k| {
            let from: SocketAddr = format!("127.0.0.1:{}", 41000 + k)
                .parse()
                .unwrap_or_else(|_| unreachable!());
            let c = Client::new(
                ClientConfig::new(server_addr, Transport::Udp, "alice", PASSWORD),
                [k as u8 + 10; 32],
                start,
            );
            (from, usize::from(k % 2), c)
        })
        .collect();
    let mut now = start;
    for (_, _, c) in clients.iter_mut() {
        c.allocate(now);
    }
    settle_node(now, &mut loops, &mut clients);
    for step in 0..3 {
        now = now + core::time::Duration::from_millis(50);
        for (_, _, c) in clients.iter_mut() {
            match step {
                0 => c.create_permission(now, &[peer.ip()]),
                1 => c.send_indication(now, peer, b"hello from a node"),
                _ => c.refresh(now, 0),
            }
        }
        settle_node(now, &mut loops, &mut clients);
    }
    now = now + core::time::Duration::from_secs(700);
    for (i, l) in loops.iter_mut().enumerate() {
        l.rec.input(&Input::Timeout { now });
        l.server.handle_timeout(now);
        l.drain(now, i, &mut Flight::new());
    }
    loops
        .into_iter()
        .map(|mut l| {
            encode_record(&Record::End { reason: "shutdown" }, &mut l.rec.out);
            l.rec.out
        })
        .collect()
}

/// Messages between loops: (from, to, message).
type Flight = std::collections::VecDeque<(
    usize,
    turnpike_core::node::LoopId,
    turnpike_core::node::LoopMsg,
)>;

/// Moves datagrams between the clients (address, loop, client) and their loops, and
/// messages between the loops (in order), until all is quiet.
fn settle_node(
    now: Instant,
    loops: &mut [LoopRecording],
    clients: &mut [(SocketAddr, usize, Client)],
) {
    let mut flight = Flight::new();
    for _ in 0..1000 {
        let mut replies = Vec::new();
        let mut sent = Vec::new();
        for (from, at, c) in clients.iter_mut() {
            while let Some(bytes) = c.poll_transmit() {
                sent.push((*from, *at, bytes));
            }
        }
        for (from, at, bytes) in &sent {
            let l = &mut loops[*at];
            l.datagram(now, *from, bytes);
            replies.extend(l.drain(now, *at, &mut flight));
        }
        let delivered = !flight.is_empty();
        while let Some((from, to, msg)) = flight.pop_front() {
            let i = usize::from(to.0);
            let from = turnpike_core::node::LoopId(from as u16);
            let l = &mut loops[i];
            l.rec.input(&Input::LoopMessage {
                now,
                from,
                msg: msg.clone(),
            });
            l.server.handle_loop_message(now, from, msg);
            replies.extend(l.drain(now, i, &mut flight));
        }
        for (to, data) in replies {
            if let Some((_, _, c)) = clients.iter_mut().find(|(f, _, _)| *f == to) {
                c.handle_input(now, &data);
            }
        }
        if sent.is_empty() && !delivered {
            break;
        }
    }
    for (_, _, c) in clients.iter_mut() {
        while c.poll_event().is_some() {}
    }
}

/// One loop of [`record_node`]: its core and its trace.
struct LoopRecording {
    server: Server,
    rec: Recording,
}

impl LoopRecording {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut scratch = Vec::new();
        let payload = Payload::client_datagram(data, false, &mut scratch);
        self.rec.input(&Input::Datagram {
            now,
            listener: ListenerId(0),
            from,
            payload,
        });
        let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
        let range = HEADROOM..HEADROOM + data.len();
        if let Some(f) = self
            .server
            .handle_datagram(now, ListenerId(0), from, &mut buf, range)
        {
            self.rec.digest.forward(&f);
        }
    }

    /// Drains the core of loop `me`: binds answered at once, messages to other loops
    /// queued on `flight`, datagrams to clients returned.
    fn drain(
        &mut self,
        now: Instant,
        me: usize,
        flight: &mut Flight,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut to_clients = Vec::new();
        while let Some(o) = self.server.poll_output() {
            self.rec.output(&o);
            match o {
                Output::Transmit { to, data, .. } => to_clients.push((to, data)),
                Output::ToLoop { to, msg } => flight.push_back((me, to, msg)),
                Output::BindRelay { relay, .. } => {
                    self.rec.bind(&mut self.server, now, relay);
                }
                _ => {}
            }
        }
        self.rec.end_drain();
        to_clients
    }
}
