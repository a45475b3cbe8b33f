"""Pictures of what happened on a loopback: a self-contained HTML page with
a summary, a ladder diagram and time-sequence graphs per TCP connection,
drawn from a pcap or pcapng file, or from a loopstack run (which adds the
packets netem dropped, cwnd/ssthresh/RTT over time, the counters and the
socket table).

- ``loopstack report CAPTURE -o DIR`` and :func:`write_report`: from a file.
- ``with stack.report(DIR):`` (:class:`Recorder`): from a running stack.
"""

from .html import write_report
from .reader import NotACapture
from .recorder import Recorder

__all__ = ["NotACapture", "Recorder", "write_report"]
