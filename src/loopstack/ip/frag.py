"""Fragment reassembly for IPv4 (RFC 791 3.2, RFC 815) and IPv6 (RFC 8200
4.5), with a timeout, a memory bound, and overlap handling.

Overlapping fragments discard the whole datagram: RFC 5722 requires it for
IPv6, and Linux does the same for IPv4 since 2018 (FragmentSmack); an exact
duplicate of a fragment already held is dropped alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ..clock import Clock, Timer

IPFRAG_HIGH_THRESH = 4 * 1024 * 1024  # Linux's ipfrag_high_thresh default


@dataclass(slots=True)
class _Queue:
    frags: list[tuple[int, bytes]] = field(default_factory=list)  # sorted by offset
    total: int | None = None  # known once the last fragment arrived
    first: bytes | None = None  # the offset-0 fragment's whole packet
    size: int = 0
    timer: Timer | None = None


class Reassembler:
    """Holds incomplete datagrams by key. ``mib`` is the Ip or Ip6 group."""

    def __init__(
        self,
        clock: Clock,
        timeout_ns: int,
        mib: dict[str, int],
        on_timeout: Callable[[bytes], None] | None = None,
        max_payload: int = 65535,
        high_thresh: int = IPFRAG_HIGH_THRESH,
    ) -> None:
        self._clock = clock
        self._timeout_ns = timeout_ns
        self._mib = mib
        self._on_timeout = on_timeout
        self._max_payload = max_payload
        self.high_thresh = high_thresh
        self._queues: dict[Hashable, _Queue] = {}
        self.mem = 0

    def __len__(self) -> int:
        return len(self._queues)

    def add(
        self, key: Hashable, offset: int, data: bytes, more: bool, packet: bytes
    ) -> tuple[bytes, bytes] | None:
        """Add one fragment. Returns (first fragment's packet, whole payload)
        when the datagram is complete, else None."""
        mib = self._mib
        mib["ReasmReqds"] += 1
        end = offset + len(data)
        if end > self._max_payload or (more and len(data) % 8):
            mib["ReasmFails"] += 1
            return None
        if self.mem + len(data) > self.high_thresh:
            mib["ReasmFails"] += 1  # Linux drops when over ipfrag_high_thresh
            return None
        q = self._queues.get(key)
        if q is None:
            q = _Queue()
            q.timer = self._clock.call_later(self._timeout_ns, lambda: self._expire(key))
            self._queues[key] = q
        if not more:
            beyond = any(o + len(d) > end for o, d in q.frags)
            if beyond or (q.total is not None and q.total != end):
                self._discard(key, q)
                return None
            q.total = end
        elif q.total is not None and end > q.total:
            self._discard(key, q)
            return None
        # Find the insertion point and check both neighbours for overlap.
        frags = q.frags
        i = 0
        while i < len(frags) and frags[i][0] < offset:
            i += 1
        if i < len(frags) and frags[i][0] == offset and len(frags[i][1]) == len(data):
            return None  # exact duplicate
        if (i > 0 and frags[i - 1][0] + len(frags[i - 1][1]) > offset) or (
            i < len(frags) and frags[i][0] < end
        ):
            self._discard(key, q)
            return None
        frags.insert(i, (offset, data))
        q.size += len(data)
        self.mem += len(data)
        if offset == 0:
            q.first = packet
        if q.total is None or q.first is None or q.size != q.total:
            return None
        # No overlaps and the sizes add up, so the fragments tile 0..total.
        self._forget(key, q)
        mib["ReasmOKs"] += 1
        return q.first, b"".join(d for _, d in frags)

    def _forget(self, key: Hashable, q: _Queue) -> None:
        self._queues.pop(key, None)
        self.mem -= q.size
        if q.timer is not None:
            q.timer.cancel()

    def _discard(self, key: Hashable, q: _Queue) -> None:
        self._forget(key, q)
        self._mib["ReasmFails"] += 1

    def _expire(self, key: Hashable) -> None:
        q = self._queues.get(key)
        if q is None:
            return
        self._forget(key, q)
        self._mib["ReasmTimeout"] += 1
        self._mib["ReasmFails"] += 1
        # RFC 792 / RFC 8200 4.5: time exceeded only if the first fragment came.
        if q.first is not None and self._on_timeout is not None:
            self._on_timeout(q.first)

    def clear(self) -> None:
        for key, q in list(self._queues.items()):
            self._forget(key, q)
