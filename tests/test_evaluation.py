"""hubmerge.evaluation on the tiny trained fixtures: numbers against plain torch, bad inputs, reports."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubmerge.errors import DatasetError, HeadMismatchError, RecipeError, UnknownTaskError
from hubmerge.evaluation import (
    EVAL_RESULTS_FILE,
    CompareReport,
    EvalReport,
    TaskResult,
    compare_inputs,
    evaluate_classifier,
    evaluate_model,
    evaluate_recipe_tasks,
    parse_task,
    render_report,
    save_report,
)
from hubmerge.fixtures import FixtureSet, build_fixtures
from hubmerge.recipe import DatasetRef, Recipe

from ._eval_helpers import AutoProcessor, direct_scores, hf_online, offline_hf, upload_dataset, variant


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureSet]:
    with offline_hf(tmp_path_factory.mktemp("hf_home")):
        yield build_fixtures(family="convnext")


def _model(fx: FixtureSet, task: str):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(str(fx.models.get(task, fx.base)))


def _evaluate(fx: FixtureSet, task: str, dataset: Path | str | DatasetRef, **kwargs: Any) -> TaskResult:
    """``task``'s fine-tune (the base for other names) on ``dataset``, on the CPU unless told."""
    processor = AutoProcessor(fx.models.get(task, fx.base))
    kwargs.setdefault("device", "cpu")
    ref = dataset if isinstance(dataset, DatasetRef) else str(dataset)
    return evaluate_classifier(_model(fx, task), ref, processor=processor, task=task, **kwargs)


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("task", ["digits_low", "digits_parity", "digits_rotated"])
def test_matches_direct_torch(fx: FixtureSet, task: str) -> None:
    result = _evaluate(fx, task, fx.datasets[task], batch_size=50)
    accuracy, loss = direct_scores(fx.models[task], fx.datasets[task])
    assert result.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert result.accuracy == pytest.approx(fx.accuracy[task], abs=1e-12)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.num_samples == len(__import__("datasets").load_from_disk(str(fx.datasets[task]))["test"])
    assert result.dataset == f"{fx.datasets[task]}:test"


def test_workers_give_the_same_numbers(fx: FixtureSet) -> None:
    task = "digits_low"
    alone = _evaluate(fx, task, fx.datasets[task], num_workers=0, batch_size=32)
    workers = _evaluate(fx, task, fx.datasets[task], num_workers=2, batch_size=32)
    assert (workers.accuracy, workers.loss) == pytest.approx((alone.accuracy, alone.loss), rel=1e-6)


def test_head_with_more_classes_is_remapped_by_name(fx: FixtureSet) -> None:
    """The base's 10-way head ('0'..'9') on digits_high ('5'..'9'): dataset label i is head output i+5."""
    result = _evaluate(fx, "digits", fx.datasets["digits_high"])
    accuracy, loss = direct_scores(fx.base, fx.datasets["digits_high"], target_offset=5)
    assert result.accuracy == pytest.approx(accuracy, abs=1e-12) and result.accuracy > 0.9
    assert result.loss == pytest.approx(loss, rel=1e-5)


def test_permuted_class_order_gives_the_same_scores(fx: FixtureSet, tmp_path: Path) -> None:
    task = "digits_low"
    names = ["4", "3", "2", "1", "0"]  # the head's names, reversed
    permuted = variant(fx.datasets[task], tmp_path / "permuted", names=names, relabel=lambda v: 4 - v)
    original = _evaluate(fx, task, fx.datasets[task])
    remapped = _evaluate(fx, task, permuted)
    assert (remapped.accuracy, remapped.loss) == pytest.approx((original.accuracy, original.loss), rel=1e-9)
    # Read by position, the same data is mostly wrong: the remap is what makes it right.
    by_position = _evaluate(fx, task, permuted, match_labels="position")
    assert by_position.accuracy < 0.5


def test_names_match_ignoring_case_spaces_and_underscores(fx: FixtureSet, tmp_path: Path) -> None:
    import datasets

    parity = datasets.load_from_disk(str(fx.datasets["digits_parity"]))["test"]
    assert parity.features["label"].names == ["even", "odd"]
    spelled = variant(fx.datasets["digits_parity"], tmp_path / "spelled", names=[" ODD_", "Even"],
                      relabel=lambda v: 1 - v)
    original = _evaluate(fx, "digits_parity", fx.datasets["digits_parity"])
    assert _evaluate(fx, "digits_parity", spelled).accuracy == pytest.approx(original.accuracy, abs=1e-12)


def test_image_folder_directory(fx: FixtureSet, tmp_path: Path) -> None:
    """A directory of image files (no save_to_disk) loads through datasets' imagefolder builder."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(40))
    for index, row in enumerate(part):
        folder = tmp_path / "images" / "test" / str(row["label"])
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{index}.png")
    result = _evaluate(fx, "digits_low", tmp_path / "images")
    part.save_to_disk(str(tmp_path / "same"))
    expected = _evaluate(fx, "digits_low", tmp_path / "same")
    assert result.num_samples == 40 and result.accuracy == pytest.approx(expected.accuracy, abs=1e-12)


# datasets' decode leaves the file of an image that fails to load open, to the GC
@pytest.mark.filterwarnings("ignore:unclosed file:ResourceWarning",
                            "ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("damage", ["not an image", "cut short"])
def test_an_unreadable_image_is_a_dataset_error(fx: FixtureSet, tmp_path: Path, num_workers: int,
                                                damage: str) -> None:
    """A corrupt or truncated file among a folder's images names the dataset, the example and its file; PIL's
    UnidentifiedImageError came out as the CLI's "unexpected error", after the merge and part of the split."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(12))
    for index, row in enumerate(part):
        folder = tmp_path / "images" / "test" / str(row["label"])
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{index}.png")
    bad = next((tmp_path / "images" / "test").iterdir()) / "bad.png"
    whole = io.BytesIO()
    part[0]["image"].save(whole, format="PNG")
    bad.write_bytes(b"not an image" if damage == "not an image" else whole.getvalue()[:100])
    with pytest.raises(DatasetError, match=r"images:test': example \d+ of the 13 evaluated \(.*bad\.png\) "
                                           r"cannot be read: "):
        _evaluate(fx, "digits_low", tmp_path / "images", batch_size=4, num_workers=num_workers)


def test_images_as_users_have_them_score_as_a_direct_computation(fx: FixtureSet, tmp_path: Path) -> None:
    """A folder of images in every mode a 3-channel model meets (grayscale, alpha, palette, CMYK, 16-bit, 1-bit),
    EXIF-rotated JPEGs, 1x1 and large images: the numbers of the model's own processor on each image as PIL shows
    it (EXIF applied), converted to RGB, argmax and cross-entropy in plain torch."""
    import datasets
    import torch
    from PIL import Image, ImageOps
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(30))
    modes = ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1", "RGB", "RGB"]
    files = []
    for index, row in enumerate(part):
        mode = modes[index % len(modes)]
        image = row["image"].resize({3: (1, 1), 7: (640, 480)}.get(index, row["image"].size))
        folder = tmp_path / "images" / "test" / part.features["label"].int2str(row["label"])
        folder.mkdir(parents=True, exist_ok=True)
        if mode == "CMYK" or index % len(modes) == 8:  # a JPEG, the last ones stored on their side with EXIF
            files.append(folder / f"{index}.jpg")
            exif = Image.Exif()
            if mode == "RGB":
                exif[0x0112] = 6  # Orientation: to be shown rotated 90 degrees clockwise
                image = image.transpose(Image.Transpose.ROTATE_90)
            image.convert(mode).save(files[-1], quality=95, exif=exif)
        else:
            files.append(folder / f"{index}.png")
            image.convert(mode).save(files[-1])
    result = _evaluate(fx, "digits_low", tmp_path / "images", batch_size=8)

    model_dir = fx.models["digits_low"]
    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    images = [ImageOps.exif_transpose(Image.open(file)).convert("RGB") for file in files]
    pixels = AutoImageProcessor.from_pretrained(str(model_dir))(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        logits = model(pixel_values=pixels).logits.double()
    targets = torch.tensor(part["label"])
    assert result.num_samples == result.split_size == 30
    assert result.accuracy == pytest.approx(float((logits.argmax(-1) == targets).double().mean()), abs=1e-12)
    assert result.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-6)


def test_an_os_error_of_no_image_is_not_blamed_on_the_images(fx: FixtureSet) -> None:
    """An OSError while batching that no image of the batch causes (here the processor's) is left as it is: it is
    not the data's, and 'example N cannot be read' would send the user to files that read."""
    def failing(images: list[Any]) -> Any:
        raise OSError(24, "Too many open files")

    model = _model(fx, "digits_low")
    with pytest.raises(OSError, match="Too many open files"):  # a DatasetError is no OSError
        evaluate_classifier(model, str(fx.datasets["digits_low"]), processor=failing, task="digits_low", device="cpu")


def test_array_images_and_single_split_dataset(fx: FixtureSet, tmp_path: Path) -> None:
    """Images stored as uint8 arrays in a column named 'img'; a Dataset saved without splits."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"]
    arrays = datasets.Dataset.from_dict(
        {"img": [np.asarray(image) for image in part["image"]], "label": part["label"]},
        features=datasets.Features(
            {"img": datasets.Array3D((32, 32, 3), "uint8"), "label": part.features["label"]}
        ),
    )
    arrays.save_to_disk(str(tmp_path / "arrays"))
    result = _evaluate(fx, "digits_low", tmp_path / "arrays")
    assert result.accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)


@pytest.mark.parametrize("stored", ["bytes", "bytes and path"])
def test_parquet_of_image_bytes_without_datasets_metadata(fx: FixtureSet, tmp_path: Path, stored: str) -> None:
    """Parquet written by pandas or pyarrow holds PNG bytes (bare, or as {bytes, path}) and no Image() feature: they
    are decoded as images, as in parquet that datasets wrote; they were taken for pixel arrays (a TypeError)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(40))
    encoded = []
    for image in part["image"]:
        png = io.BytesIO()
        image.save(png, format="PNG")
        encoded.append(png.getvalue() if stored == "bytes" else {"bytes": png.getvalue(), "path": None})
    (tmp_path / "parquet" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": encoded, "label": pa.array(part["label"], pa.int64())}),
                   tmp_path / "parquet" / "data" / "test-00000-of-00001.parquet")
    part.save_to_disk(str(tmp_path / "same"))
    expected = _evaluate(fx, "digits_low", tmp_path / "same")
    result = _evaluate(fx, "digits_low", tmp_path / "parquet")
    assert (result.num_samples, result.accuracy, result.loss) == (40, expected.accuracy, expected.loss)


def test_image_files_by_path_and_undecoded_images(fx: FixtureSet, tmp_path: Path) -> None:
    """An image column of file paths (a CSV's, a dict's) and one saved as Image(decode=False) are decoded as
    images; the batches took them for pixel arrays (numpy's UFuncNoLoopError, a TypeError). A missing file
    is named."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(20))
    paths = []
    for index, image in enumerate(part["image"]):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    datasets.Dataset.from_dict({"image": paths, "label": part["label"]}).save_to_disk(str(tmp_path / "paths"))
    part.cast_column("image", datasets.Image(decode=False)).save_to_disk(str(tmp_path / "undecoded"))
    part.save_to_disk(str(tmp_path / "same"))
    expected = _evaluate(fx, "digits_low", tmp_path / "same")
    for stored in ("paths", "undecoded"):
        result = _evaluate(fx, "digits_low", tmp_path / stored)
        assert (result.num_samples, result.accuracy, result.loss) == (20, expected.accuracy, expected.loss)
    Path(paths[13]).unlink()
    with pytest.raises(DatasetError, match=r"paths:test': example 13 of the 20 evaluated \(.*13\.png\) cannot be "
                                           r"read: .*No such file"):
        _evaluate(fx, "digits_low", tmp_path / "paths", batch_size=8)


def test_pixel_values_already_normalised_are_refused(fx: FixtureSet, tmp_path: Path) -> None:
    """A split kept from training as the processor's pixel_values (its images removed): read as images, normalised
    values are dark smudges, and it was scored without a word (about 20% where the images give 97%)."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(20))
    processor = AutoProcessor(fx.models["digits_low"])
    processed = part.map(lambda batch: {"pixel_values": processor(batch["image"]).numpy()}, batched=True,
                         remove_columns=["image"])
    processed.save_to_disk(str(tmp_path / "processed"))
    with pytest.raises(DatasetError, match=r"processed:test': image column 'pixel_values' holds pixel values an "
                                           r"image processor has normalised \(the first example's values run from "
                                           r"-2\.\d\d to .*give the split with its images"):
        _evaluate(fx, "digits_low", tmp_path / "processed")


@pytest.mark.parametrize("top", [1.0, 255.0])
def test_float_images_dipping_below_0_are_images(fx: FixtureSet, tmp_path: Path, top: float) -> None:
    """Float images (in [0, 1] or [0, 255]) a little below 0 here and there, as bicubic or Lanczos resampling
    leaves them, are read as images, the dip clipped to black as before; any value below 0 was taken for
    normalised pixels and the split refused."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(10))
    stored = {}
    for name, dip in (("clipped", 0.0), ("undershoot", -0.06 * top)):
        arrays = [np.asarray(image, dtype=np.float32) / 255 * top for image in part["image"]]
        for array in arrays:
            array[0, 0] = dip
        rows = {"img": [a.tolist() for a in arrays], "label": part["label"]}
        datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / name))
        stored[name] = _evaluate(fx, "digits_low", tmp_path / name)
    undershoot, clipped = stored["undershoot"], stored["clipped"]
    assert (undershoot.accuracy, undershoot.loss) == (clipped.accuracy, clipped.loss)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_array_images_one_pixel_wide_or_high(fx: FixtureSet, tmp_path: Path, mode: str) -> None:
    """Array images of 1x1, 1xN and Nx1 pixels are the images they are: squeezed whole, a 1x1 colour pixel was a
    grey image 3 pixels wide, a colour column a grey image 3 wide, a grey 1x1 an IndexError."""
    import datasets
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(6))
    sizes = [(1, 1), (9, 1), (1, 9)]
    arrays = [np.asarray(row["image"].resize(sizes[i % 3]).convert(mode)) for i, row in enumerate(part)]
    datasets.Dataset.from_dict({"img": [a.tolist() for a in arrays], "label": part["label"]}).save_to_disk(
        str(tmp_path / "arrays"))
    result = _evaluate(fx, "digits_low", tmp_path / "arrays")

    model_dir = fx.models["digits_low"]
    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    images = [Image.fromarray(a).convert("RGB") for a in arrays]
    pixels = AutoImageProcessor.from_pretrained(str(model_dir))(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        logits = model(pixel_values=pixels).logits.double()
    expected = float(torch.nn.functional.cross_entropy(logits, torch.tensor(part["label"])))
    assert result.loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_with_and_without_autocast(fx: FixtureSet) -> None:
    task = "digits_rotated"
    cpu = _evaluate(fx, task, fx.datasets[task])
    fp32 = _evaluate(fx, task, fx.datasets[task], device="cuda", autocast=False)
    assert fp32.accuracy == pytest.approx(cpu.accuracy, abs=1 / 449 + 1e-9)
    assert fp32.loss == pytest.approx(cpu.loss, rel=1e-3)
    bf16 = _evaluate(fx, task, fx.datasets[task], device="cuda")
    assert bf16.accuracy == pytest.approx(cpu.accuracy, abs=0.02)
    assert bf16.loss == pytest.approx(cpu.loss, rel=0.05)


# ---------------------------------------------------------------- bad input


def test_id2label_disagrees_with_dataset_names(fx: FixtureSet, tmp_path: Path) -> None:
    words = ["zero", "one", "two", "three", "four"]
    renamed = variant(fx.datasets["digits_low"], tmp_path / "words", names=words)
    with pytest.raises(HeadMismatchError) as caught:
        _evaluate(fx, "digits_low", renamed)
    message = str(caught.value)
    assert "task 'digits_low'" in message and "'zero'" in message and "'0'" in message
    assert "match_labels='position'" in message
    # The way out the message names: same order, different spellings.
    by_position = _evaluate(fx, "digits_low", renamed, match_labels="position")
    assert by_position.accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)
    # what the result rests on is recorded, for the tables and the card; names that agree assume nothing
    assert by_position.by_position
    assert not _evaluate(fx, "digits_low", fx.datasets["digits_low"], match_labels="position").by_position


def test_head_size_disagrees_with_dataset(fx: FixtureSet) -> None:
    with pytest.raises(HeadMismatchError, match=r"the head has 2 outputs but .* has 5 classes") as caught:
        _evaluate(fx, "digits_parity", fx.datasets["digits_low"])
    assert "'even'" in str(caught.value) and "'0'" in str(caught.value)


def test_integer_labels_without_names(fx: FixtureSet, tmp_path: Path) -> None:
    low = fx.datasets["digits_low"]
    plain = variant(low, tmp_path / "plain", plain_int_labels=True, rename={"label": "labels"})
    result = _evaluate(fx, "digits_low", plain)
    assert result.accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)
    fewer = variant(low, tmp_path / "fewer", plain_int_labels=True, relabel=lambda v: min(v, 2))
    assert _evaluate(fx, "digits_low", fewer).num_samples == result.num_samples  # labels 0-2: the head has outputs to spare
    shifted = variant(low, tmp_path / "shifted", plain_int_labels=True, relabel=lambda v: v + 3)
    with pytest.raises(HeadMismatchError, match="the head has 5 outputs but .* has labels up to 7"):
        _evaluate(fx, "digits_low", shifted)


def test_the_first_class_label_column_is_the_one_scored(fx: FixtureSet, tmp_path: Path) -> None:
    """Like CIFAR-100's fine_label then coarse_label: the first ClassLabel is the labels, the one the early
    check reads class names from too; a later one (coarser classes) is not what the head predicts."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"]
    features = datasets.Features({**part.features, "coarse_label": datasets.ClassLabel(names=["small", "big"])})
    two = part.add_column("coarse_label", [int(v >= 3) for v in part["label"]], feature=features["coarse_label"])
    two.cast(features).save_to_disk(str(tmp_path / "two"))
    result = _evaluate(fx, "digits_low", tmp_path / "two")
    assert result.accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)


def test_a_named_label_column_is_scored_as_label_is(fx: FixtureSet, tmp_path: Path) -> None:
    """Labels under another name (CIFAR-100's coarse_label, a CSV's target) were refused with no way to name
    them; named, they give the numbers the same data gives under 'label'."""
    low = fx.datasets["digits_low"]
    coarse = variant(low, tmp_path / "coarse", plain_int_labels=True, rename={"label": "coarse_label"})
    with pytest.raises(DatasetError, match="has no label column"):
        _evaluate(fx, "digits_low", coarse)
    named = _evaluate(fx, "digits_low", DatasetRef(str(coarse), label_column="coarse_label"))
    accuracy, loss = direct_scores(fx.models["digits_low"], low)
    assert named.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert named.loss == pytest.approx(loss, rel=1e-5)
    assert named.num_samples == _evaluate(fx, "digits_low", low).num_samples
    assert named.dataset == f"{coarse}:test"  # the report's dataset as --task spells it


def test_a_named_column_wins_over_the_first_of_its_type(fx: FixtureSet, tmp_path: Path) -> None:
    """CIFAR-100 has fine_label then coarse_label, both ClassLabels: the first was read, with no way to take the
    other; an Image() column before the images (thumbnails, masks) likewise. Named, each is the one read, its
    class names included (matched onto the head by name)."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"]
    blank = [img.point(lambda _: 0) for img in part["image"]]
    features = datasets.Features({"mask": datasets.Image(), "label": datasets.ClassLabel(names=["small", "big"]),
                                  "image": part.features["image"], "coarse_label": part.features["label"]})
    datasets.Dataset.from_dict({"mask": blank, "label": [int(v >= 3) for v in part["label"]], "image": part["image"],
                                "coarse_label": part["label"]}, features=features).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(HeadMismatchError, match="the head has 5 outputs but .* has 2 classes"):
        _evaluate(fx, "digits_low", tmp_path / "two")
    ref = DatasetRef(str(tmp_path / "two"), label_column="coarse_label", image_column="image")
    assert _evaluate(fx, "digits_low", ref).accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)
    masked = _evaluate(fx, "digits_low", replace(ref, image_column=None))  # the first Image(): blank images
    assert masked.accuracy < fx.accuracy["digits_low"] - 0.3


def test_a_named_column_that_is_not_there_is_refused_with_the_columns(fx: FixtureSet) -> None:
    low = str(fx.datasets["digits_low"])
    with pytest.raises(DatasetError, match=r"has no column 'coarse' \(named as its label_column\)\. "
                                           r"Its columns: image \(Image\), label \(ClassLabel\)\."):
        _evaluate(fx, "digits_low", DatasetRef(low, label_column="coarse"))
    with pytest.raises(DatasetError, match=r"has no column 'picture' \(named as its image_column\)"):
        _evaluate(fx, "digits_low", DatasetRef(low, image_column="picture"))
    with pytest.raises(DatasetError, match="label column 'image' holds .*integer class labels"):
        _evaluate(fx, "digits_low", DatasetRef(low, label_column="image"))  # refused as a found one would be


def test_a_named_image_column_of_numbers_is_refused_with_the_columns(fx: FixtureSet, tmp_path: Path) -> None:
    """`--image-column label` (the labels' column, or one column named for both) or an ids' column: no image is
    one number per example; the pass failed with a TypeError or an IndexError ('unexpected error')."""
    import datasets

    low = str(fx.datasets["digits_low"])
    plain = str(variant(fx.datasets["digits_low"], tmp_path / "plain", plain_int_labels=True))
    part = datasets.load_from_disk(low)["test"]
    part.add_column("idx", list(range(len(part)))).save_to_disk(str(tmp_path / "ids"))
    for ref, column, held in ((DatasetRef(low, image_column="label"), "label", "ClassLabel"),
                              (DatasetRef(low, image_column="label", label_column="label"), "label", "ClassLabel"),
                              (DatasetRef(plain, image_column="label"), "label", "Value"),
                              (DatasetRef(str(tmp_path / "ids"), image_column="idx"), "idx", "Value")):
        with pytest.raises(DatasetError, match=rf"image column '{column}' holds {held}\(.*\), one number per "
                                               r"example, not images .*Its columns: image \(Image\), label "):
            _evaluate(fx, "digits_low", ref)


def test_integer_label_equal_to_the_head_size_is_refused(fx: FixtureSet, tmp_path: Path) -> None:
    """Labels 1..5 on a 5-output head: label 5 has no output, off by one is still out of range (it
    would index past the logits, or be scored against the wrong class)."""
    shifted = variant(fx.datasets["digits_low"], tmp_path / "shifted", plain_int_labels=True,
                      relabel=lambda v: v + 1)
    with pytest.raises(HeadMismatchError, match="the head has 5 outputs but .* has labels up to 5"):
        _evaluate(fx, "digits_low", shifted)


@pytest.mark.parametrize("match_labels", ["name", "position"])
def test_labels_beyond_the_class_names_of_the_card_are_a_dataset_error(fx: FixtureSet, tmp_path: Path,
                                                                       match_labels: str) -> None:
    """A dataset card that lists 3 class names over labels 0-4: datasets reads the ClassLabel from the card without
    checking the labels (as it checks them building a dataset), and matched by name the pass failed on the first
    label past the names (an IndexError, the CLI's "unexpected error"); by position, it went on, with labels past the
    head's outputs a ValueError of the metric."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(30))
    (tmp_path / "carded" / "data").mkdir(parents=True)
    part.cast_column("label", datasets.Value("int64")).to_parquet(
        str(tmp_path / "carded" / "data" / "test-00000-of-00001.parquet"))
    (tmp_path / "carded" / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n  - name: label\n    dtype:\n"
        "      class_label:\n        names:\n          '0': '0'\n          '1': '1'\n          '2': '2'\n---\n")
    assert max(part["label"]) == 4
    with pytest.raises(DatasetError, match=r"carded:test': split 'test' has labels up to 4 but its ClassLabel "
                                           r"'label' names 3 classes"):
        _evaluate(fx, "digits_low", tmp_path / "carded", match_labels=match_labels)


def test_head_with_duplicate_names_is_not_remapped(fx: FixtureSet) -> None:
    """Two outputs named 'even': matching by name would pick the first and ignore the other, so which
    output means 'even' is a guess; it must be refused, before the merge and at evaluation."""
    from hubmerge.evaluation.data import check_head_labels, label_targets, load_task_data

    ref = DatasetRef(str(fx.datasets["digits_parity"]))
    id2label = {0: "odd", 1: "even", 2: "even"}  # the dataset's order is even, odd
    with pytest.raises(HeadMismatchError, match="the head has 3 outputs but .* has 2 classes"):
        check_head_labels("digits_parity", ref, ["even", "odd"], id2label)
    data = load_task_data("digits_parity", ref)
    assert data.class_names == ("even", "odd")
    with pytest.raises(HeadMismatchError, match="the head has 3 outputs but .* has 2 classes"):
        label_targets("digits_parity", data, id2label, 3)


def test_names_are_matched_unless_every_head_label_is_a_placeholder() -> None:
    """transformers' LABEL_0, LABEL_1, ... name no class, so such a head is matched by position; one placeholder
    among real names does not make the others meaningless: they are still matched by name."""
    from hubmerge.evaluation.data import check_head_labels

    ref = DatasetRef("org/data")
    check_head_labels("t", ref, ["cat", "dog"], {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(HeadMismatchError, match="name their 2 classes differently"):
        check_head_labels("t", ref, ["cat", "dog"], {0: "dog", 1: "LABEL_1"})


def test_dataset_without_label_column(fx: FixtureSet, tmp_path: Path) -> None:
    unlabeled = variant(fx.datasets["digits_low"], tmp_path / "nolabel", drop=["label"])
    with pytest.raises(DatasetError, match=r"has no label column.*Its columns: image \(Image\)") as caught:
        _evaluate(fx, "digits_low", unlabeled)
    assert (f"Name the one to read: `dataset: {{path: {unlabeled}, split: test, label_column: COLUMN}}` in a recipe, "
            "--label-column COLUMN for `hubmerge evaluate`, its label column cell in the web app.") in str(caught.value)


def test_dataset_without_image_column(fx: FixtureSet, tmp_path: Path) -> None:
    no_images = variant(fx.datasets["digits_low"], tmp_path / "noimage", drop=["image"])
    with pytest.raises(DatasetError, match=r"has no image column.*Its columns: label \(ClassLabel\)"):
        _evaluate(fx, "digits_low", no_images)


def test_string_labels_are_refused(fx: FixtureSet, tmp_path: Path) -> None:
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(4))
    strings = datasets.Dataset.from_dict({"image": part["image"], "label": ["a", "b", "c", "d"]},
                                         features=datasets.Features({"image": datasets.Image(),
                                                                     "label": datasets.Value("string")}))
    strings.save_to_disk(str(tmp_path / "strings"))
    with pytest.raises(DatasetError, match="integer class labels"):
        _evaluate(fx, "digits_low", tmp_path / "strings")


def test_unlabelled_split(fx: FixtureSet, tmp_path: Path) -> None:
    unlabelled = variant(fx.datasets["digits_low"], tmp_path / "minus", relabel=lambda v: -1)
    with pytest.raises(DatasetError, match="without a label"):
        _evaluate(fx, "digits_low", unlabelled)


def test_empty_split(fx: FixtureSet, tmp_path: Path) -> None:
    """A split with no rows is said as such (it failed in numpy, reducing no labels, an error of no type)."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"]
    # one shard: saved with none (the default for no rows), datasets cannot load it back
    datasets.DatasetDict({"test": part.select([])}).save_to_disk(str(tmp_path / "empty"), num_shards={"test": 1})
    with pytest.raises(DatasetError, match="split 'test' is empty"):
        _evaluate(fx, "digits_low", tmp_path / "empty")


def test_a_split_saved_with_no_rows_is_a_dataset_error(fx: FixtureSet, tmp_path: Path) -> None:
    """save_to_disk writes no shard for no rows, and datasets' load_from_disk then fails with an IndexError:
    it came out as "unexpected error: IndexError('list index out of range')", naming no dataset."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"]
    datasets.DatasetDict({"test": part.select([])}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match=r"cannot be loaded: .*IndexError.*a split saved with no rows"):
        _evaluate(fx, "digits_low", tmp_path / "empty")


def test_missing_split(fx: FixtureSet) -> None:
    data = fx.datasets["digits_low"]
    with pytest.raises(DatasetError) as info:
        _evaluate(fx, "digits_low", f"{data}:validation")
    assert str(info.value).endswith(f"has no split 'validation' (its splits: train, test); name the one to "
                                    f"evaluate on after a colon, e.g. `dataset: {data}:test` in a recipe, "
                                    f"`--task digits_low={data}:test` for `hubmerge evaluate`")


def test_missing_split_of_a_folder_of_images(fx: FixtureSet, tmp_path: Path) -> None:
    """A folder of images with a validation split alone, evaluated on the default 'test': the splits there are and
    the line that names one, as for a save_to_disk folder or a Hub dataset; it was datasets' 'cannot be loaded:
    Unknown split "test"'."""
    import datasets

    part = datasets.load_from_disk(str(fx.datasets["digits_low"]))["test"].select(range(4))
    for index, row in enumerate(part):
        folder = tmp_path / "images" / "validation" / str(row["label"])
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{index}.png")
    with pytest.raises(DatasetError) as info:
        _evaluate(fx, "digits_low", tmp_path / "images")
    assert str(info.value).endswith(f"has no split 'test' (its splits: validation); name the one to evaluate on "
                                    f"after a colon, e.g. `dataset: {tmp_path / 'images'}:validation` in a recipe, "
                                    f"`--task digits_low={tmp_path / 'images'}:validation` for `hubmerge evaluate`")
    assert _evaluate(fx, "digits_low", f"{tmp_path / 'images'}:validation").num_samples == 4


def test_missing_local_directory(fx: FixtureSet, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'.*nowhere' does not exist. Give a directory"):  # as the plan says it
        _evaluate(fx, "digits_low", str(tmp_path / "nowhere"))


def test_hub_dataset_offline(fx: FixtureSet) -> None:
    with pytest.raises(DatasetError) as caught:
        _evaluate(fx, "digits_low", "someone/no-such-dataset")
    assert "could not be loaded from the Hub" in str(caught.value) and "HF_HUB_OFFLINE" in str(caught.value)
    with pytest.raises(DatasetError, match=r"usually evaluated on the Hub dataset 'ylecun/mnist'"):
        _evaluate(fx, "mnist", "mnist")


def test_hub_dataset_through_hf_endpoint(
    fx: FixtureSet, local_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private dataset repo on the session's local Hub (HF_ENDPOINT), read with the token; then
    offline from the cache; a repo that does not exist is a DatasetError."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo = upload_dataset(api, "alice/eval-digits-low", fx.datasets["digits_low"], tmp_path / "up", private=True)

    hf_online(monkeypatch, True)
    result = _evaluate(fx, "digits_low", f"{repo}:test", token=local_hub.alice_token)
    assert result.accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)
    assert result.dataset == f"{repo}:test"
    with pytest.raises(DatasetError, match="was not found"):
        _evaluate(fx, "digits_low", "alice/no-such-dataset", token=local_hub.alice_token)
    # a split it lacks was "cannot be loaded: Unknown split", without the splits there are or how to name one
    with pytest.raises(DatasetError, match=f"has no split 'valid' \\(its splits: .*test.*\\); name the one to "
                       f"evaluate on after a colon, e.g. `dataset: {repo}:"):
        _evaluate(fx, "digits_low", f"{repo}:valid", token=local_hub.alice_token)

    hf_online(monkeypatch, False)
    cached = _evaluate(fx, "digits_low", f"{repo}:test")
    assert cached.accuracy == result.accuracy


def test_bad_arguments(fx: FixtureSet) -> None:
    with pytest.raises(RecipeError, match="batch size"):
        _evaluate(fx, "digits_low", fx.datasets["digits_low"], batch_size=0)
    with pytest.raises(RecipeError, match="max samples"):
        _evaluate(fx, "digits_low", fx.datasets["digits_low"], max_samples=0)
    with pytest.raises(RecipeError, match="match_labels"):
        _evaluate(fx, "digits_low", fx.datasets["digits_low"], match_labels="order")


# ---------------------------------------------------------------- max samples


def test_max_samples_is_a_fixed_subset(fx: FixtureSet) -> None:
    task = "digits_rotated"
    first = _evaluate(fx, task, fx.datasets[task], max_samples=100)
    again = _evaluate(fx, task, fx.datasets[task], max_samples=100, batch_size=7)
    assert first.num_samples == again.num_samples == 100
    assert first.split_size == 449  # the split it was taken from, for the card to say so
    assert (again.accuracy, again.loss) == pytest.approx((first.accuracy, first.loss), rel=1e-6)
    whole = _evaluate(fx, task, fx.datasets[task])
    assert _evaluate(fx, task, fx.datasets[task], max_samples=10_000).num_samples == whole.num_samples == 449
    assert whole.split_size == 449


def test_max_samples_subset_is_spread_over_the_split(fx: FixtureSet) -> None:
    from hubmerge.evaluation.data import load_task_data

    data = load_task_data("digits_rotated", DatasetRef(str(fx.datasets["digits_rotated"])), max_samples=50)
    assert len(data) == 50 and data.total == 449
    assert len(set(data.labels().tolist())) >= 8, "a random subset, not a prefix of a sorted split"


def test_max_samples_of_a_class_sorted_split_spans_many_classes(fx: FixtureSet, tmp_path: Path) -> None:
    """Many datasets store their split sorted by label: a prefix of it would be one or two classes, and
    the score of a few classes would pass for the task's."""
    import datasets

    from hubmerge.evaluation.data import load_task_data

    split = datasets.load_from_disk(str(fx.datasets["digits_rotated"]))["test"]
    split = split.select(np.argsort(split["label"], kind="stable").tolist())
    labels = np.asarray(split["label"])
    assert len(set(labels[:50].tolist())) <= 2  # the prefix of the sorted split
    split.save_to_disk(str(tmp_path / "sorted"))
    data = load_task_data("digits_rotated", DatasetRef(str(tmp_path / "sorted")), max_samples=50)
    assert len(data) == 50 and data.total == len(labels)
    assert len(set(data.labels().tolist())) >= 8
    assert (np.diff(data.labels()) >= 0).all(), "kept in dataset order"


# ---------------------------------------------------------------- task specs


def test_parse_task() -> None:
    assert parse_task("eurosat=tanganke/eurosat") == ("eurosat", DatasetRef("tanganke/eurosat"))
    assert parse_task("low=./data/low:train") == ("low", DatasetRef("./data/low", split="train"))
    assert parse_task("svhn=ufldl-stanford/svhn:cropped_digits:test") == (
        "svhn", DatasetRef("ufldl-stanford/svhn", "cropped_digits", "test")
    )
    assert parse_task("svhn") == ("svhn", None)  # the model's recipe's dataset for it, else its usual one
    for bad in ("=x", "a=", "a=b:c:d:e", "a=b::c", "average=x", "average", "a=C:\\x:c:d:e"):
        with pytest.raises(RecipeError):
            parse_task(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("x=C:\\data\\x", DatasetRef("C:\\data\\x")),  # was path 'C', split '\data\x'
    ("x=C:/data/x:test", DatasetRef("C:/data/x", split="test")),
    ("x=d:\\x:cfg:train", DatasetRef("d:\\x", "cfg", "train")),
    ("x=mnist:test", DatasetRef("mnist", split="test")),  # one letter or more before a colon, no slash: a split
    ("x=org/ds:cfg:train", DatasetRef("org/ds", "cfg", "train")),
    ("x=c:train", DatasetRef("c", split="train")),
])
def test_parse_task_takes_a_windows_drive_for_part_of_the_path(text: str, expected: DatasetRef) -> None:
    assert parse_task(text) == ("x", expected)
    assert DatasetRef.parse(text.partition("=")[2]) == expected  # the recipe's one line: the same reader
    assert expected.is_local == (expected.path[1:2] == ":")  # a folder, not a Hub id, even where it does not exist


# ---------------------------------------------------------------- reports


def _report(model: str, scores: dict[str, tuple[float, float]]) -> EvalReport:
    results = {t: TaskResult(a, loss, 10, f"{t}:test") for t, (a, loss) in scores.items()}
    return EvalReport(model, results, "cpu")


def test_report_is_fusionbench_shaped(tmp_path: Path) -> None:
    report = _report("m", {"a": (0.5, 1.0), "b": (1.0, 0.0)})
    assert report.to_dict() == {
        "a": {"accuracy": 0.5, "loss": 1.0},
        "b": {"accuracy": 1.0, "loss": 0.0},
        "average": {"accuracy": 0.75, "loss": 0.5},
    }
    path = save_report(report, tmp_path / "sub" / EVAL_RESULTS_FILE)
    assert json.loads(path.read_text()) == report.to_dict()
    assert [p.name for p in path.parent.iterdir()] == [EVAL_RESULTS_FILE], "no temporary file left"
    back = EvalReport.from_dict(json.loads(path.read_text()))
    assert back.to_dict() == report.to_dict()
    with pytest.raises(ValueError, match="'a'"):
        EvalReport.from_dict({"a": {"accuracy": 1}})
    assert EvalReport("empty").to_dict() == {}


def test_output_reports_go_only_into_a_merged_output(tmp_path: Path) -> None:
    """From Python, a mistyped output folder was made to hold the reports alone, and a plain model's folder
    took them; `evaluate --save` refused both, and so does save_output_reports now, writing nothing."""
    from hubmerge.errors import ModelFilesNotFoundError
    from hubmerge.evaluation import save_output_reports

    report = _report("m", {"a": (0.5, 1.0)})
    with pytest.raises(ModelFilesNotFoundError, match="'.*typo' does not exist: give the folder `hubmerge"):
        save_output_reports(tmp_path / "typo", report)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "notes.txt").write_text("x")  # no folder at all: not told it lacks a recipe, as a folder is
    with pytest.raises(ModelFilesNotFoundError, match="'.*notes.txt' is a file: give the folder `hubmerge"):
        save_output_reports(tmp_path / "notes.txt", report)
    (tmp_path / "plain").mkdir()
    with pytest.raises(RecipeError, match="holds no hubmerge_recipe.yaml; is it an output of `hubmerge"):
        save_output_reports(tmp_path / "plain", report)
    assert list((tmp_path / "plain").iterdir()) == []
    (tmp_path / "plain" / "hubmerge_recipe.yaml").write_text("method: simple_average\n")
    assert save_output_reports(tmp_path / "plain", report) == tmp_path / "plain" / EVAL_RESULTS_FILE


def test_compare_report_shape_and_table() -> None:
    compare = CompareReport(
        merged=_report("out", {"a": (0.9, 0.3), "b": (0.8, 0.5)}),
        base=_report("base", {"a": (0.5, 1.5), "b": (0.4, 1.6)}),
        finetuned={"a": _report("ft a", {"a": (0.95, 0.1), "b": (0.3, 2.0)}),
                   "b": _report("ft b", {"a": (0.2, 2.5), "b": (0.97, 0.1)})},
        tasks=("a", "b"),
    )
    data = compare.to_dict()
    assert list(data) == ["merged", "base", "finetuned", "individual"]
    assert data["individual"] == {"a": {"accuracy": 0.95, "loss": 0.1}, "b": {"accuracy": 0.97, "loss": 0.1},
                                  "average": {"accuracy": pytest.approx(0.96), "loss": pytest.approx(0.1)}}
    assert data["finetuned"]["b"]["average"]["accuracy"] == pytest.approx(0.585)
    assert list(compare.rows()) == ["merged", "base + task heads", "individual (own fine-tune)",
                                    "fine-tune a", "fine-tune b"]
    text = _render(compare)
    for needle in ("merged", "base + task heads", "individual", "fine-tune b", "85.00", "96.00"):
        assert needle in text
    assert "random subsets" not in text  # every task used its whole split
    cut = replace(compare.merged, results={**compare.merged.results,
                                           "b": replace(compare.merged.results["b"], split_size=1234)})
    assert compare.merged.subsets() == "" and cut.subsets() == "b 10 of 1,234"
    assert "random subsets of the splits: b 10 of 1,234" in _render(replace(compare, merged=cut))


def _render(report: EvalReport | CompareReport) -> str:
    from rich.console import Console

    out = io.StringIO()
    render_report(report, Console(file=out, width=160, color_system=None))
    return out.getvalue()


def test_narrow_consoles_never_cut_a_number() -> None:
    """A pipe (80 columns, no terminal) gets the table at natural width; a terminal folds names."""
    from rich.console import Console

    tasks = ("sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
    scores = {t: (0.5 + i / 100, 1.0) for i, t in enumerate(tasks)}
    compare = CompareReport(
        merged=_report("org/a-rather-long-merged-model-name", scores), base=_report("base", scores),
        finetuned={t: _report(f"ft {t}", scores) for t in tasks}, tasks=tasks,
    )
    numbers = [f"{100 * a:.2f}" for a, _ in scores.values()] + ["53.50"]
    pipe = io.StringIO()
    render_report(compare, Console(file=pipe, width=80, color_system=None))
    assert "…" not in pipe.getvalue()
    assert all(n in pipe.getvalue() for n in numbers)
    assert "fine-tune stanford-cars" in pipe.getvalue() and "individual (own fine-tune)" in pipe.getvalue()

    terminal = io.StringIO()
    four = tasks[:4]
    render_report(CompareReport(
        merged=_report("m", {t: scores[t] for t in four}), base=_report("b", {t: scores[t] for t in four}),
        finetuned={t: _report(t, {u: scores[u] for u in four}) for t in four}, tasks=four,
    ), Console(file=terminal, width=60, force_terminal=True, color_system=None))
    lines = terminal.getvalue().splitlines()
    assert max(map(len, lines)) <= 60 and "…" not in terminal.getvalue()
    assert all(any(n in line for line in lines) for n in numbers[:4])


def test_a_terminal_too_narrow_for_the_comparison_keeps_every_column() -> None:
    """FusionBench's 8 tasks need some 95 columns even folded: an 80-column terminal gets the table wider than
    its window (the terminal wraps it), not cropped at 80, which lost the last task and the average."""
    from rich.console import Console

    tasks = ("sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
    scores = {t: (0.5 + i / 100, 1.0) for i, t in enumerate(tasks)}
    compare = CompareReport(merged=_report("m", scores), base=_report("b", scores),
                            finetuned={t: _report(t, scores) for t in tasks}, tasks=tasks)
    terminal = io.StringIO()
    render_report(compare, Console(file=terminal, width=80, force_terminal=True, color_system=None))
    text = terminal.getvalue()
    assert all(f"{100 * a:.2f}" in text for a, _ in scores.values()) and "53.50" in text  # the average
    assert "…" not in text


def test_render_single_report() -> None:
    text = _render(_report("m", {"a": (0.5, 1.0), "b": (1.0, 0.0)}))
    assert "a:test" in text and "50.00" in text and "average" in text and "75.00" in text


def test_the_table_names_the_columns_a_dataset_was_read_with() -> None:
    """The table showed `d:test` for a dataset read with --label-column coarse_label (the card names it); the JSON
    report, which names no dataset, keeps FusionBench's shape."""
    report = _report("m", {"a": (0.5, 1.0), "b": (1.0, 0.0)})
    named = {"a": replace(report.results["a"], label_column="coarse_label"),
             "b": replace(report.results["b"], label_column="y", image_column="img")}
    text = _render(replace(report, results=named))
    assert "a:test, label column coarse_label " in text and "b:test, label column y, image column img " in text
    assert replace(report, results=named).to_dict() == report.to_dict()


# ---------------------------------------------------------------- merged outputs (engine + loading)


def _recipe(fx: FixtureSet, method: str, parameters: dict | None = None, *, datasets: bool = True) -> Recipe:
    models = []
    for task in fx.tasks:
        entry = {"model": str(fx.models[task]), "task": task}
        if datasets:
            entry["dataset"] = str(fx.datasets[task])
        models.append(entry)
    return Recipe.from_dict({
        "method": method, "parameters": parameters or {}, "base_model": str(fx.base),
        "models": models, "target_modules": [fx.backbone],
    })


@pytest.fixture(scope="module")
def merged(fx: FixtureSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hubmerge.engine import merge

    out = tmp_path_factory.mktemp("merged") / "average"
    merge(_recipe(fx, "simple_average"), out, device="cpu")
    return out


def test_evaluate_merged_output(fx: FixtureSet, merged: Path) -> None:
    report = evaluate_model(merged, device="cpu")  # datasets from the stored recipe
    assert list(report.results) == list(fx.tasks)
    data = report.to_dict()
    assert set(data) == {*fx.tasks, "average"} and all(set(v) == {"accuracy", "loss"} for v in data.values())
    assert 0.5 < data["average"]["accuracy"] <= 1.0
    low = {"digits_low": str(fx.datasets["digits_low"])}
    only = evaluate_model(merged, low, device="cpu", max_samples=64)
    assert list(only.results) == ["digits_low"] and only.results["digits_low"].num_samples == 64


def test_evaluate_plain_classifier(fx: FixtureSet) -> None:
    """A model directory that is not a merged output: every task uses its one head."""
    report = evaluate_model(fx.models["digits_low"], {"low": str(fx.datasets["digits_low"])}, device="cpu")
    assert report.results["low"].accuracy == pytest.approx(fx.accuracy["digits_low"], abs=1e-12)
    with pytest.raises(RecipeError, match="names no evaluation datasets .it holds no hubmerge_recipe.yaml: a plain"):
        evaluate_model(fx.models["digits_low"], device="cpu")  # not "its hubmerge_recipe.yaml has no 'dataset'"


def test_the_revision_asked_for_is_the_one_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_model / compare_inputs(repo, revision=...): every look at the model is at that revision."""
    from hubmerge.vision import loading

    class Looked(Exception):
        pass

    def model_tasks(where: str, *, revision: str | None, token: str | None) -> list[str]:
        raise Looked(where, revision)

    monkeypatch.setattr(loading, "model_tasks", model_tasks)
    with pytest.raises(Looked) as looked:
        evaluate_model("alice/merged", {"a": "org/data"}, revision="v2", device="cpu")
    assert looked.value.args == ("alice/merged", "v2")
    with pytest.raises(Looked) as looked:
        evaluate_model("alice/merged@v3", {"a": "org/data"}, device="cpu")
    assert looked.value.args == ("alice/merged", "v3")


def test_evaluate_merged_unknown_task(fx: FixtureSet, merged: Path) -> None:
    with pytest.raises(UnknownTaskError) as caught:
        evaluate_model(merged, {"digits_odd": str(fx.datasets["digits_low"])}, device="cpu")
    message = str(caught.value)
    assert "'digits_odd'" in message and all(task in message for task in fx.tasks)
    with pytest.raises(UnknownTaskError, match="Did you mean 'digits_low'"):
        evaluate_model(merged, {"digits_lwo": str(fx.datasets["digits_low"])}, device="cpu")


def test_evaluate_merged_head_mismatch(fx: FixtureSet, merged: Path) -> None:
    with pytest.raises(HeadMismatchError, match="2 outputs"):
        evaluate_model(merged, {"digits_parity": str(fx.datasets["digits_low"])}, device="cpu")


def test_recipe_without_datasets(fx: FixtureSet, tmp_path: Path) -> None:
    from hubmerge.engine import merge

    out = tmp_path / "nodata"
    recipe = _recipe(fx, "simple_average", datasets=False)
    merge(recipe, out, device="cpu")
    with pytest.raises(RecipeError, match="--task NAME=DATASET"):
        evaluate_model(out, device="cpu")
    assert evaluate_recipe_tasks(out, recipe, device="cpu").results == {}
    assert not (out / EVAL_RESULTS_FILE).exists()


def test_evaluate_recipe_tasks_writes_report(fx: FixtureSet, merged: Path) -> None:
    from rich.console import Console

    recipe = _recipe(fx, "simple_average")
    out = io.StringIO()
    report = evaluate_recipe_tasks(merged, recipe, console=Console(file=out, width=160), device="cpu")
    written = json.loads((merged / EVAL_RESULTS_FILE).read_text())
    assert written == json.loads(report.to_json())
    assert "eval_results.json" in out.getvalue()


def test_evaluate_recipe_tasks_runs_on_the_recipes_device_unless_told(
    fx: FixtureSet, merged: Path, tmp_path: Path
) -> None:
    """After `hubmerge merge` a recipe's `device:` is where the evaluation runs too (its device argument, None,
    is only --device): a recipe saying cpu on a GPU machine must not evaluate on the GPU."""
    import shutil

    out = tmp_path / "merged"
    shutil.copytree(merged, out, ignore=shutil.ignore_patterns(EVAL_RESULTS_FILE))  # as merged, not evaluated
    recipe = replace(_recipe(fx, "simple_average"), device="cuda:99")  # no machine here has it
    with pytest.raises(RecipeError, match=r"CUDA was asked for|cuda:99 does not exist"):
        evaluate_recipe_tasks(out, recipe)
    assert not (out / EVAL_RESULTS_FILE).exists()
    assert evaluate_recipe_tasks(out, recipe, device="cpu", max_samples=8).device == "cpu"  # told otherwise


def test_compare_inputs(fx: FixtureSet, merged: Path) -> None:
    compare = compare_inputs(merged, device="cpu")
    assert compare.tasks == fx.tasks and compare.base is not None
    assert list(compare.finetuned) == list(fx.tasks)
    for task in fx.tasks:  # the diagonal is each fine-tune as it was published
        assert compare.individual.results[task].accuracy == pytest.approx(fx.accuracy[task], abs=1e-12)
    merged_alone = evaluate_model(merged, device="cpu")
    for task, scores in merged_alone.to_dict().items():
        assert compare.merged.to_dict()[task] == pytest.approx(scores, rel=1e-6)
    data = json.loads(compare.to_json())
    assert set(data) == {"merged", "base", "finetuned", "individual"}
    assert set(data["finetuned"]) == set(fx.tasks)
    for row in [data["merged"], data["base"], *data["finetuned"].values()]:
        assert set(row) == {*fx.tasks, "average"}


def test_a_missing_relative_folder_is_said_missing_not_asked_of_the_hub(
    merged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate ./gone` asked the Hub for repo 'gone' (the folder became a string, 'gone'), and
    `--compare-inputs` said it had no hubmerge_recipe.yaml; a relative folder that is there still
    evaluates."""
    from hubmerge.errors import ModelFilesNotFoundError

    monkeypatch.chdir(merged.parent)
    for call in (evaluate_model, compare_inputs):
        for gone in ("./gone", Path("gone")):
            with pytest.raises(ModelFilesNotFoundError, match="^'gone' does not exist$"):
                call(gone, device="cpu")
    assert compare_inputs(f"./{merged.name}", device="cpu", max_samples=8).merged.results


def test_compare_inputs_offline_says_the_hub_is_out_of_reach_not_that_it_has_no_recipe(
    hub_offline: None,
) -> None:
    """The recipe is compare_inputs' first look at a Hub output: offline, with nothing cached, the Hub is
    out of reach (HubError), not "has no hubmerge_recipe.yaml", no output of `hubmerge merge`."""
    from hubmerge.errors import HubError

    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        compare_inputs("alice/merged-never-cached", device="cpu")


def test_compare_inputs_where_no_input_named_a_task(fx: FixtureSet, tmp_path: Path) -> None:
    """A mergekit-style recipe: no heads/, the root keeps the first input's head, so every task named on the
    command line is read with that head in every row (it raised KeyError)."""
    from hubmerge.engine import merge

    first, second = fx.tasks[:2]
    recipe = Recipe.from_dict({"method": "task_arithmetic", "base_model": str(fx.base),
                               "models": [str(fx.models[first]), str(fx.models[second])]})
    merge(recipe, tmp_path / "out", device="cpu")
    tasks = {"own": str(fx.datasets[first])}
    compare = compare_inputs(tmp_path / "out", tasks, device="cpu")
    assert compare.merged.results["own"].accuracy == evaluate_model(tmp_path / "out", tasks, device="cpu").average[
        "accuracy"]
    rows = compare.rows()
    assert "individual (own fine-tune)" not in rows  # nothing to put on a diagonal
    first_row, second_row = (rows[f"fine-tune {entry.label}"] for entry in recipe.models)
    assert first_row.results["own"].accuracy == pytest.approx(fx.accuracy[first], abs=1e-12)  # as published
    assert second_row.results["own"].accuracy < first_row.results["own"].accuracy  # another backbone, that head


def test_downloads_during_an_evaluation_draw_on_our_display_only(
    local_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub and datasets draw bars of their own, which on a terminal leave a blank line
    each under a live display: while ours runs theirs are off and each load is a line of ours; after
    it, theirs are back as they were."""
    import datasets
    import huggingface_hub.utils as hub_utils
    from huggingface_hub import constants
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from hubmerge.engine import merge

    from ._ui_helpers import publish_fixtures

    models = publish_fixtures(local_hub.endpoint, local_hub.alice_token)
    hf_online(monkeypatch, True)
    out = tmp_path / "merged"
    merge(models.recipe("simple_average"), out, token=local_hub.alice_token)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # every input downloads
    bars = sys.modules["huggingface_hub.utils.tqdm"]
    monkeypatch.setattr(bars, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # the session's env turns them off
    hub_was_off, datasets_was_on = hub_utils.are_progress_bars_disabled(), datasets.is_progress_bar_enabled()
    transformers_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as in a fresh process (which also turns huggingface_hub's on)
    datasets.enable_progress_bars()
    try:
        screen = io.StringIO()
        compare_inputs(out, max_samples=8, device="cpu", token=local_hub.alice_token,
                       console=Console(file=screen, force_terminal=True, width=150))
        assert not hub_utils.are_progress_bars_disabled() and datasets.is_progress_bar_enabled()  # back on
        assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if transformers_was_on else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if hub_was_off else hub_utils.enable_progress_bars)()
        (datasets.enable_progress_bars if datasets_was_on else datasets.disable_progress_bars)()
    drawn = screen.getvalue() + capfd.readouterr().err
    assert "Fetching" not in drawn and "it/s" not in drawn  # no tqdm bar of theirs
    assert "loading ft:digits_low for digits_high" in drawn  # a line of ours while the input downloads


def test_cancel_stops_a_pass_before_its_next_model_on_the_same_batch(fx: FixtureSet) -> None:
    """Cancel was looked at once a batch had gone through every model of the pass: a batch of 64 through the
    six ConvNeXt-base models a pass holds takes minutes on a CPU, all of it after the user pressed Cancel."""
    import threading

    from hubmerge.errors import CancelledError
    from hubmerge.evaluation import loop
    from hubmerge.evaluation.data import load_task_data

    task = "digits_low"
    cancel = threading.Event()
    calls: list[str] = []

    def watched(row: str, model: Any) -> Any:
        forward = model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(row)
            cancel.set()  # the user presses Cancel while this model runs
            return forward(*args, **kwargs)

        model.forward = counted
        return model

    models = [(row, watched(row, _model(fx, task))) for row in ("first", "second")]
    data = load_task_data(task, DatasetRef.parse(f"{fx.datasets[task]}:test"), max_samples=16)
    settings = loop.make_settings("cpu", 8, 0, "name", False, None, cancel)
    with pytest.raises(CancelledError):
        loop.run_pass(data, models, AutoProcessor(fx.models[task]), settings)
    assert calls == ["first"]


def test_progress_is_told_per_pass_in_images_done_of_all(fx: FixtureSet, merged: Path) -> None:
    """Where no console draws bars (the web app), on_progress is the only word of an evaluation that takes hours
    at FusionBench's scale: each pass starts at 0 and ends at its split's size, batch by batch."""
    told: list[tuple[str, int, int]] = []
    tasks = {task: str(fx.datasets[task]) for task in fx.tasks[:2]}
    compare_inputs(merged, tasks, device="cpu", max_samples=20, batch_size=8,
                   on_progress=lambda what, done, total: told.append((what, done, total)))
    rows = "merged, base, ft:digits_low, ft:digits_high, ft:digits_parity, ft:digits_rotated"
    assert [t for t in told if t[2]] == [(f"evaluating {task} ({rows})", done, 20) for task in fx.tasks[:2]
                                        for done in (0, 8, 16, 20)]
    # and each load before a pass as (what, 0, 0): the page showed the last pass's full bar (or the merge's)
    # through a task's dataset and six models, each maybe a download of minutes from the Hub
    loads = [what for what, _, total in told if not total]
    assert [what for what in loads if " for " in what] == [
        f"loading {row} for {task}" for task in fx.tasks[:2] for row in rows.split(", ")]
    for task in fx.tasks[:2]:
        assert any(what.startswith(f"loading {task}'s dataset ") for what in loads)
        assert told.index((f"evaluating {task} ({rows})", 0, 20)) - 1 == told.index(
            (f"loading ft:digits_rotated for {task}", 0, 0))
    told.clear()
    evaluate_model(merged, tasks, device="cpu", max_samples=20, batch_size=16, num_workers=2,  # batches from workers
                   on_progress=lambda *a: told.append(a))
    assert [t for t in told if t[2]] == [(f"evaluating {task} (model)", done, 20) for task in fx.tasks[:2]
                                        for done in (0, 16, 20)]
    assert [what for what, _, total in told if " for " in what and not total] == [
        f"loading model for {task}" for task in fx.tasks[:2]]


def test_cancel_stops_before_the_next_models_load(
    fx: FixtureSet, merged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass loads up to six models before its first batch, each maybe a download of a Hub model: Cancel
    pressed during the first load waited for all of them."""
    import threading

    from hubmerge.errors import CancelledError
    from hubmerge.vision import loading

    cancel = threading.Event()
    loads: list[str] = []
    load_classifier = loading.load_classifier

    def pressed_while_loading(*args: Any, **kwargs: Any) -> Any:
        loads.append(str(args[0]))
        cancel.set()
        return load_classifier(*args, **kwargs)

    monkeypatch.setattr(loading, "load_classifier", pressed_while_loading)
    with pytest.raises(CancelledError):
        compare_inputs(merged, {"digits_low": str(fx.datasets["digits_low"])}, device="cpu", max_samples=8,
                       cancel=cancel)
    assert loads == [str(fx.base)]  # the base's load (after the merged model's); no fine-tune's


def test_the_eta_is_told_when_a_batch_takes_longer_than_half_a_minute() -> None:
    """rich estimates the rate from the last 30 s of updates: with a batch every minute (64 images through a
    ConvNeXt-base on 2 cores take about that, through six of them several) it had one sample, no rate, and the
    evaluation's ETA read -:--:-- from start to end."""
    from rich.console import Console

    from hubmerge.evaluation.loop import progress_bars

    now = [0.0]
    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=100,
                      get_time=lambda: now[0])
    with progress_bars(console) as progress:
        assert progress is not None
        bar = progress.add_task("evaluating", total=640)
        for _ in range(3):
            now[0] += 60.0
            progress.advance(bar, 64)
        assert progress.tasks[0].time_remaining == pytest.approx(7 * 60.0)  # 448 images left at 64 a minute
