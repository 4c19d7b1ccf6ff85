#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into core/fuzz/corpus/<target>/seed-*:
the RFC 5769 / RFC 8489 test vectors (read from core/tests/rfc5769.rs), the messages a
coturn turnutils_uclient run sent to turnpike (seeds/uclient/, captured with record.py),
hand-made ChannelData and PROXY headers, and whole-server input sequences that reach an
allocation. Run from anywhere; it overwrites only seed-* files."""
import glob
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(HERE)
CORE = os.path.dirname(FUZZ)


def out(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def rfc_vectors():
    text = open(os.path.join(CORE, "tests", "rfc5769.rs")).read()
    for name, body in re.findall(r'const ((?:SAMPLE|B1)_[A-Z0-9_]+): &str = "(.*?)";', text, re.S):
        digits = re.sub(r"[^0-9a-fA-F]", "", body)
        yield name.lower(), bytes.fromhex(digits)


def uclient():
    for path in sorted(glob.glob(os.path.join(HERE, "uclient", "*"))):
        yield os.path.basename(path), open(path, "rb").read()


def main():
    stun = []
    for name, data in rfc_vectors():
        out("stun_decode", "rfc-" + name, data)
        stun.append(data)
    for name, data in uclient():
        if name.startswith("udp"):
            if data[:1] and data[0] >> 6 == 1:
                out("channel_data", "uclient-" + name, data)
            else:
                out("stun_decode", "uclient-" + name, data)
                stun.append(data)
        else:
            # A whole TCP stream of uclient: framer input (limit byte, split seed, bytes).
            out("stream_framer", "uclient-" + name, b"\x01\x2a" + data[:4096])
            out("stream_framer", "uclient-small-" + name, b"\x00\x07" + data[:4096])
    out("channel_data", "min", bytes([0x40, 0x00, 0x00, 0x00]))
    out("channel_data", "padded", bytes([0x40, 0x01, 0x00, 0x05]) + b"hello\0\0\0")
    out("channel_data", "legacy", bytes([0x7F, 0xFF, 0x00, 0x02, 1, 2]))
    out("channel_data", "overrun", bytes([0x40, 0x00, 0xFF, 0xFF, 1]))

    proxies = {
        "v1-tcp4": b"PROXY TCP4 203.0.113.7 192.0.2.1 49314 443\r\n",
        "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 49314 443\r\n",
        "v1-unknown": b"PROXY UNKNOWN\r\n",
        "v1-unknown-addrs": b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        "v1-nginx-unix": b"PROXY TCP4 203.0.113.7 unix:/tmp/tls.sock 49314 0\r\n",
        "v1-payload": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + stun[0],
    }
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    v2 = {
        "v2-local": sig + bytes([0x20, 0x00, 0, 0]),
        "v2-tcp4": sig + bytes([0x21, 0x11, 0, 12]) + bytes([203, 0, 113, 7, 192, 0, 2, 1]) + struct.pack(">HH", 49314, 443),
        "v2-tcp6": sig + bytes([0x21, 0x21, 0, 36]) + bytes(range(16)) + bytes(range(16, 32)) + struct.pack(">HH", 1, 2),
        "v2-unix": sig + bytes([0x21, 0x31, 0, 216]) + b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0"),
        "v2-tlv": sig + bytes([0x21, 0x11, 0, 12 + 7]) + bytes([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]) + bytes([0x02, 0, 4]) + b"host",
        "v2-udp4": sig + bytes([0x21, 0x12, 0, 12]) + bytes(12),
    }
    proxies.update(v2)
    for name, data in proxies.items():
        out("proxy_v1_v2", name, b"\x7f" + data)

    # trace_mask: a mode byte (0 datagram, 1 stream, 2 stream after a PROXY header), a
    # seed byte (how the stream is cut into reads), then the bytes.
    for name, data in uclient():
        if name.startswith("udp"):
            out("trace_mask", "uclient-" + name, b"\x00\x00" + data)
        else:
            out("trace_mask", "uclient-" + name, b"\x01\x2a" + data[:4096])
            out("trace_mask", "uclient-bytes-" + name, b"\x01\x00" + data[:1024])
    for name, data in proxies.items():
        out("trace_mask", "proxy-" + name, b"\x02\x05" + data + stun[0])

    for i, data in enumerate(stun[:4]):
        out("stream_framer", f"rfc-{i}", b"\x01\x05" + data + bytes([0x40, 0, 0, 3, 1, 2, 3, 0]) + data)

    # whole_server: op, then the op's bytes (see fuzz_targets/whole_server.rs).
    def udp_req(client, kind, flags, tid, peer=0, extra=b""):
        return bytes([1, client, kind, flags, tid, 0, peer]) + extra

    def bind_ok():
        return bytes([11, 2])

    allocate = udp_req(0, 0, 0, 1) + udp_req(0, 0, 0, 2) + bind_ok()
    perm = udp_req(0, 2, 0, 3, 0)
    chan = udp_req(0, 3, 0, 4, 0)
    chandata = bytes([1, 0, 6, 0, 5, 0, 0, 4]) + b"ping"
    relay = bytes([10, 0, 0, 0, 4]) + b"pong"
    send = bytes([1, 0, 5, 0, 6, 0, 1, 3]) + b"abc"
    refresh0 = udp_req(0, 1, 0, 7)
    timeout = bytes([11, 0x86])
    out("whole_server", "udp-allocate", allocate)
    out("whole_server", "udp-relay", allocate + perm + chan + chandata + relay + send + timeout + refresh0)
    tcp_open = bytes([4, 1, 0])
    stream_req = lambda kind, flags, tid, peer=0: bytes([6, 0, kind, flags, tid, 0, peer, 10])
    out("whole_server", "tcp-allocate", tcp_open + stream_req(0, 0, 1) + stream_req(0, 0, 2) + bind_ok() + stream_req(2, 0, 3) + bytes([8, 0]))
    proxy_open = bytes([4, 0, 1, 9, 0, 0, 0, 5])
    out("whole_server", "proxy-allocate", proxy_open + stream_req(0, 0, 1) + stream_req(0, 0, 2) + bind_ok())
    out("whole_server", "floods", (tcp_open * 8) + udp_req(1, 0, 0, 9) * 20 + bytes([0, 2, 8]) + b"\x00\x01\x00\x00" * 2)

    # http_api: a seed byte (how the input is cut), then the bytes a connection receives.
    body = b'{"username":"alice","ttl":3600}'
    ice = (b"POST /v1/ice-servers HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"Authorization: Bearer secret\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    metrics = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"
    close = b"GET /health?verbose=1 HTTP/1.0\r\nConnection: close\r\n\r\n"
    chunked = (b"POST /v1/ice-servers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
    out("http_api", "ice-servers", b"\x11" + ice)
    out("http_api", "metrics", b"\x85" + metrics)
    out("http_api", "pipelined", b"\x07" + metrics + ice + metrics + close + metrics)
    out("http_api", "chunked", b"\x23" + metrics + chunked)
    out("http_api", "head-and-lengths", b"\x42HEAD /metrics HTTP/1.1\r\nContent-Length: 0\r\n"
        b"Content-Length: 0\r\nConnection: keep-alive, close\r\n\r\n")


if __name__ == "__main__":
    main()
