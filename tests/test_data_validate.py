"""Bad data: every case is handled or stops with one line naming the file; the validate command."""

import io

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from exfuse_keras.data.checks import DataError, ExampleFiles, read_example, read_image, read_mask
from exfuse_keras.data.palette import voc_palette, write_palette_png
from exfuse_keras.data.validate import main
from exfuse_keras.data.voc import Voc2012Segmentation
from tests.data_fakes import VOC_TRAIN, VOC_VAL, fake_mask, make_fake_voc, write_image

H, W = 24, 32


def _good_pair(tmp_path, name="x"):
    """A valid JPEG image and palette mask; returns their paths."""
    mask = fake_mask(name, size=(H, W))
    image_path, mask_path = tmp_path / f"{name}.jpg", tmp_path / f"{name}.png"
    write_image(image_path, mask)
    write_palette_png(mask_path, mask, voc_palette())
    return image_path, mask_path


def _jpeg_bytes(array, mode="RGB"):
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="JPEG")
    return buffer.getvalue()


def _corrupt_jpeg(image, mask):
    image.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 4)
    return image


def _truncated_jpeg(image, mask):
    image.write_bytes(image.read_bytes()[:200])
    return image


def _truncated_png_mask(image, mask):
    mask.write_bytes(mask.read_bytes()[:60])
    return mask


def _empty_image(image, mask):
    image.write_bytes(b"")
    return image


def _empty_mask(image, mask):
    mask.write_bytes(b"")
    return mask


def _missing_image(image, mask):
    image.unlink()
    return image


def _mask_size_differs(image, mask):
    write_palette_png(mask, np.zeros((H, W + 1), np.uint8), voc_palette())
    return mask


def _labels_out_of_range(image, mask):
    values = fake_mask("x", size=(H, W))
    values[0, 0], values[1, 1] = 21, 200
    write_palette_png(mask, values, voc_palette())
    return mask


def _mask_16bit(image, mask):
    Image.fromarray(fake_mask("x", size=(H, W)).astype(np.uint16)).save(mask)
    return mask


def _mask_rgb(image, mask):
    Image.fromarray(voc_palette()[fake_mask("x", size=(H, W))]).save(mask)
    return mask


def _mask_jpeg(image, mask):
    mask.write_bytes(_jpeg_bytes(fake_mask("x", size=(H, W)), "L"))
    return mask


BAD_CASES = [
    (_corrupt_jpeg, "corrupt", "corrupt or truncated image file"),
    (_truncated_jpeg, "corrupt", "corrupt or truncated image file"),
    (_truncated_png_mask, "corrupt", "corrupt or truncated image file"),
    (_empty_image, "empty", "empty file (0 bytes)"),
    (_empty_mask, "empty", "empty file (0 bytes)"),
    (_missing_image, "missing", "file not found (listed in lists/train.txt)"),
    (_mask_size_differs, "size_mismatch", "mask is 33x24 (WxH) but its image x.jpg is 32x24"),
    (_labels_out_of_range, "labels", "label values 21, 200 outside 0..20 (ignore label 255)"),
    (_mask_16bit, "mask_format", "16-bit mask PNG"),
    (_mask_rgb, "mask_format", "RGB colour mask PNG; expected a palette"),
    (_mask_jpeg, "mask_format", "mask is JPEG, expected a PNG"),
]


@pytest.mark.parametrize("make_bad, kind, message", BAD_CASES, ids=[c[0].__name__[1:] for c in BAD_CASES])
def test_bad_example_is_one_line_naming_the_file(tmp_path, make_bad, kind, message):
    image, mask = _good_pair(tmp_path)
    bad_file = make_bad(image, mask)
    with pytest.raises(DataError) as info:
        read_example(ExampleFiles("x", str(image), str(mask), "lists/train.txt"), num_classes=21)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{bad_file}: ") and message in text, text
    assert info.value.kind == kind


def test_corrupt_and_malformed_sbd_mat(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 3)
    with pytest.raises(DataError, match=r"bad.mat: corrupt .mat file"):
        read_mask(tmp_path / "bad.mat", 21)
    scipy.io.savemat(tmp_path / "other.mat", {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
    with pytest.raises(DataError, match=r"other.mat: no GTcls.Segmentation"):
        read_mask(tmp_path / "other.mat", 21)
    scipy.io.savemat(tmp_path / "range.mat", {"GTcls": {"Segmentation": np.full((4, 4), 30, np.uint8)}})
    with pytest.raises(DataError, match=r"range.mat: label values 30 outside 0..20"):
        read_mask(tmp_path / "range.mat", 21)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    path = tmp_path / ("image.jpg" if mode in ("L", "CMYK") else "image.png")
    if mode == "I;16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
        expected = np.repeat(rgb[..., :1], 3, axis=-1)
    else:
        source = Image.fromarray(rgb).convert(mode)
        source.save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))
        expected = np.asarray(Image.open(path).convert("RGB"))
    loaded = read_image(path)
    assert loaded.pixels.shape == (H, W, 3) and loaded.pixels.dtype == np.uint8
    assert loaded.converted_from == mode and loaded.encoded is None
    np.testing.assert_array_equal(loaded.pixels, expected)


def test_grayscale_and_palette_masks_give_indices(tmp_path):
    values = fake_mask("x", size=(H, W))
    Image.fromarray(values, mode="L").save(tmp_path / "gray.png")
    write_palette_png(tmp_path / "palette.png", values, np.zeros((21, 3), np.uint8))  # colours irrelevant
    for name in ("gray.png", "palette.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name, 21), values)
    # With another ignore label, 255 is just an out-of-range value.
    with pytest.raises(DataError, match="label values 255 outside 0..20 \\(ignore label 250\\)"):
        read_mask(tmp_path / "gray.png", 21, ignore_label=250)


def test_builder_stops_on_a_bad_label_and_writes_nothing(tmp_path):
    make_fake_voc(tmp_path)
    mask_path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/c.png"
    values = fake_mask("c")
    values[3, 3] = 22
    write_palette_png(mask_path, values, voc_palette())
    builder = Voc2012Segmentation(config="voc", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError, match=r"SegmentationClass/c.png: label values 22 outside 0..20"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))
    assert not builder.is_prepared()


def test_validate_command_reports_every_problem(tmp_path, capsys):
    voc = make_fake_voc(tmp_path, train=VOC_TRAIN + ["m"], val=VOC_VAL)
    (voc / "JPEGImages" / "m.jpg").unlink()
    _labels_out_of_range(None, voc / "SegmentationClass" / "a.png")
    _truncated_jpeg(voc / "JPEGImages" / "d.jpg", None)
    Image.open(voc / "JPEGImages" / "e.jpg").convert("L").save(voc / "JPEGImages" / "e.jpg")
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  dataset: voc\n  root: {tmp_path}\n")

    assert main(["--config", str(config)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith(str(voc / "JPEGImages" / "m.jpg")) and "file not found" in line for line in lines)
    assert any(line.startswith(str(voc / "SegmentationClass" / "a.png")) and "21" in line for line in lines)
    assert any(line.startswith(str(voc / "JPEGImages" / "d.jpg")) and "truncated" in line for line in lines)
    assert "checked 6 examples: 3 problem(s)" in captured.out
    for kind in ("corrupt: 1", "labels: 1", "missing: 1"):
        assert kind in captured.out
    assert "converted to RGB (handled): L 1" in captured.out
    # The progress bar is drawn only on a terminal (exfuse_keras/data/progress.py); captured, none.
    assert "checking train" not in captured.err and "\r" not in captured.err

    assert main(["--config", str(config), "--split", "train", "--set", "data.num_classes=22",
                 "--set", f"data.class_names={list('abcdefghijklmnopqrstuv')}", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "label values 200 outside 0..21 (ignore label 255)" in out  # 21 is a class now
    assert "checked 4 examples: 2 problem(s)" in out


def test_validate_command_clean_dataset(tmp_path, capsys):
    make_fake_voc(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  dataset: voc\n  root: {tmp_path}\n")
    assert main(["--config", str(config), "--no-progress"]) == 0
    assert "checked 5 examples: 0 problem(s)" in capsys.readouterr().out


def test_validate_command_missing_dataset(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  dataset: train_aug\n  root: {tmp_path}\n")
    assert main(["--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'VOCdevkit' / 'VOC2012'}: folder not found" in out
