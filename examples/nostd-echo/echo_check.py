#!/usr/bin/env python3
"""Starts an echo server binary, checks that it echoes (a short message, 1 MiB through one
connection, 16 clients at once, and that a 17th waits in the backlog until one closes: the
connection limit's back-pressure), then kills it.

Usage: echo_check.py BINARY [PORT [ARGS...]]; the server runs as `BINARY PORT ARGS...` and
must serve at most 16 connections at once (nostd-echo: built so; echo_server: ARGS = 16)."""
import socket, subprocess, sys, time

binary = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7007
MAX_CONNS = 16

def connect():
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(5)
            return s
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)

def roundtrip(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"FAIL: connection closed after {len(got)} of {len(data)} bytes")
        got += chunk
    if got != data:
        raise SystemExit("FAIL: echo differs from what was sent")

proc = subprocess.Popen([binary, str(port)] + sys.argv[3:])
try:
    a = connect()
    roundtrip(a, b"hello, no_std\n")
    # 1 MiB through one connection: many reads, short writes, back-pressure on the client.
    big = bytes(range(256)) * 4096
    import threading
    t = threading.Thread(target=a.sendall, args=(big,))
    t.start()
    got = b""
    while len(got) < len(big):
        chunk = a.recv(65536)
        if not chunk:
            raise SystemExit("FAIL: closed during the 1 MiB echo")
        got += chunk
    t.join()
    if got != big:
        raise SystemExit("FAIL: 1 MiB echo differs")
    # Fill every slot, then one more client: it waits in the backlog until a slot frees.
    conns = [a] + [connect() for _ in range(MAX_CONNS - 1)]
    for i, c in enumerate(conns):
        roundtrip(c, b"client %d\n" % i)
    extra = connect()  # the kernel completes the handshake; the server does not accept yet
    extra.sendall(b"waiting\n")
    extra.settimeout(0.3)
    try:
        early = extra.recv(100)
        raise SystemExit(f"FAIL: connection beyond the limit was served at once: {early!r}")
    except socket.timeout:
        pass
    extra.settimeout(5)
    conns.pop().close()  # frees a slot: the waiting client is accepted and served
    got = b""
    while len(got) < len(b"waiting\n"):
        got += extra.recv(100)
    if got != b"waiting\n":
        raise SystemExit(f"FAIL: waiting client got {got!r}")
    for c in conns + [extra]:
        c.close()
    if proc.poll() is not None:
        raise SystemExit(f"FAIL: server exited with {proc.returncode}")
    print(f"{binary.rsplit('/', 1)[-1]}: echo check passed (1 MiB echoed, 16 clients, back-pressure beyond 16)")
finally:
    proc.kill()
    proc.wait()
