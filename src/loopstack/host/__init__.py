"""The real operating system: bridges between the host's loopback and a
stack (``bridge.py``: ``Stack.expose``, ``Stack.forward``)."""
