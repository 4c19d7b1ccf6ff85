//! Test sockets shared by the receive tests of several modules (here, so that none of
//! them imports another's tests).

use mio::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A UDP socket on an ephemeral loopback port.
pub fn bound() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Waits until `sock` has a datagram queued (loopback delivers at once; this only
/// guards against a slow machine), then a little for the others sent with it.
pub fn wait_queued(sock: &UdpSocket, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while n > 0 && Instant::now() < deadline {
        let mut avail: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int, `avail`, live for the call.
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::FIONREAD, &mut avail) };
        if avail > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(5));
}
