"""The time-sequence graph of one direction of a TCP connection, as
Stevens and tcptrace draw it: sequence number against time, one vertical
stroke per segment, the ACK line and the receive window's right edge from
the other side, its SACK blocks, retransmissions and drops marked. Below
it, for a loopstack run, the sender's cwnd and ssthresh (segments) and
smoothed RTT, sampled as the stack ran.

Large connections are drawn per pixel column (one stroke per column and
kind), so the SVG stays small whatever the packet count."""

from __future__ import annotations

from collections.abc import Sequence

from .model import DROPPED, OOO, RETRANS, Direction, Sample, TcpConn
from .svg import esc, f1, si, tick_label, ticks, time_unit

WIDTH = 940
L, R, T, B = 78, 64, 30, 42  # margins
HEIGHT = 400
SMALL_HEIGHT = 250
CC_HEIGHT = 190
INFINITE_SSTHRESH = 0x7FFFFFFF
_EACH = 1500  # segments drawn one by one up to this many


class _Axes:
    def __init__(self, t0: int, t1: int, y0: float, y1: float, height: int) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1)
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.h = height
        self.pw = WIDTH - L - R
        self.ph = height - T - B

    def x(self, t: int) -> float:
        return L + (t - self.t0) * self.pw / (self.t1 - self.t0)

    def y(self, v: float) -> float:
        return T + self.ph - (v - self.y0) * self.ph / (self.y1 - self.y0)

    def frame(self, y_label: str, y_fmt: str = "si") -> list[str]:
        div, unit = time_unit(self.t1 - self.t0)
        out = [f'<rect class="plot" x="{L}" y="{T}" width="{self.pw}" height="{self.ph}"/>']
        for v in ticks(0, (self.t1 - self.t0) / div, 8):
            x = self.x(self.t0 + int(v * div))
            out.append(f'<line class="grid" x1="{f1(x)}" y1="{T}" x2="{f1(x)}" '
                       f'y2="{T + self.ph}"/><text class="axis" x="{f1(x)}" '
                       f'y="{T + self.ph + 16}" text-anchor="middle">{tick_label(v)}</text>')
        out.append(f'<text class="axis" x="{L + self.pw / 2}" y="{self.h - 6}" '
                   f'text-anchor="middle">time ({unit}) since the connection began</text>')
        for v in ticks(self.y0, self.y1, 6):
            y = self.y(v)
            text = si(v) if y_fmt == "si" else tick_label(v)
            out.append(f'<line class="grid" x1="{L}" y1="{f1(y)}" x2="{L + self.pw}" '
                       f'y2="{f1(y)}"/><text class="axis" x="{L - 6}" y="{f1(y + 4)}" '
                       f'text-anchor="end">{text}</text>')
        out.append(f'<text class="axis" transform="translate(16 {T + self.ph / 2}) rotate(-90)" '
                   f'text-anchor="middle">{esc(y_label)}</text>')
        return out


def _step(xs: Sequence[float], ys: Sequence[float], right: float) -> str:
    """Points of a step line through (xs, ys), one point pair per pixel column."""
    pts: list[str] = []
    last_col = None
    prev_y = None
    for x, y in zip(xs, ys, strict=True):
        col = int(x)
        if col == last_col and pts:
            pts[-1] = f"{f1(x)},{f1(y)}"
        else:
            if prev_y is not None:
                pts.append(f"{f1(x)},{f1(prev_y)}")
            pts.append(f"{f1(x)},{f1(y)}")
            last_col = col
        prev_y = y
    if prev_y is not None:
        pts.append(f"{f1(right)},{f1(prev_y)}")
    return " ".join(pts)


def draw(conn: TcpConn, d: int, uid: str) -> str:
    """The graph of the data direction ``d`` (0: client to server)."""
    me, peer = conn.dirs[d], conn.dirs[1 - d]
    top = max([*me.seg_e, *peer.ack_a[-1:], 1])
    win_top = max(peer.ack_w, default=0)
    y1 = max(top, min(win_top, top * 1.25)) * 1.04
    height = HEIGHT if me.bytes > 8192 else SMALL_HEIGHT  # a request or a reply: less room
    ax = _Axes(conn.first, conn.last, 0, y1, height)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="tsg" id="{uid}" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="time-sequence graph">',
           f'<clipPath id="{uid}-c"><rect x="{L}" y="{T}" width="{ax.pw}" height="{ax.ph}"/>'
           "</clipPath>"]
    out += ax.frame("sequence number (bytes, relative)")
    out.append(f'<g clip-path="url(#{uid}-c)">')
    right = L + ax.pw
    if len(peer.ack_t):
        xs = [ax.x(t) for t in peer.ack_t]
        out.append(f'<polyline class="win" points="{_step(xs, [ax.y(min(w, y1)) for w in peer.ack_w], right)}"/>')  # noqa: E501
        out.append(f'<polyline class="ackl" points="{_step(xs, [ax.y(a) for a in peer.ack_a], right)}"/>')  # noqa: E501
    out += _sacks(peer.sacks, ax)
    out += _segments(me, ax)
    out.append("</g>")
    out += _legend(me, peer)
    out.append("</svg>")
    return "\n".join(out)


def _sacks(sacks: list[tuple[int, int, int]], ax: _Axes) -> list[str]:
    if not sacks:
        return []
    step = max(1, len(sacks) // 3000)
    d = " ".join(f"M{f1(ax.x(t))} {f1(ax.y(s))}V{f1(ax.y(e))}" for t, s, e in sacks[::step])
    return [f'<path class="sack" d="{d}"/>']


def _segments(me: Direction, ax: _Axes) -> list[str]:
    n = len(me.seg_t)
    plain: list[str] = []
    special: dict[str, list[str]] = {"re": [], "ooo": [], "drop": []}
    marks: list[str] = []
    rmarks: list[str] = []
    cols: dict[int, list[float]] = {}
    ticks_too = n <= 400
    for i in range(n):
        k = me.seg_k[i]
        x = ax.x(me.seg_t[i])
        ys, ye = ax.y(me.seg_s[i]), ax.y(me.seg_e[i])
        if k & (RETRANS | OOO | DROPPED):
            bucket = special["drop" if k & DROPPED else "re" if k & RETRANS else "ooo"]
            if len(bucket) < 4000:
                bucket.append(f"M{f1(x)} {f1(ys)}V{f1(ye)}")
                if k & DROPPED:
                    marks.append(f"M{f1(x - 4)} {f1(ye - 4)}l8 8m0 -8l-8 8")
                elif k & RETRANS:
                    rmarks.append(f"M{f1(x)} {f1(ye - 5)}l4 5l-4 5l-4 -5z")
            continue
        if n <= _EACH:
            tick = "m-2.5 0h5m-2.5 0" if ticks_too else ""
            plain.append(f"M{f1(x)} {f1(ys)}{tick}V{f1(ye)}{tick}")
        else:
            col = int(x)
            c = cols.get(col)
            if c is None:
                cols[col] = [x, ys, ye]
            else:
                c[1], c[2] = max(c[1], ys), min(c[2], ye)
    plain += [f"M{f1(x)} {f1(ys)}V{f1(ye)}" for x, ys, ye in cols.values()]
    out = []
    if plain:
        out.append(f'<path class="seg" d="{" ".join(plain)}"/>')
    for cls, items in special.items():
        if items:
            out.append(f'<path class="seg-{cls}" d="{" ".join(items)}"/>')
    if marks:
        out.append(f'<path class="x" d="{" ".join(marks)}"/>')
    if rmarks:
        out.append(f'<path class="re-m" d="{" ".join(rmarks)}"/>')
    return out


def _legend(me: Direction, peer: Direction) -> list[str]:
    kinds = set(me.seg_k)
    items = [("seg", "data sent")]
    if any(k & RETRANS for k in kinds):
        items.append(("seg-re", "retransmission"))
    if any(k & DROPPED for k in kinds):
        items.append(("seg-drop", "dropped by netem"))
    if any(k & OOO for k in kinds):
        items.append(("seg-ooo", "out of order"))
    if len(peer.ack_t):
        items += [("ackl", "ACK"), ("win", "receive window")]
    if peer.sacks:
        items.append(("sack", "SACK blocks"))
    return _legend_box(items, L + 10, T + 8)


def _legend_box(items: list[tuple[str, str]], x: float, y: float) -> list[str]:
    w = max(7 * len(text) for _, text in items) + 44
    out = [f'<rect class="lgbox" x="{x}" y="{y}" width="{w}" height="{len(items) * 16 + 8}" '
           f'rx="4"/>']
    for i, (cls, text) in enumerate(items):
        yy = y + 14 + i * 16
        out.append(f'<path class="{cls}" d="M{x + 8} {yy - 4}h22"/>'
                   f'<text class="lg" x="{x + 36}" y="{yy}">{esc(text)}</text>')
    return out


def draw_cc(conn: TcpConn, d: int, uid: str) -> str | None:
    """cwnd, ssthresh and smoothed RTT of the sender of direction ``d``, or
    None without samples (a plain pcap)."""
    samples: list[Sample] = conn.samples[d]
    if not samples:
        return None
    cw = [s[1] for s in samples]
    sst = [s[2] for s in samples]
    rtt_ms = [s[3] / 1e6 for s in samples]
    finite = [v for v in sst if v < INFINITE_SSTHRESH]
    ymax = max([*cw, *finite, 2]) * 1.1
    ax = _Axes(conn.first, conn.last, 0, ymax, CC_HEIGHT)
    rmax = max([*rtt_ms, 0.001]) * 1.1
    xs = [ax.x(s[0]) for s in samples]
    right = L + ax.pw
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="cc" id="{uid}" width="{WIDTH}" '
           f'height="{CC_HEIGHT}" viewBox="0 0 {WIDTH} {CC_HEIGHT}" role="img" '
           f'aria-label="congestion window and RTT">']
    out += ax.frame("segments", "plain")
    for v in ticks(0, rmax, 4):
        y = T + ax.ph - v * ax.ph / rmax
        out.append(f'<text class="axis rtt-t" x="{L + ax.pw + 6}" y="{f1(y + 4)}">'
                   f"{tick_label(v)}</text>")
    out.append(f'<text class="axis rtt-t" transform="translate({WIDTH - 12} {T + ax.ph / 2}) '
               f'rotate(90)" text-anchor="middle">smoothed RTT (ms)</text>')
    timed = [(x, T + ax.ph - v * ax.ph / rmax) for x, v in zip(xs, rtt_ms, strict=True) if v]
    if timed:
        out.append(f'<polyline class="rtt" points="{_step([p[0] for p in timed], [p[1] for p in timed], right)}"/>')  # noqa: E501
    out.append(f'<polyline class="cwnd" points="{_step(xs, [ax.y(v) for v in cw], right)}"/>')
    if finite:
        pts = [(x, v) for x, v in zip(xs, sst, strict=True) if v < INFINITE_SSTHRESH]
        out.append(f'<polyline class="ssth" points="{_step([p[0] for p in pts], [ax.y(p[1]) for p in pts], right)}"/>')  # noqa: E501
    items = [("cwnd", "cwnd")] + ([("ssth", "ssthresh")] if finite else []) + [
        ("rtt", "smoothed RTT")]
    out += _legend_box(items, L + 10, T + 8)
    out.append("</svg>")
    return "\n".join(out)
