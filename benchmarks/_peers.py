"""Peer rows, run by the peers' venv (.venv-peers/bin/python), never the project's. One row per process.

    .venv-peers/bin/python benchmarks/_peers.py fusionbench WORKDIR OUT BASE TASK=DIR...

``fusionbench`` runs FusionBench's own CLI (``fusion_bench``, Hydra, the FabricModelFusionProgram)
the way its ConvNeXt 8-task example does: ``method=simple_average
modelpool=ConvNextForImageClassification/convnext-base-224_8-tasks taskpool=dummy``, with the
pool's models overridden to point at the benchmark inputs and ``merged_model_save_path=OUT``.
Two workarounds, both for FusionBench 0.2.33 on Python 3.11:

* its ConvNeXt pool does ``from typing import override`` (Python >= 3.12 only): ``typing.override``
  is supplied from typing_extensions before fusion_bench is imported;
* its shipped 8-task YAML gives ``_pretrained_`` as a plain string, and ``save_model`` (which
  reads ``_pretrained_.config_path`` to save the image processor) then fails after writing the
  weights: ``_pretrained_`` is given as ``{config_path: BASE, pretrained: true}``.
"""

from __future__ import annotations

import sys


def fusionbench(workdir: str, out: str, base: str, tasks: list[str]) -> None:
    import os
    import typing

    import typing_extensions

    if not hasattr(typing, "override"):
        typing.override = typing_extensions.override  # type: ignore[attr-defined]

    os.environ["FUSION_BENCH_PROJECT_ROOT"] = workdir  # Hydra's outputs/ (logs) go there, not the cwd
    os.chdir(workdir)

    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    models = [f"_pretrained_: {{config_path: {quote(base)}, pretrained: true}}"]
    models += [f"{name}: {quote(path)}" for name, path in (t.split("=", 1) for t in tasks)]
    sys.argv = [
        "fusion_bench",
        "method=simple_average",
        "modelpool=ConvNextForImageClassification/convnext-base-224_8-tasks",
        "taskpool=dummy",
        "modelpool.models={" + ", ".join(models) + "}",
        f"merged_model_save_path={quote(out)}",
        f"fabric.accelerator={os.environ.get('BENCH_FABRIC_ACCELERATOR', 'cpu')}",
        "fabric.loggers=null",
        "print_config=false",
    ]
    from fusion_bench.scripts.cli import _hydra_main

    _hydra_main()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fusionbench":
        fusionbench(args[0], args[1], args[2], args[3:])
    else:
        raise SystemExit(f"unknown row {mode}")
