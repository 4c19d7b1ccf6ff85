//! Socket creation with socket2: listeners (TCP with SO_REUSEADDR, so a restart does not
//! wait for TIME_WAIT; UDP without it, so that two sockets never bind one UDP address by
//! accident) and relay sockets (no SO_REUSEADDR: a port in use must fail with
//! EADDRINUSE so the core picks another). Listeners of several event loops share their
//! addresses with SO_REUSEPORT, which spreads clients over them. All non-blocking, IPV6_V6ONLY on IPv6 (the
//! IPv4 and IPv6 listeners are separate sockets), buffer sizes from the configuration.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use turnpike_core::server::BindError;
use turnpike_core::Transport;

/// Kernel buffer sizes for every socket (0: leave the OS default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketBuffers {
    /// SO_RCVBUF, bytes.
    pub receive: usize,
    /// SO_SNDBUF, bytes.
    pub send: usize,
}

/// Backlog of TCP listeners.
pub const TCP_BACKLOG: i32 = 1024;

/// A UDP listener bound to `addr`.
pub fn udp_listener(addr: SocketAddr, buffers: SocketBuffers) -> io::Result<mio::net::UdpSocket> {
    udp_listener_with(addr, buffers, false)
}

/// A UDP listener bound to `addr`; with `reuse_port`, SO_REUSEPORT (socket(7)): several
/// sockets of this user share the address and the kernel picks one per source address and
/// port, so a client always reaches the same event loop.
pub fn udp_listener_with(
    addr: SocketAddr,
    buffers: SocketBuffers,
    reuse_port: bool,
) -> io::Result<mio::net::UdpSocket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    set_buffers(&s, buffers)?;
    s.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(s.into()))
}

/// A TCP listener bound to `addr`.
pub fn tcp_listener(addr: SocketAddr, buffers: SocketBuffers) -> io::Result<mio::net::TcpListener> {
    tcp_listener_with(addr, buffers, false)
}

/// A TCP listener bound to `addr`; with `reuse_port`, SO_REUSEPORT (socket(7)): the
/// kernel hands each new connection to one of the listeners sharing the address.
pub fn tcp_listener_with(
    addr: SocketAddr,
    buffers: SocketBuffers,
    reuse_port: bool,
) -> io::Result<mio::net::TcpListener> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Accepted sockets inherit the buffer sizes; they must be set before listen().
    set_buffers(&s, buffers)?;
    s.bind(&addr.into())?;
    s.listen(TCP_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Checks that no socket of any process holds `addr` for `transport`, before this
/// process's listeners share it with SO_REUSEPORT (which would let a second relay of the
/// same user join the first one's group and split its clients). A probe socket is bound
/// without SO_REUSEPORT (and, for UDP, without SO_REUSEADDR): the kernel refuses it with
/// EADDRINUSE whatever the flags of the socket already there. A TCP probe keeps
/// SO_REUSEADDR, as the listeners do, so connections of an earlier run in TIME_WAIT do
/// not stop a restart; it still conflicts with a listening socket. Returns the address
/// the probe got, which names the port the kernel picked for port 0 (free at that time).
///
/// Between the probe and the listeners' bind another process could take the address:
/// the window is that of a few system calls at start.
pub fn probe_free(addr: SocketAddr, transport: Transport) -> io::Result<SocketAddr> {
    let s = match transport {
        Transport::Udp => new_socket(addr, Type::DGRAM, Protocol::UDP)?,
        Transport::Tcp => {
            let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
            s.set_reuse_address(true)?;
            s
        }
    };
    s.bind(&addr.into())?;
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the probe socket has no IP address"))
}

/// A relay socket bound to `addr`, or why not (for `Server::handle_relay_bound`).
pub fn relay_socket(
    addr: SocketAddr,
    buffers: SocketBuffers,
) -> Result<mio::net::UdpSocket, (BindError, io::Error)> {
    let other = |e: io::Error| (BindError::Other, e);
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP).map_err(other)?;
    set_buffers(&s, buffers).map_err(other)?;
    s.bind(&addr.into()).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => (BindError::AddrInUse, e),
        _ => (BindError::Other, e),
    })?;
    Ok(mio::net::UdpSocket::from_std(s.into()))
}

/// The kernel's buffer sizes of a socket, as it reports them (Linux doubles the value
/// asked for, and caps it at net.core.rmem_max / wmem_max).
pub fn buffer_sizes(s: &impl std::os::fd::AsFd) -> io::Result<(usize, usize)> {
    let s = socket2::SockRef::from(s);
    Ok((s.recv_buffer_size()?, s.send_buffer_size()?))
}

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    // Non-blocking from socket(2) itself (SOCK_NONBLOCK, with SOCK_CLOEXEC from socket2):
    // two fcntl calls fewer per relay socket, which allocation churn pays for each time.
    let s = Socket::new(Domain::for_address(addr), ty.nonblocking(), Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

fn set_buffers(s: &Socket, b: SocketBuffers) -> io::Result<()> {
    if b.receive > 0 {
        s.set_recv_buffer_size(b.receive)?;
    }
    if b.send > 0 {
        s.set_send_buffer_size(b.send)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: SocketBuffers = SocketBuffers {
        receive: 65536,
        send: 65536,
    };

    #[test]
    fn udp_listener_is_non_blocking_with_buffers() {
        let s = udp_listener("127.0.0.1:0".parse().unwrap(), SMALL).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let (r, w) = buffer_sizes(&s).unwrap();
        assert!(r >= 65536 && w >= 65536, "{r} {w}");
    }

    #[test]
    fn relay_port_in_use_is_addr_in_use() {
        let a = relay_socket("127.0.0.1:0".parse().unwrap(), SMALL).unwrap();
        let addr = a.local_addr().unwrap();
        let (err, _) = relay_socket(addr, SMALL).unwrap_err();
        assert_eq!(err, BindError::AddrInUse);
        // Listeners use SO_REUSEADDR, but a UDP port bound without it still refuses them.
        drop(a);
        assert!(relay_socket(addr, SMALL).is_ok());
    }

    #[test]
    fn relay_socket_is_non_blocking() {
        let s = relay_socket("127.0.0.1:0".parse().unwrap(), SMALL).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn unbindable_address_is_other() {
        // 192.0.2.1 (TEST-NET-1) is not on this host.
        let (err, _) = relay_socket("192.0.2.1:40000".parse().unwrap(), SMALL).unwrap_err();
        assert_eq!(err, BindError::Other);
    }

    #[test]
    fn tcp_listener_accepts_non_blocking() {
        let l = tcp_listener("127.0.0.1:0".parse().unwrap(), SMALL).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        // The connection is queued; accept may need a moment on a loaded machine.
        let mut ok = false;
        for _ in 0..100 {
            if l.accept().is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(ok);
    }

    #[test]
    fn reuse_port_listeners_share_an_address() {
        let a = udp_listener_with("127.0.0.1:0".parse().unwrap(), SMALL, true).unwrap();
        let addr = a.local_addr().unwrap();
        assert!(udp_listener_with(addr, SMALL, true).is_ok());
        let t = tcp_listener_with("127.0.0.1:0".parse().unwrap(), SMALL, true).unwrap();
        let addr = t.local_addr().unwrap();
        assert!(tcp_listener_with(addr, SMALL, true).is_ok());
        // Without the option on both, a second TCP listener fails as before.
        assert!(tcp_listener(addr, SMALL).is_err());
    }

    #[test]
    fn a_probe_fails_on_an_address_another_socket_holds() {
        for reuse_port in [false, true] {
            let u = udp_listener_with("127.0.0.1:0".parse().unwrap(), SMALL, reuse_port).unwrap();
            let addr = u.local_addr().unwrap();
            let e = probe_free(addr, Transport::Udp).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            drop(u);
            assert_eq!(probe_free(addr, Transport::Udp).unwrap(), addr);

            let t = tcp_listener_with("127.0.0.1:0".parse().unwrap(), SMALL, reuse_port).unwrap();
            let addr = t.local_addr().unwrap();
            let e = probe_free(addr, Transport::Tcp).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            drop(t);
            assert_eq!(probe_free(addr, Transport::Tcp).unwrap(), addr);
        }
        // Port 0: the probe names a port, and listeners can then share it.
        let addr = probe_free("127.0.0.1:0".parse().unwrap(), Transport::Udp).unwrap();
        assert_ne!(addr.port(), 0);
        let a = udp_listener_with(addr, SMALL, true).unwrap();
        assert!(udp_listener_with(addr, SMALL, true).is_ok());
        drop(a);
    }

    #[test]
    fn a_probe_fails_on_an_ipv6_address_another_socket_holds() {
        // Skip where the host has no IPv6 loopback.
        let Ok(u) = udp_listener_with("[::1]:0".parse().unwrap(), SMALL, true) else {
            return;
        };
        let addr = u.local_addr().unwrap();
        let e = probe_free(addr, Transport::Udp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // IPV6_V6ONLY on both: the IPv4 port of the same number is another address.
        let v4 = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port());
        let _ = probe_free(v4, Transport::Udp);
        let t = tcp_listener_with("[::1]:0".parse().unwrap(), SMALL, true).unwrap();
        let e = probe_free(t.local_addr().unwrap(), Transport::Tcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn udp_listeners_without_reuse_port_do_not_share() {
        // SO_REUSEADDR on UDP would let two of them bind one address.
        let a = udp_listener("127.0.0.1:0".parse().unwrap(), SMALL).unwrap();
        let addr = a.local_addr().unwrap();
        assert!(udp_listener(addr, SMALL).is_err());
    }

    #[test]
    fn ipv6_sockets_are_v6_only() {
        // Skip where the host has no IPv6 loopback.
        let Ok(s) = udp_listener("[::1]:0".parse().unwrap(), SMALL) else {
            return;
        };
        assert!(socket2::SockRef::from(&s).only_v6().unwrap());
    }
}
