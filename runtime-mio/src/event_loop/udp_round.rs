//! The UDP sockets a poll round found ready, read together: one io_uring call for all of
//! them where the kernel allows it ([`crate::uring_recv`]), then `recvmmsg` on those that
//! may hold more. Without io_uring each is read on its own as it is reported.

use super::{ListenerSocket, Runtime, UdpSource, READ_BUDGET};
use crate::token::Source;
#[cfg(target_os = "linux")]
use crate::uring_recv::{Got, Next, Want};

/// Receives posted per relay socket. At paced loads a relay socket holds about one
/// datagram per round; the second receive, finding its queue empty, is what says it is
/// drained, which spares a `recvmmsg` that would only say so.
pub const RELAY_RECVS: usize = 2;
/// Receives posted per UDP listener, which carries every client's traffic.
pub const LISTENER_RECVS: usize = 8;
/// Fewest ready sockets read with io_uring. One socket alone is read with `recvmmsg`: one
/// call either way when it holds little, and one call instead of two when it is busy
/// (io_uring's receives would fill, and `recvmmsg` read on).
pub const URING_FROM: usize = 2;

/// The UDP sockets of a poll round, and the scratch space of reading them (allocated
/// once: the round reuses it; `Default` is the empty placeholder that stands in, without
/// allocating, while a round borrows it).
#[derive(Default)]
pub(super) struct ReadyUdp {
    ready: Vec<UdpSource>,
    /// The sockets of one call, in `wants` order.
    #[cfg(target_os = "linux")]
    served: Vec<UdpSource>,
    #[cfg(target_os = "linux")]
    wants: Vec<Want>,
    #[cfg(target_os = "linux")]
    got: Vec<Got>,
}

impl ReadyUdp {
    /// Room for `n` ready sockets (a poll reports at most its event capacity).
    pub fn with_capacity(n: usize) -> Self {
        let call = crate::udp_batch::RECV_SLOTS;
        ReadyUdp {
            ready: Vec::with_capacity(n),
            #[cfg(target_os = "linux")]
            served: Vec::with_capacity(call),
            #[cfg(target_os = "linux")]
            wants: Vec::with_capacity(call),
            #[cfg(target_os = "linux")]
            got: Vec::with_capacity(call),
        }
    }

    /// True when no socket waits.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

impl UdpSource {
    /// The poll's name for it.
    pub(super) fn source(self) -> Source {
        match self {
            UdpSource::Listener(n) => Source::Listener(n as u32),
            UdpSource::Relay(r) => Source::Relay(r),
        }
    }

    /// Receives to post for it in one call.
    #[cfg(target_os = "linux")]
    fn recvs(self) -> usize {
        match self {
            UdpSource::Listener(_) => LISTENER_RECVS,
            UdpSource::Relay(_) => RELAY_RECVS,
        }
    }
}

impl Runtime {
    /// Keeps `src` for [`Runtime::read_ready_udp`] if it is a UDP socket and receives go
    /// through io_uring; true if kept (else the caller reads it now).
    pub(super) fn defer_udp(&mut self, src: Source) -> bool {
        if !self.rx.uring() {
            return false;
        }
        let udp = match src {
            Source::Relay(r) => UdpSource::Relay(r),
            Source::Listener(n) => match self.listeners.get(n as usize).map(|l| &l.socket) {
                Some(ListenerSocket::Udp(_)) => UdpSource::Listener(n as usize),
                _ => return false,
            },
            _ => return false,
        };
        if self.ready_udp.ready.len() < self.ready_udp.ready.capacity() {
            self.ready_udp.ready.push(udp);
            true
        } else {
            false
        }
    }

    /// Reads the UDP sockets kept this round: as many as the free receive slots allow
    /// with each io_uring call, their datagrams fed to the core socket by socket in
    /// arrival order, then those that may hold more read on with `recvmmsg` (within
    /// [`READ_BUDGET`]; a socket that spends it waits in the `again` queue, as when read
    /// alone). What io_uring cannot serve (it failed, and is off from then on) is read the
    /// portable way.
    pub(super) fn read_ready_udp(&mut self) {
        let mut r = std::mem::take(&mut self.ready_udp);
        #[cfg(target_os = "linux")]
        let done = self.read_with_uring(&mut r);
        #[cfg(not(target_os = "linux"))]
        let done = 0;
        for &src in r.ready.get(done..).unwrap_or_default() {
            if self.read_datagrams(src) {
                self.again.push(src.source());
            }
        }
        r.ready.clear();
        self.ready_udp = r;
    }

    /// Serves `r.ready` with io_uring calls while the ring works; how many it served.
    #[cfg(target_os = "linux")]
    fn read_with_uring(&mut self, r: &mut ReadyUdp) -> usize {
        if r.ready.len() < URING_FROM {
            return 0;
        }
        let mut at = 0;
        while at < r.ready.len() && self.rx.uring() {
            if self.rx.free() < RELAY_RECVS {
                // Every datagram in the slots was fed: the batch may end.
                self.end_batch();
            }
            r.wants.clear();
            r.served.clear();
            let mut free = self.rx.free();
            while free > 0 {
                let Some(&src) = r.ready.get(at) else {
                    break;
                };
                at += 1;
                // A socket closed since the poll reported it is skipped.
                let Some(fd) = self.udp_socket(src).map(std::os::fd::AsRawFd::as_raw_fd) else {
                    continue;
                };
                let k = src.recvs().min(free);
                r.wants.push(Want { fd, k });
                r.served.push(src);
                free -= k;
            }
            // Every socket planned fits the free slots: all are served, unless io_uring
            // turned off (then `got` is empty).
            self.rx.recv_many(&r.wants, &mut r.got);
            let now = self.clock.now();
            for (g, &src) in r.got.iter().zip(&r.served) {
                self.round_inputs += g.datagrams;
                for slot in g.slots.clone() {
                    self.datagram_in(now, src, slot);
                }
            }
            // Only now, with every slot of the call fed, may a read on end the batch.
            for (g, &src) in r.got.iter().zip(&r.served) {
                match g.next {
                    Next::Drained => {}
                    Next::More => {
                        let budget = READ_BUDGET.saturating_sub(g.datagrams);
                        if self.read_datagrams_within(src, budget) {
                            self.again.push(src.source());
                        }
                    }
                    Next::Failed(e) => {
                        let e = std::io::Error::from_raw_os_error(e);
                        log::debug!("{src:?}: receive failed: {e}");
                    }
                }
            }
            for &src in r.served.get(r.got.len()..).unwrap_or_default() {
                if self.read_datagrams(src) {
                    self.again.push(src.source());
                }
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::plan::Place;
    use crate::settings::Settings;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    /// One loop with UDP listeners on 127.0.0.1 and ::1, on a port the kernel picks.
    fn one_loop(io_uring: &str) -> Runtime {
        let port = (0..64)
            .find_map(|_| {
                let u = UdpSocket::bind("127.0.0.1:0").ok()?;
                let p = u.local_addr().ok()?.port();
                UdpSocket::bind(("::1", p)).ok()?;
                Some(p)
            })
            .unwrap();
        let text = format!(
            "realm = \"t\"\nlisten_address = \"127.0.0.1\"\nturn_udp_port = {port}\nturn_tcp = false\n\
             ipv6 = true\nipv6_listen_address = \"::1\"\nipv6_address = \"::1\"\n\
             users = {{ a = \"pw\" }}\napi = false\nio_uring = \"{io_uring}\"\n\
             relay_port_min = 51000\nrelay_port_max = 51999\n"
        );
        let fc = FileConfig::parse("t.toml", &text).unwrap();
        let s = Settings::from_file(&fc, "t.toml").unwrap();
        Runtime::new_loop(s, [5u8; 32], Place::SOLE, None).unwrap()
    }

    /// A STUN Binding request (RFC 8489 §5) with transaction id `k` repeated.
    fn binding(k: u8) -> [u8; 20] {
        let mut m = [k; 20];
        m[..8].copy_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]);
        m
    }

    /// Sends `counts[i]` Binding requests to UDP listener `i`, serves one round
    /// reporting them all ready, and returns, per listener, the transaction ids of the
    /// answers in arrival order.
    fn one_round(rt: &mut Runtime, counts: &[u8]) -> Vec<Vec<u8>> {
        let addrs = rt.local_addrs();
        let mut clients = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let to = addrs[i].1;
            let from = if to.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let client = UdpSocket::bind(from).unwrap();
            for k in 0..n {
                client.send_to(&binding(k), to).unwrap();
            }
            clients.push(client);
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..counts.len() {
            let src = Source::Listener(i as u32);
            if !rt.defer_udp(src) {
                rt.ready(src);
            }
        }
        rt.read_ready_udp();
        rt.end_batch();
        let mut all = Vec::new();
        for (client, &n) in clients.iter().zip(counts) {
            client.set_nonblocking(true).unwrap();
            let mut ids = Vec::new();
            let mut buf = [0u8; 1500];
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match client.recv_from(&mut buf) {
                    Ok((len, _)) if len >= 20 => {
                        assert_eq!(&buf[..2], &[1, 1], "a Binding success response");
                        ids.push(buf[8]);
                    }
                    Ok(_) => panic!("short answer"),
                    Err(_) if ids.len() >= n as usize => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            all.push(ids);
        }
        all
    }

    #[test]
    fn sockets_with_more_than_their_receives_are_read_whole_in_one_round() {
        for mode in ["auto", "off"] {
            let mut rt = one_loop(mode);
            assert_eq!(rt.local_addrs().len(), 2);
            if mode == "auto" && !rt.rx.uring() {
                // Only the portable path is tested then (or, under TURNPIKE_E2E=1, a failure).
                crate::uring::tests::unavailable("UDP receive ring");
            }
            // More than LISTENER_RECVS on one (the rest is read on with recvmmsg), fewer
            // on the other, then one socket alone, then nothing.
            let n = LISTENER_RECVS as u8 * 2 + 3;
            for counts in [[n, 3], [0, 5], [0, 0]] {
                let ids = one_round(&mut rt, &counts);
                let want: Vec<Vec<u8>> = counts.iter().map(|&c| (0..c).collect()).collect();
                assert_eq!(ids, want, "{mode} {counts:?}: all, in order, once");
                assert!(rt.again.is_empty(), "{mode}");
                assert!(rt.ready_udp.is_empty(), "{mode}");
            }
        }
    }

    /// Serves rounds as `Runtime::run` does (poll, the round's UDP sockets read together,
    /// the busy ones again, the batch's end) until `stop`.
    fn serve(rt: &mut Runtime, stop: &std::sync::atomic::AtomicBool) {
        let mut events = mio::Events::with_capacity(64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let timeout = if rt.again.is_empty() {
                Duration::from_millis(5)
            } else {
                Duration::ZERO
            };
            rt.poll.poll(&mut events, Some(timeout)).unwrap();
            for ev in events.iter() {
                if let Some(src) = Source::from_token(ev.token()) {
                    if !rt.defer_udp(src) {
                        rt.ready(src);
                    }
                }
            }
            rt.read_ready_udp();
            for _ in 0..rt.again.len() {
                if let Some(src) = rt.again.pop() {
                    rt.ready(src);
                }
            }
            rt.end_batch();
        }
    }

    #[test]
    fn no_datagram_waits_for_the_next_one_under_edge_triggered_polling() {
        // Bursts of 1 to 12 datagrams on both listeners at once, each answered before the
        // next: a datagram left in a socket that the loop took for drained would only be
        // read when another arrived, that is never.
        let mut rt = one_loop("auto");
        let addrs: Vec<_> = rt.local_addrs().into_iter().map(|(_, a)| a).collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the server when the client side ends, failed or not.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| serve(&mut rt, &stop));
            let _stop = StopOnDrop(&stop);
            let clients: Vec<UdpSocket> = addrs
                .iter()
                .map(|a| {
                    let c = UdpSocket::bind(if a.is_ipv4() {
                        "127.0.0.1:0"
                    } else {
                        "[::1]:0"
                    })
                    .unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    c
                })
                .collect();
            let mut x: u32 = 12345;
            let mut buf = [0u8; 1500];
            for round in 0..300 {
                let mut sent = [0u8; 2];
                for (i, (c, a)) in clients.iter().zip(&addrs).enumerate() {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    sent[i] = 1 + (x >> 16) as u8 % 12;
                    for k in 0..sent[i] {
                        c.send_to(&binding(k), a).unwrap();
                    }
                }
                for (i, c) in clients.iter().enumerate() {
                    for k in 0..sent[i] {
                        let got = c.recv_from(&mut buf).map(|(n, _)| (n, buf[8]));
                        assert!(
                            matches!(got, Ok((n, id)) if n >= 20 && id == k),
                            "round {round}, socket {i}: answer {k} of {}: {got:?}",
                            sent[i]
                        );
                    }
                }
            }
        });
    }
}
