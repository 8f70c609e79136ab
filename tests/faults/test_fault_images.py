"""Image folders as they come (issue 16 points 3 and 8): 16-bit and other image modes, transparency,
symbolic-link loops and a class with a single image, through the data stage (`prepare_dataset`).
The conversion rule, mode by mode: docs/data-sources.md ("Pixels")."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from labelwise.data import prepare_dataset
from labelwise.data.shards import read_shard
from labelwise.errors import LabelwiseError

pytestmark = pytest.mark.faults

SIDE = 8


def ramp16() -> np.ndarray:
    """A 16-bit grey ramp over the whole 0..65535 range, 8×8."""
    return np.linspace(0, 65535, SIDE * SIDE).round().astype(np.uint16).reshape(SIDE, SIDE)


def grey_shard(tmp_path, images: dict[str, Image.Image]) -> np.ndarray:
    """Prepare a one-class folder of `images` (file name -> image) at SIDE px; its shard's first channel."""
    root = tmp_path / "images"
    (root / "c").mkdir(parents=True)
    for name, image in images.items():
        image.save(root / "c" / name)
    prepare_dataset("imagefolder", tmp_path / "out", root=root, resolution=SIDE)
    shard, _ = read_shard(tmp_path / "out" / "meta.json", 0)
    return shard


def test_16_bit_greyscale_png_keeps_its_grey_levels(tmp_path):
    ramp = ramp16()
    image = Image.fromarray(ramp)
    image.save(tmp_path / "probe.png")
    assert Image.open(tmp_path / "probe.png").mode == "I;16"  # what PIL reads a 16-bit PNG as
    shard = grey_shard(tmp_path, {"a.png": image, "b.png": image})
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(shard[0, 0], expected)  # 0..65535 -> 0..255, every level kept
    np.testing.assert_array_equal(shard[0, 0], shard[0, 2])  # grey: R = G = B
    assert len(np.unique(shard[0, 0])) == SIDE * SIDE  # before: two levels (0 and 255)


@pytest.mark.parametrize("mode", ["I", "F", "L", "1", "P", "CMYK", "I;16B"])
def test_other_modes_are_converted_by_the_stated_rule(tmp_path, mode):
    ramp = ramp16()
    if mode == "I":  # 32-bit integers holding 16-bit data
        image, expected = Image.fromarray(ramp.astype(np.int32), mode="I"), np.rint(ramp / 257.0)
    elif mode == "F":  # floats in [0, 1]
        values = (ramp / 65535.0).astype(np.float32)
        image, expected = Image.fromarray(values, mode="F"), np.rint(values.astype(np.float64) * 255.0)
    elif mode == "I;16B":
        image, expected = Image.fromarray(ramp).convert("I").convert("I;16B"), np.rint(ramp / 257.0)
    else:  # PIL's own conversions
        image = Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8), mode="L").convert(mode)
        expected = np.asarray(image.convert("RGB"))[..., 0]
    name = "x.tiff" if mode in ("I", "F", "I;16B", "CMYK") else "x.png"  # formats that store these modes
    shard = grey_shard(tmp_path, {name: image, "y" + name[1:]: image})
    np.testing.assert_array_equal(shard[0, 0], expected.astype(np.uint8))


def test_float_image_out_of_range_is_skipped_with_the_reason(tmp_path, caplog):
    root = tmp_path / "images"
    (root / "c").mkdir(parents=True)
    Image.fromarray(np.full((SIDE, SIDE), 7.5, np.float32), mode="F").save(root / "c" / "hdr.tiff")
    for i in range(2):
        Image.new("L", (SIDE, SIDE), 9).save(root / "c" / f"ok{i}.png")
    with caplog.at_level(logging.WARNING, logger="labelwise.data"):
        meta = prepare_dataset("imagefolder", tmp_path / "out", root=root, resolution=SIDE)
    assert meta["skipped_files"] == ["c/hdr.tiff"] and meta["labels"][0]["count"] == 2
    assert "floating-point pixels outside [0, 1]" in caplog.text


def test_transparency_is_composited_onto_black_with_a_warning(tmp_path, caplog):
    rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, : SIDE // 2, 3] = 0  # left half fully transparent
    rgba[:, SIDE // 2 :, 3] = 255  # right half opaque
    with caplog.at_level(logging.WARNING, logger="labelwise.data"):
        shard = grey_shard(
            tmp_path, {"a.png": Image.fromarray(rgba, "RGBA"), "b.png": Image.fromarray(rgba[..., :3], "RGB")}
        )
    np.testing.assert_array_equal(shard[0][:, :, : SIDE // 2], 0)  # transparent -> black
    np.testing.assert_array_equal(shard[0][:, :, SIDE // 2 :], 200)  # opaque kept
    np.testing.assert_array_equal(shard[1], 200)  # the image without alpha is unchanged
    assert "1 image(s) with transparency; transparent pixels were composited onto black" in caplog.text


def test_symbolic_link_loops_are_skipped_with_the_warning_and_listed(tmp_path, caplog):
    root = tmp_path / "images"
    (root / "c").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (SIDE, SIDE), (10, 20, 30)).save(root / "c" / f"{i}.png")
    os.symlink("loop_b.png", root / "c" / "loop_a.png")  # a -> b -> a
    os.symlink("loop_a.png", root / "c" / "loop_b.png")
    os.symlink("self.png", root / "c" / "self.png")
    os.symlink("missing.png", root / "c" / "dangling.png")
    with caplog.at_level(logging.WARNING, logger="labelwise.data"):
        meta = prepare_dataset("imagefolder", tmp_path / "out", root=root, resolution=SIDE)
    assert sorted(meta["skipped_files"]) == ["c/dangling.png", "c/loop_a.png", "c/loop_b.png", "c/self.png"]
    assert meta["labels"][0]["count"] == 2
    for name in ("loop_a.png", "loop_b.png", "self.png"):
        assert f"{name}: unreadable symbolic link (Too many levels of symbolic links)" in caplog.text
    assert "dangling.png: unreadable symbolic link (No such file or directory)" in caplog.text


def test_a_class_with_one_image_is_refused_at_prepare_with_what_to_do(tmp_path):
    root = tmp_path / "images"
    for name, n in (("many", 3), ("lonely", 1)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (SIDE, SIDE), (i, i, i)).save(root / name / f"{i}.png")
    with pytest.raises(LabelwiseError) as err:
        prepare_dataset("imagefolder", tmp_path / "out", root=root, resolution=SIDE)
    message = str(err.value)
    assert f"{root / 'lonely'}: only 1 readable image for label 0" in message
    assert "at least 2" in message and "drop the label from data.labels" in message and "rerun" in message
    assert not (tmp_path / "out" / "meta.json").exists()
    # The class that has enough images alone is fine.
    meta = prepare_dataset("imagefolder", tmp_path / "ok", root=root, labels=[1], resolution=SIDE)
    assert meta["labels"][0]["count"] == 3
