//! The core's own TURN client against the core's server, in memory: a whole session over
//! UDP and over a stream, both security-feature paths, and relaying both ways.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use turnpike_core::auth::Credentials;
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::config::ListenerConfig;
use turnpike_core::{
    Config, ConnId, Forward, Instant, ListenerId, Output, Server, Transport, HEADROOM, TAILROOM,
};

const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 3478);
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)), 5000);

fn server() -> Server {
    let mut creds = Credentials::new("example.org");
    creds.add_user("alice", "secret");
    let mut cfg = Config::new(creds, RELAY_IP);
    cfg.listeners = vec![
        ListenerConfig {
            id: ListenerId(1),
            transport: Transport::Udp,
            local: SERVER,
            proxy_protocol: false,
        },
        ListenerConfig {
            id: ListenerId(2),
            transport: Transport::Tcp,
            local: SERVER,
            proxy_protocol: false,
        },
    ];
    let mut s = Server::new(cfg, [1; 32], Instant::from_secs(100)).expect("config");
    s.set_wall_clock(Instant::from_secs(100), 1_700_000_000_000);
    s
}

/// Moves messages between one client and the server until both are quiet; returns the
/// client's events and the payloads that reached the peer.
struct Net {
    server: Server,
    client: Client,
    client_addr: SocketAddr,
    stream: Option<ConnId>,
    now: Instant,
    to_peer: Vec<Vec<u8>>,
    events: Vec<ClientEvent>,
}

impl Net {
    fn new(transport: Transport, prefer_sha256: bool) -> Net {
        let mut server = server();
        let client_addr: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
        let mut cc = ClientConfig::new(SERVER, transport, "alice", "secret");
        cc.prefer_sha256 = prefer_sha256;
        cc.fingerprint = true;
        let now = Instant::from_secs(100);
        let stream = (transport == Transport::Tcp).then(|| {
            server.handle_stream_open(now, ConnId(9), ListenerId(2), SERVER, client_addr);
            ConnId(9)
        });
        Net {
            server,
            client: Client::new(cc, [2; 32], now),
            client_addr,
            stream,
            now,
            to_peer: Vec::new(),
            events: Vec::new(),
        }
    }

    fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_transmit() {
                moved = true;
                let mut sink = Vec::new();
                match self.stream {
                    None => {
                        let mut buf = bytes.clone();
                        let n = buf.len();
                        if let Some(Forward::ToPeer { range, peer, .. }) =
                            self.server.handle_datagram(
                                self.now,
                                ListenerId(1),
                                self.client_addr,
                                &mut buf,
                                0..n,
                            )
                        {
                            assert_eq!(peer, PEER);
                            sink.push(buf[range].to_vec());
                        }
                    }
                    Some(conn) => {
                        // Deliver one byte at a time: framing must not care.
                        for b in bytes.chunks(1) {
                            self.server.handle_stream_data(
                                self.now,
                                conn,
                                b,
                                &mut |_, peer, data| {
                                    assert_eq!(peer, PEER);
                                    sink.push(data.to_vec());
                                },
                            );
                        }
                    }
                }
                self.to_peer.extend(sink);
            }
            while let Some(out) = self.server.poll_output() {
                moved = true;
                match out {
                    Output::Transmit { to, data, .. } => {
                        assert_eq!(to, self.client_addr);
                        self.client.handle_input(self.now, &data);
                    }
                    Output::StreamWrite { data, .. } => self.client.handle_input(self.now, &data),
                    Output::BindRelay { relay, .. } => {
                        self.server.handle_relay_bound(self.now, relay, Ok(()))
                    }
                    _ => {}
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// A datagram from the peer to the allocation's relay socket.
    fn peer_sends(&mut self, payload: &[u8]) {
        let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        // The first relay socket the server asked for.
        let relay_id = turnpike_core::RelayId(1);
        let fwd = self.server.handle_relay_datagram(
            self.now,
            relay_id,
            PEER,
            &mut buf,
            HEADROOM..HEADROOM + payload.len(),
        );
        match fwd {
            Some(Forward::ToClient { range, client, .. }) => {
                assert_eq!(client, self.client_addr);
                self.client.handle_input(self.now, &buf[range]);
            }
            Some(Forward::ToStream { range, .. }) => {
                self.client.handle_input(self.now, &buf[range])
            }
            other => panic!("peer data not forwarded: {other:?}"),
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }
}

fn session(transport: Transport, prefer_sha256: bool) {
    let mut net = Net::new(transport, prefer_sha256);
    net.client.allocate(net.now);
    net.pump();
    let relayed = net.events.iter().find_map(|e| match e {
        ClientEvent::Allocated {
            relayed, mapped, ..
        } => Some((relayed.clone(), *mapped)),
        _ => None,
    });
    let (relayed, mapped) = relayed.unwrap_or_else(|| panic!("no allocation: {:?}", net.events));
    assert_eq!(relayed[0].ip(), RELAY_IP);
    assert_eq!(mapped, Some(net.client_addr));

    // Before any permission: data is dropped both ways.
    net.client.send_indication(net.now, PEER, b"early");
    net.pump();
    assert!(net.to_peer.is_empty());

    net.client.create_permission(net.now, &[PEER.ip()]);
    net.pump();
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, ClientEvent::PermissionCreated { .. })),
        "{:?}",
        net.events
    );
    net.client.send_indication(net.now, PEER, b"via send");
    net.pump();
    assert_eq!(net.to_peer, vec![b"via send".to_vec()]);
    net.peer_sends(b"via data");
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Data { data, .. } if data == b"via data")));

    let channel = net
        .client
        .channel_bind(net.now, PEER)
        .expect("a channel number");
    net.pump();
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::ChannelBound { channel: c, .. } if *c == channel)));
    net.client.send(net.now, PEER, b"via channel!");
    net.pump();
    assert_eq!(
        net.to_peer.last().map(Vec::as_slice),
        Some(&b"via channel!"[..])
    );
    net.peer_sends(b"odd");
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Data { data, .. } if data == b"odd")));

    net.client.refresh(net.now, 0);
    net.pump();
    assert!(
        net.events.iter().any(|e| matches!(e, ClientEvent::Deleted)),
        "{:?}",
        net.events
    );
    assert!(net.server.allocations(net.now).is_empty());
}

#[test]
fn udp_session_md5() {
    session(Transport::Udp, false);
}

#[test]
fn udp_session_sha256() {
    session(Transport::Udp, true);
}

#[test]
fn stream_session_one_byte_at_a_time() {
    session(Transport::Tcp, false);
}

#[test]
fn stream_session_sha256() {
    session(Transport::Tcp, true);
}
