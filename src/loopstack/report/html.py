"""The report page: one self-contained HTML file (inline CSS and SVG, no
script, nothing fetched) with the summary, a ladder diagram and
time-sequence graphs per TCP connection, and the socket table at the end."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

from .. import __version__
from . import ladder, tsg
from .model import (
    DROPPED,
    RETRANS,
    Capture,
    Extras,
    TcpConn,
    addr_text,
    analyse,
    endpoint_text,
)
from .style import CSS
from .svg import duration, esc, number

MAX_DRAWN = 24  # connections drawn in full; the rest are rows of the table
MAX_ROWS = 400  # rows of a table before "and N more"


def write_report(pcap: str, page: str, extras: Extras | None = None, *,
                 title: str | None = None) -> str:
    """Read ``pcap``, write the page to ``page`` (a directory means
    ``page/index.html``); return the page's path. NotACapture when the file
    is not a capture."""
    if not page.endswith((".html", ".htm")):
        page = os.path.join(page, "index.html")
    cap = analyse(pcap, os.path.basename(pcap), extras)
    html = render(cap, pcap_path=pcap, title=title)
    os.makedirs(os.path.dirname(os.path.abspath(page)), exist_ok=True)
    tmp = page + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, page)
    return page


def _table(head: Iterable[str], rows: list[list[str]], cls: str = "", more: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        more = f"… and {number(len(rows) - MAX_ROWS)} more{more}"
    out.append("</tbody></table>" + (f'<p class="more">{esc(more)}</p>' if more else ""))
    return "".join(out)


def _card(value: str, what: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><b>{value}</b><span>{esc(what)}</span></div>'


def _retrans(c: TcpConn) -> int:
    return c.kinds.get(RETRANS, 0)


def _drawn(cap: Capture) -> list[TcpConn]:
    """The connections drawn in full: all, or the busiest MAX_DRAWN."""
    if len(cap.tcp) <= MAX_DRAWN:
        return cap.tcp
    busiest = sorted(cap.tcp, key=lambda c: (-(c.packets + 50 * _retrans(c)), c.number))
    return sorted(busiest[:MAX_DRAWN], key=lambda c: c.number)


def render(cap: Capture, *, pcap_path: str = "", title: str | None = None) -> str:
    ex = cap.extras
    drawn = _drawn(cap)
    retrans = sum(_retrans(c) for c in cap.tcp)
    not_drawn = sum(cap.problems.values())
    when = ""
    if cap.t0 is not None and cap.t0 > 10**17:
        when = datetime.datetime.fromtimestamp(cap.t0 / 1e9, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    facts = [esc(cap.name), f"{number(cap.packets)} packets", duration(cap.duration)]
    if when:
        facts.append(when)
    if ex is not None:
        facts.append(f"loopstack run, {ex.clock} clock" + (
            f", seed {ex.seed}" if ex.seed is not None else ""))
        facts += [esc(n) for n in ex.netem]
    heading = esc(title) if title else "What happened on the loopback"
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>loopstack report: {esc(title or cap.name)}</title>",
           f"<style>{CSS}</style></head><body>",
           f'<header><h1>{heading}</h1><p class="sub">{" · ".join(facts)}</p></header>',
           "<main>"]
    cards = [_card(number(cap.packets), "packets"),
             _card(number(len(cap.tcp)), "TCP connections"),
             _card(number(len(cap.udp)), "UDP flows"),
             _card(number(cap.bytes), "IP bytes"),
             _card(duration(cap.duration), "duration"),
             _card(number(retrans), "retransmissions", "bad" if retrans else "")]
    if ex is not None:
        cards.append(_card(number(cap.dropped), "dropped by netem", "bad" if cap.dropped else ""))
    cards.append(_card(number(not_drawn), "packets not drawn", "warn" if not_drawn else ""))
    out.append('<section id="summary"><h2>Summary</h2>'
               f'<div class="cards">{"".join(cards)}</div>')
    out += _summary_tables(cap, drawn)
    out.append("</section>")
    for conn in drawn:
        out.append(_connection(cap, conn))
    if ex is not None and ex.sockets is not None:
        out.append(_sockets(ex))
    out.append("</main><footer>")
    path = os.path.abspath(pcap_path) if pcap_path else cap.name
    out.append(f"capture: <code>{esc(path)}</code> ({esc(cap.notes.format or '?')}) · "
               f"drawn by loopstack {__version__} · this page fetches nothing</footer>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _summary_tables(cap: Capture, drawn: list[TcpConn]) -> list[str]:
    out: list[str] = []
    hosts = sorted(cap.hosts.items(), key=lambda kv: (len(kv[0]), kv[0]))
    out.append("<h3>Hosts and addresses</h3>")
    out.append(_table(["address", "packets sent", "bytes sent", "packets received",
                       "bytes received"],
                      [[f"<code>{esc(addr_text(a))}</code>", *map(number, v)] for a, v in hosts],
                      "num"))
    if cap.tcp:
        shown = {c.number for c in drawn}
        rows = []
        for c in cap.tcp:
            name = f'<a href="#c{c.number}">{c.number}</a>' if c.number in shown else str(c.number)
            rows.append([name, f"<code>{esc(endpoint_text(c.a))}</code>",
                         f"<code>{esc(endpoint_text(c.b))}</code>",
                         f'<span class="st">{esc(c.state())}</span>', number(c.packets),
                         number(c.dirs[0].bytes), number(c.dirs[1].bytes),
                         duration(c.last - c.first),
                         _bad(_retrans(c)), _bad(c.kinds.get(DROPPED, 0))])
        extra = "" if len(drawn) == len(cap.tcp) else (
            f" (the {len(drawn)} busiest are drawn below)")
        out.append(f"<h3>TCP connections{esc(extra)}</h3>")
        out.append(_table(["#", "client", "server", "state", "packets", "bytes →",
                           "bytes ←", "duration", "retrans.", "dropped"], rows, "num conns"))
    if cap.udp:
        rows = [[f"<code>{esc(endpoint_text(f.a))}</code>",
                 f"<code>{esc(endpoint_text(f.b))}</code>", number(f.packets[0]),
                 number(f.bytes[0]), number(f.packets[1]), number(f.bytes[1]),
                 duration(f.last - f.first)] for f in cap.udp.values()]
        out.append("<h3>UDP flows</h3>")
        out.append(_table(["from", "to", "packets →", "bytes →", "packets ←", "bytes ←",
                           "duration"], rows, "num"))
    if cap.other:
        out.append("<h3>Other packets</h3>")
        out.append(_table(["what", "packets"], [[esc(k), number(v)] for k, v in
                                                cap.other.most_common()], "num"))
    problems = [[esc(k), number(v)] for k, v in cap.problems.most_common()]
    notes = cap.notes
    if notes.why_stopped:
        problems.append([esc(f"reading stopped: {notes.why_stopped}"),
                         f"{number(notes.trailing_bytes)} bytes"])
    if notes.skipped_blocks:
        problems.append(["pcapng blocks without packets we read", number(notes.skipped_blocks)])
    if problems:
        out.append('<h3 id="problems">Not drawn</h3>')
        out.append(_table(["why", "how many"], problems, "num warn"))
    ex = cap.extras
    if ex is not None and ex.counters:
        out.append("<h3>Counters that moved <small>(nstat)</small></h3><div class=\"counters\">")
        for group, values in ex.counters.items():
            cells = "".join(f"<tr><td>{esc(group + k)}</td><td>{v:+,}</td></tr>"
                            for k, v in values.items())
            out.append(f"<table class=\"num\"><tbody>{cells}</tbody></table>")
        out.append("</div>")
    return out


def _bad(n: int) -> str:
    return f'<span class="bad">{number(n)}</span>' if n else "0"


def _connection(cap: Capture, c: TcpConn) -> str:
    uid = f"c{c.number}"
    a, b = c.dirs
    facts = [f"{number(c.packets)} packets"
             + (f" ({number(c.folded)} folded)" if c.folded > 0 else ""),
             f"{number(a.bytes)} bytes →", f"{number(b.bytes)} bytes ←",
             duration(c.last - c.first), f"{number(_retrans(c))} retransmissions"]
    if cap.extras is not None:
        facts.append(f"{number(c.kinds.get(DROPPED, 0))} dropped by netem")
    if c.hs_rtt:
        facts.append(f"handshake RTT {duration(c.hs_rtt)}")
    if a.mss or b.mss:
        facts.append(f"mss {a.mss or '?'}/{b.mss or '?'}")
    if a.wscale >= 0 and b.wscale >= 0:
        facts.append(f"wscale {a.wscale}/{b.wscale}")
    out = [f'<section class="conn" id="{uid}" data-packets="{c.packets}" '
           f'data-drawn="{len(c.head) + len(c.tail)}" data-retrans="{_retrans(c)}" '
           f'data-dropped="{c.kinds.get(DROPPED, 0)}">',
           f"<h2>Connection {c.number}: <code>{esc(endpoint_text(c.a))}</code> → "
           f'<code>{esc(endpoint_text(c.b))}</code> <span class="st">{esc(c.state())}</span></h2>',
           f'<p class="facts">{" · ".join(facts)}</p>']
    for d, (src, dst) in enumerate(((c.a, c.b), (c.b, c.a))):
        if not c.dirs[d].bytes:
            continue  # no data this way: nothing to graph
        out.append(f"<h3>Time-sequence graph: data <code>{esc(endpoint_text(src))}</code> → "
                   f"<code>{esc(endpoint_text(dst))}</code></h3>")
        out.append(f'<div class="fig">{tsg.draw(c, d, f"{uid}-t{d}")}</div>')
        cc = tsg.draw_cc(c, d, f"{uid}-cc{d}")
        if cc is not None:
            out.append(f'<p class="cap">The sender\'s congestion window, slow-start threshold '
                       f"and smoothed RTT, sampled by loopstack at each packet.</p>"
                       f'<div class="fig">{cc}</div>')
        elif cap.extras is None:
            out.append('<p class="cap">cwnd, ssthresh and smoothed RTT are drawn for a '
                       "loopstack run (<code>loopstack run --report</code>); a capture file "
                       "does not carry them.</p>")
    out += ["<h3>Ladder diagram</h3>", _LADDER_LEGEND,
            f'<div class="fig">{ladder.draw(c, uid + "-l")}</div>', "</section>"]
    return "\n".join(out)


_LADDER_LEGEND = (
    '<p class="legend"><span class="k d0">client → server</span>'
    '<span class="k d1">server → client</span><span class="k re">retransmission</span>'
    '<span class="k drop">dropped by netem (never arrived)</span>'
    '<span class="k dup">duplicate</span><span class="k ooo">out of order</span>'
    '<span class="note">hover an arrow for the whole packet</span></p>')


def _sockets(ex: Extras) -> str:
    rows = []
    for r in ex.sockets or []:
        local, peer = r.get("local"), r.get("peer")
        rows.append([esc(r.get("proto", "")), esc(r.get("state", "")), number(r.get("recv_q", 0)),
                     number(r.get("send_q", 0)), f"<code>{esc(_ep(local))}</code>",
                     f"<code>{esc(_ep(peer))}</code>"])
    body = _table(["Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port",
                   "Peer Address:Port"], rows, "num") if rows else "<p>No sockets were open.</p>"
    return f'<section id="sockets"><h2>Sockets at the end <small>(ss -tuan)</small></h2>{body}' \
           "</section>"


def _ep(a: object) -> str:
    if not isinstance(a, (tuple, list)) or len(a) < 2:
        return "*:*"
    host, port = str(a[0]), a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
