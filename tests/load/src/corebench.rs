//! Core-only micro-benchmark counted in instructions: the server's ChannelData path in
//! both directions and a full authenticated Allocate, with no socket and no clock.
//!
//! `turnpike-load core-bench --phase P --n N` runs one phase; the server's work is done
//! inside [`measured_step`] and nothing else is. `turnpike-load callgrind` runs each phase
//! under `valgrind --tool=callgrind --toggle-collect=*measured_step*`, so only the server's
//! instructions are counted, and prints instructions per operation: a figure that does not
//! move when the machine is busy, unlike a time.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use turnpike_core::auth::Credentials;
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::config::ListenerConfig;
use turnpike_core::{
    Config, Forward, Instant, ListenerId, Output, RelayId, Server, Transport, HEADROOM, TAILROOM,
};

/// The phases, in the order `callgrind` runs them, with what one operation is.
pub const PHASES: [(&str, &str); 4] = [
    ("to-peer", "ChannelData client→peer (handle_datagram)"),
    (
        "to-client",
        "ChannelData peer→client (handle_relay_datagram)",
    ),
    ("allocate", "Allocate with its 401 round (2 requests)"),
    (
        "sequence",
        "Allocate+401, CreatePermission, ChannelBind, Refresh 0 (5 requests)",
    ),
];

const LISTENER: ListenerId = ListenerId(1);
const USER: &str = "load";
const PASS: &str = "load-secret";
const PAYLOAD: usize = 200;

fn server_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 3478))
}

fn peer_addr() -> SocketAddr {
    SocketAddr::from(([93, 184, 216, 34], 6000))
}

/// Client `i`'s public-looking address.
fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x1400_0000 + i)), 40_000)
}

/// Runs phase `phase` with `n` operations. Returns an error for an unknown phase or a
/// set-up that failed.
pub fn run(phase: &str, n: u32) -> Result<(), String> {
    let mut server = new_server()?;
    let now = Instant::from_secs(1);
    match phase {
        "to-peer" | "to-client" => {
            let (client, relay) = set_up(&mut server, now, 0, false)?;
            let peer = peer_addr();
            if phase == "to-peer" {
                let mut buf = vec![0u8; 4 + PAYLOAD];
                let len = client
                    .write_channel_data(peer, &mut buf, PAYLOAD)
                    .ok_or("no channel")?;
                for _ in 0..n {
                    let f = measured_step(|| {
                        server.handle_datagram(now, LISTENER, client_addr(0), &mut buf, 0..len)
                    });
                    if !matches!(f, Some(Forward::ToPeer { .. })) {
                        return Err(format!("not relayed: {f:?}"));
                    }
                }
            } else {
                let mut buf = vec![0u8; HEADROOM + PAYLOAD + TAILROOM];
                for _ in 0..n {
                    let f = measured_step(|| {
                        server.handle_relay_datagram(
                            now,
                            relay,
                            peer,
                            &mut buf,
                            HEADROOM..HEADROOM + PAYLOAD,
                        )
                    });
                    if !matches!(f, Some(Forward::ToClient { .. })) {
                        return Err(format!("not relayed: {f:?}"));
                    }
                }
            }
        }
        "allocate" | "sequence" => {
            for i in 1..=n {
                let (mut client, _) = set_up(&mut server, now, i, phase == "allocate")?;
                if phase == "sequence" {
                    client.refresh(now, 0);
                    exchange(&mut server, &mut client, now, i, true)?;
                    if !events(&mut client).contains(&ClientEvent::Deleted) {
                        return Err("not deleted".into());
                    }
                }
            }
        }
        _ => return Err(format!("unknown phase {phase}")),
    }
    Ok(())
}

/// Runs every phase with `n` operations under callgrind and prints instructions per
/// operation. `exe` is this program.
pub fn callgrind(exe: &str, n: u32) -> Result<Vec<(String, f64)>, String> {
    let dir = std::env::temp_dir().join(format!("turnpike-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (phase, what) in PHASES {
        // Fewer allocations: each costs a key derivation and is slow under valgrind.
        let ops = if phase.starts_with("to-") { n } else { n / 10 }.max(1);
        let out = dir.join(format!("callgrind.{phase}"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg("--toggle-collect=*measured_step*")
            .arg(exe)
            .args(["core-bench", "--phase", phase, "--n", &ops.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("valgrind: {e}"))?;
        if !status.success() {
            return Err(format!("core-bench {phase} failed under valgrind"));
        }
        let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
        let ir = parse_total(&text).ok_or("no summary line in the callgrind output")?;
        let per_op = ir as f64 / f64::from(ops);
        println!("  {what:<70} {per_op:>9.0} instructions");
        results.push((phase.to_string(), per_op));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(results)
}

/// The server's work, and only it: callgrind counts the instructions under this frame.
#[inline(never)]
pub fn measured_step<T>(f: impl FnOnce() -> T) -> T {
    black_box(f())
}

/// The events/instructions total of a callgrind output file: its `summary:` line (or
/// `totals:`), first number.
pub fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn new_server() -> Result<Server, String> {
    let mut creds = Credentials::new("load.test");
    creds.add_user(USER, PASS);
    let mut c = Config::new(creds, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)));
    c.listeners = vec![ListenerConfig {
        id: LISTENER,
        transport: Transport::Udp,
        local: server_addr(),
        proxy_protocol: false,
    }];
    c.relay_port_min = 1024;
    c.relay_port_max = 65_535;
    c.user_quota = 1_000_000;
    c.total_quota = 1_000_000;
    c.max_queued_outputs = 1_000_000;
    Server::new(c, [7; 32], Instant::from_secs(0)).map_err(|e| e.to_string())
}

/// A client `i` with an allocation (and, unless `alloc_only`, a permission and a channel
/// to the peer); the server's part is measured. Returns the client and its relay.
fn set_up(
    server: &mut Server,
    now: Instant,
    i: u32,
    alloc_only: bool,
) -> Result<(Client, RelayId), String> {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let cfg = ClientConfig::new(server_addr(), Transport::Udp, USER, PASS);
    let mut client = Client::new(cfg, seed, now);
    client.allocate(now);
    let relay = exchange(server, &mut client, now, i, true)?.ok_or("no relay bound")?;
    if !matches!(
        events(&mut client).first(),
        Some(ClientEvent::Allocated { .. })
    ) {
        return Err("allocate failed".into());
    }
    if !alloc_only {
        client.create_permission(now, &[peer_addr().ip()]);
        client.channel_bind(now, peer_addr());
        exchange(server, &mut client, now, i, true)?;
        if !events(&mut client)
            .iter()
            .any(|e| matches!(e, ClientEvent::ChannelBound { .. }))
        {
            return Err("channel bind failed".into());
        }
    }
    Ok((client, relay))
}

/// Passes messages between the client and the server until both are quiet; answers
/// BindRelay at once. Returns the relay bound, if one was.
fn exchange(
    server: &mut Server,
    client: &mut Client,
    now: Instant,
    i: u32,
    measure: bool,
) -> Result<Option<RelayId>, String> {
    let from = client_addr(i);
    let mut relay = None;
    let mut outputs = Vec::new();
    for _ in 0..16 {
        let Some(mut bytes) = client.poll_transmit() else {
            return Ok(relay);
        };
        let len = bytes.len();
        let mut step = || {
            let f = server.handle_datagram(now, LISTENER, from, &mut bytes, 0..len);
            while let Some(o) = server.poll_output() {
                if let Output::BindRelay { relay, .. } = o {
                    server.handle_relay_bound(now, relay, Ok(()));
                }
                outputs.push(o);
            }
            f
        };
        if measure {
            measured_step(step);
        } else {
            step();
        }
        for o in outputs.drain(..) {
            match o {
                Output::Transmit { data, .. } => client.handle_input(now, &data),
                Output::BindRelay { relay: r, .. } => relay = Some(r),
                _ => {}
            }
        }
    }
    Err("the exchange does not settle".into())
}

fn events(client: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_runs() {
        for (phase, _) in PHASES {
            run(phase, 3).unwrap();
        }
        assert!(run("nope", 1).is_err());
    }

    #[test]
    fn callgrind_totals() {
        let text = "events: Ir\nfl=x\n1 2\nsummary: 123456\ntotals: 99\n";
        assert_eq!(parse_total(text), Some(123456));
        assert_eq!(parse_total("totals: 42 7\n"), Some(42));
        assert_eq!(parse_total("nothing"), None);
    }
}
