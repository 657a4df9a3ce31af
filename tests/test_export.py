"""torchvision ResNets as hubmerge model directories (hubmerge.vision.export)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hubmerge.errors import (
    HeadMismatchError,
    OutputNotOursError,
    RecipeError,
    UnsupportedArchitectureError,
    WeightsError,
)
from hubmerge.vision.export import _read_checkpoint, export_torchvision_resnet
from hubmerge.vision.families import detect_family, torchvision_architecture


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_export_writes_torchvision_names_and_a_small_config(tmp_path, arch):
    out = export_torchvision_resnet(arch, tmp_path / arch, num_classes=5)
    tensors = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config == {"hubmerge_family": "torchvision-resnet", "architecture": arch, "num_classes": 5,
                      "id2label": {str(i): f"LABEL_{i}" for i in range(5)},
                      "label2id": {f"LABEL_{i}": i for i in range(5)}, "weights": None}
    assert tensors["fc.weight"].shape[0] == 5 and tensors["bn1.num_batches_tracked"].dtype == torch.int64
    assert torchvision_architecture(tensors) == arch and detect_family(config, tensors).name == "torchvision-resnet"


def test_labels_set_the_head_size_and_must_fit(tmp_path):
    out = export_torchvision_resnet("resnet18", tmp_path / "a", id2label={0: "cat", 1: "dog"})
    assert json.loads((out / "config.json").read_text())["num_classes"] == 2
    with pytest.raises(HeadMismatchError, match="^the resnet18 head has 3 classes \\(num_classes\\), but 2 labels were "
                       "given; give one label per class 0..2, in class order$"):
        export_torchvision_resnet("resnet18", tmp_path / "b", num_classes=3, id2label={0: "cat", 1: "dog"})
    with pytest.raises(HeadMismatchError, match="2 classes \\(the labels\\), but the labels are numbered 1..2"):
        export_torchvision_resnet("resnet18", tmp_path / "b", id2label={1: "cat", 2: "dog"})


def test_bad_arguments(tmp_path):
    with pytest.raises(UnsupportedArchitectureError, match="resnet152"):
        export_torchvision_resnet("vgg16", tmp_path / "v")
    with pytest.raises(RecipeError, match="DEFAULT"):
        export_torchvision_resnet("resnet18", tmp_path / "w", weights="IMAGENET1K_V2")  # type: ignore[arg-type]
    (tmp_path / "notes.txt").write_text("x")  # no folder to write the model into: said before any work
    with pytest.raises(OutputNotOursError, match="'.*notes.txt' is a file, not an earlier output"):
        export_torchvision_resnet("resnet18", tmp_path / "notes.txt", checkpoint=tmp_path / "missing.pth")
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_imagenet_weights_need_the_internet(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: torchvision must download

    def unreachable(url, *args, **kwargs):
        raise OSError(f"<urlopen error [Errno 101] Network is unreachable> ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsError, match="no --imagenet; weights=None"):  # the CLI user has no weights=
        export_torchvision_resnet("resnet18", tmp_path / "m", weights="DEFAULT")
    assert not (tmp_path / "m").exists()


def test_a_fine_tuned_checkpoint_is_exported_as_it_was_trained(tmp_path):
    """FusionBench's torchvision pool saves each fine-tune with torch.save(model.state_dict(), path); there was
    no way to turn such a file into a model directory, so those fine-tunes could not be merged at all."""
    import torchvision

    from hubmerge import engine

    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=4)
    files = {}
    for name in ("cars", "pets"):
        tuned = torchvision.models.resnet18(num_classes=4)
        tuned.load_state_dict(base.state_dict())
        with torch.no_grad():
            for parameter in tuned.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        files[name] = tmp_path / f"resnet18_{name}.pth"
        state = tuned.state_dict()
        torch.save({"state_dict": state} if name == "pets" else state, files[name])  # Lightning nests it
    torch.save(base.state_dict(), tmp_path / "base.pth")
    dirs = {name: export_torchvision_resnet("resnet18", tmp_path / name, checkpoint=path,
                                            id2label=dict(enumerate("abcd"))) for name, path in files.items()}
    base_dir = export_torchvision_resnet("resnet18", tmp_path / "base", checkpoint=tmp_path / "base.pth")
    exported = load_file(dirs["cars"] / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in torch.load(files["cars"], weights_only=True).items())
    assert json.loads((base_dir / "config.json").read_text())["num_classes"] == 4  # from the checkpoint's head
    engine.merge({"method": "task_arithmetic", "parameters": {"scaling_factor": 0.5}, "base_model": str(base_dir),
                  "models": [{"model": str(d), "task": t} for t, d in dirs.items()]}, tmp_path / "merged")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    tuned = {t: torch.load(p, weights_only=True) for t, p in files.items()}
    tuned["pets"] = tuned["pets"]["state_dict"]
    key = "layer1.0.conv1.weight"
    expected = base.state_dict()[key] + 0.5 * sum(tuned[t][key] - base.state_dict()[key] for t in tuned)
    torch.testing.assert_close(merged[key], expected)


def test_a_checkpoint_that_does_not_fit_is_refused_saying_why(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34(num_classes=3).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(WeightsError, match="does not fit torchvision resnet18 \\(it is a resnet34 checkpoint.*\\): "
                                           "unexpected layer1.2"):
        export_torchvision_resnet("resnet18", tmp_path / "a", checkpoint=tmp_path / "r34.pth")
    torch.save(torchvision.models.resnet18(), tmp_path / "whole.pth")  # a pickled module, not a state dict
    with pytest.raises(WeightsError, match="a state dict .* torch.save\\(model.state_dict\\(\\)") as refused:
        export_torchvision_resnet("resnet18", tmp_path / "b", checkpoint=tmp_path / "whole.pth")
    assert "GLOBAL torchvision.models.resnet.ResNet" in str(refused.value)  # what it holds, not how to unpickle it
    assert "\x1b" not in str(refused.value) and "safe_globals" not in str(refused.value)
    assert "documentation" not in str(refused.value)  # the reason's first line, not torch's advice after it
    (tmp_path / "notes.pth").write_text("junk\n")  # not torch.save's format: the unpickler raised KeyError
    with pytest.raises(WeightsError, match="cannot be read as a state dict \\(KeyError"):
        export_torchvision_resnet("resnet18", tmp_path / "b", checkpoint=tmp_path / "notes.pth")
    (tmp_path / "empty.pth").touch()  # an interrupted save
    with pytest.raises(WeightsError, match="cannot be read as a state dict \\(EOFError\\)"):
        export_torchvision_resnet("resnet18", tmp_path / "b", checkpoint=tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        export_torchvision_resnet("resnet18", tmp_path / "c", checkpoint=tmp_path / "nowhere.pth")
    torch.save({"model": torchvision.models.resnet18().state_dict(), "epoch": 3, "callbacks": {}},
               tmp_path / "trainer.pth")  # an empty dict is no state dict
    with pytest.raises(WeightsError, match="holds no state dict of tensors; save model.state_dict\\(\\) \\(its "
                                           "'model' entry is one: torch.save\\(checkpoint\\['model'\\], path\\)"):
        export_torchvision_resnet("resnet18", tmp_path / "c", checkpoint=tmp_path / "trainer.pth")
    torch.save({"model": torchvision.models.resnet18().state_dict(), "ema": torchvision.models.resnet18().state_dict(),
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "two.pth")  # which one is not said
    with pytest.raises(WeightsError, match="holds no state dict of tensors; save model.state_dict\\(\\)$"):
        export_torchvision_resnet("resnet18", tmp_path / "c", checkpoint=tmp_path / "two.pth")
    with pytest.raises(RecipeError, match="not both"):
        export_torchvision_resnet("resnet18", tmp_path / "d", weights="DEFAULT", checkpoint=tmp_path / "r34.pth")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_the_cli_exports_a_checkpoint_and_keeps_what_exists(tmp_path, capsys):
    import torchvision

    from hubmerge.cli import main

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "ft.pth")
    out = tmp_path / "cars"
    assert main(["export-resnet", "resnet18", str(out), "--checkpoint", str(tmp_path / "ft.pth"),
                 "--labels", "sedan, suv, van"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "sedan", "1": "suv", "2": "van"}
    assert main(["export-resnet", "resnet18", str(out), "--checkpoint", str(tmp_path / "ft.pth")]) == 1
    assert "OutputExistsError" in capsys.readouterr().err
    assert main(["export-resnet", "resnet18", str(tmp_path), "--checkpoint", str(tmp_path / "ft.pth"),
                 "--overwrite"]) == 1  # the folder holding the checkpoint
    assert "OutputHoldsInputError" in capsys.readouterr().err and (tmp_path / "ft.pth").is_file()
    assert main(["export-resnet", "resnet18", str(out), "--checkpoint", str(tmp_path / "ft.pth"),
                 "--labels", "a,b", "--overwrite"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "HeadMismatchError: the resnet18 head has 3 classes (the checkpoint's head), but 2 labels were given" in err
    assert main(["export-resnet", "resnet18", str(out), "--checkpoint", str(tmp_path / "ft.pth"),
                 "--num-classes", "4", "--overwrite"]) == 1
    assert "has a head of 3 classes, not num_classes=4" in " ".join(capsys.readouterr().err.split())
    assert main(["export-resnet", "resnet18", str(tmp_path / "x"), "--labels", "a,,b"]) == 2
    assert "give one name per class" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == "sedan"  # the old folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cars", "ft.pth"]  # no half-written folder
    (tmp_path / "notes").mkdir()  # no model folder: --overwrite deleted it, to write the export there
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    small = ["--num-classes", "2", "--overwrite"]
    assert main(["export-resnet", "resnet18", str(tmp_path / "notes"), *small]) == 1
    assert "OutputNotOursError" in capsys.readouterr().err and (tmp_path / "notes" / "todo.txt").is_file()
    assert main(["export-resnet", "resnet18", str(out), *small]) == 0  # a model folder is replaced


def test_a_data_parallel_checkpoint_loses_its_module_prefix(tmp_path):
    """torch.nn.DataParallel saves every name under ``module.``; the exported names are torchvision's own."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    torch.save(torch.nn.DataParallel(model).state_dict(), tmp_path / "dp.pth")
    exported = load_file(export_torchvision_resnet("resnet18", tmp_path / "m", checkpoint=tmp_path / "dp.pth")
                         / "model.safetensors")
    assert exported.keys() == model.state_dict().keys()
    assert torch.equal(exported["fc.weight"], model.state_dict()["fc.weight"])


def test_a_lightning_checkpoint_loses_its_attribute_prefix(tmp_path):
    """A LightningModule holding the ResNet as ``self.model`` saves {"state_dict": {"model.conv1.weight": ...}};
    read under "state_dict" but kept as named, it did not fit ("missing bn1.bias ...; unexpected model.bn1.bias
    ...") and its head set no class count. Names under no single attribute are left as they are."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "lightning.ckpt")
    out = export_torchvision_resnet("resnet18", tmp_path / "m", checkpoint=tmp_path / "lightning.ckpt")
    exported = load_file(out / "model.safetensors")
    assert exported.keys() == model.state_dict().keys() and torch.equal(exported["fc.weight"], model.fc.weight)
    assert json.loads((out / "config.json").read_text())["num_classes"] == 3
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "two.pth")
    with pytest.raises(WeightsError, match="unexpected extra.weight, model.bn1.bias"):
        export_torchvision_resnet("resnet18", tmp_path / "n", checkpoint=tmp_path / "two.pth")
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("fc.")}, tmp_path / "head.pth")
    with pytest.raises(WeightsError, match="does not fit torchvision resnet18: missing ") as refused:
        export_torchvision_resnet("resnet18", tmp_path / "n", checkpoint=tmp_path / "head.pth")  # no ResNet in fc
    assert "unexpected" not in str(refused.value)  # fc.weight kept as named, not read as 'weight' under 'fc'


def test_imagenet_weights_keep_their_head_when_num_classes_is_its_size(tmp_path, monkeypatch):
    """num_classes=1000 with weights='DEFAULT' is ImageNet's own head: kept, not replaced by a random one."""
    import torchvision

    def pretrained(weights=None):  # stands in for the download
        model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        torch.nn.init.constant_(model.fc.weight, 0.5)
        return model

    monkeypatch.setattr(torchvision.models, "resnet18", pretrained)
    out = export_torchvision_resnet("resnet18", tmp_path / "m", weights="DEFAULT", num_classes=1000)
    assert torch.all(load_file(out / "model.safetensors")["fc.weight"] == 0.5)


def test_a_cut_short_or_foreign_checkpoint_is_a_weights_error(tmp_path):
    """A legacy-format checkpoint (torch.save before PyTorch 1.6, or _use_new_zipfile_serialization=False) cut
    short made the weights-only unpickler raise struct.error, and a CSV file IndexError: the first came out as
    "unexpected error: error('unpack requires a buffer of 2 bytes') ... please report it"."""
    import io

    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(3)}, buffer, _use_new_zipfile_serialization=False)
    whole = buffer.getvalue()
    (tmp_path / "scores.csv").write_text("a,b\n1,2\n")
    with pytest.raises(WeightsError, match="cannot be read as a state dict \\(IndexError"):
        _read_checkpoint(tmp_path / "scores.csv")
    for size in range(1, len(whole)):  # wherever the save was interrupted
        (tmp_path / "cut.pth").write_bytes(whole[:size])
        with pytest.raises(WeightsError, match="cannot be read as a state dict"):
            _read_checkpoint(tmp_path / "cut.pth")


def test_a_checkpoint_of_another_resnet_says_which_it_is(tmp_path):
    """A resnet18 fine-tune exported as resnet50 (the FusionBench configs name both) listed ~200 missing and
    reshaped tensors; the architecture the checkpoint's blocks spell is what the user needs to read."""
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="does not fit torchvision resnet50 \\(it is a resnet18 checkpoint: "
                                           "export it as resnet18\\): missing"):
        export_torchvision_resnet("resnet50", tmp_path / "a", checkpoint=tmp_path / "r18.pth")
    torch.save({k: v for k, v in torchvision.models.resnet18().state_dict().items() if "layer4" not in k},
               tmp_path / "cut.pth")  # no ResNet's blocks: the tensors alone say what is wrong
    with pytest.raises(WeightsError, match="does not fit torchvision resnet18: missing layer4") as refused:
        export_torchvision_resnet("resnet18", tmp_path / "b", checkpoint=tmp_path / "cut.pth")
    assert "it is a" not in str(refused.value)
    lost = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if k != "layer1.0.bn1.bias"}
    torch.save(lost, tmp_path / "lost.pth")  # the architecture asked for, a tensor short: nothing to export it as
    with pytest.raises(WeightsError, match="resnet18: missing layer1.0.bn1.bias") as refused:
        export_torchvision_resnet("resnet18", tmp_path / "c", checkpoint=tmp_path / "lost.pth")
    assert "it is a" not in str(refused.value)


def test_a_corrupted_checkpoint_is_a_weights_error(tmp_path):
    """Bytes changed on disk or in transfer: torch's legacy loader asserts that every storage its key list
    names was unpickled, which came out as an unexpected AssertionError to report; the newer format's
    byte order record raises ValueError."""
    import io
    import re

    legacy, current = io.BytesIO(), io.BytesIO()
    torch.save({"fc.weight": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"fc.weight": torch.zeros(3)}, current)
    whole = legacy.getvalue()
    key = re.findall(rb"\d{8,}", whole)[-1]  # the storage's key, last in the list of keys after the tensors
    at = whole.rindex(key)
    other = key[:-1] + (b"1" if key.endswith(b"0") else b"0")
    for name, data, why in (("key.pth", whole[:at] + other + whole[at + len(key):], "AssertionError"),
                            ("order.pth", current.getvalue().replace(b"little", b"middle"), "ValueError")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=f"cannot be read as a state dict \\({why}"):
            _read_checkpoint(tmp_path / name)
