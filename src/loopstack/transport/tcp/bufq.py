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
"""

from __future__ import annotations

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
            if isinstance(data.obj, bytes) and data.c_contiguous:
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

    def view(self, off: int, n: int) -> memoryview | bytes:
        """``q[off : off + n]``, as a bytearray slices: a view when the bytes
        lie in one immutable chunk, else a copy."""
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
        return self._gather(i, at, n)

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


__all__ = ["ByteQueue"]
