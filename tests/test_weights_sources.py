"""LocalSource: mapped views, and releasing their pages so resident memory stays flat."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from hubmerge.weights.sources import LocalSource


def rss_file_kb() -> int:
    with open("/proc/self/status") as handle:
        status = handle.read()
    return int(re.search(r"^RssFile:\s+(\d+) kB", status, re.MULTILINE).group(1))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_release_drops_the_mapped_pages_and_the_bytes_stay_readable(tmp_path):
    size = 64 * 2**20
    data = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    (tmp_path / "w.bin").write_bytes(data.tobytes())
    source = LocalSource(tmp_path)
    try:
        view = source.view("w.bin", 0, size)
        assert view is not None
        before = rss_file_kb()
        checksum = int(torch.frombuffer(view, dtype=torch.uint8).sum())  # faults every page in
        assert rss_file_kb() - before > 48 * 1024
        source.release("w.bin", 0, size)
        assert rss_file_kb() - before < 8 * 1024
        assert int(torch.frombuffer(view, dtype=torch.uint8).sum()) == checksum == int(data.sum(dtype=np.int64))
        del view
    finally:
        source.close()
    source.release("w.bin", 0, size)  # after close: nothing mapped, nothing to do


def test_a_file_read_whole_has_a_ceiling(tmp_path, monkeypatch):
    """A hostile repo's 150 MB config.json was read whole (345 MB for `plan`); a gigabyte one had no limit."""
    from hubmerge.engine import planning
    from hubmerge.errors import WeightsError
    from hubmerge.weights import sources

    monkeypatch.setattr(sources, "MAX_WHOLE_FILE", 1000)
    (tmp_path / "config.json").write_text('{"pad": "' + "x" * 2000 + '"}')
    with pytest.raises(WeightsError, match=r"config.json is 2,011 bytes; a config, index or processor file"):
        planning._read_config(LocalSource(tmp_path))
    from hubmerge.vision.loading import read_json_object

    with pytest.raises(WeightsError, match="is 2,011 bytes"):  # what load_merged and load_classifier read
        read_json_object(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"model_type": "convnext"}')
    assert planning._read_config(LocalSource(tmp_path)) == {"model_type": "convnext"}
    monkeypatch.setattr(sources, "MAX_WHOLE_FILE", 10**6)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(WeightsError, match="is nested too deeply to be read"):
        read_json_object(tmp_path / "deep.json")


@pytest.mark.parametrize(
    "name", ["", "../x.bin", "/etc/passwd", "sub/../../x.bin", "..\\x.bin", "x.bin\x00.txt"]
)
def test_a_name_escaping_the_folder_is_a_typed_error(tmp_path, name):
    """The index checks its names first; the source refuses them again, as a typed error (a NUL was a bare
    ValueError from os.stat, an empty name the folder itself)."""
    from hubmerge.errors import ModelFilesNotFoundError

    with LocalSource(tmp_path) as source, pytest.raises(ModelFilesNotFoundError, match="escapes the model"):
        source.file_size(name)


def test_what_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    """A directory by its size, a FIFO even when read without asking its size first (opening one for reading
    would wait for a writer forever)."""
    import threading

    from hubmerge.errors import ModelFilesNotFoundError

    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "pipe")
    errors: list[BaseException] = []
    with LocalSource(tmp_path) as source:
        with pytest.raises(ModelFilesNotFoundError, match="not a regular file"):
            source.file_size("sub")

        def read() -> None:
            try:
                source.read_range("pipe", 0, 1)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(5)
        blocked = reader.is_alive()
        if blocked:  # let the reader go (it holds the source's lock), then fail
            os.close(os.open(tmp_path / "pipe", os.O_WRONLY | os.O_NONBLOCK))
            reader.join(5)
        assert not blocked, "opening the FIFO blocked"
    assert len(errors) == 1 and isinstance(errors[0], ModelFilesNotFoundError)
    assert "not a regular file" in str(errors[0])


def test_reading_past_the_end_is_a_range_error(tmp_path):
    from hubmerge.errors import RangeReadError

    (tmp_path / "w.bin").write_bytes(b"0123456789")
    with LocalSource(tmp_path) as source:
        assert source.read_range("w.bin", 6, 4) == b"6789"
        assert bytes(source.view("w.bin", 6, 4)) == b"6789"
        with pytest.raises(RangeReadError, match="ended early"):
            source.read_range("w.bin", 6, 5)
        with pytest.raises(RangeReadError, match="ended early"):
            source.view("w.bin", 6, 5)


def test_hidden_folders_are_not_the_models_files(tmp_path):
    """A git clone's .git and huggingface_hub's .cache folder are not walked into (nor copied)."""
    names = ("config.json", "sub/preprocessor_config.json", ".git/objects/pack/x.pack", ".cache/hf/x.lock")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"{}")
    with LocalSource(tmp_path) as source:
        assert source.list_files() == ["config.json", "sub/preprocessor_config.json"]
