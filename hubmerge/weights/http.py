"""Ranged HTTP reads over huggingface_hub's shared session, with retry and resume.

One session (``huggingface_hub.utils.get_session``: connection reuse, the Hub's redirects), one
retry policy, and one place that checks every answer: a Range request must come back ``206`` with
the ``Content-Range`` asked for and exactly that many bytes. A ``200`` (the server ignored Range)
is refused rather than silently giving the wrong bytes. A connection that drops mid-body, a
timeout, 408/429/5xx are retried with exponential back-off (``Retry-After`` honoured), resuming from
the last byte received, so no byte is fetched twice.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import RangeReadError

__all__ = ["RetryPolicy", "read_range_into"]

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``max_retries`` attempts after the first, waits doubling from ``base_wait`` to ``max_wait``."""

    max_retries: int = 5
    base_wait: float = 0.5
    max_wait: float = 8.0
    timeout: float = 30.0  # seconds without a byte before a read counts as failed

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        return min(self.max_wait, self.base_wait * 2**attempt) * (0.75 + 0.5 * random.random())


DEFAULT_RETRY = RetryPolicy()


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def read_range_into(
    url: str,
    offset: int,
    out: memoryview,
    *,
    where: str,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy | None = None,
    raise_for_status: Callable[[object], None] | None = None,
) -> None:
    """Fill ``out`` with bytes ``offset .. offset+len(out)-1`` of ``url``.

    Args:
        url: the file's URL (a Hub ``/resolve/<sha>/<file>`` URL).
        offset: first byte.
        out: where the bytes go; its length is the number of bytes wanted.
        where: how errors name the file (``repo@sha:file``); never contains a token.
        headers: request headers (authorization included); never logged.
        policy: retry policy (default ``DEFAULT_RETRY``).
        raise_for_status: turns a non-retryable error response into a typed error.

    Raises:
        RangeReadError: the server ignored Range, sent the wrong range or too many bytes, or the
            read still failed after every retry.
    """
    import httpx2
    from huggingface_hub.utils import get_session

    policy = policy or DEFAULT_RETRY
    length = len(out)
    done = 0
    attempt = 0
    while done < length:
        start, end = offset + done, offset + length - 1
        try:
            request_headers = {**(headers or {}), "Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
            with get_session().stream(
                "GET", url, headers=request_headers, timeout=httpx2.Timeout(policy.timeout, connect=10.0)
            ) as response:
                status = response.status_code
                if status in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {status}", response.headers.get("Retry-After"))
                if status == 200:
                    raise RangeReadError(
                        where, "the server ignored the Range header and sent the whole file", offset=start,
                        length=end - start + 1,
                    )
                if status != 206:
                    response.read()
                    if raise_for_status is not None:
                        raise_for_status(response)
                    raise RangeReadError(where, f"HTTP {status}", offset=start, length=end - start + 1)
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != start or int(match.group(2)) != end:
                    raise RangeReadError(
                        where,
                        f"the server answered Content-Range {response.headers.get('Content-Range')!r} "
                        f"to a request for bytes {start}-{end}",
                        offset=start,
                        length=end - start + 1,
                    )
                for chunk in response.iter_raw():
                    if done + len(chunk) > length:
                        raise RangeReadError(where, "the server sent more bytes than asked for", offset=start)
                    out[done : done + len(chunk)] = chunk
                    done += len(chunk)
                    attempt = 0  # progress resets the back-off
                if done < length:
                    raise _Retryable(f"the connection closed after {done} of {length} bytes")
        except (_Retryable, httpx2.TransportError) as exc:
            reason = str(exc) or type(exc).__name__
            if attempt >= policy.max_retries:
                raise RangeReadError(
                    where,
                    f"giving up after {policy.max_retries + 1} attempts ({reason}); check the connection "
                    "and run the command again",
                    offset=offset + done,
                    length=length - done,
                ) from None
            delay = policy.wait(attempt, getattr(exc, "retry_after", None))
            log.info("%s: %s; retrying from byte %d in %.1f s", where, reason, offset + done, delay)
            time.sleep(delay)
            attempt += 1
