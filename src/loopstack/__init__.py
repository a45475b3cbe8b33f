"""loopstack: the loopback network, written in Python.

A user-space TCP/IP stack whose heart is a virtual loopback interface:
127.0.0.0/8 and ::1 through real IPv4/IPv6 and ICMP packets, a routing
table and a loopback device, without touching the host's network.

``with loopstack.patch() as stack:`` routes the standard library's sockets
and name lookups to a stack (the function; its module is
``sys.modules["loopstack.patch"]``).
"""

from .host import attach as _attach
from .patch import patch
from .ping import PingReply, PingResult
from .stack import InterfaceInfo, Stack
from .wire.errors import MalformedPacket

__version__ = "0.1.0"

_attach.install()  # forked children share their parent's stacks

__all__ = ["InterfaceInfo", "MalformedPacket", "PingReply", "PingResult", "Stack", "__version__",
           "patch"]
