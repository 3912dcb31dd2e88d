"""The process's exit codes, for ``slsfwd`` and its systemd unit (``Restart=on-failure``)."""

OK = 0
FAILURE = 1  # a runtime failure: the port is taken, the spool cannot be opened, a task died
CONFIG = 2  # an invalid configuration or usage
FORCED = 130  # a second SIGTERM/SIGINT: out at once, without the ordered shutdown
