#!/usr/bin/env python3
"""A tiny loopback recorder for seed corpora: it listens on 127.0.0.1:LISTEN (UDP and
TCP), forwards everything to 127.0.0.1:SERVER, relays the answers back, and writes each
client-to-server UDP datagram, and each TCP connection's client-to-server byte stream,
to a file in OUTDIR. Run it, point a TURN client (coturn's turnutils_uclient) at LISTEN,
stop it after SECONDS.

    record.py LISTEN SERVER OUTDIR SECONDS
"""
import os
import selectors
import socket
import sys
import time


def main():
    listen, server, outdir, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    os.makedirs(outdir, exist_ok=True)
    target = ("127.0.0.1", server)
    sel = selectors.DefaultSelector()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", listen))
    udp.setblocking(False)
    sel.register(udp, selectors.EVENT_READ, ("udp-listen", None))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", listen))
    tcp.listen(16)
    tcp.setblocking(False)
    sel.register(tcp, selectors.EVENT_READ, ("tcp-listen", None))
    upstream = {}  # client addr -> socket towards the server
    streams = {}  # tcp conn index -> bytearray
    n_udp = 0
    n_tcp = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            kind, info = key.data
            sock = key.fileobj
            if kind == "udp-listen":
                data, client = sock.recvfrom(65535)
                up = upstream.get(client)
                if up is None:
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind(("127.0.0.1", 0))
                    up.setblocking(False)
                    upstream[client] = up
                    sel.register(up, selectors.EVENT_READ, ("udp-up", client))
                if n_udp < 400:
                    with open(os.path.join(outdir, f"udp-{n_udp:04}"), "wb") as f:
                        f.write(data)
                    n_udp += 1
                up.sendto(data, target)
            elif kind == "udp-up":
                data, _ = sock.recvfrom(65535)
                udp.sendto(data, info)
            elif kind == "tcp-listen":
                conn, _ = sock.accept()
                up = socket.create_connection(target)
                conn.setblocking(False)
                up.setblocking(False)
                idx = n_tcp
                n_tcp += 1
                streams[idx] = bytearray()
                sel.register(conn, selectors.EVENT_READ, ("tcp-client", (idx, up)))
                sel.register(up, selectors.EVENT_READ, ("tcp-up", conn))
            elif kind == "tcp-client":
                idx, up = info
                data = sock.recv(65535)
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                streams[idx] += data
                try:
                    up.sendall(data)
                except OSError:
                    pass
            elif kind == "tcp-up":
                data = sock.recv(65535)
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                try:
                    info.sendall(data)
                except OSError:
                    sel.unregister(sock)
                    sock.close()
    for idx, data in streams.items():
        with open(os.path.join(outdir, f"tcp-{idx:04}"), "wb") as f:
            f.write(bytes(data[:65536]))
    print(f"recorded {n_udp} datagrams and {len(streams)} streams")


if __name__ == "__main__":
    main()
