"""The switch for TCP's fast paths, for tests.

The fast paths do, for the common case, exactly what the general code
does, in fewer Python frames (each is checked against the general path,
tests/tcp/test_fast_path_equivalence.py):

- the send-side prediction (output.py ``output``): new data outside
  recovery, without a FIN, urgent data or a probe, leave in a loop of their
  own (the general loop's tests answered once for that case; anything else
  goes on in the general loop); on an unobserved lo a
  new data segment is built as its record and handed to the receive
  backlog inline (what ``transmit``, the ACK policy's ``ack_sent`` and
  ``data_sent``, ``IPv4.output_record``, ``Loopback.transmit_record`` and
  RACK's ``on_sent`` do), the loss probe armed inline
  (``rack.schedule_loss_probe``), with one clock read for the call;
- header prediction (input.py ``_predicted``, Van Jacobson's, Linux
  ``tcp_rcv_established``), with the ACK processing and the in-order data
  it takes fused (``_new_ack``, ``_ack_tail``, ``_receive``, the ACK policy);
- the connection path (tests/tcp/test_conn_path_equivalence.py): SYNs and
  SYN-ACKs cross an unobserved lo as records, their options as the parsed
  fields (output.py ``_send_syn_record``; the bytes, when a record must
  become them, are ``pack_syn_options``'); a segment for no connection is
  demultiplexed from its record (a listener's SYN, a closed port's RST)
  without building its bytes (``TCP.input_record``); every ACK, FIN and
  data segment without urgent data or SACK blocks leaves through
  ``_send_record`` (``transmit``, and ``output``'s FIN); an acceptable ACK
  that is not a duplicate, without SACK blocks and outside recovery, is
  processed as header prediction does (input.py ``_ack_predicted``: the
  handshake's last ACK aside, the close's FINs and ACKs).

``enabled = False`` sends everything the general way.
"""

from __future__ import annotations

enabled = True
