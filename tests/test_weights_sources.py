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
