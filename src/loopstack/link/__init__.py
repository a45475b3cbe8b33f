"""Devices: the loopback, the pipe NIC that tests drive, netem, capture taps."""

from .interface import Interface, InterfaceStats, TapHandle
from .loopback import Loopback
from .pipe import PipeInterface

__all__ = ["Interface", "InterfaceStats", "Loopback", "PipeInterface", "TapHandle"]
