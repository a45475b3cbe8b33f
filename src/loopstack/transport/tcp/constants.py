"""TCP constants: states with Linux's numbers (as tcp_info and ss show
them) and the timing and sizing defaults of include/net/tcp.h."""

from __future__ import annotations

from enum import IntEnum

from ...clock import NS_PER_SEC

MS = NS_PER_SEC // 1000


class State(IntEnum):
    """RFC 9293 3.3.2 states, numbered as Linux's TCP_* (include/net/tcp_states.h)."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSED = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11

    @property
    def ss_name(self) -> str:
        """The name `ss` prints."""
        return _SS_NAMES[self]


_SS_NAMES = {
    State.ESTABLISHED: "ESTAB", State.SYN_SENT: "SYN-SENT", State.SYN_RECV: "SYN-RECV",
    State.FIN_WAIT1: "FIN-WAIT-1", State.FIN_WAIT2: "FIN-WAIT-2", State.TIME_WAIT: "TIME-WAIT",
    State.CLOSED: "UNCONN", State.CLOSE_WAIT: "CLOSE-WAIT", State.LAST_ACK: "LAST-ACK",
    State.LISTEN: "LISTEN", State.CLOSING: "CLOSING",
}

SYNCHRONIZED = frozenset({
    State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2, State.CLOSE_WAIT, State.CLOSING,
    State.LAST_ACK, State.TIME_WAIT,
})
CAN_RECEIVE_DATA = frozenset({State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2})
CAN_SEND_DATA = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})

TIMEWAIT_LEN = 60 * NS_PER_SEC  # TCP_TIMEWAIT_LEN
FIN_TIMEOUT = 60 * NS_PER_SEC  # tcp_fin_timeout
TIMEOUT_INIT = 1 * NS_PER_SEC  # RFC 6298 2.1
TIMEOUT_FALLBACK = 3 * NS_PER_SEC  # RFC 6298 5.7: after a SYN or SYN-ACK was resent
RTO_MIN = 200 * MS  # TCP_RTO_MIN
RTO_MAX = 120 * NS_PER_SEC  # TCP_RTO_MAX
DELACK_MIN = 40 * MS  # TCP_DELACK_MIN / TCP_ATO_MIN
DELACK_MAX = 200 * MS
MAX_QUICKACKS = 16
SYN_RETRIES = 6
SYNACK_RETRIES = 5
SYN_LINEAR_TIMEOUTS = 4  # tcp_syn_linear_timeouts
# TCP_TIMEOUT_MIN (2 jiffies; HZ = 250): how soon Linux resends a SYN after an
# unacceptable ACK in SYN-SENT (observed about 10 ms on the reference machine).
SYN_SENT_RETRY = 8 * MS
RETRIES2 = 15
KEEPALIVE_TIME = 7200 * NS_PER_SEC
KEEPALIVE_INTVL = 75 * NS_PER_SEC
KEEPALIVE_PROBES = 9
FASTRETRANS_THRESH = 3
MAX_WINDOW = 65535  # unscaled
MAX_WSCALE = 14
MIN_SND_MSS = 48
DEFAULT_MSS = 536  # RFC 9293 3.7.1: without the option
INIT_CWND = 10  # RFC 6928
SOMAXCONN = 4096
MAX_SYN_BACKLOG = 4096  # tcp_max_syn_backlog, scaled with memory
RMEM_DEFAULT = 131072  # tcp_rmem[1]
RMEM_MAX = 6291456  # tcp_rmem[2]
WMEM_DEFAULT = 16384  # tcp_wmem[1]
WMEM_MAX = 4194304  # tcp_wmem[2]
CORE_RMEM_MAX = 212992  # net.core.rmem_max: the cap on SO_RCVBUF
CORE_WMEM_MAX = 212992
MIN_RCVBUF = 2304
MIN_SNDBUF = 4608
OOO_LIMIT_FACTOR = 1  # out-of-order data is bounded by the receive buffer
INVALID_RATELIMIT = 500 * MS  # tcp_invalid_ratelimit
# PAWS (RFC 7323 5), include/net/tcp.h as of Linux 6.7+: TS.Recent older than
# TCP_PAWS_WRAP seconds no longer rejects anything (RFC 7323 5.5's 24 days,
# cut to what a microsecond TSval clock takes to wrap: INT_MAX / USEC_PER_SEC);
# an established connection lets a TSval one tick behind through
# (TCP_PAWS_WINDOW); TIME-WAIT accepts an RST failing PAWS once TS.Recent is
# TCP_PAWS_MSL seconds old.
PAWS_WRAP = (2**31 - 1) // 1_000_000
PAWS_WINDOW = 1
PAWS_MSL = 60
TS_HZ = 1000  # Linux timestamps tick in milliseconds
# The receiver's urgent-data states, as Linux's tp->urg_data (include/net/tcp.h
# TCP_URG_*): the byte itself rides in the low eight bits once it is VALID.
URG_VALID = 0x0100  # the urgent byte arrived and is held out of band
URG_NOTYET = 0x0200  # an urgent pointer was seen, its byte has not arrived
URG_READ = 0x0400  # recv(MSG_OOB) took the byte
