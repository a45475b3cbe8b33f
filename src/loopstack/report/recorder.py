"""What a loopstack stack records for a report while one is requested:
the capture (a pcap), the packets netem drops (which a pcap never shows),
each TCP connection's cwnd, ssthresh, smoothed RTT and MSS sampled at every
packet of that connection, the counters that moved, and the socket table
at the end.

Nothing of this exists until ``Stack.report()`` asks for it: the taps and
the netem observer are installed by :meth:`Recorder.start` and removed by
:meth:`Recorder.stop`, so an unobserved stack pays nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from ..link import netem as _netem
from .model import Extras, Sample, addr_text

if TYPE_CHECKING:
    from ..link.capture import Capture
    from ..link.interface import Interface, TapHandle
    from ..stack import Stack

_TcbKey = tuple[bytes, int, bytes, int]


class Recorder:
    """Records ``stack`` from :meth:`start` to :meth:`stop`; :meth:`write`
    writes the page. ``out`` is a directory (the page is ``out/index.html``)
    or a path ending in ``.html``; the capture goes to ``pcap``, by default
    ``capture.pcap`` beside the page."""

    def __init__(self, stack: Stack, out: str, *, pcap: str | None = None) -> None:
        self.stack = stack
        if out.endswith((".html", ".htm")):
            self.page = out
        else:
            self.page = os.path.join(out, "index.html")
        folder = os.path.dirname(self.page) or "."
        self.pcap = pcap if pcap is not None else os.path.join(folder, "capture.pcap")
        self.capture: Capture | None = None
        self._taps: list[TapHandle] = []
        # Dropped packets: (ts, packet, captured packets before it). Where a
        # drop goes among the captured packets is known once the packets its
        # netem accepted before it have left the qdisc (FIFO): until then it
        # waits in _pending, per netem, with that count.
        self._drops: list[tuple[int, bytes, int]] = []
        self._pending: dict[int, list[tuple[int, int, bytes]]] = {}
        self._through: dict[int, int] = {}  # id(netem) -> its packets seen leaving
        self._samples: dict[_TcbKey, list[Sample]] = {}
        self._last: dict[_TcbKey, tuple[int, int, int, int]] = {}
        self._before: dict[str, dict[str, int]] = {}
        self._after: dict[str, dict[str, int]] | None = None
        self._sockets: list[dict[str, object]] | None = None
        self._netem: list[str] = []
        self._frozen = False

    # -- recording ---------------------------------------------------------------
    def start(self) -> Recorder:
        stack = self.stack
        for path in (self.page, self.pcap):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with stack.lock:
            self._before = stack.stats()
            self.capture = stack.capture(self.pcap)
            self._taps = [iface.tap(self._tap(iface)) for iface in stack._interfaces.values()]
            for iface in stack._interfaces.values():
                for q in [iface.qdisc, *(r.netem for r in iface.rules)]:
                    if q is not None:
                        self._netem_seen(q)
            _netem.drop_observers.append(self._dropped)
            self._netem = self._impairments()
        return self

    def _impairments(self) -> list[str]:
        out = []
        for iface in self.stack._interfaces.values():
            if iface.qdisc is not None:
                out.append(f"{iface.name}: netem {iface.qdisc.spec}")
            for rule in iface.rules:
                what = f"netem {rule.netem.spec}" if rule.netem is not None else "partitioned"
                out.append(f"{iface.name}: {rule.src} → {rule.dst}: {what}")
        return list(dict.fromkeys(out))

    def _netem_seen(self, q: _netem.Netem) -> None:
        """Start counting what ``q`` lets through: what it accepted less what
        it still holds has left already."""
        if id(q) not in self._through:
            self._through[id(q)] = q.stats.sent_packets - len(q._waiting)

    def _tap(self, iface: Interface) -> Callable[[bytes, str], None]:
        def tap(packet: bytes, direction: str) -> None:
            if self._through:  # some netem is known: count what leaves it
                q = iface.qdisc
                for rule in iface.rules:
                    if rule.matches(packet):
                        q = rule.netem
                        break
                if q is not None and id(q) in self._through:
                    self._left(q)
            self._sample(packet)

        return tap

    def _left(self, q: _netem.Netem) -> None:
        """A packet left netem ``q`` and was captured: place the drops that
        came after it."""
        key = id(q)
        n = self._through[key] = self._through[key] + 1
        pending = self._pending.get(key)
        while pending and pending[0][0] <= n:
            _, ts, pkt = pending.pop(0)
            self._drops.append((ts, pkt, self._captured()))
        if not pending:
            self._pending.pop(key, None)

    def _captured(self) -> int:
        return self.capture.packets if self.capture is not None else 0

    def _sample(self, packet: bytes) -> None:
        """A packet crosses an interface (stack lock held): note the TCP
        state of the connection at each end, when it changed."""
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            if len(packet) < 24 or packet[9] != 6 or packet[6] & 0x1F or packet[7]:
                return
            off = (packet[0] & 15) * 4
            src, dst = packet[12:16], packet[16:20]
        elif version == 6:
            if len(packet) < 44 or packet[6] != 6:
                return
            off, src, dst = 40, packet[8:24], packet[24:40]
        else:
            return
        sport = int.from_bytes(packet[off : off + 2], "big")
        dport = int.from_bytes(packet[off + 2 : off + 4], "big")
        conns = self.stack.tcp.conns
        now = 0
        for key in ((src, sport, dst, dport), (dst, dport, src, sport)):
            tcb = conns.get(key)
            if tcb is None:
                continue
            cc = tcb.cc
            state = (cc.cwnd, cc.ssthresh, tcb.srtt, tcb.mss)
            if self._last.get(key) != state:
                self._last[key] = state
                now = now or self.stack.wall_ns()
                self._samples.setdefault(key, []).append((now, *state))

    def _dropped(self, netem: _netem.Netem, packet: bytes) -> None:
        """netem dropped ``packet`` (stack lock held). It is stamped when it
        would have left the qdisc, among the packets sent with it."""
        for iface in self.stack._interfaces.values():
            if iface.qdisc is netem or any(r.netem is netem for r in iface.rules):
                break
        else:
            return  # another stack's netem
        self._netem_seen(netem)
        ts = self.stack.wall_ns() + netem.spec.delay_ns  # when it would have been seen
        before = netem.stats.sent_packets  # copies it accepted before this one
        if self._through[id(netem)] >= before:
            self._drops.append((ts, bytes(packet[:192]), self._captured()))
        else:
            self._pending.setdefault(id(netem), []).append((before, ts, bytes(packet[:192])))

    def stop(self) -> None:
        """Stop recording (idempotent); :meth:`write` still works after."""
        if self.capture is None:
            return
        with self.stack.lock:
            self._snapshot()
            for tap in self._taps:
                tap.remove()
            self._taps = []
            for waiting in self._pending.values():  # never placed: at the end
                self._drops += [(ts, pkt, self._captured()) for _, ts, pkt in waiting]
            self._pending.clear()
            if self._dropped in _netem.drop_observers:
                _netem.drop_observers.remove(self._dropped)
            self.capture.stop()

    def freeze(self) -> None:
        """Take the socket table and the counters now, and keep them: the
        page shows the stack as it was at this moment (a test's failure)."""
        with self.stack.lock:
            self._snapshot()
        self._frozen = True

    def _snapshot(self) -> None:
        stack = self.stack
        if stack._closed or self._frozen:
            return
        self._after = stack.stats()
        self._sockets = stack.sockets()
        for spec in self._impairments():
            if spec not in self._netem:
                self._netem.append(spec)

    def extras(self) -> Extras:
        """What the run knows beyond the pcap."""
        after = self._after or {}
        moved: dict[str, dict[str, int]] = {}
        for group, values in after.items():
            base = self._before.get(group, {})
            delta = {k: v - base.get(k, 0) for k, v in values.items() if v != base.get(k, 0)}
            if delta:
                moved[group] = delta
        samples = {(addr_text(k[0]), k[1], addr_text(k[2]), k[3]): v
                   for k, v in self._samples.items()}
        clock = "virtual" if self.stack.clock.is_virtual else "real"
        return Extras(drops=list(self._drops), samples=samples,
                      sockets=list(self._sockets or []), counters=moved,
                      netem=list(self._netem), clock=clock, seed=self.stack.seed)

    def write(self, title: str | None = None) -> str:
        """Write the page now (recording goes on if it was on); returns its path."""
        from .html import write_report

        if self.capture is not None and self._taps:
            with self.stack.lock:
                self._snapshot()
                self.capture.flush()
        return write_report(self.pcap, self.page, self.extras(), title=title)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.write()
