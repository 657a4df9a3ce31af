"""A Hub repo as a weight source: pinned to one commit, read by HTTP Range requests.

The revision (branch, tag or sha) is resolved once, at open, to a commit sha; every later read goes
to ``/resolve/<sha>/<file>``, so a push to the repo during a merge cannot mix two versions. File
sizes come from the same repo-info call. The first bytes of each file (read to parse its header)
are kept and reused, so the header read costs no extra tensor bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import (
    AuthenticationError,
    HubError,
    ModelFilesNotFoundError,
    RangeReadError,
    RepoNotFoundError,
)
from ..weights.http import DirectConnections, RetryPolicy, read_range_into
from ..weights.sources import WeightSource

__all__ = ["HubSource", "hub_errors"]

_PREFIX_LIMIT = 256 * 1024


@contextmanager
def hub_errors(repo_id: str, *, revision: str | None = None, path: str | None = None,
               publishing: bool = False) -> Iterator[None]:
    """Turn huggingface_hub / HTTP errors raised inside the block into hubmerge's typed errors
    (``publishing``: the block writes to ``repo_id``, which no local path can stand in for)."""
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except hf.GatedRepoError:
        raise AuthenticationError(
            f"repository '{repo_id}' is gated: accept its conditions on the Hub and pass a token of that account"
        ) from None
    except hf.RepositoryNotFoundError:
        raise RepoNotFoundError(repo_id, hint="Check the name (no local directory has it either), or pass a token "
                                         "(--token / HF_TOKEN; in the web app, the token field or sign-in) for a "
                                         "private repo.") from None
    except hf.RevisionNotFoundError:
        raise RepoNotFoundError(repo_id, revision=revision, hint="The revision (branch, tag or commit) does not exist.") from None
    except hf.LocalEntryNotFoundError:  # offline, or the Hub unreachable, and nothing in the local cache
        name = f"{repo_id}@{revision}" if revision else repo_id
        what = f"file '{path}' of '{name}'" if path else f"'{name}'"
        raise HubError(
            f"cannot get {what}: the Hub cannot be reached (or HF_HUB_OFFLINE is set) and it is not in the "
            f"local cache. If '{repo_id}' was meant as a local directory, it does not exist."
        ) from None
    except hf.EntryNotFoundError:
        what = f"file '{path}' was not found" if path else "a file it needs was not found"
        raise ModelFilesNotFoundError(f"{repo_id}: {what}", model=repo_id, path=path) from None
    except hf.OfflineModeIsEnabled:
        remedy = "Unset it to publish there." if publishing else "Unset it, or use local model paths."
        raise HubError(f"cannot reach the Hub for '{repo_id}': HF_HUB_OFFLINE is set. {remedy}") from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        subject = f"'{repo_id}'" + (f" (file '{path}')" if path else "")
        if status in (401, 403):
            raise AuthenticationError(
                f"the Hub refused access to {subject} (HTTP {status}): the token is missing, invalid or lacks rights"
            ) from None
        if status == 412:  # a commit's parent is no longer its branch's head
            raise HubError(f"'{repo_id}' changed meanwhile: a commit landed on {revision or 'its default branch'} after "
                           "hubmerge looked at it; see what it holds now, then push again") from None
        raise HubError(f"the Hub answered HTTP {status} for {subject}: {exc.server_message or 'no details'}") from None
    except httpx2.TransportError as exc:
        raise HubError(f"cannot reach the Hub{_at(exc)} for '{repo_id}': {type(exc).__name__}: {exc}") from None


def _at(exc: Any) -> str:
    """" at http://host:port" of the request that failed: a wrong HF_ENDPOINT is then plain to see."""
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without its request
        return ""
    return f" at {url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


class HubSource(WeightSource):
    """``repo_id`` at ``revision`` (default branch if None), pinned to the commit it points to now."""

    repo_id: str

    def __init__(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self._token = token
        self._retry = retry
        self._api = HfApi(endpoint=endpoint, token=token, library_name="hubmerge")
        self._endpoint = self._api.endpoint
        with hub_errors(repo_id, revision=revision):
            info = self._api.model_info(repo_id, revision=revision, files_metadata=True)
        if info.sha is None:
            raise HubError(f"the Hub did not say which commit '{repo_id}@{revision}' points to")
        self.revision = info.sha
        self.label = f"{repo_id}@{info.sha[:12]}"
        self._sizes: dict[str, int | None] = {s.rfilename: s.size for s in info.siblings or []}
        self._prefixes: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._direct = DirectConnections()

    # ------------------------------------------------------------------ WeightSource

    def list_files(self) -> list[str]:
        return sorted(self._sizes)

    def file_size(self, path: str) -> int:
        if path not in self._sizes:
            raise ModelFilesNotFoundError(f"{self.where(path)}: no such file in the repo", model=self.repo_id, path=path)
        size = self._sizes[path]
        if size is None:
            from huggingface_hub import get_hf_file_metadata

            with hub_errors(self.repo_id, revision=self.revision, path=path):
                metadata = get_hf_file_metadata(self.url(path), token=self._token)
            size = metadata.size
            if size is None:
                raise HubError(f"{self.where(path)}: the Hub did not report the file size")
            self._sizes[path] = size
        return size

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        length = len(out)
        if length == 0:
            return
        size = self.file_size(path)
        if offset < 0 or offset + length > size:
            raise RangeReadError(self.where(path), f"bytes past the end of the {size}-byte file", offset=offset, length=length)
        with self._lock:
            prefix = self._prefixes.get(path, b"")
        served = 0
        if offset < len(prefix):
            served = min(length, len(prefix) - offset)
            out[:served] = prefix[offset : offset + served]
        if served < length:
            self._fetch(path, offset + served, out[served:])
            if offset == 0 and length <= _PREFIX_LIMIT:
                with self._lock:
                    self._prefixes[path] = bytes(out)

    def close(self) -> None:
        with self._lock:
            self._prefixes.clear()
        self._direct.close()

    # ------------------------------------------------------------------ HTTP

    def url(self, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, revision=self.revision, endpoint=self._endpoint)

    def _fetch(self, path: str, offset: int, out: memoryview) -> None:
        from huggingface_hub import constants
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        headers = build_hf_headers(token=self._token, library_name="hubmerge")
        # Offline mode is the session's to enforce (it raises the error huggingface_hub users know).
        direct = None if constants.is_offline_mode() else self._direct
        with hub_errors(self.repo_id, revision=self.revision, path=path):
            read_range_into(
                self.url(path),
                offset,
                out,
                where=self.where(path),
                headers=headers,
                policy=self._retry,
                raise_for_status=hf_raise_for_status,  # type: ignore[arg-type]
                direct=direct,
            )
