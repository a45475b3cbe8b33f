"""Counters, named as Linux names them in /proc/net/snmp, /proc/net/snmp6,
/proc/net/netstat and /proc/net/stat/rt_cache.

A group is a plain dict of int (increments are the cheapest thing Python
does). `nstat` prints these flat as group+name (IpInReceives); the stack
returns them nested: ``stats()["Ip"]["InReceives"]``.
"""

from __future__ import annotations

MIB_NAMES: dict[str, tuple[str, ...]] = {
    "Ip": (
        "Forwarding", "DefaultTTL", "InReceives", "InHdrErrors", "InAddrErrors",
        "ForwDatagrams", "InUnknownProtos", "InDiscards", "InDelivers", "OutRequests",
        "OutDiscards", "OutNoRoutes", "ReasmTimeout", "ReasmReqds", "ReasmOKs", "ReasmFails",
        "FragOKs", "FragFails", "FragCreates", "OutTransmits",
    ),
    "IpExt": (
        "InNoRoutes", "InTruncatedPkts", "InMcastPkts", "OutMcastPkts", "InBcastPkts",
        "OutBcastPkts", "InOctets", "OutOctets", "InCsumErrors",
    ),
    "Icmp": (
        "InMsgs", "InErrors", "InCsumErrors", "InDestUnreachs", "InTimeExcds", "InParmProbs",
        "InSrcQuenchs", "InRedirects", "InEchos", "InEchoReps", "InTimestamps",
        "InTimestampReps", "OutMsgs", "OutErrors", "OutRateLimitGlobal", "OutRateLimitHost",
        "OutDestUnreachs", "OutTimeExcds", "OutParmProbs", "OutEchos", "OutEchoReps",
    ),
    "IcmpMsg": (),  # InTypeN / OutTypeN, created as they occur (as Linux shows them)
    "Ip6": (
        "InReceives", "InHdrErrors", "InTooBigErrors", "InNoRoutes", "InAddrErrors",
        "InUnknownProtos", "InTruncatedPkts", "InDiscards", "InDelivers", "OutForwDatagrams",
        "OutRequests", "OutDiscards", "OutNoRoutes", "ReasmTimeout", "ReasmReqds", "ReasmOKs",
        "ReasmFails", "FragOKs", "FragFails", "FragCreates", "InMcastPkts", "OutMcastPkts",
        "InOctets", "OutOctets", "OutTransmits",
    ),
    "Icmp6": (
        "InMsgs", "InErrors", "OutMsgs", "OutErrors", "InCsumErrors", "OutRateLimitHost",
        "InDestUnreachs", "InPktTooBigs", "InTimeExcds", "InParmProblems", "InEchos",
        "InEchoReplies", "OutDestUnreachs", "OutPktTooBigs", "OutTimeExcds",
        "OutParmProblems", "OutEchos", "OutEchoReplies",
    ),
    "Udp": (
        "InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors", "SndbufErrors",
        "InCsumErrors", "IgnoredMulti", "MemErrors",
    ),
    "Udp6": (
        "InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors", "SndbufErrors",
        "InCsumErrors", "IgnoredMulti", "MemErrors",
    ),
    "Tcp": (
        "RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens",
        "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs",
        "InErrs", "OutRsts", "InCsumErrors",
    ),
    "TcpExt": (
        "SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "PAWSEstab", "DelayedACKs",
        "DelayedACKLost", "ListenOverflows", "ListenDrops", "TCPTimeouts", "TCPFastRetrans",
        "TCPSackRecovery", "TCPRenoRecovery", "TCPChallengeACK", "TCPAbortOnData",
        "TCPAbortOnClose", "TCPAbortOnLinger", "TCPAbortOnTimeout", "TCPWinProbe",
        "TCPOFOQueue", "TCPOFODrop", "TCPRcvQDrop", "TCPACKSkippedSeq", "TCPACKSkippedPAWS",
        "TCPACKSkippedChallenge", "OutOfWindowIcmps", "TCPTimeWaitOverflow",
        "TCPAbortOnMemory",
    ),
    "RtCache": ("in_martian_src", "in_martian_dst"),
}


class Mib:
    """All counter groups of one stack."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, int]] = {
            g: dict.fromkeys(names, 0) for g, names in MIB_NAMES.items()
        }
        self.groups["Ip"]["Forwarding"] = 2  # 2 = not forwarding (ip_forward = 0)
        self.groups["Ip"]["DefaultTTL"] = 64

    def group(self, name: str) -> dict[str, int]:
        return self.groups.setdefault(name, {})

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {g: dict(c) for g, c in self.groups.items()}
