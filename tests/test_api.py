"""The package's public surface is small, pinned and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import hubmerge


def test_exported_names_are_pinned():
    assert hubmerge.__all__ == ["Recipe", "__version__", "errors", "load_merged", "load_recipe", "merge", "plan"]
    for name in hubmerge.__all__:
        assert getattr(hubmerge, name) is not None


def test_import_is_light():
    code = "import sys, hubmerge; print(sorted(m for m in ('torch', 'transformers', 'gradio', 'datasets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_every_error_is_a_hubmerge_error_with_a_builtin_parent():
    from hubmerge import errors

    for name in errors.__all__:
        if name in ("redact", "did_you_mean"):  # the two helpers for messages
            continue
        cls = getattr(errors, name)
        assert issubclass(cls, errors.HubmergeError)
        assert cls is errors.HubmergeError or any(
            issubclass(cls, builtin) for builtin in (ValueError, OSError, FileExistsError, PermissionError)
        ) or cls is errors.CancelledError


def test_tokens_are_scrubbed_from_error_messages():
    from hubmerge.errors import HubError, redact

    token = "hf_abcdefghijklmnopqrstuvwxyz123456"
    assert token not in str(HubError(f"request with Authorization: Bearer {token} failed"))
    assert token not in redact(f"https://host/x?token={token}&a=1")
    assert redact("secret-value here", "secret-value") == "*** here"
