"""Transports: ICMP now; UDP and TCP plug in the same way."""
