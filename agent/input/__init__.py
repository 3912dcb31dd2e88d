"""Input: rsyslog's connections -> framed chunks appended to the spool.

The first stage of the data path. Each read from a socket is framed
(:mod:`.framing`, pure: LF or octet-counted lines, bounded) and its complete
lines are appended to the queue as one chunk before anything else happens to
them. :mod:`.listener` is what every TCP input shares (the server socket, the
connection limit, backpressure); :mod:`.tcp` is the plain TCP input of the
tutorial's rsyslog block, :mod:`.relp` the RELP input for ``omrelp``;
:mod:`.activation` takes the listening sockets systemd hands over.

May import: :mod:`agent.ops`, and :mod:`agent.spool` for the queue interface.
Knows nothing of parsing or shipping.
"""
