//! Behind a proxy (nginx with `proxy_protocol on`), the event log records the client's
//! real address from the PROXY header, not the proxy's; a header from an untrusted
//! source closes the stream.

mod common;

use common::{Relay, TurnClient};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn proxy_header_gives_real_client() {
    let relay = Relay::start("proxy", "proxy_protocol = true");
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    let header = format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 {}\r\n", relay.port);
    s.write_all(header.as_bytes()).unwrap();
    let mut c = TurnClient::tcp(s, relay.addr(), "alice", "pw");
    c.allocate();
    let recs = relay.records_until(Duration::from_secs(3), |r| {
        r["event"] == "allocation_created"
    });
    let created = recs
        .iter()
        .find(|r| r["event"] == "allocation_created")
        .expect("no record");
    assert_eq!(created["client"], "203.0.113.7:5555");
    assert_eq!(created["transport"], "tcp");
}

#[test]
fn untrusted_proxy_is_closed() {
    let relay = Relay::start(
        "untrusted",
        "proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/8\"]",
    );
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 3478\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    // Closed by the relay: EOF (or a reset).
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "not closed: {e}"
        ),
        Ok(n) => panic!("{n} bytes answered to an untrusted proxy"),
    }
    let recs = relay.records_until(Duration::from_secs(3), |r| r["event"] == "untrusted_proxy");
    assert!(
        recs.iter().any(|r| r["event"] == "untrusted_proxy"),
        "{recs:?}"
    );
}
