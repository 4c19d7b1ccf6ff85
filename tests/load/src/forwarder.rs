//! The bare forwarder: the practical floor of a UDP relay with one datagram per syscall and
//! no TURN logic, to show how close the relay comes to it.
//!
//! It has the relay's shape without its protocol: pair `i` is a client-facing socket bound
//! to `base + i` and a peer-facing socket on an ephemeral port. A datagram on the
//! client-facing socket goes out of the peer-facing one to the peer; a datagram on the
//! peer-facing socket goes back to the last client seen on pair `i`. One `recv_from` and
//! one `send_to` per datagram, edge-triggered epoll, one thread.

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One pair of sockets.
struct Pair {
    client_side: UdpSocket,
    peer_side: UdpSocket,
    client: Option<SocketAddr>,
}

/// Forwards between `count` pairs on `base.port() + i` and `peer` until `limit` has
/// passed. Returns the number of datagrams forwarded.
pub fn run(base: SocketAddr, count: usize, peer: SocketAddr, limit: Duration) -> io::Result<u64> {
    let mut poll = Poll::new()?;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let port = base
            .port()
            .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "port range overflow"))?;
        let mut client_side = bind(SocketAddr::new(base.ip(), port))?;
        let mut peer_side = bind(SocketAddr::new(base.ip(), 0))?;
        poll.registry()
            .register(&mut client_side, Token(2 * i), Interest::READABLE)?;
        poll.registry()
            .register(&mut peer_side, Token(2 * i + 1), Interest::READABLE)?;
        pairs.push(Pair {
            client_side,
            peer_side,
            client: None,
        });
    }
    eprintln!("forwarder: {count} pairs from {base}, peer {peer}");
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65_536];
    let mut forwarded = 0u64;
    let start = Instant::now();
    while start.elapsed() < limit {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let t = ev.token().0;
            let Some(p) = pairs.get_mut(t / 2) else {
                continue;
            };
            let from_client = t % 2 == 0;
            loop {
                let src = if from_client {
                    &p.client_side
                } else {
                    &p.peer_side
                };
                let (n, from) = match src.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(_) => break,
                };
                let data = buf.get(..n).unwrap_or(&[]);
                let sent = if from_client {
                    p.client = Some(from);
                    p.peer_side.send_to(data, peer)
                } else if let Some(c) = p.client {
                    p.client_side.send_to(data, c)
                } else {
                    continue;
                };
                if sent.is_ok() {
                    forwarded += 1;
                }
            }
        }
    }
    Ok(forwarded)
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    // The relay's sockets get 1 MiB buffers; so do these.
    crate::traffic::set_buffers(s.as_raw_fd(), 1 << 20);
    Ok(UdpSocket::from_std(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_both_ways() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        // Find a free base port by binding and releasing it.
        let base = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let t = std::thread::spawn(move || run(base, 1, peer_addr, Duration::from_millis(600)));
        std::thread::sleep(Duration::from_millis(100));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"hello", base).unwrap();
        let mut buf = [0u8; 64];
        let (n, relay) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        peer.send_to(b"back", relay).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], base));
        assert_eq!(t.join().unwrap().unwrap(), 2);
    }
}
