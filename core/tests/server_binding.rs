//! Binding requests (RFC 8489 §7.3.1, RFC 8656 §5): answered without credentials, with
//! XOR-MAPPED-ADDRESS = the client's transport address as the relay sees it.

mod support;

use support::*;
use turnpike_core::event::Event;
use turnpike_core::proxy_protocol::{encode_v1, encode_v2};
use turnpike_core::stun::{attr, Class, Method};
use turnpike_core::ConnId;

#[test]
fn binding_over_udp_reports_the_source_address() {
    // RFC 8489 §7.3.1: the success response carries XOR-MAPPED-ADDRESS, the request's source.
    let mut h = Harness::new();
    let c = Client::udp(1);
    let (tid, out) = h.send_plain(&c, &Req::binding());
    let a = out.answer();
    assert_eq!(a.via, Via::Udp(client(1)));
    assert_eq!(a.class(), Class::Success);
    assert_eq!(a.method(), Method::BINDING);
    assert_eq!(a.tid(), tid);
    assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(client(1)));
    assert!(
        !a.has_fingerprint(),
        "no FINGERPRINT unless the request had one"
    );
    assert!(!a.has(attr::MESSAGE_INTEGRITY));
}

#[test]
fn binding_echoes_fingerprint_when_the_request_had_one() {
    // RFC 8489 §7.3: FINGERPRINT is added to the response when the request carried one
    // (the usual practice, which ICE agents rely on to demultiplex).
    let mut h = Harness::new();
    let c = Client::udp(2).with_fingerprint();
    let (_, out) = h.send_plain(&c, &Req::binding());
    let a = out.answer();
    assert!(a.is_success());
    assert!(a.has_fingerprint());
    assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(client(2)));
}

#[test]
fn binding_ipv6_client_gets_an_ipv6_mapped_address() {
    let mut h = Harness::new();
    let from = sa("[2001:db8:77::9]:61000");
    let c = Client::new(Via::Udp(from), USER, PASS);
    let (_, out) = h.send_plain(&c, &Req::binding());
    assert_eq!(out.answer().xor(attr::XOR_MAPPED_ADDRESS), Some(from));
}

#[test]
fn binding_over_a_stream_reports_the_connection_address() {
    let mut h = Harness::new();
    let remote = sa("203.0.113.50:55555");
    let c = h.tcp_client(1, remote);
    let (_, out) = h.send_plain(&c, &Req::binding());
    let a = out.answer();
    assert_eq!(a.via, Via::Stream(ConnId(1)));
    assert!(a.is_success());
    assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(remote));
}

#[test]
fn binding_through_proxy_v1_reports_the_proxied_client() {
    // A PROXY header on a trusted connection names the real client: XOR-MAPPED-ADDRESS
    // is that address, not the proxy's.
    let mut h = Harness::new();
    let real = sa("203.0.113.77:40404");
    let out = h.open_stream(ConnId(5), TCP_PROXY, proxy_addr());
    assert!(out.closed_streams.is_empty());
    let mut bytes = encode_v1(Some((real, sa("192.0.2.1:3479"))));
    let tid = h.tid();
    bytes.extend(Req::binding().encode_plain(tid, false));
    let out = h.stream_data(ConnId(5), &bytes);
    assert!(out.events.iter().any(|e| matches!(e,
        Event::ProxyAccepted { conn: ConnId(5), proxy, client } if *proxy == proxy_addr() && *client == real)));
    let a = out.answer();
    assert_eq!(a.tid(), tid);
    assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(real));
}

#[test]
fn binding_through_proxy_v2_reports_the_proxied_client() {
    let mut h = Harness::new();
    for (conn, real) in [
        (6u64, sa("203.0.113.78:40405")),
        (7u64, sa("[2001:db8:99::1]:40406")),
    ] {
        let dst = if real.is_ipv4() {
            sa("192.0.2.1:3479")
        } else {
            sa("[2001:db8:ffff::1]:3479")
        };
        h.open_stream(ConnId(conn), TCP_PROXY, proxy_addr());
        let mut bytes = encode_v2(Some((real, dst)));
        bytes.extend(Req::binding().encode_plain(h.tid(), true));
        let out = h.stream_data(ConnId(conn), &bytes);
        let a = out.answer();
        assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(real));
        assert!(a.has_fingerprint());
    }
}

#[test]
fn binding_with_an_unknown_required_attribute_gets_420() {
    // RFC 8489 §6.3.1: unknown comprehension-required attributes → 420 even for Binding.
    let mut h = Harness::new();
    let c = Client::udp(3);
    let (_, out) = h.send_plain(&c, &Req::binding().raw(0x7777, b"x"));
    let a = out.answer();
    assert_eq!(a.code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![0x7777]);
}

#[test]
fn binding_indication_gets_no_answer() {
    // RFC 8489 §6.3.2: indications are never answered.
    let mut h = Harness::new();
    let mut r = Req::binding();
    r.class = Class::Indication;
    let (_, out) = h.send_plain(&Client::udp(4), &r);
    assert!(out.answers.is_empty());
}
