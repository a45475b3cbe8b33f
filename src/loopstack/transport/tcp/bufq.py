"""The byte queues of a connection: the send queue (every byte from SND.UNA
on) and the receive queue (in-order bytes the application has not read).

A queue is a deque of chunks, not one bytearray: a bytearray that is
appended to after its front was deleted copies itself whole (CPython keeps
the deleted front until it reallocates), which made a bulk transfer with
megabyte buffers copy every queued byte again for every segment. Chunks
are immutable (``bytes``, or a memoryview of ``bytes``) and are kept as
given, never copied: a ``send`` of a ``bytes`` object queues a reference,
a segment is a memoryview of it, and the receiver queues that same view, so
the one copy of the data is into the reader's buffer (Linux's zero-copy
send and skb sharing on lo, in spirit). Anything mutable the caller may
change after the call returns is copied once; small pieces are gathered
into one bytearray tail so a stream of one-byte sends does not become a
deque of one-byte objects (the tail is never lent out as a view: slices of
it are copies).

A segment that straddles two chunks (a 64 KiB ``sendall`` against lo's
MSS of 65483 makes nearly every segment do so once the sender runs ahead,
as Nagle or a full window merge writes) must be gathered into one piece:
the one copy Linux makes of every byte into its skbs. A fresh 64 KiB
object for each made glibc trim its heap and fault the pages back in for
the next (~10 minor faults a 64 KiB, twice the CPU of the whole transfer).
So such segments are gathered into buffers the stack keeps for the
purpose (``SegmentBuffer``, a pool per stack: output passes it to
:meth:`ByteQueue.view`), each reused once nothing else refers to it (the
segment, a receiving queue and every view of them hold a reference;
``sys.getrefcount`` tells when the last is gone: CPython), and a receiving
queue keeps a view of one by reference as it keeps ``bytes``. A pool holds
at most ``POOL_MAX`` buffers, so at most the straddling segments a stack
had in flight at once, and 4 MiB.
"""

from __future__ import annotations

import sys
from collections import deque

Chunk = memoryview | bytearray

# Appends up to this size join the bytearray tail rather than making a chunk.
_SMALL = 2048
# ... while the tail is shorter than this.
_TAIL_MAX = 1 << 16

# The chunks of every queue that has never held a byte: a deque costs about
# 600 bytes and an idle connection has four queues. maxlen 0, so an append
# that forgot to replace it would keep nothing rather than share it.
_NO_CHUNKS: deque[Chunk] = deque(maxlen=0)

# A stack's gather buffers (each 64 KiB, or one segment if larger) at most;
# segments under POOLED_MIN bytes are gathered into plain bytes (a small
# allocation does not make glibc trim and fault its heap).
POOL_MAX = 64
POOLED_MIN = 16384
_BUFFER_SIZE = 65536
_getrefcount = sys.getrefcount


class SegmentBuffer(bytearray):
    """A gather buffer of a stack's pool (see the module's text): written
    only while nothing but the pool refers to it, so a view of it is as
    immutable as a view of ``bytes`` for as long as the view lives."""

    __slots__ = ()


class ByteQueue:
    """A FIFO of bytes with cheap appends at the back, drops at the front,
    and views (or copies) of any range."""

    __slots__ = ("_chunks", "_head", "size", "_ci", "_cstart")

    def __init__(self) -> None:
        self._chunks = _NO_CHUNKS  # made at the first append
        self._head = 0  # bytes of _chunks[0] already dropped
        self.size = 0  # bytes queued (len(q), without a call)
        # A cursor for sequential access (the send loop walks forward): the
        # index of a chunk and the offset of its start from _chunks[0]'s start.
        self._ci = 0
        self._cstart = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size != 0

    def __repr__(self) -> str:
        return f"<ByteQueue {self.size} bytes in {len(self._chunks)} chunks>"

    # -- the back ---------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``: kept by reference when it is immutable (bytes, or a
        view of bytes), else copied."""
        n = len(data)
        if not n:
            return
        chunks = self._chunks
        if chunks is _NO_CHUNKS:
            chunks = self._chunks = deque()
        if n <= _SMALL:
            tail = chunks[-1] if chunks else None
            if type(tail) is bytearray and len(tail) < _TAIL_MAX:
                tail += data
            else:
                chunks.append(bytearray(data))
        elif isinstance(data, memoryview):
            if isinstance(data.obj, (bytes, SegmentBuffer)) and data.c_contiguous:
                chunks.append(data.cast("B") if data.format != "B" else data)
            else:
                chunks.append(memoryview(bytes(data)))
        elif isinstance(data, bytes):
            chunks.append(memoryview(data))
        else:
            chunks.append(memoryview(bytes(data)))
        self.size += n

    # -- the front --------------------------------------------------------------
    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (at most all of them)."""
        if n >= self.size:
            self._chunks.clear()
            self._head = self.size = self._ci = self._cstart = 0
            return
        if n <= 0:
            return
        self.size -= n
        chunks = self._chunks
        head = self._head + n
        popped = 0
        gone = 0
        while head >= len(chunks[0]):
            size = len(chunks[0])
            head -= size
            gone += size
            chunks.popleft()
            popped += 1
        self._head = head
        if popped:
            self._ci -= popped
            self._cstart -= gone
            if self._ci < 0:
                self._ci = self._cstart = 0

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self.size = self._ci = self._cstart = 0

    # -- reading ----------------------------------------------------------------
    def _locate(self, off: int) -> tuple[int, int]:
        """The chunk holding byte ``off`` of the queue and the offset in it."""
        pos = off + self._head
        chunks = self._chunks
        i, start = self._ci, self._cstart
        if pos < start:
            i = start = 0
        size = len(chunks[i])
        while pos - start >= size:
            start += size
            i += 1
            size = len(chunks[i])
        self._ci, self._cstart = i, start
        return i, pos - start

    def _bounds(self, off: int, n: int) -> tuple[int, int]:
        """``off`` and the length of ``q[off : off + n]`` as a bytearray
        slices (negative offsets count from the end, ends are clipped)."""
        if off < 0 or off + n > self.size:
            off, stop, _ = slice(off, off + n).indices(self.size)
            return off, stop - off
        return off, n

    def view(self, off: int, n: int, pool: deque[SegmentBuffer] | None = None
             ) -> memoryview | bytes:
        """``q[off : off + n]``, as a bytearray slices: a view when the bytes
        lie in one immutable chunk, else a copy: into a buffer of ``pool``
        (a stack's: see the module's text) for a big segment."""
        if off < 0 or n <= 0 or off + n > self.size:
            off, n = self._bounds(off, n)
            if n <= 0:
                return b""
        # (_locate, inline: the send loop's every segment comes here)
        pos = off + self._head
        chunks = self._chunks
        i, start = self._ci, self._cstart
        if pos < start:
            i = start = 0
        chunk = chunks[i]
        size = len(chunk)
        while pos - start >= size:
            start += size
            i += 1
            chunk = chunks[i]
            size = len(chunk)
        self._ci, self._cstart = i, start
        at = pos - start
        if at + n <= len(chunk):
            if isinstance(chunk, bytearray):
                return bytes(chunk[at : at + n])
            return chunk[at : at + n]
        if pool is None or n < POOLED_MIN:
            return self._gather(i, at, n)
        return self._gather_pooled(pool, i, at, n)

    def _gather_pooled(self, pool: deque[SegmentBuffer], i: int, at: int,
                       n: int) -> memoryview | bytes:
        """``n`` bytes from chunk ``i`` at ``at`` on, in a buffer of ``pool``:
        its oldest if nothing refers to it any more, else a new one while the
        pool has room (else plain bytes)."""
        buf = None
        if pool:
            oldest = pool[0]
            # (references: the pool, ``oldest``, the call's argument)
            if _getrefcount(oldest) == 3:
                if len(oldest) >= n:
                    pool.rotate(-1)
                    buf = oldest
                else:
                    pool.popleft()  # smaller than this segment: let it go
            del oldest
        if buf is None:
            if len(pool) >= POOL_MAX:
                return self._gather(i, at, n)
            buf = SegmentBuffer(max(n, _BUFFER_SIZE))
            pool.append(buf)
        whole = memoryview(buf)
        chunks = self._chunks
        done = 0
        while done < n:
            chunk = chunks[i]
            take = min(len(chunk) - at, n - done)
            whole[done : done + take] = chunk[at : at + take]
            done += take
            at = 0
            i += 1
        return whole[:n] if n < len(buf) else whole

    def _gather(self, i: int, at: int, n: int) -> bytes:
        parts: list[bytes | bytearray | memoryview] = []
        chunks = self._chunks
        while n > 0:
            chunk = chunks[i]
            take = min(len(chunk) - at, n)
            parts.append(chunk[at : at + take])
            n -= take
            at = 0
            i += 1
        return b"".join(parts)

    def copy(self, off: int, n: int) -> bytes:
        """``q[off : off + n]`` as a new bytes object."""
        off, n = self._bounds(off, n)
        if n <= 0:
            return b""
        i, at = self._locate(off)
        return self._gather(i, at, n)

    def read_into(self, view: memoryview, peek: bool = False) -> int:
        """Copy up to len(view) bytes from the front into ``view`` (one copy)
        and drop them unless ``peek``. Returns the count."""
        n = min(len(view), self.size)
        if n <= 0:
            return 0
        chunks = self._chunks
        at = self._head
        done = 0
        i = 0
        while done < n:
            chunk = chunks[i]
            take = min(len(chunk) - at, n - done)
            if type(chunk) is bytearray:
                with memoryview(chunk) as m:
                    view[done : done + take] = m[at : at + take]
            else:
                view[done : done + take] = chunk[at : at + take]
            done += take
            at = 0
            i += 1
        if not peek:
            self.drop(n)
        return n

    def read(self, n: int, peek: bool = False) -> bytes:
        """Up to ``n`` bytes from the front, dropped unless ``peek``."""
        chunks = self._chunks
        if len(chunks) == 1 and n >= self.size:  # all of it, in one chunk
            data = bytes(chunks[0][self._head :])
            if not peek:
                chunks.clear()  # (clear)
                self._head = self.size = self._ci = self._cstart = 0
            return data
        data = self.copy(0, n)
        if not peek:
            self.drop(len(data))
        return data


__all__ = ["POOL_MAX", "POOLED_MIN", "ByteQueue", "SegmentBuffer"]
