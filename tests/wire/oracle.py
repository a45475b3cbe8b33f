"""scapy as the reference dissector: the helpers the wire tests share."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6ExtHdrFragment
from scapy.packet import NoPayload, Packet
from scapy.utils import checksum as scapy_checksum

__all__ = ["a4", "a6", "rebuilt_by_scapy", "scapy_checksum"]


def a4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def rebuilt_by_scapy(pkt: Packet) -> bytes:
    """The bytes of ``pkt`` with every checksum field left for scapy to
    compute. Equal to the original bytes exactly when their checksums are
    valid. The packet quoted in an ICMP error is left as it is, and so is
    what follows a fragment header: a fragment's upper-layer checksum covers
    the reassembled datagram."""
    pkt = pkt.copy()
    layer: Packet = pkt
    while not isinstance(layer, NoPayload) and "error" not in type(layer).__name__:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                delattr(layer, name)
        if isinstance(layer, IP) and (layer.flags.MF or layer.frag):
            break
        if isinstance(layer, IPv6ExtHdrFragment) and (layer.m or layer.offset):
            break
        layer = layer.payload
    return bytes(pkt)
