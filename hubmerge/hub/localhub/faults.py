"""What the local Hub lets tests observe and break: bytes and requests counted, failures on purpose."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

__all__ = ["Cut", "FaultPolicy", "HubStats"]

_DEFAULT_PATH_PATTERN = r"/resolve/"  # file downloads; clear() sets it back, or one test's choice binds the next


@dataclass
class HubStats:
    """Counters the tests read: bytes sent on /resolve GETs (total and per file), requests per route."""

    bytes_sent: int = 0
    bytes_by_path: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    # requests being handled now: one whose client was killed still ends (a commit received whole lands)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _idle: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self.lock)

    def handling(self, delta: int) -> None:
        """One request more (+1) or fewer (-1) being handled."""
        with self.lock:
            self.in_flight += delta
            if self.in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (what a killed client sent has landed, or failed); False when
        ``timeout`` seconds passed first."""
        with self.lock:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    def add_bytes(self, key: str, n: int) -> None:
        with self.lock:
            self.bytes_sent += n
            self.bytes_by_path[key] = self.bytes_by_path.get(key, 0) + n

    def count(self, route: str) -> None:
        with self.lock:
            self.requests[route] = self.requests.get(route, 0) + 1

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = 0
            self.bytes_by_path.clear()
            self.requests.clear()


@dataclass
class FaultPolicy:
    """Deliberate failures for tests; everything off by default.

    * ``cut_after``: cut each of the next ``cut_times`` matching /resolve GET bodies after that many bytes
      (the TCP connection really drops: the client sees a truncated response).
    * ``status``: answer the next ``status_times`` matching requests with this status (e.g. 429, 503).
    * ``delay``: sleep this long before answering matching requests (only the next ``delay_times`` of
      them when that is set; every one when it is None).
    ``path_pattern`` (a regex searched in the raw path) selects the requests.
    """

    path_pattern: str = _DEFAULT_PATH_PATTERN
    cut_after: int | None = None
    cut_times: int = 0
    status: int | None = None
    status_times: int = 0
    retry_after: str | None = None
    delay: float = 0.0
    delay_times: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def matches(self, path: str) -> bool:
        return re.search(self.path_pattern, path) is not None

    def take_status(self, path: str) -> int | None:
        with self.lock:
            if self.status is not None and self.status_times > 0 and self.matches(path):
                self.status_times -= 1
                return self.status
        return None

    def take_cut(self, path: str) -> int | None:
        with self.lock:
            if self.cut_after is not None and self.cut_times > 0 and self.matches(path):
                self.cut_times -= 1
                return self.cut_after
        return None

    def take_delay(self, path: str) -> float:
        with self.lock:
            if not self.delay or not self.matches(path) or self.delay_times == 0:
                return 0.0
            if self.delay_times is not None:
                self.delay_times -= 1
            return self.delay

    def clear(self) -> None:
        with self.lock:
            self.path_pattern = _DEFAULT_PATH_PATTERN
            self.cut_after, self.cut_times, self.status, self.status_times = None, 0, None, 0
            self.retry_after, self.delay, self.delay_times = None, 0.0, None


class Cut(Exception):
    """Raised inside a body to drop the connection on purpose."""
