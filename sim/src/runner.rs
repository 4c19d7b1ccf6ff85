//! The runner: builds a world from a scenario and a seed, runs it event by event under
//! virtual time, checks the oracles after every step, and judges the end.
//!
//! Phases (as TigerBeetle's VOPR): a safety phase with faults on, a liveness phase with
//! faults off and the network healed (every well-behaved client must get through), and a
//! drain phase where clients leave and everything they held must be released.

use crate::browser::{Board, Browser, IceServer};
use crate::clock::{Clock, WallClock};
use crate::digest::{Digest, Trace};
use crate::faults::{Control, Flooder, Sink};
use crate::fleet::FleetWatch;
use crate::host::{Cx, Node, Phase, Shared};
use crate::link::{between, LinkProfile, Partition};
use crate::net::{Ev, Net, NodeId, Side, StreamFaults, StreamNews};
use crate::nginx::Nginx;
use crate::node::{Cores, LoopHash};
use crate::oracle::{Oracle, ShadowConfig, Violation};
use crate::peer::{Peer, PeerKind};
use crate::reflection::{ReflectionLimits, ReflectionWatch};
use crate::scenario::{IceUrl, LinkSpec, Scenario, Via, PAIR};
use crate::server::{config_of, ServerHost};
use crate::uclient::{Model, UClient};
use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use turnpike_core::Instant;

/// Where virtual time starts (an arbitrary, non-zero instant).
pub const START: Instant = Instant::from_secs(1_000);
/// The wall clock at `START` (2023-11-14T22:13:20Z).
pub const WALL_START_MS: u64 = 1_700_000_000_000;
/// Most events in one run: a run that needs more is not making progress.
pub const MAX_EVENTS: u64 = 200_000_000;
/// Capacity of the event queue: the simulator's own memory bound.
pub const QUEUE_CAPACITY: usize = 2_000_000;
/// Lines of trace kept for a failure report.
pub const TRACE_LINES: usize = 40;

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Keep this many trace lines.
    pub trace_lines: usize,
}

/// Figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Events processed.
    pub events: u64,
    /// Virtual time covered.
    pub virtual_time: Duration,
    /// Browser sessions started.
    pub sessions: usize,
    /// Sessions that kept an allocation, by transport.
    pub connected: BTreeMap<&'static str, usize>,
    /// Sessions where every attempt failed.
    pub failed: usize,
    /// Allocations created (all servers).
    pub allocations: u64,
    /// 508 answers.
    pub answers_508: u64,
    /// Answers held back by the per-source budget.
    pub rate_limited: u64,
    /// Requests seen by the oracle.
    pub requests: u64,
    /// Streams rejected by the core, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// PROXY headers accepted.
    pub proxy_accepted: u64,
    /// Datagrams sent / lost on the network.
    pub datagrams: (u64, u64),
    /// Most events waiting at once.
    pub queue_high_water: usize,
    /// The fault profile drawn from the seed.
    pub fault_profile: Vec<String>,
    /// Messages between the event loops of server nodes.
    pub loop_messages: u64,
    /// What the scripted clients achieved.
    pub uclients: crate::uclient::Tally,
    /// Time-to-relay of the well-behaved browsers' sessions, ms: 50th and 99th
    /// percentiles over all (`all`), then by group (`u64::MAX`: sessions that never
    /// connected reach that rank).
    pub time_to_relay_ms: Vec<(String, [u64; 2])>,
    /// Reflections, by victim: bytes spoofed in its name that reached the relay, and
    /// bytes that reached it.
    pub reflection: Vec<(IpAddr, u64, u64)>,
    /// Port mappings the NATs hold at the end.
    pub nat_mappings: usize,
    /// Native TLS handshakes completed, and failed by reason.
    pub tls: crate::server::TlsCounts,
    /// What the reload oracle counted.
    pub rotation: crate::rotation::RotationCounts,
    /// Fleets: redirects followed, drains run to their end, servers killed, and the
    /// calls that got a relay again after losing theirs (count, longest wait).
    pub fleet: Option<FleetFigures>,
}

/// What a fleet did in a run.
#[derive(Clone, Debug, Default)]
pub struct FleetFigures {
    /// Redirects (300 Try Alternate) followed by clients.
    pub redirects: u64,
    /// Drains that ran to their end.
    pub restarts: u64,
    /// Of those, the ones that hit their timeout with calls left.
    pub drain_timeouts: u64,
    /// Servers killed.
    pub kills: u64,
    /// Allocations draining servers made for RESERVATION-TOKENs.
    pub drain_redemptions: u64,
    /// Calls that had a relay again after their server was killed.
    pub reconnects: usize,
    /// The longest of those waits.
    pub longest_reconnect: Duration,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The digest of everything that happened.
    pub digest: u64,
    /// Figures.
    pub summary: Summary,
    /// The violation that stopped the run, if any.
    pub violation: Option<Violation>,
    /// The last events before the end (or the violation).
    pub trace: Vec<String>,
}

/// Runs `scenario` with `opts`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Outcome, String> {
    let mut w = World::build(scenario, opts)?;
    w.run();
    Ok(w.finish(scenario))
}

struct World {
    seed: u64,
    clock: Clock,
    net: Net,
    nodes: Vec<Node>,
    armed: Vec<Option<Instant>>,
    servers: usize,
    rng: ChaCha20Rng,
    seeds: ChaCha20Rng,
    oracle: Oracle,
    trace: Trace,
    digest: Digest,
    shared: Shared,
    board: Board,
    events: u64,
    liveness_at: Instant,
    drain_at: Instant,
    end_at: Instant,
    fault_profile: Vec<String>,
    fd_windows: Vec<(usize, Instant, Instant)>,
}

/// A ChaCha stream `n` of the run's seed: one independent sub-stream per purpose.
fn substream(seed: u64, n: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(b"turnpike");
    let mut r = ChaCha20Rng::from_seed(key);
    r.set_stream(n);
    r
}

fn link_of(spec: &LinkSpec, rng: &mut ChaCha20Rng) -> LinkProfile {
    LinkProfile {
        latency: Duration::from_millis(between(rng, spec.latency_ms[0], spec.latency_ms[1])),
        jitter: Duration::from_millis(spec.jitter_ms),
        loss: spec.loss,
        duplicate: spec.duplicate,
        reorder: spec.reorder,
        bandwidth_bps: spec.bandwidth_kbps * 1000,
    }
}

impl World {
    fn build(sc: &Scenario, opts: &RunOptions) -> Result<World, String> {
        let seed = opts.seed;
        let mut topo = substream(seed, 4);
        let mut seeds = substream(seed, 3);
        let mut hash_keys = substream(seed, 5);
        let mut net = Net::new(substream(seed, 1), QUEUE_CAPACITY);
        let secs = |s: u64| START + Duration::from_secs(s);
        let liveness_at = secs(sc.duration_s);
        let drain_at = secs(sc.duration_s + sc.liveness_s);
        let end_at = secs(sc.duration_s + sc.liveness_s + sc.drain_s);
        net.faults = StreamFaults {
            reset: sc.network.stream_reset,
            reset_within: Duration::from_secs(sc.network.reset_within_s),
            stall: sc.network.stream_stall,
            stall_max: Duration::from_millis(sc.network.stall_max_ms),
            split: sc.network.split,
        };
        let mut nodes: Vec<Node> = Vec::new();
        let mut names: BTreeMap<String, (Ipv4Addr, Option<Ipv6Addr>)> = BTreeMap::new();
        let mut shadows = Vec::new();
        let mut walls = Vec::new();
        let mut secrets = Vec::new();
        let mut fault_profile = Vec::new();
        let mut loop_hashes = Vec::new();
        // Servers, with their alternates resolved.
        let mut specs = sc.servers.clone();
        for spec in &mut specs {
            spec.alternate_addrs = spec
                .alternates
                .iter()
                .filter_map(|a| {
                    let (name, port) = a.rsplit_once(':')?;
                    let s = sc.servers.iter().find(|s| s.name == name)?;
                    Some(SocketAddr::new(IpAddr::V4(s.address), port.parse().ok()?))
                })
                .collect();
        }
        for (i, spec) in specs.iter().enumerate() {
            let cfg = config_of(spec)?;
            shadows.push(ShadowConfig {
                quarantine: cfg.relay_port_quarantine,
                permission_lifetime: cfg.permission_lifetime,
                max_streams: u64::from(cfg.max_streams),
                total_quota: u64::from(cfg.total_quota),
                user_quota: u64::from(cfg.user_quota),
                allow: cfg.peer_policy.allow.clone(),
                loops: spec.loops.max(1),
            });
            let mut cores = Cores::build(spec, &mut seeds, START)?;
            let wall = WallClock::new(START, WALL_START_MS);
            for core in &mut cores.cores {
                core.set_wall_clock(START, wall.unix_ms(START));
            }
            let hash = LoopHash::new(hash_keys.next_u64(), spec.loops);
            loop_hashes.push(hash);
            if spec.loops > 1 {
                fault_profile.push(format!(
                    "{}: {} event loops, 4-tuples spread by a seeded hash",
                    spec.name, spec.loops
                ));
            }
            let span = u64::from(spec.relay_ports[1].saturating_sub(spec.relay_ports[0])) + 1;
            let mut foreign = BTreeSet::new();
            for _ in 0..spec.foreign_ports.min(span as u32 / 2) {
                foreign.insert(spec.relay_ports[0] + (topo.next_u64() % span) as u16);
            }
            if !foreign.is_empty() {
                fault_profile.push(format!(
                    "{}: relay ports held by others: {foreign:?}",
                    spec.name
                ));
            }
            let node = nodes.len();
            net.add_node(
                node,
                link_of(&spec.link.unwrap_or(sc.network.link), &mut topo),
                spec.firewall,
            );
            net.add_address(IpAddr::V4(spec.address), node);
            if let Some(v6) = spec.address_v6 {
                net.add_address(IpAddr::V6(v6), node);
            }
            names.insert(spec.name.clone(), (spec.address, spec.address_v6));
            walls.push(wall);
            secrets.push(spec.rest_secret.clone());
            nodes.push(Node::Server(Box::new(ServerHost::new(
                i, spec, cores, hash, foreign,
            ))));
        }
        let servers = nodes.len();
        for p in &sc.proxies {
            names.insert(p.name.clone(), (p.address, None));
        }
        let resolve = |target: &str, v6: bool| -> Result<SocketAddr, String> {
            let (name, port) = target
                .rsplit_once(':')
                .ok_or(format!("bad target {target:?}"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("bad port in {target:?}"))?;
            let (v4, v6addr) = names.get(name).ok_or(format!("unknown host {name:?}"))?;
            Ok(match (v6, v6addr) {
                (true, Some(a)) => SocketAddr::new(IpAddr::V6(*a), port),
                _ => SocketAddr::new(IpAddr::V4(*v4), port),
            })
        };
        // Proxies.
        for p in &sc.proxies {
            let up = resolve(&p.upstream, false)?;
            let tls_up = p
                .tls_upstream
                .as_deref()
                .map(|t| resolve(t, false))
                .transpose()?;
            let node = nodes.len();
            net.add_node(
                node,
                link_of(
                    &LinkSpec {
                        latency_ms: [0, 1],
                        ..sc.network.link
                    },
                    &mut topo,
                ),
                Default::default(),
            );
            net.add_address(IpAddr::V4(p.address), node);
            nodes.push(Node::Nginx(Box::new(Nginx::new(
                p.clone(),
                IpAddr::V4(p.address),
                up,
                tls_up,
            ))));
        }
        // Peers.
        let mut peers: BTreeMap<String, SocketAddr> = BTreeMap::new();
        for p in &sc.peers {
            let addr = SocketAddr::new(p.address, p.port);
            let kind = if p.kind == "rogue" {
                let s = &sc.servers[0];
                PeerKind::Rogue {
                    target: IpAddr::V4(s.address),
                    ports: s.relay_ports,
                    every: Duration::from_nanos(1_000_000_000 / p.rate_per_s.max(1)),
                }
            } else {
                PeerKind::Echo
            };
            let node = nodes.len();
            net.add_node(
                node,
                link_of(&sc.network.link, &mut topo),
                Default::default(),
            );
            net.add_address(p.address, node);
            peers.insert(p.name.clone(), addr);
            nodes.push(Node::Peer(Peer::new(addr, kind, START)));
        }
        // Browsers.
        let mut id = 0usize;
        for (g, group) in sc.clients.iter().enumerate() {
            let pairs = group.peer.as_deref() == Some(PAIR);
            if pairs && group.count % 2 != 0 {
                return Err(format!("{}: browser pairs need an even count", group.name));
            }
            let peer = match &group.peer {
                Some(name) if name != PAIR => {
                    Some(*peers.get(name).ok_or(format!("unknown peer {name:?}"))?)
                }
                _ => None,
            };
            let first = id + 1;
            let mut ice = Vec::new();
            for url in &group.ice {
                let u = IceUrl::parse(url).ok_or(format!("bad url {url:?}"))?;
                let names: Vec<&str> = match sc.dns.iter().find(|d| d.name == u.host) {
                    Some(d) => d.servers.iter().map(String::as_str).collect(),
                    None => vec![u.host.as_str()],
                };
                let addrs = names
                    .iter()
                    .map(|n| resolve(&format!("{n}:{}", u.port), group.ipv6))
                    .collect::<Result<Vec<_>, _>>()?;
                ice.push(IceServer {
                    via: u.via,
                    addr: addrs[0],
                    alts: addrs,
                });
            }
            for _ in 0..group.count {
                id += 1;
                // Each browser's resolver hands out a fleet's addresses in its own order.
                let mut ice = ice.clone();
                for i in &mut ice {
                    if i.alts.len() > 1 {
                        let k = (topo.next_u64() % i.alts.len() as u64) as usize;
                        i.alts.rotate_left(k);
                        i.addr = i.alts[0];
                    }
                }
                let n = id as u32;
                let ip = if group.nat.is_some() {
                    // A private address behind the NAT (10.0.0.0/8).
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + n))
                } else if group.ipv6 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2a01,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (n >> 16) as u16,
                        n as u16,
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x1400_0000u32 + n))
                };
                let start = START
                    + Duration::from_millis(between(
                        &mut topo,
                        group.start_s[0] * 1000,
                        group.start_s[1] * 1000,
                    ));
                let node = nodes.len();
                net.add_node(
                    node,
                    link_of(&group.link.unwrap_or(sc.network.link), &mut topo),
                    group.firewall,
                );
                net.add_address(ip, node);
                if let Some(public) = group.nat {
                    let nat = net.add_nat(IpAddr::V4(public));
                    net.put_behind_nat(node, nat);
                }
                if let Some(model) = Model::named(&group.model) {
                    let url = group.ice.first().and_then(|u| IceUrl::parse(u));
                    let server_index = url
                        .and_then(|u| sc.servers.iter().position(|s| s.name == u.host))
                        .ok_or(format!("{}: the first url must name a server", group.name))?;
                    let server = ice.first().map(|i| i.addr).ok_or("no url")?;
                    let quota = sc.servers[server_index].user_quota;
                    nodes.push(Node::UClient(Box::new(UClient::new(
                        id,
                        model,
                        group.clone(),
                        ip,
                        server,
                        server_index,
                        quota,
                        start,
                    ))));
                    continue;
                }
                let mut b = Browser::new(id, g, group.clone(), ip, ice.clone(), peer, start);
                if pairs {
                    // Neighbours in the group talk to each other: 1-2, 3-4...
                    b.pair_with(first + ((id - first) ^ 1));
                }
                nodes.push(Node::Browser(Box::new(b)));
            }
        }
        // Floods.
        let mut reflection: Option<ReflectionWatch> = None;
        for f in &sc.faults.floods {
            let target = resolve(&f.target, false)?;
            let node = nodes.len();
            net.add_node(
                node,
                link_of(&sc.network.link, &mut topo),
                Default::default(),
            );
            let mut flooder = Flooder::new(
                target,
                secs(f.at_s),
                secs(f.at_s + f.for_s),
                f.rate_per_s,
                f.sources,
            );
            if f.request == "binding" {
                flooder = flooder.binding();
            }
            if let Some(victim) = f.spoof {
                flooder = flooder.reflect_on(victim);
            }
            nodes.push(Node::Flooder(flooder));
            fault_profile.push(format!(
                "flood of {target} at {} s for {} s, {}/s{}",
                f.at_s,
                f.for_s,
                f.rate_per_s,
                f.spoof
                    .map(|v| format!(", {} requests in the name of {v}", f.request))
                    .unwrap_or_default()
            ));
            let Some(victim) = f.spoof else { continue };
            // The victim: a host that asked for nothing, on the same network.
            if net.route(victim).is_none() {
                let node = nodes.len();
                net.add_node(
                    node,
                    link_of(&sc.network.link, &mut topo),
                    Default::default(),
                );
                net.add_address(victim, node);
                nodes.push(Node::Sink(Sink::default()));
            }
            let relay = net
                .route(target.ip())
                .filter(|&n| n < servers)
                .ok_or(format!("a reflection must target a server: {}", f.target))?;
            let spec = &sc.servers[relay];
            let watch = reflection.get_or_insert_with(|| {
                ReflectionWatch::new(
                    relay,
                    ReflectionLimits {
                        factor: u64::from(spec.unauth_amplification_factor),
                        source_bytes_per_s: spec.unauth_source_bytes_per_s,
                        loops: u64::from(spec.loops.max(1)),
                    },
                )
            });
            if watch.relay() != relay {
                return Err("reflections must all target one server".into());
            }
            watch.add_victim(victim);
        }
        // Partitions, drawn from the seed.
        let ps = &sc.network.partitions;
        let count = between(&mut topo, u64::from(ps.count[0]), u64::from(ps.count[1]));
        let candidates: Vec<NodeId> = (0..nodes.len())
            .filter(|&n| match ps.targets.as_str() {
                "servers" => n < servers,
                "clients" => matches!(nodes[n], Node::Browser(_)),
                _ => !matches!(nodes[n], Node::Flooder(_) | Node::Sink(_)),
            })
            .collect();
        for _ in 0..count {
            if candidates.is_empty() {
                break;
            }
            let node = candidates[(topo.next_u64() % candidates.len() as u64) as usize];
            let len = between(&mut topo, ps.length_s[0] * 1000, ps.length_s[1] * 1000);
            let start = START + Duration::from_millis(between(&mut topo, 0, sc.duration_s * 1000));
            let heal = (start + Duration::from_millis(len)).min(liveness_at);
            fault_profile.push(format!(
                "partition of host {node} from {:.1} s to {:.1} s",
                secs_of(start),
                secs_of(heal)
            ));
            net.add_partition(Partition { node, start, heal });
        }
        // Scheduled controls.
        for j in &sc.faults.wall_clock_jumps {
            for s in 0..servers {
                net.schedule(
                    secs(j.at_s),
                    Ev::Control(Control::WallJump {
                        server: s,
                        by_ms: j.by_s * 1000,
                    }),
                );
            }
            fault_profile.push(format!("wall clock jumps by {} s at {} s", j.by_s, j.at_s));
        }
        for (k, r) in sc.faults.reloads.iter().enumerate() {
            let secret = crate::faults::Secret {
                generation: k as u32 + 1,
                text: r.rest_secret.clone(),
            };
            for s in 0..servers {
                net.schedule(
                    secs(r.at_s),
                    Ev::Control(Control::Reload {
                        server: s,
                        secret: secret.clone(),
                        keep_old: r.keep_old,
                    }),
                );
                net.schedule(
                    secs(r.at_s + r.issuer_after_s),
                    Ev::Control(Control::IssuerRotates {
                        server: s,
                        secret: secret.clone(),
                    }),
                );
            }
            fault_profile.push(format!(
                "reload at {} s: REST secret generation {}{}, the issuer follows {} s later",
                r.at_s,
                k + 1,
                if r.keep_old {
                    " beside the old ones"
                } else {
                    ""
                },
                r.issuer_after_s
            ));
        }
        let mut fd_windows = Vec::new();
        for w in &sc.faults.fd_exhaustion {
            for s in 0..servers {
                net.schedule(
                    secs(w.at_s),
                    Ev::Control(Control::FdExhaustion {
                        server: s,
                        on: true,
                    }),
                );
                net.schedule(
                    secs(w.at_s + w.for_s),
                    Ev::Control(Control::FdExhaustion {
                        server: s,
                        on: false,
                    }),
                );
                fd_windows.push((s, secs(w.at_s), secs(w.at_s + w.for_s)));
            }
            fault_profile.push(format!("fd exhaustion at {} s for {} s", w.at_s, w.for_s));
        }
        if sc.faults.tls_handshake_failure > 0.0 {
            fault_profile.push(format!(
                "native TLS handshakes refused with p={}",
                sc.faults.tls_handshake_failure
            ));
        }
        for l in &sc.faults.lifecycle {
            let server = sc
                .servers
                .iter()
                .position(|s| s.name == l.server)
                .ok_or(format!("unknown server {:?}", l.server))?;
            let c = match l.action.as_str() {
                "drain" => Control::Drain { server },
                "kill" => Control::Kill { server },
                _ => Control::Revive { server },
            };
            net.schedule(secs(l.at_s), Ev::Control(c));
            fault_profile.push(format!("{} {} at {} s", l.action, l.server, l.at_s));
        }
        if sc.faults.bind_addr_in_use > 0.0 {
            fault_profile.push(format!(
                "relay binds fail with AddrInUse with p={}",
                sc.faults.bind_addr_in_use
            ));
        }
        net.schedule(liveness_at, Ev::Control(Control::Phase(Phase::Liveness)));
        net.schedule(drain_at, Ev::Control(Control::Phase(Phase::Drain)));
        net.schedule(end_at, Ev::Control(Control::End));
        let n = nodes.len();
        let mut w = World {
            seed,
            clock: Clock::new(START),
            net,
            nodes,
            armed: vec![None; n],
            servers,
            rng: substream(seed, 2),
            seeds,
            oracle: Oracle::new(shadows),
            trace: Trace::new(opts.trace_lines),
            digest: Digest::default(),
            shared: Shared {
                phase: Phase::Safety,
                walls,
                generations: vec![0; secrets.len()],
                first_secrets: secrets.clone(),
                secrets,
                bind_addr_in_use: sc.faults.bind_addr_in_use,
                tls_failure: sc.faults.tls_handshake_failure,
                loop_hashes,
            },
            board: Board::default(),
            events: 0,
            liveness_at,
            drain_at,
            end_at,
            fault_profile,
            fd_windows,
        };
        w.oracle.reflection = reflection;
        w.oracle.fleet = FleetWatch::new(
            sc.servers
                .iter()
                .map(|s| {
                    let addrs = std::iter::once(IpAddr::V4(s.address))
                        .chain(s.address_v6.map(IpAddr::V6))
                        .collect();
                    (addrs, u64::from(s.total_quota))
                })
                .collect(),
        );
        for (i, spec) in sc.servers.iter().enumerate() {
            let ports = spec.listeners.iter().map(|l| l.port).collect();
            w.oracle.fleet.set_ports(i, ports);
        }
        w.oracle.fleet.reconnect_bound = sc.expect.reconnect_within_s.map(Duration::from_secs);
        w.oracle.fleet.absorbs = sc.expect.fleet_absorbs;
        for node in 0..n {
            w.arm(node);
        }
        Ok(w)
    }

    fn run(&mut self) {
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
    fn step(&mut self, ev: Ev) {
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

    fn control(&mut self, c: &Control) {
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
    fn with(&mut self, node: NodeId, f: impl FnOnce(&mut Node, &mut Cx)) {
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
    fn api(&mut self) {
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
    fn arm(&mut self, node: NodeId) {
        let Some(want) = self.nodes.get(node).and_then(Node::next_wake) else {
            return;
        };
        let at = want.max(self.clock.now());
        if self.armed[node] != Some(at) {
            self.armed[node] = Some(at);
            self.net.schedule(at, Ev::Wake(node));
        }
    }

    fn finish(self, sc: &Scenario) -> Outcome {
        let now = self.clock.now();
        let mut summary = Summary {
            events: self.events,
            virtual_time: now.since(START),
            sessions: self.oracle.sessions.len(),
            datagrams: (self.net.stats.datagrams, self.net.stats.lost),
            queue_high_water: self.net.queue.high_water(),
            fault_profile: self.fault_profile.clone(),
            uclients: self.oracle.tally.clone(),
            time_to_relay_ms: crate::expect::time_to_relay_ms(sc, &self.oracle, self.drain_at),
            reflection: self
                .oracle
                .reflection
                .iter()
                .flat_map(|r| r.victims().iter())
                .map(|(ip, v)| (*ip, v.spoofed_in, v.reflected))
                .collect(),
            nat_mappings: self.net.nats().iter().map(|n| n.mappings()).sum(),
            rotation: self.oracle.rotation.counts.clone(),
            fleet: (self.servers > 1 || self.oracle.fleet.restarts > 0).then(|| {
                let f = &self.oracle.fleet;
                FleetFigures {
                    redirects: f.redirects,
                    restarts: f.restarts,
                    drain_timeouts: f.timeouts,
                    kills: f.kills,
                    drain_redemptions: f.drain_redemptions,
                    reconnects: f.reconnects.len(),
                    longest_reconnect: f.reconnects.iter().max().copied().unwrap_or_default(),
                }
            }),
            ..Summary::default()
        };
        for s in &self.oracle.sessions {
            if let Some((_, via, _, _)) = &s.connected {
                *summary.connected.entry(via.as_str()).or_insert(0) += 1;
            }
            if s.failed {
                summary.failed += 1;
            }
        }
        for (i, node) in self.nodes[..self.servers].iter().enumerate() {
            let Node::Server(h) = node else { continue };
            for st in h.stats(now).iter().chain(&h.retired) {
                summary.allocations += st.allocations_created;
                summary.answers_508 += st.insufficient_capacity;
                summary.rate_limited += st.dropped.rate_limited;
                summary.proxy_accepted += st.proxy_accepted;
                summary.loop_messages += st.loop_messages_sent;
            }
            summary.tls.handshakes += h.tls.handshakes;
            for (k, v) in &h.tls.failed {
                *summary.tls.failed.entry(k).or_insert(0) += v;
            }
            if let Some(sh) = self.oracle.servers.get(i) {
                summary.requests += sh.requests;
                for (k, v) in &sh.rejected {
                    *summary.rejected.entry(k).or_insert(0) += v;
                }
            }
        }
        let mut violation = self.oracle.violation().cloned();
        if violation.is_none() {
            let ended = now >= self.end_at;
            if !ended {
                violation = Some(Violation {
                    invariant: "run_completes",
                    detail: "the event queue ran dry before the end".into(),
                    at: now,
                });
            } else if let Err((inv, detail)) = self
                .oracle
                .rotation
                .leftovers()
                .and_then(|()| crate::expect::check(sc, &self, now))
            {
                violation = Some(Violation {
                    invariant: inv,
                    detail,
                    at: now,
                });
            }
        }
        Outcome {
            seed: self.seed,
            digest: self.digest.value(),
            summary,
            violation,
            trace: self.trace.lines(START),
        }
    }
}

/// Read-only view of a finished world, for the expectations.
pub trait Finished {
    /// The oracle.
    fn oracle(&self) -> &Oracle;
    /// The server hosts.
    fn server_hosts(&self) -> Vec<&ServerHost>;
    /// Start of the liveness phase.
    fn liveness_at(&self) -> Instant;
    /// Start of the drain phase.
    fn drain_at(&self) -> Instant;
    /// Open streams in the network.
    fn open_streams(&self) -> usize;
}

impl Finished for World {
    fn oracle(&self) -> &Oracle {
        &self.oracle
    }
    fn server_hosts(&self) -> Vec<&ServerHost> {
        self.nodes[..self.servers]
            .iter()
            .filter_map(|n| match n {
                Node::Server(h) => Some(&**h),
                _ => None,
            })
            .collect()
    }
    fn liveness_at(&self) -> Instant {
        self.liveness_at
    }
    fn drain_at(&self) -> Instant {
        self.drain_at
    }
    fn open_streams(&self) -> usize {
        self.net.open_streams()
    }
}

fn secs_of(t: Instant) -> f64 {
    t.since(START).as_secs_f64()
}

/// Parses a transport name of a scenario file.
pub fn via_named(name: &str) -> Option<Via> {
    match name {
        "udp" => Some(Via::Udp),
        "tcp" => Some(Via::Tcp),
        "tls" => Some(Via::Tls),
        _ => None,
    }
}
