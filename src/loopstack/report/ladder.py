"""The ladder diagram of one TCP connection: a lifeline per endpoint, one
arrow per packet in time order (time runs down; a longer wait between two
packets leaves more room), tcpdump's words on each arrow, the handshake,
data and teardown shaded, and what went wrong tagged at the right."""

from __future__ import annotations

import math

from .decode import ACK, FIN, RST, SYN, flags_text, options_text, parse_options
from .model import (
    DATA,
    DROPPED,
    DUP,
    DUPACK,
    HANDSHAKE,
    KEEPALIVE,
    OOO,
    RETRANS,
    TEARDOWN,
    ZEROWIN,
    Pkt,
    TcpConn,
    endpoint_text,
)
from .svg import duration, esc, f1, number, time_unit

WIDTH = 940
X_A, X_B = 170, 720  # lifelines
ROW = 24
TOP = 64
FOLD = 46

# tag text and class, in the order they are shown
TAGS = ((DROPPED, "dropped by netem", "t-drop"), (RETRANS, "retransmission", "t-re"),
        (DUP, "duplicate", "t-dup"), (OOO, "out of order", "t-ooo"),
        (DUPACK, "dup ack", "t-dack"), (ZEROWIN, "zero window", "t-zw"),
        (KEEPALIVE, "keep-alive", "t-ka"))
PHASES = {HANDSHAKE: ("handshake", "ph-hs"), DATA: ("data", "ph-data"),
          TEARDOWN: ("teardown", "ph-td")}


def label(p: Pkt) -> str:
    """tcpdump's line for the packet, shortened for an arrow."""
    parts = [f"[{flags_text(p.flags)}]"]
    if p.length or p.flags & (SYN | FIN | RST):
        parts.append(f"seq {p.seq}:{p.seq + p.length}" if p.length else f"seq {p.seq}")
    if p.flags & ACK:
        parts.append(f"ack {p.ack}")
    parts.append(f"win {p.win}")
    if p.flags & SYN and p.opts:
        o = parse_options(p.opts)
        bits = ([f"mss {o.mss}"] if o.mss else []) + (
            [f"wscale {o.wscale}"] if o.wscale >= 0 else []) + (
            ["sackOK"] if o.sack_ok else []) + (["TS"] if o.tsval >= 0 else [])
        parts.append("<" + ",".join(bits) + ">")
    elif len(p.opts) > 12 and parse_options(p.opts).sacks:
        text = options_text(p.opts, p.sack_base)
        parts.append("<" + ",".join(o for o in text.split(",") if o.startswith("sack")) + ">")
    parts.append(f"length {p.length}")
    return ", ".join(parts)


def tooltip(p: Pkt, conn: TcpConn, t_unit: tuple[float, str]) -> str:
    src, dst = (conn.a, conn.b) if p.d == 0 else (conn.b, conn.a)
    where = f"packet {p.n}" if p.n else "not in the capture: netem dropped it"
    line = (f"{endpoint_text(src)} > {endpoint_text(dst)}: Flags [{flags_text(p.flags)}]"
            f", seq {p.seq}" + (f":{p.seq + p.length}" if p.length else "")
            + (f", ack {p.ack}" if p.flags & ACK else "") + f", win {p.win}")
    if p.opts:
        line += f", options [{options_text(p.opts, p.sack_base)}]"
    tags = [text for bit, text, _ in TAGS if p.kind & bit]
    t = (p.t - conn.first) / t_unit[0]
    return (f"{where} at {t:.3f} {t_unit[1]}\n{line}, length {p.length}"
            + (f"\n{'; '.join(tags)}" if tags else ""))


def _gap(dt_ns: int) -> int:
    """Extra room for a wait of dt_ns before a packet."""
    if dt_ns <= 500_000:
        return 0
    return min(40, round(7 * math.log2(dt_ns / 500_000)))


def draw(conn: TcpConn, uid: str) -> str:
    """The ladder as an <svg> element."""
    pkts = conn.drawn()
    fold_at = len(conn.head) if conn.folded > 0 else -1
    t_unit = time_unit(conn.last - conn.first)
    rows: list[tuple[int, Pkt | None]] = []  # (y, packet or the fold)
    y = TOP
    prev_t = conn.first
    for i, p in enumerate(pkts):
        if i == fold_at:
            y += 6
            rows.append((y, None))
            y += FOLD
        else:
            y += _gap(p.t - prev_t)
        rows.append((y, p))
        prev_t = p.t
        y += ROW
    height = y + 18
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" id="{uid}" '
           f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
           f'role="img" aria-label="ladder diagram of connection {conn.number}">']
    out += _bands(rows, height)
    out.append(f'<text class="axis" x="8" y="{TOP - 14}">time ({t_unit[1]})</text>')
    for x, ep, who in ((X_A, conn.a, "client"), (X_B, conn.b, "server")):
        out.append(f'<line class="life" x1="{x}" y1="{TOP - 22}" x2="{x}" y2="{height - 8}"/>')
        text = f"{who} {endpoint_text(ep)}"
        w = 7.2 * len(text) + 20
        out.append(f'<rect class="ep" x="{f1(x - w / 2)}" y="6" width="{f1(w)}" height="26" '
                   f'rx="5"/><text class="ep-t" x="{x}" y="23" text-anchor="middle">'
                   f'{esc(text)}</text>')
    for y, row in rows:
        out.append(_fold(conn, pkts, y) if row is None else _arrow(row, conn, y, t_unit))
    out.append("</svg>")
    return "\n".join(out)


def _bands(rows: list[tuple[int, Pkt | None]], height: int) -> list[str]:
    """Shaded phases behind the arrows, named at the left."""
    out: list[str] = []
    spans: list[list[int]] = []  # [phase, y0, y1]
    for y, p in rows:
        if p is None:
            continue
        if spans and spans[-1][0] == p.phase:
            spans[-1][2] = y + ROW
        else:
            spans.append([p.phase, y - 4, y + ROW])
    for i, (phase, y0, y1) in enumerate(spans):
        if i + 1 < len(spans):
            y1 = spans[i + 1][1]
        name, cls = PHASES[phase]
        out.append(f'<rect class="{cls}" x="{X_A - 70}" y="{y0}" width="{X_B - X_A + 140}" '
                   f'height="{max(1, y1 - y0)}"/>')
        out.append(f'<text class="ph-t" x="{X_A - 66}" y="{y0 + 12}">{name}</text>')
    return out


def _arrow(p: Pkt, conn: TcpConn, y: int, t_unit: tuple[float, str]) -> str:
    x0, x1 = (X_A, X_B) if p.d == 0 else (X_B, X_A)
    y0, y1 = y + 8, y + 16
    kind = p.kind
    classes = ["pkt", f"d{p.d}"]
    classes += [cls for bit, _, cls in TAGS if kind & bit]
    if p.flags & RST:
        classes.append("rst")
    t = (p.t - conn.first) / t_unit[0]
    parts = [f'<g class="{" ".join(classes)}" data-n="{p.n}">',
             f"<title>{esc(tooltip(p, conn, t_unit))}</title>",
             f'<text class="tm" x="{X_A - 78}" y="{y1 - 2}" text-anchor="end">{t:.3f}</text>']
    sign = 1 if x1 > x0 else -1
    if kind & DROPPED:
        xe = x0 + (x1 - x0) * 0.56
        ye = y0 + (y1 - y0) * 0.56
        parts.append(f'<line class="ar" x1="{x0}" y1="{y0}" x2="{f1(xe)}" y2="{f1(ye)}"/>')
        parts.append(f'<path class="x" d="M{f1(xe - 5)} {f1(ye - 5)}l10 10m0 -10l-10 10"/>')
    else:
        parts.append(f'<line class="ar" x1="{x0}" y1="{y0}" x2="{x1 - sign * 6}" y2="{y1}"/>')
        parts.append(f'<path class="ah" d="M{x1} {y1}l{-sign * 9} -5.5v10z"/>')
    mid = (X_A + X_B) / 2
    parts.append(f'<text class="lb" x="{mid}" y="{y0 - 1}" text-anchor="middle">'
                 f"{esc(label(p))}</text>")
    tx = X_B + 74.0
    for bit, text, cls in TAGS:
        if kind & bit:
            w = 6.4 * len(text) + 12
            parts.append(f'<rect class="tag {cls}" x="{tx}" y="{y + 4}" width="{f1(w)}" '
                         f'height="15" rx="7.5"/><text class="tag-t" x="{f1(tx + w / 2)}" '
                         f'y="{y + 15}" text-anchor="middle">{text}</text>')
            tx += w + 4
    if p.flags & RST and not kind:
        parts.append(f'<rect class="tag t-rst" x="{tx}" y="{y + 4}" width="40" height="15" '
                     f'rx="7.5"/><text class="tag-t" x="{tx + 20}" y="{y + 15}" '
                     f'text-anchor="middle">reset</text>')
    parts.append("</g>")
    return "".join(parts)


def _fold(conn: TcpConn, pkts: list[Pkt], y: int) -> str:
    t0, t1 = pkts[len(conn.head) - 1].t, pkts[len(conn.head)].t
    kinds = dict(conn.kinds)
    for p in pkts:
        for bit, _, _ in TAGS:
            if p.kind & bit:
                kinds[bit] -= 1
    what = [f"{number(kinds[bit])} {text}{'s' if kinds[bit] != 1 else ''}"
            for bit, text, _ in TAGS if kinds.get(bit, 0) > 0 and bit != DROPPED]
    if kinds.get(DROPPED, 0) > 0:
        what.append(f"{number(kinds[DROPPED])} dropped by netem")
    text = (f"{number(conn.folded)} packets folded: {duration(t1 - t0)}"
            + (" — " + ", ".join(what) if what else ""))
    zig = " ".join(f"l8 {'-' if i % 2 else ''}5" for i in range(int((X_B - X_A + 140) / 8)))
    return (f'<g class="fold" data-folded="{conn.folded}">'
            f'<rect x="{X_A - 70}" y="{y}" width="{X_B - X_A + 140}" height="{FOLD - 8}" rx="4"/>'
            f'<path d="M{X_A - 70} {y + 2} {zig}"/>'
            f'<text x="{(X_A + X_B) / 2}" y="{y + 25}" text-anchor="middle">⋮ {esc(text)} ⋮'
            "</text></g>")
