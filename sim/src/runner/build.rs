//! Builds a world from a scenario and a seed: hosts, links, addresses, seeds, oracles
//! and the scheduled faults.

use super::outcome::{RunOptions, QUEUE_CAPACITY, START, WALL_START_MS};
use super::world::{link_of, secs_of, substream, World};
use crate::browser::{Board, Browser, IceServer};
use crate::clock::{Clock, WallClock};
use crate::digest::{Digest, Trace};
use crate::faults::{Control, Flooder, Sink};
use crate::fleet::FleetWatch;
use crate::host::{Node, Phase, Shared};
use crate::link::{between, Partition};
use crate::net::{Ev, Net, NodeId, StreamFaults};
use crate::nginx::Nginx;
use crate::node::{Cores, LoopHash};
use crate::oracle::{Oracle, ShadowConfig};
use crate::peer::{Peer, PeerKind};
use crate::reflection::{ReflectionLimits, ReflectionWatch};
use crate::scenario::{IceUrl, LinkSpec, Scenario, PAIR};
use crate::server::{config_of, ServerHost};
use crate::uclient::{Model, UClient};
use core::time::Duration;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

impl World {
    pub(super) fn build(sc: &Scenario, opts: &RunOptions) -> Result<World, String> {
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
}
