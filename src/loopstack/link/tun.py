"""A real Linux TUN device: the kernel on one side, the stack on the other.

Linux's order of operations (Documentation/networking/tuntap.rst):

1. open `/dev/net/tun`; the descriptor belongs to the network namespace of
   the thread that opens it, and so will the device;
2. ioctl TUNSETIFF with IFF_TUN | IFF_NO_PI creates the device: each read
   returns one IP packet the kernel routed to it, each write hands the kernel
   one IP packet as received on it (no Ethernet header, so no ARP or NDP);
   IFF_TUN_EXCL refuses a name that is taken (EBUSY);
3. rtnetlink sets the MTU and brings the device up (RTM_NEWLINK) and gives
   the kernel's side its addresses (RTM_NEWADDR, IPv6 with IFA_F_NODAD);
4. closing the descriptor removes the device.

With ``netns`` a helper thread enters the namespace (setns) for steps 1 to
3, so the device is born there and no move is needed. The kernel's side does
no checksum offload to us (TUNSETOFFLOAD is never called), so every packet is
complete; the stack computes checksums on the way out and verifies them on
the way in because this is not a loopback.

One reader thread per device sleeps in poll() on the device and a wake-up
pipe; when the device is readable it reads every packet waiting, then hands
them to the stack under its lock. Writes happen in the caller's thread (the
stack transmits with its lock held). ``close()`` wakes the reader, waits for
it, and closes the descriptor with the stack lock held, so no write can meet
a closed (or reused) descriptor.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable

from .interface import Interface

TUN_PATH = "/dev/net/tun"
NETNS_DIR = "/run/netns"  # where `ip netns add NAME` puts the namespace's handle

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_TUN_EXCL = 0x8000
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, the union's rest

CLONE_NEWNET = 0x40000000

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_NEWADDR = 20
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFF_UP = 0x1
RT_SCOPE_UNIVERSE = 0
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change mask
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type

MIN_MTU = 68  # IPv4's minimum (RFC 791); IPv6 needs 1280 and Linux turns it off below
MAX_MTU = 65535  # the TUN driver's limit
_READ_SIZE = 65536
_BATCH = 64  # packets read before taking the stack lock to deliver them
_JOIN = 5.0  # seconds close() waits for the reader (it stops at once)


def _rtattr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


class _Rtnl:
    """A route netlink socket in the namespace of the thread that opened it
    (a socket stays in the namespace it was made in)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its acknowledgement; an error the
        kernel returns becomes OSError with its errno."""
        self._seq += 1
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK,
                             self._seq, 0) + body
        self._sock.settimeout(_JOIN)
        self._sock.send(msg)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if mtype == NLMSG_ERROR and seq == self._seq:
                    code = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                offset += max(length + (-length % 4), _NLMSGHDR.size)

    def set_link(self, index: int, *, up: bool, mtu: int) -> None:
        """`ip link set dev X mtu MTU up`."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP)
        self.request(RTM_NEWLINK, 0, body + _rtattr(IFLA_MTU, struct.pack("=I", mtu)))

    def add_address(self, index: int, prefix: str) -> None:
        """`ip addr add PREFIX dev X` (IPv6: `nodad`, usable at once)."""
        iface = ipaddress.ip_interface(prefix)
        v6 = iface.version == 6
        family = socket.AF_INET6 if v6 else socket.AF_INET
        packed = iface.ip.packed
        body = _IFADDRMSG.pack(family, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _rtattr(IFA_LOCAL, packed) + _rtattr(IFA_ADDRESS, packed)
        if v6:
            body += _rtattr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def close(self) -> None:
        self._sock.close()


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    setns: Callable[[int, int], None] | None = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def netns_path(netns: str) -> str:
    """The handle of a namespace: a name `ip netns` made, or a path such as
    /proc/PID/ns/net."""
    if netns.startswith("/"):
        return netns
    if not netns or "/" in netns or netns in (".", ".."):
        raise ValueError(f"bad network namespace name {netns!r}: give a name from "
                         "`ip netns list`, or a path such as /proc/PID/ns/net")
    return os.path.join(NETNS_DIR, netns)


def _where(netns: str | None) -> str:
    return f"network namespace {netns!r}" if netns else "this network namespace"


def _explain(e: OSError, step: str, name: str, netns: str | None) -> OSError:
    """``e`` as an OSError with its errno and one sentence saying what to do."""
    code = e.errno or errno.EIO
    where = _where(netns)
    if step == "open" and code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        text = (f"{TUN_PATH} is missing: load the tun module (modprobe tun) or create the node "
                f"(mkdir -p /dev/net && mknod {TUN_PATH} c 10 200)")
    elif code in (errno.EPERM, errno.EACCES):
        need = "entering a namespace needs CAP_SYS_ADMIN" if step == "netns" else \
            "it needs CAP_NET_ADMIN"
        text = (f"creating TUN device {name!r} in {where} was refused ({need}): run as root, "
                "or give Python the capability")
    elif step == "netns" and code == errno.ENOENT:
        text = (f"there is no network namespace {netns!r}: create it with "
                f"`ip netns add {netns}`, or leave netns out")
    elif step == "netns":
        text = (f"cannot enter network namespace {netns!r} ({os.strerror(code)}): give a "
                "name from `ip netns list` or a path such as /proc/PID/ns/net")
    elif step == "create" and code in (errno.EBUSY, errno.EEXIST, errno.EINVAL):
        text = (f"an interface called {name!r} already exists in {where}: choose another name, "
                f"or remove it (`ip link del {name}`)")
    elif step == "address" and code == errno.EEXIST:
        text = (f"the kernel's side of {name!r} already has that address in {where}: give "
                "each address once")
    elif step == "address" and code == errno.EACCES:
        text = f"the kernel refused an IPv6 address on {name!r}: enable IPv6 in {where}"
    else:
        text = (f"setting up TUN device {name!r} in {where} failed at {step} "
                f"({os.strerror(code)}): check `ip link` there and try again")
    return OSError(code, text)


def _create(name: str, mtu: int, peers: list[str], netns: str | None) -> tuple[int, int]:
    """Steps 1 to 3 in the calling thread: returns (descriptor, ifindex)."""
    step = "netns"
    fd = -1
    try:
        if netns is not None:
            nsfd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(nsfd)
            finally:
                os.close(nsfd)
        step = "open"
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        step = "create"
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL))
        step = "link"
        index = socket.if_nametoindex(name)
        rtnl = _Rtnl()
        try:
            rtnl.set_link(index, up=True, mtu=mtu)
            step = "address"
            for prefix in peers:
                rtnl.add_address(index, prefix)
        finally:
            rtnl.close()
        return fd, index
    except OSError as e:
        if fd >= 0:
            os.close(fd)  # removes the device again
        raise _explain(e, step, name, netns) from None


def create_device(name: str, mtu: int, peers: list[str], netns: str | None) -> tuple[int, int]:
    """Create and configure the device, inside ``netns`` when given (a
    helper thread enters it, so this thread's namespace never changes)."""
    if netns is None:
        return _create(name, mtu, peers, None)
    result: list[tuple[int, int]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_create(name, mtu, peers, netns))
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    helper = threading.Thread(target=work, name=f"loopstack tun {name} setup", daemon=True)
    helper.start()
    helper.join()
    if failure:
        raise failure[0]
    return result[0]


def _prefixes(value: str | Iterable[str] | None, what: str) -> list[str]:
    items = [] if value is None else [value] if isinstance(value, str) else list(value)
    for item in items:
        try:
            ipaddress.ip_interface(item)
        except ValueError:
            raise ValueError(f"{what} {item!r} is not an address with a prefix length: give one "
                             "such as 192.0.2.1/24 or 2001:db8::1/64") from None
        if "/" not in item:
            raise ValueError(f"{what} {item!r} has no prefix length: write it as {item}/24 "
                             "or similar")
    return items


class TunInterface(Interface):
    """A TUN device (IFF_TUN | IFF_NO_PI) as an interface of a stack.

    Made by ``Stack.add_tun``; the device exists from construction until
    :meth:`close`. ``peer`` addresses go to the kernel's side."""

    kind = "tun"

    def __init__(self, name: str, *, peer: str | Iterable[str] | None = None,
                 netns: str | None = None, mtu: int = 1500) -> None:
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"MTU {mtu} out of range: use {MIN_MTU} to {MAX_MTU}")
        super().__init__(name, mtu)
        self.netns = netns
        self.peer = _prefixes(peer, "peer")
        if netns is not None:
            netns_path(netns)  # a bad name is a ValueError before anything is made
        self._fd, self.ifindex = create_device(name, mtu, self.peer, netns)
        self._io_lock = threading.Lock()  # held to read, to close, and to use the wake pipe
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._reader: threading.Thread | None = None
        self._stopped = threading.Event()  # set when the reader has ended
        self.on_close: Callable[[], None] | None = None  # the stack forgets the device
        self.error: OSError | None = None  # why the reader stopped, if not close()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def start(self) -> None:
        """Start delivering received packets (after the stack attached us)."""
        if self._reader is None and not self._closing:
            self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                            name=f"loopstack tun {self.name}")
            self._reader.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the device stops (closed, or removed from outside);
        True if it has. Ctrl-C interrupts the wait."""
        if self._reader is None:
            return self._closing
        # An Event, not Thread.join: a KeyboardInterrupt inside join() can
        # leave Python 3.11 believing the reader thread has ended.
        return self._stopped.wait(timeout)

    # -- transmit (stack lock held) ------------------------------------------------------
    def _xmit(self, packet: bytes) -> None:
        self._tap_out(packet)
        if self._fd < 0:
            self.stats.tx_dropped += 1
            return
        try:
            os.write(self._fd, packet)
        except (BlockingIOError, InterruptedError):
            self.stats.tx_dropped += 1  # the kernel's input queue is full
        except OSError:
            self.stats.tx_errors += 1  # e.g. the device was removed from outside

    # -- receive (the reader thread) -------------------------------------------------------
    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        batch: list[bytes] = []
        try:
            while True:
                events = poller.poll()
                if self._closing:
                    return
                if any(fd == self._fd and ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                       for fd, ev in events):
                    self._fail(OSError(errno.ENODEV, f"TUN device {self.name!r} was removed"))
                    return
                with self._io_lock:
                    if self._fd < 0:
                        return
                    while len(batch) < _BATCH:
                        try:
                            packet = os.read(self._fd, _READ_SIZE)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as e:
                            self._fail(e)
                            return
                        if not packet:  # end of file: the device is gone
                            self._fail(OSError(errno.ENODEV, f"TUN device {self.name!r} "
                                               "was removed"))
                            return
                        batch.append(packet)
                if batch:
                    self._deliver(batch)
                    batch = []
        finally:
            with self._io_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            self._stopped.set()

    def _deliver(self, batch: list[bytes]) -> None:
        with self._lock:
            for packet in batch:
                if self.up and not self._closing:
                    self._receive(packet, "in")
                else:
                    self.stats.rx_dropped += 1

    def _fail(self, error: OSError) -> None:
        """The device broke under us (removed from outside): stop, count, go down."""
        self.error = error
        with self._lock:
            self.stats.rx_errors += 1
            self.up = False

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reader and remove the device. Idempotent. Call it
        without holding the stack lock (the reader may be waiting for it)."""
        with self._io_lock:
            if self._closing:
                return
            self._closing = True
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            self._stopped.wait(_JOIN)
        if self._lock is not None:
            with self._lock, self._io_lock:
                self._close_fd()
        else:
            with self._io_lock:
                self._close_fd()
        if reader is None:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        if self.on_close is not None:
            self.on_close()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.up = False

    def __repr__(self) -> str:
        where = f" netns {self.netns}" if self.netns else ""
        return f"<TunInterface {self.name} mtu {self.mtu}{where}{' closed' if self.closed else ''}>"
