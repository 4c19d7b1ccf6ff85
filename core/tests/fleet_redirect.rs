//! A fleet of relays in memory: draining (no new allocations, live ones served), 300 (Try
//! Alternate) with ALTERNATE-SERVER when draining or full (RFC 8489 §10, RFC 8656 §7.2),
//! and the core's client following redirects without loops.

use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::Credentials;
use turnpike_core::client::{Client, ClientConfig, ClientEvent, ClientState, MAX_REDIRECTS};
use turnpike_core::config::{AlternateServer, ListenerConfig};
use turnpike_core::secret::NodeSecret;
use turnpike_core::server::DRAINING_CODE;
use turnpike_core::{Config, Event, Forward, Instant, ListenerId, Output, Server, Transport};

const T0: Instant = Instant::from_secs(100);
const PEER: &str = "8.8.4.4:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A relay at `ip`:3478 (UDP listener 1) relaying from `ip`, with the fleet's shared
/// node secret, offering `alternates` to its UDP clients.
fn relay(ip: &str, alternates: &[&str], total_quota: u32) -> (SocketAddr, Server) {
    let mut creds = Credentials::new("example.org");
    creds.add_user("alice", "secret");
    let ip: IpAddr = ip.parse().expect("ip");
    let mut cfg = Config::new(creds, ip);
    let local = SocketAddr::new(ip, 3478);
    cfg.listeners = vec![ListenerConfig {
        id: ListenerId(1),
        transport: Transport::Udp,
        local,
        proxy_protocol: false,
    }];
    cfg.total_quota = total_quota;
    cfg.node_secret = Some(NodeSecret([7; 32]));
    cfg.alternate_servers = alternates
        .iter()
        .map(|a| AlternateServer {
            listener: ListenerId(1),
            addr: addr(a),
            domain: None,
        })
        .collect();
    let mut s = Server::new(cfg, [1; 32], T0).expect("config");
    s.set_wall_clock(T0, 1_700_000_000_000);
    (local, s)
}

/// Relays by address, and UDP clients that send wherever [`Client::server`] says.
struct Fleet {
    relays: Vec<(SocketAddr, Server)>,
    now: Instant,
    events: Vec<Event>,
    to_peer: Vec<Vec<u8>>,
}

impl Fleet {
    fn new(relays: Vec<(SocketAddr, Server)>) -> Fleet {
        Fleet {
            relays,
            now: T0,
            events: Vec::new(),
            to_peer: Vec::new(),
        }
    }

    fn server(&mut self, at: SocketAddr) -> &mut Server {
        &mut self
            .relays
            .iter_mut()
            .find(|(a, _)| *a == at)
            .expect("a relay at that address")
            .1
    }

    /// Moves messages until quiet; returns the client's events.
    fn pump(&mut self, client: &mut Client, from: SocketAddr) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        for _ in 0..100 {
            let mut moved = false;
            while let Some(bytes) = client.poll_transmit() {
                moved = true;
                let (now, to) = (self.now, client.server());
                let mut buf = bytes.clone();
                let n = buf.len();
                // Nobody at `to`: the datagram is lost.
                let Some((_, server)) = self.relays.iter_mut().find(|(a, _)| *a == to) else {
                    continue;
                };
                let fwd = server.handle_datagram(now, ListenerId(1), from, &mut buf, 0..n);
                if let Some(Forward::ToPeer { range, .. }) = fwd {
                    self.to_peer.push(buf[range].to_vec());
                }
            }
            for i in 0..self.relays.len() {
                while let Some(out) = self.relays[i].1.poll_output() {
                    moved = true;
                    match out {
                        Output::Transmit { to, data, .. } if to == from => {
                            client.handle_input(self.now, &data);
                        }
                        Output::BindRelay { relay, .. } => {
                            self.relays[i].1.handle_relay_bound(self.now, relay, Ok(()))
                        }
                        Output::Event(e) => self.events.push(e),
                        _ => {}
                    }
                }
            }
            while let Some(e) = client.poll_event() {
                events.push(e);
            }
            if !moved {
                return events;
            }
        }
        panic!("no quiescence");
    }
}

fn client_for(server: SocketAddr, seed: u8) -> Client {
    let cc = ClientConfig::new(server, Transport::Udp, "alice", "secret");
    Client::new(cc, [seed; 32], T0)
}

fn relayed_of(events: &[ClientEvent]) -> Option<SocketAddr> {
    events.iter().find_map(|e| match e {
        ClientEvent::Allocated { relayed, .. } => relayed.first().copied(),
        _ => None,
    })
}

fn redirect_count(events: &[ClientEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Redirected { .. }))
        .count()
}

fn failed_code(events: &[ClientEvent]) -> Option<u16> {
    events.iter().find_map(|e| match e {
        ClientEvent::AllocateFailed { code, .. } => Some(*code),
        _ => None,
    })
}

/// Relays A (203.0.113.1) and B (.2), each the other's alternate.
fn pair() -> Fleet {
    let a = relay("203.0.113.1", &["203.0.113.2:3478"], 100);
    let b = relay("203.0.113.2", &["203.0.113.1:3478"], 100);
    Fleet::new(vec![a, b])
}

#[test]
fn a_draining_relay_redirects_new_allocates_to_its_alternate() {
    let mut fleet = pair();
    fleet.server(addr("203.0.113.1:3478")).start_drain(T0);
    assert!(fleet.server(addr("203.0.113.1:3478")).draining());
    let me = addr("198.51.100.7:40000");
    let mut c = client_for(addr("203.0.113.1:3478"), 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, me);
    assert!(events.contains(&ClientEvent::Redirected {
        from: addr("203.0.113.1:3478"),
        to: addr("203.0.113.2:3478"),
        domain: None,
    }));
    let relayed = relayed_of(&events).expect("allocated at the alternate");
    // The allocation belongs to the relay whose relayed address it has.
    assert_eq!(relayed.ip(), "203.0.113.2".parse::<IpAddr>().expect("ip"));
    assert_eq!(c.server(), addr("203.0.113.2:3478"));
    assert_eq!(c.state(), ClientState::Allocated);
    let sa = fleet.server(addr("203.0.113.1:3478")).stats(T0);
    assert_eq!((sa.redirects, sa.allocations), (1, 0));
    assert_eq!(sa.allocation_failures.get(&300), Some(&1));
    let sb = fleet.server(addr("203.0.113.2:3478")).stats(T0);
    assert_eq!(sb.allocations, 1);
    // The nonce A issued was accepted by B (same node secret, same client address): B
    // challenged nobody.
    assert_eq!((sb.unauthorized, sb.stale_nonce), (0, 0));
    assert!(fleet.events.contains(&Event::DrainStarted));
    assert!(fleet.events.iter().any(|e| matches!(
        e,
        Event::AllocationRedirected { to, .. } if *to == addr("203.0.113.2:3478")
    )));
}

#[test]
fn a_drain_cuts_no_live_allocation() {
    let a = relay("203.0.113.1", &["203.0.113.2:3478"], 100);
    let b = relay("203.0.113.2", &[], 100);
    let mut fleet = Fleet::new(vec![a, b]);
    let me = addr("198.51.100.7:40000");
    let mut c = client_for(addr("203.0.113.1:3478"), 2);
    c.allocate(T0);
    let relayed = relayed_of(&fleet.pump(&mut c, me)).expect("allocated");
    fleet.server(addr("203.0.113.1:3478")).start_drain(T0);
    // Refresh, CreatePermission, ChannelBind and data keep working while draining.
    c.refresh(T0, 600);
    c.create_permission(T0, &[addr(PEER).ip()]);
    let events = fleet.pump(&mut c, me);
    assert!(events.contains(&ClientEvent::Refreshed { lifetime_s: 600 }));
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::PermissionCreated { .. })));
    c.channel_bind(T0, addr(PEER)).expect("a channel number");
    let events = fleet.pump(&mut c, me);
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::ChannelBound { .. })));
    c.send(T0, addr(PEER), b"still relaying");
    fleet.pump(&mut c, me);
    assert_eq!(fleet.to_peer, vec![b"still relaying".to_vec()]);
    let sa = fleet.server(addr("203.0.113.1:3478")).stats(T0);
    assert_eq!(sa.allocations, 1);
    assert_eq!(relayed.ip(), "203.0.113.1".parse::<IpAddr>().expect("ip"));
    // A second client is sent to B.
    let mut c2 = client_for(addr("203.0.113.1:3478"), 3);
    c2.allocate(T0);
    let relayed2 = relayed_of(&fleet.pump(&mut c2, addr("198.51.100.8:40000")));
    assert_eq!(
        relayed2.map(|r| r.ip()),
        Some("203.0.113.2".parse().expect("ip"))
    );
}

/// What a client gets from a lone draining relay at 203.0.113.1 offering `alternates`.
fn allocate_at_lone_draining_relay(alternates: &[&str]) -> (Vec<ClientEvent>, ClientState) {
    let a = relay("203.0.113.1", alternates, 100);
    let mut fleet = Fleet::new(vec![a]);
    fleet.server(addr("203.0.113.1:3478")).start_drain(T0);
    let mut c = client_for(addr("203.0.113.1:3478"), 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, addr("198.51.100.7:40000"));
    (events, c.state())
}

#[test]
fn a_draining_relay_without_alternates_answers_508() {
    let (events, state) = allocate_at_lone_draining_relay(&[]);
    assert_eq!(failed_code(&events), Some(DRAINING_CODE));
    assert_eq!(state, ClientState::Failed);
}

#[test]
fn a_relay_never_names_itself() {
    // Misconfigured: its only alternate is itself. It must not send the client back.
    let (events, _) = allocate_at_lone_draining_relay(&["203.0.113.1:3478"]);
    assert_eq!(failed_code(&events), Some(DRAINING_CODE));
    assert_eq!(redirect_count(&events), 0);
}

#[test]
fn two_draining_relays_naming_each_other_do_not_loop() {
    let mut fleet = pair();
    fleet.server(addr("203.0.113.1:3478")).start_drain(T0);
    fleet.server(addr("203.0.113.2:3478")).start_drain(T0);
    let mut c = client_for(addr("203.0.113.1:3478"), 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, addr("198.51.100.7:40000"));
    let redirects = redirect_count(&events);
    // RFC 8489 §10: B's redirect back to A is ignored and the Allocate fails.
    assert_eq!(redirects, 1);
    assert_eq!(failed_code(&events), Some(300));
    assert_eq!(c.state(), ClientState::Failed);
}

#[test]
fn a_chain_of_redirects_is_bounded() {
    // Each relay names the next; none has room. The client gives up after MAX_REDIRECTS.
    let n = MAX_REDIRECTS + 3;
    let ips: Vec<String> = (1..=n).map(|i| format!("203.0.113.{i}")).collect();
    let relays = (0..n)
        .map(|i| {
            let next = format!("{}:3478", ips[(i + 1) % n]);
            let mut r = relay(&ips[i], &[next.as_str()], 100);
            r.1.start_drain(T0);
            r
        })
        .collect();
    let mut fleet = Fleet::new(relays);
    let mut c = client_for(addr("203.0.113.1:3478"), 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, addr("198.51.100.7:40000"));
    let redirects = redirect_count(&events);
    assert_eq!(redirects, MAX_REDIRECTS);
    assert_eq!(failed_code(&events), Some(300));
}

#[test]
fn a_full_relay_redirects_instead_of_508() {
    let a = relay("203.0.113.1", &["203.0.113.2:3478"], 1);
    let b = relay("203.0.113.2", &[], 100);
    let mut fleet = Fleet::new(vec![a, b]);
    let mut c1 = client_for(addr("203.0.113.1:3478"), 2);
    c1.allocate(T0);
    let r1 = relayed_of(&fleet.pump(&mut c1, addr("198.51.100.7:40000")));
    assert_eq!(r1.map(|r| r.ip()), Some("203.0.113.1".parse().expect("ip")));
    let mut c2 = client_for(addr("203.0.113.1:3478"), 3);
    c2.allocate(T0);
    let events = fleet.pump(&mut c2, addr("198.51.100.8:40000"));
    assert_eq!(redirect_count(&events), 1);
    let r2 = relayed_of(&events);
    assert_eq!(r2.map(|r| r.ip()), Some("203.0.113.2".parse().expect("ip")));
    let sa = fleet.server(addr("203.0.113.1:3478")).stats(T0);
    assert_eq!(sa.redirects, 1);
    // Full and no alternate: 508 as before.
    let (_, mut lone) = relay("203.0.113.9", &[], 1);
    lone.start_drain(T0);
    assert!(lone.draining_since() == Some(T0));
}

#[test]
fn a_redirect_offers_only_the_clients_family_and_names_the_tls_domain() {
    let (local, mut s) = relay("203.0.113.1", &[], 100);
    let mut cfg = s.config().clone();
    cfg.alternate_servers = vec![
        AlternateServer {
            listener: ListenerId(1),
            addr: addr("[2001:db8::2]:3478"),
            domain: None,
        },
        AlternateServer {
            listener: ListenerId(1),
            addr: addr("203.0.113.2:5349"),
            domain: Some("turn2.example.org".into()),
        },
    ];
    s = Server::new(cfg, [1; 32], T0).expect("config");
    s.set_wall_clock(T0, 1_700_000_000_000);
    s.start_drain(T0);
    let mut fleet = Fleet::new(vec![(local, s)]);
    let mut c = client_for(local, 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, addr("198.51.100.7:40000"));
    assert!(events.contains(&ClientEvent::Redirected {
        from: local,
        to: addr("203.0.113.2:5349"),
        domain: Some("turn2.example.org".into()),
    }));
}

#[test]
fn a_relay_behind_nat_knows_its_advertised_address() {
    // Bound to 10.0.0.5:3478, advertised as 203.0.113.5 (1:1 NAT); the fleet's shared list
    // names it by its advertised address. It must not send its clients to itself.
    let (local, s) = relay("10.0.0.5", &[], 100);
    let mut cfg = s.config().clone();
    cfg.relay_v4 = Some(turnpike_core::config::RelayAddress {
        bind: "10.0.0.5".parse().expect("ip"),
        advertised: "203.0.113.5".parse().expect("ip"),
    });
    cfg.alternate_servers = vec![AlternateServer {
        listener: ListenerId(1),
        addr: addr("203.0.113.5:3478"),
        domain: None,
    }];
    let mut s = Server::new(cfg, [1; 32], T0).expect("config");
    s.set_wall_clock(T0, 1_700_000_000_000);
    s.start_drain(T0);
    let mut fleet = Fleet::new(vec![(local, s)]);
    let mut c = client_for(local, 2);
    c.allocate(T0);
    let events = fleet.pump(&mut c, addr("198.51.100.7:40000"));
    assert_eq!(redirect_count(&events), 0);
    assert_eq!(failed_code(&events), Some(DRAINING_CODE));
}

/// The alternate a draining relay offering four names for a client at `from`.
fn alternate_offered_to(from: SocketAddr) -> Option<SocketAddr> {
    let alts = [
        "203.0.113.11:3478",
        "203.0.113.12:3478",
        "203.0.113.13:3478",
        "203.0.113.14:3478",
    ];
    let (local, mut s) = relay("203.0.113.1", &alts, 100);
    s.start_drain(T0);
    let mut fleet = Fleet::new(vec![(local, s)]);
    let mut c = client_for(local, 2);
    c.allocate(T0);
    fleet.pump(&mut c, from).iter().find_map(|e| match e {
        ClientEvent::Redirected { to, .. } => Some(*to),
        _ => None,
    })
}

#[test]
fn a_client_is_sent_to_the_same_alternate_whatever_its_port() {
    let first = alternate_offered_to(addr("198.51.100.7:40000")).expect("redirected");
    for port in [40001, 40002, 50000, 61000, 1024, 3478, 9, 65535] {
        let again =
            alternate_offered_to(SocketAddr::new("198.51.100.7".parse().expect("ip"), port));
        assert_eq!(again, Some(first), "port {port}");
    }
    // Different clients still spread over the alternates.
    let spread: std::collections::HashSet<_> = (1..=40u8)
        .filter_map(|i| alternate_offered_to(addr(&format!("198.51.100.{i}:40000"))))
        .collect();
    assert!(spread.len() >= 3, "{spread:?}");
}
