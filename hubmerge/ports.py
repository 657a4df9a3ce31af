"""Listening sockets for the servers hubmerge runs (the web app, the local Hub)."""

from __future__ import annotations

import errno
import socket

from .errors import ListenError, PortInUseError

__all__ = ["LOOPBACK_HOSTS", "bind_port"]

#: The names of this machine alone: a server there is reached by no one else.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), before anything says it is serving there.

    Raises:
        PortInUseError: something already listens there; the servers' own errors say so only after
            they have announced the address, or in terms of their own settings.
        ListenError: no such address here (an unknown host name, another machine's address), or a port
            this user may not open.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from None
        reason = exc.strerror or str(exc)
        raise ListenError(host, port, f"{reason}; choose another --host (e.g. 127.0.0.1) or --port") from None
    return sock
