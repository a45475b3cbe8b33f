"""IP: addresses, routing, IPv4 and IPv6 input and output, fragments."""
