"""The kernel's side of the TUN tests: run inside the test's network
namespace (`ip netns exec NS python kernel.py COMMAND ARGS`), using only the
kernel's sockets, and printing one JSON object per line.

Commands:
  ping ADDRESS SIZE COUNT           ICMP echo through an ICMP datagram socket
  echo-client ADDRESS PORT NBYTES   send NBYTES, read them back, sha256 both
  sink ADDRESS PORT                 accept one connection, read to EOF, answer
                                    with the sha256 and the count
  connect ADDRESS PORT              connect, send a line, read the reply
  udp ADDRESS PORT WAIT             one datagram, the reply (None after WAIT s)
  http URL                          GET with urllib
  raw-udp ADDRESS PORT CHECKSUM     a UDP datagram whose checksum field is
                                    CHECKSUM (hex), through a raw socket
Every wait is bounded (TIMEOUT seconds of silence at most).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import sys
import threading
import urllib.request
from typing import Any

TIMEOUT = 20.0
CHUNK = 65536


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def pattern(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def tcp_info(sock: socket.socket) -> dict[str, int]:
    """The fields of struct tcp_info (linux/tcp.h) the tests look at."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    (state, _, _, _, _, options, wscales, _) = struct.unpack_from("8B", raw)
    names = ("rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans",
             "fackets", "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv",
             "pmtu", "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss",
             "reordering", "rcv_rtt", "rcv_space", "total_retrans")
    info = dict(zip(names, struct.unpack_from(f"{len(names)}I", raw, 8), strict=True))
    info.update(state=state, options=options, snd_wscale=wscales & 0x0F,
                rcv_wscale=wscales >> 4)
    if len(raw) >= 232:
        info["snd_wnd"] = struct.unpack_from("I", raw, 228)[0]
    info["maxseg"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    return info


def family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ping(address: str, size: int, count: int) -> None:
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 0")  # this namespace's own setting: root may use ICMP datagram sockets
    fam = family(address)
    proto = socket.IPPROTO_ICMPV6 if fam == socket.AF_INET6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if fam == socket.AF_INET6 else (8, 0)
    replies = []
    with socket.socket(fam, socket.SOCK_DGRAM, proto) as s:
        s.settimeout(2.0)
        for seq in range(1, count + 1):
            data = bytes((seq + i) & 0xFF for i in range(size))
            # The kernel fills in the identifier and the checksum.
            s.sendto(struct.pack("!BBHHH", request, 0, 0, 0, seq) + data, (address, 0))
            try:
                while True:
                    got = s.recv(65535)
                    if got[0] == reply and struct.unpack_from("!H", got, 6)[0] == seq:
                        replies.append({"seq": seq, "size": len(got) - 8,
                                        "intact": got[8:] == data})
                        break
            except TimeoutError:
                pass
    say(sent=count, replies=replies)


def echo_client(address: str, port: int, nbytes: int) -> None:
    data = pattern(nbytes)
    sock = socket.create_connection((address, port), timeout=TIMEOUT)
    info_after_handshake = tcp_info(sock)
    failure: list[str] = []

    def send() -> None:
        try:
            view = memoryview(data)
            for i in range(0, nbytes, CHUNK):
                sock.sendall(view[i:i + CHUNK])
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            failure.append(repr(e))

    sender = threading.Thread(target=send)
    sender.start()
    digest = hashlib.sha256()
    received = 0
    try:
        while chunk := sock.recv(CHUNK):
            digest.update(chunk)
            received += len(chunk)
    except OSError as e:
        failure.append(repr(e))
    sender.join(TIMEOUT)
    say(sent_sha=hashlib.sha256(data).hexdigest(), received_sha=digest.hexdigest(),
        received=received, failure=failure, handshake=info_after_handshake,
        end=tcp_info(sock))
    sock.close()


def sink(address: str, port: int) -> None:
    fam = family(address)
    with socket.socket(fam, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        say(listening=listener.getsockname()[1])
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            digest = hashlib.sha256()
            received = 0
            while chunk := conn.recv(CHUNK):
                digest.update(chunk)
                received += len(chunk)
            conn.sendall(f"{digest.hexdigest()} {received}\n".encode())
            info = tcp_info(conn)
            conn.shutdown(socket.SHUT_WR)
    say(received=received, sha=digest.hexdigest(), info=info)


def connect(address: str, port: int) -> None:
    try:
        with socket.create_connection((address, port), timeout=5.0) as s:
            s.sendall(b"hello\n")
            say(result="connected", reply=s.recv(100).decode(errors="replace"))
    except ConnectionRefusedError:
        say(result="refused")
    except OSError as e:
        say(result="error", error=repr(e))


def udp(address: str, port: int, wait: float) -> None:
    with socket.socket(family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(b"datagram", (address, port))
        try:
            say(reply=s.recv(100).decode())
        except TimeoutError:
            say(reply=None)


def http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
    say(status=r.status, length=len(body), sha=hashlib.sha256(body).hexdigest(),
        text=body[:200].decode(errors="replace"))


def raw_udp(address: str, port: int, csum: int) -> None:
    payload = b"checksum?"
    header = struct.pack("!HHHH", 40000, port, 8 + len(payload), csum)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        s.sendto(header + payload, (address, 0))
    say(sent=True)


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "ping":
        ping(args[0], int(args[1]), int(args[2]))
    elif command == "echo-client":
        echo_client(args[0], int(args[1]), int(args[2]))
    elif command == "sink":
        sink(args[0], int(args[1]))
    elif command == "connect":
        connect(args[0], int(args[1]))
    elif command == "udp":
        udp(args[0], int(args[1]), float(args[2]))
    elif command == "http":
        http(args[0])
    elif command == "raw-udp":
        raw_udp(args[0], int(args[1]), int(args[2], 16))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
