#!/usr/bin/env python3
"""Save the first TLS ClientHello a client sends to a loopback listener.

Usage: capture.py PORT OUT.bin

Listens on 127.0.0.1 only, accepts one connection, reads until the record
lengths say the whole handshake message has arrived (or 2 s pass), writes
exactly those records to OUT.bin and closes without answering, so the client
gives up on its own.
"""
import socket
import sys
import time


def hello_end(buf):
    """Byte offset where the records carrying the first handshake message end, or None."""
    pos, payload = 0, b""
    while pos + 5 <= len(buf):
        rlen = int.from_bytes(buf[pos + 3:pos + 5], "big")
        if pos + 5 + rlen > len(buf):
            return None
        payload += buf[pos + 5:pos + 5 + rlen]
        pos += 5 + rlen
        if len(payload) >= 4 and len(payload) >= 4 + int.from_bytes(payload[1:4], "big"):
            return pos
    return None


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    srv.settimeout(20)
    conn, _ = srv.accept()
    conn.settimeout(0.2)
    buf, deadline = b"", time.monotonic() + 2
    while time.monotonic() < deadline:
        end = hello_end(buf)
        if end is not None:
            buf = buf[:end]
            break
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
    conn.close()
    srv.close()
    with open(out, "wb") as f:
        f.write(buf)
    print(f"{out}: {len(buf)} bytes")


if __name__ == "__main__":
    main()
