"""Human-readable views of a stack: the socket table (`ss`), counters (`nstat`)."""

from __future__ import annotations

from typing import Any, TextIO

from ..stack import Stack


def _addr(a: Any) -> str:
    if a is None:
        return "*:*"
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_table(stack: Stack) -> list[str]:
    """Rows as `ss -tuan` prints them."""
    lines = [f"{'Netid':<6} {'State':<11} {'Recv-Q':>7} {'Send-Q':>7} "
             f"{'Local Address:Port':<28} Peer Address:Port"]
    for row in stack.sockets():
        lines.append(f"{row['proto']:<6} {row['state']:<11} {row['recv_q']:>7} "
                     f"{row['send_q']:>7} {_addr(row['local']):<28} {_addr(row['peer'])}")
    return lines


def counter_lines(stack: Stack) -> list[str]:
    """Counters that are not zero, as `nstat -a` names them (group + name)."""
    out = []
    for group, counters in stack.stats().items():
        for name, value in counters.items():
            if value and name not in ("Forwarding", "DefaultTTL", "RtoAlgorithm", "RtoMin",
                                      "RtoMax", "MaxConn"):
                out.append(f"{group + name:<32} {value}")
    return out


def print_stats(stack: Stack, out: TextIO) -> None:
    print("\n-- sockets (ss -tuan) --", file=out)
    for line in socket_table(stack):
        print(line, file=out)
    print("\n-- counters (nstat) --", file=out)
    for line in counter_lines(stack):
        print(line, file=out)
