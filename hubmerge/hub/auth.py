"""Find the Hub token: the --token flag, a --token-file, HF_TOKEN, or huggingface_hub's login cache.

The token is returned, passed to huggingface_hub calls, and never printed, logged or stored.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AuthenticationError

__all__ = ["require_token", "resolve_token"]


def resolve_token(token: str | None = None, *, token_file: str | Path | None = None) -> str | None:
    """The first token found: ``token``, then ``token_file``, then HF_TOKEN / the login cache; or None."""
    if token and token.strip():  # a blank --token (an unset shell variable, a stray space) is no token
        return token.strip()
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthenticationError(f"cannot read the token file '{path}': {exc.strerror}") from None
        if not text:
            raise AuthenticationError(f"the token file '{path}' is empty")
        return text
    from huggingface_hub import get_token

    return get_token()


def require_token(token: str | None = None, *, token_file: str | Path | None = None, action: str = "push") -> str:
    """Like ``resolve_token`` but a missing token is an AuthenticationError that says how to give one."""
    found = resolve_token(token, token_file=token_file)
    if not found:
        raise AuthenticationError(
            f"{action} needs a Hub token with write access: pass --token or --token-file, "
            "set HF_TOKEN, or run `hf auth login`."
        )
    return found
