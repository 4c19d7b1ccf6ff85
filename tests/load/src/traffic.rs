//! The data phase of a load run: a fixed offered rate of M-byte packets from every client
//! to one echo peer, through the relay and back, in one thread.
//!
//! Each packet carries its send time (nanoseconds, first 8 bytes of the payload), so the
//! round trip is measured when it comes back. Counting: a packet sent by a client and
//! echoed back is **two relayed packets** (client→peer as it reaches the peer, peer→client
//! as it reaches the client); [`Outcome::relayed`] is the sum of the two counts.

use crate::flows::{Epoch, Flow, Mode};
use crate::media::{Media, Schedule, VIDEO_SIZE};
use crate::mmsg::Batch;
use crate::procfs;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Token of the echo peer's socket (client tokens are their indices).
pub const ECHO: Token = Token(usize::MAX - 1);

/// Most round-trip samples kept.
const MAX_SAMPLES: usize = 8_000_000;

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct Offer {
    /// Payload bytes per packet (at least 16).
    pub size: usize,
    /// Packets per second sent by all clients together; 0: flat out (as fast as the
    /// window of packets in flight allows).
    pub rate: f64,
    /// Most packets in flight (sent, not back yet), over all clients.
    pub window: usize,
    /// How long to send.
    pub duration: Duration,
    /// Most packets to send.
    pub max_packets: u64,
    /// Media-shaped sending (audio and video flows, see [`crate::media`]) instead of
    /// `rate`: the clients' first flows are its flows.
    pub media: Option<Media>,
}

/// What a data phase measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Packets the clients sent.
    pub sent: u64,
    /// Packets that reached the echo peer (relayed client→peer).
    pub at_peer: u64,
    /// Packets back at the clients (relayed peer→client).
    pub back: u64,
    /// Seconds spent sending.
    pub seconds: f64,
    /// Server CPU seconds over the phase (user + system), when its PID was given.
    pub server_cpu: f64,
    /// The load generator's own CPU seconds.
    pub load_cpu: f64,
    /// Round trips in nanoseconds, sorted.
    pub rtts: Vec<u64>,
}

impl Outcome {
    /// Relayed packets, both directions.
    pub fn relayed(&self) -> u64 {
        self.at_peer + self.back
    }

    /// Relayed packets per server CPU-second.
    pub fn per_cpu_second(&self) -> f64 {
        if self.server_cpu > 0.0 {
            self.relayed() as f64 / self.server_cpu
        } else {
            0.0
        }
    }

    /// Relayed packets per second of the run.
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.relayed() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Packets sent that never came back, as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.back) as f64 / self.sent as f64
    }

    /// The `q` quantile of the round trips (0..=1), in microseconds.
    pub fn rtt_us(&self, q: f64) -> f64 {
        if self.rtts.is_empty() {
            return 0.0;
        }
        let idx = ((self.rtts.len() - 1) as f64 * q).round() as usize;
        self.rtts.get(idx).map_or(0.0, |&ns| ns as f64 / 1000.0)
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        format!(
            "sent {} at-peer {} back {} loss {:.4}% | {:.0} relayed/s | server {:.2} CPU-s → {:.0} relayed/CPU-s | load {:.2} CPU-s | rtt p50 {:.0} p99 {:.0} p999 {:.0} µs",
            self.sent,
            self.at_peer,
            self.back,
            self.loss() * 100.0,
            self.per_second(),
            self.server_cpu,
            self.per_cpu_second(),
            self.load_cpu,
            self.rtt_us(0.5),
            self.rtt_us(0.99),
            self.rtt_us(0.999)
        )
    }
}

/// The echo peer: a UDP socket that sends every datagram back where it came from.
pub struct EchoPeer {
    sock: UdpSocket,
    batch: Batch,
    /// Datagrams received.
    pub received: u64,
}

impl EchoPeer {
    /// Binds `addr` (port 0 for any) and registers with the poll under [`ECHO`].
    pub fn bind(poll: &Poll, addr: SocketAddr) -> std::io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        set_buffers(std.as_raw_fd(), 4 << 20);
        let mut sock = UdpSocket::from_std(std);
        poll.registry()
            .register(&mut sock, ECHO, Interest::READABLE)?;
        Ok(EchoPeer {
            sock,
            batch: Batch::new(),
            received: 0,
        })
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Echoes everything waiting.
    pub fn drain(&mut self) {
        let fd = self.sock.as_raw_fd();
        while let Ok(n) = self.batch.recv(fd) {
            if n == 0 {
                break;
            }
            self.received += n as u64;
            let _ = self.batch.echo(fd);
        }
    }
}

/// Sets both kernel buffer sizes of `fd` (best effort; capped by net.core.*mem_max).
pub fn set_buffers(fd: i32, bytes: i32) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads an int of the given size from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

/// Runs the data phase over set-up `flows`, to and from the echo peer `echo`, and measures process
/// `server_pid` (the relay or the forwarder) when given.
pub fn run(
    poll: &mut Poll,
    flows: &mut [Flow],
    echo: &mut EchoPeer,
    mode: Mode,
    offer: Offer,
    epoch: &Epoch,
    server_pid: Option<u32>,
) -> Outcome {
    let peer = echo.addr();
    let size = offer.size.max(16);
    let ready: Vec<usize> = (0..flows.len())
        .filter(|&i| flows.get(i).is_some_and(|f| f.ready && !f.closed))
        .collect();
    let mut out = Outcome::default();
    if ready.is_empty() {
        return out;
    }
    let mut schedule = offer.media.map(Schedule::new);
    let expected = if let Some(m) = offer.media {
        (m.rate() * offer.duration.as_secs_f64()) as usize
    } else if offer.rate > 0.0 {
        (offer.rate * offer.duration.as_secs_f64()) as usize
    } else {
        1 << 20
    };
    out.rtts.reserve(expected.min(MAX_SAMPLES));
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65_536];
    let mut pkt = vec![0u8; size.max(VIDEO_SIZE) + 8];
    let mut presumed_lost = 0u64;
    let mut last_progress = epoch.nanos();
    let mut rr = 0usize;

    let cpu0 = server_pid.and_then(|p| procfs::cpu_seconds(p).ok());
    let load0 = procfs::own_cpu_seconds();
    let t0 = epoch.nanos();
    let dur_ns = u64::try_from(offer.duration.as_nanos()).unwrap_or(u64::MAX);
    let mut sending_done_at = None;
    loop {
        let now = epoch.nanos();
        let elapsed = now.saturating_sub(t0);
        let sending = elapsed < dur_ns && out.sent < offer.max_packets;
        let in_flight = out.sent.saturating_sub(out.back + presumed_lost);
        let mut wait_ms = 0u64;
        if sending && schedule.is_some() {
            if let Some(sched) = schedule.as_mut() {
                let next_ns = sched.due(elapsed, size, |flow, bytes, k| {
                    let Some(f) = ready.get(flow).and_then(|&i| flows.get_mut(i)) else {
                        return;
                    };
                    for _ in 0..k {
                        let ts = epoch.nanos().to_le_bytes();
                        if send_one(f, &mut pkt, bytes, &ts, peer, mode, epoch) {
                            out.sent += 1;
                        }
                    }
                });
                // Ticks of a millisecond (epoll's resolution), as a media server's pacer.
                wait_ms = (next_ns / 1_000_000).max(1);
            }
        } else if sending {
            let target = if offer.rate > 0.0 {
                ((elapsed as f64 / 1e9) * offer.rate) as u64
            } else {
                u64::MAX
            };
            let room = (offer.window as u64).saturating_sub(in_flight);
            let n = target.saturating_sub(out.sent).min(room).min(512);
            for _ in 0..n {
                let Some(f) = ready.get(rr % ready.len()).and_then(|&i| flows.get_mut(i)) else {
                    break;
                };
                rr = rr.wrapping_add(1);
                let ts = epoch.nanos().to_le_bytes();
                if send_one(f, &mut pkt, size, &ts, peer, mode, epoch) {
                    out.sent += 1;
                }
            }
            if room == 0 {
                // Window full: wait for answers; a packet lost for good frees its slot
                // after a while.
                wait_ms = 1;
                if now.saturating_sub(last_progress) > 200_000_000 {
                    presumed_lost += in_flight;
                    last_progress = now;
                }
            } else if offer.rate > 0.0 && n < 512 {
                let next_at = ((out.sent + 1) as f64 / offer.rate * 1e9) as u64;
                // At least a millisecond (epoll's resolution): sending in 1 ms bursts
                // keeps the generator from spinning.
                wait_ms = (next_at.saturating_sub(elapsed) / 1_000_000).max(1);
            }
            for f in flows.iter_mut().filter(|f| !f.pending.is_empty()) {
                f.flush_pending();
            }
        } else {
            let done_at = *sending_done_at.get_or_insert(now);
            if out.back + presumed_lost >= out.sent || now.saturating_sub(done_at) > 300_000_000 {
                break;
            }
            wait_ms = 5;
        }
        let _ = poll.poll(&mut events, Some(Duration::from_millis(wait_ms)));
        for ev in events.iter() {
            if ev.token() == ECHO {
                echo.drain();
                continue;
            }
            let Some(f) = flows.get_mut(ev.token().0) else {
                continue;
            };
            if !f.pending.is_empty() {
                f.flush_pending();
            }
            let before = out.back;
            receive(f, &mut buf, mode, epoch, &mut out);
            if out.back != before {
                last_progress = epoch.nanos();
            }
        }
    }
    let end = sending_done_at.unwrap_or_else(|| epoch.nanos());
    out.seconds = end.saturating_sub(t0) as f64 / 1e9;
    out.at_peer = echo.received;
    echo.received = 0;
    if let (Some(p), Some(c0)) = (server_pid, cpu0) {
        out.server_cpu = procfs::cpu_seconds(p).map_or(0.0, |c1| c1 - c0);
    }
    out.load_cpu = procfs::own_cpu_seconds() - load0;
    out.rtts.sort_unstable();
    out
}

/// Sends one packet stamped `ts` on flow `f`. False if the kernel refused it.
fn send_one(
    f: &mut Flow,
    pkt: &mut [u8],
    size: usize,
    ts: &[u8; 8],
    peer: SocketAddr,
    mode: Mode,
    epoch: &Epoch,
) -> bool {
    match mode {
        Mode::Raw => {
            let Some(p) = pkt.get_mut(..size) else {
                return false;
            };
            if let Some(t) = p.get_mut(..8) {
                t.copy_from_slice(ts);
            }
            f.write(p)
        }
        Mode::Channel => {
            let Some(c) = f.client.as_ref() else {
                return false;
            };
            if let Some(t) = pkt.get_mut(4..12) {
                t.copy_from_slice(ts);
            }
            match c.write_channel_data(peer, pkt, size) {
                Some(total) => {
                    let bytes = pkt.get(..total).unwrap_or(&[]);
                    f.write(bytes)
                }
                None => false,
            }
        }
        Mode::Indication => {
            let Some(c) = f.client.as_mut() else {
                return false;
            };
            let Some(p) = pkt.get_mut(..size) else {
                return false;
            };
            if let Some(t) = p.get_mut(..8) {
                t.copy_from_slice(ts);
            }
            c.send_indication(epoch.now(), peer, p);
            let Some(bytes) = c.poll_transmit() else {
                return false;
            };
            f.write(&bytes)
        }
    }
}

/// Reads everything waiting on flow `f`; relayed packets back count and give a round trip.
fn receive(f: &mut Flow, buf: &mut [u8], mode: Mode, epoch: &Epoch, out: &mut Outcome) {
    loop {
        let n = match f.read(buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf.get(..n).unwrap_or(&[]);
        let now = epoch.nanos();
        let mut record = |payload: &[u8]| {
            out.back += 1;
            if out.rtts.len() < MAX_SAMPLES {
                if let Some(ts) = payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    out.rtts.push(now.saturating_sub(u64::from_le_bytes(ts)));
                }
            }
        };
        match (mode, f.client.as_mut(), &f.sock) {
            (Mode::Raw, _, _) => record(data),
            (_, Some(c), crate::flows::Sock::Udp(_)) => match c.peek_data(data) {
                Some((_, payload)) => record(payload),
                None => c.handle_input(epoch.now(), data),
            },
            (_, Some(c), crate::flows::Sock::Tcp(_) | crate::flows::Sock::Tls(_)) => {
                c.handle_input_with(epoch.now(), data, |_, payload| record(payload));
            }
            (_, None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let o = Outcome {
            sent: 100,
            at_peer: 100,
            back: 99,
            seconds: 2.0,
            server_cpu: 0.5,
            load_cpu: 0.1,
            rtts: (1..=1000).map(|i| i * 1000).collect(),
        };
        assert_eq!(o.relayed(), 199);
        assert!((o.per_cpu_second() - 398.0).abs() < 1e-9);
        assert!((o.per_second() - 99.5).abs() < 1e-9);
        assert!((o.loss() - 0.01).abs() < 1e-9);
        assert_eq!(o.rtt_us(0.5), 501.0);
        assert_eq!(o.rtt_us(0.99), 990.0);
        assert_eq!(o.rtt_us(1.0), 1000.0);
    }
}
