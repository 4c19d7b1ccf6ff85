//! Test sockets: a pair on loopback, for the batch tests and the system-call tests alike
//! (here rather than in `tests.rs`, which the system-call tests must not import).

use mio::net::UdpSocket;

pub(super) fn pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (a, b)
}
