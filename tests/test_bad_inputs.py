"""A catalogue of bad inputs (issue 16, item 5): one table, one row per kind of mistake a user
can make, each provoked in-process and held to its expected outcome.

Outcomes:
- ``error``: a clean failure, one line that names the file, flag or key at fault and what was
  expected (the ``names`` of the row), with the exit status 2 for a command;
- ``handled``: the input is accepted and the result is right (the row checks it);
- ``elsewhere``: provoked and checked by the named test of another module (listed so the
  catalogue is complete; the row checks that the test still exists).

``test_catalogue_counts`` prints the counts by category and checks the figures given in
docs/reliability.md ("Bad inputs"). Run: ``pytest tests/test_bad_inputs.py -q -s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import yaml
from PIL import Image

from exfuse_keras.config import ConfigError, load_config, load_config_stack
from tests.data_fakes import make_fake_folder
from tests.helpers import tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"im{k}" for k in range(6)]


# ---- the context every row runs in ----------------------------------------------------------------


@dataclasses.dataclass
class Context:
    """Files shared by the rows (built once) and a fresh folder per row."""

    base: Path
    data_root: Path
    config: Path            # a valid tiny config on the folder dataset under data_root
    run: Path               # a run folder: config.yaml + best.keras (5 classes)
    keras_files: dict       # name -> path: other_classes, other_arch, lambda, unknown_class, truncated, not_zip
    counter: int = 0

    def fresh(self) -> Path:
        self.counter += 1
        folder = self.base / f"case{self.counter:03d}"
        folder.mkdir()
        return folder

    def config_dict(self, **train) -> dict:
        values = tiny_config_dict()
        values["data"].update({"dataset": "folder", "root": str(self.data_root)})
        values["train"] = {"batch_size": 2, "epochs": 1, "steps_per_epoch": 1, "warmup_steps": 0, **train}
        return values

    def write_config(self, folder: Path, values: dict, name: str = "config.yaml") -> Path:
        path = folder / name
        path.write_text(yaml.safe_dump(values))
        return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    import keras

    from exfuse_keras.config import config_from_dict, save_config
    from exfuse_keras.model import build_model

    base = tmp_path_factory.mktemp("bad_inputs")
    data_root = make_fake_folder(base / "data", IDS, num_classes=5)
    context = Context(base, data_root, base / "config.yaml", base / "run", {})
    values = context.config_dict()
    context.write_config(base, values)
    cfg = config_from_dict(values)
    context.run.mkdir()
    save_config(cfg, str(context.run / "config.yaml"))
    model = build_model(cfg)
    model.save(context.run / "best.keras")

    files = context.keras_files
    files["other_classes"] = base / "three_classes.keras"
    three = tiny_config_dict()
    three["data"] = {"num_classes": 3, "class_names": ["bg", "a", "b"], "crop_size": 64}
    build_model(config_from_dict(three)).save(files["other_classes"])
    inputs = keras.Input((None, None, 3))
    files["other_arch"] = base / "other_arch.keras"
    keras.Model(inputs, {"logits": keras.layers.Conv2D(5, 1, name="unrelated")(inputs)}).save(files["other_arch"])
    files["lambda"] = base / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs)).save(files["lambda"])

    class Mystery(keras.layers.Layer):  # not registered: a class the loader cannot know
        def call(self, x):
            return x

    files["unknown_class"] = base / "unknown_class.keras"
    keras.Model(inputs, Mystery()(inputs)).save(files["unknown_class"])
    data = (context.run / "best.keras").read_bytes()
    files["truncated"] = base / "truncated.keras"
    files["truncated"].write_bytes(data[:len(data) // 2])
    files["not_zip"] = base / "not_zip.keras"
    files["not_zip"].write_text("this is a text file named .keras")
    return context


# ---- helpers the rows use ---------------------------------------------------------------------------


def raised(call: Callable, *types) -> str:
    """The message of the user error ``call()`` raises (one of ``types``)."""
    with pytest.raises(types) as info:
        call()
    return str(info.value)


def cli(main: Callable, argv: list) -> tuple[int, str]:
    """(exit status, stderr) of a command's ``main(argv)`` run in this process."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, err.getvalue()


def cli_error(main: Callable, argv: list) -> str:
    """The one ``error:`` line of a command that must fail with exit status 2 and no traceback
    (argparse's usage lines, ``warning:`` lines and progress bars may come before it)."""
    status, err = cli(main, argv)
    assert status == 2, f"exit status {status}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return lines[0]


def train_main(argv):
    from exfuse_keras.training.run import main

    return main(argv)


def evaluate_main(argv):
    from exfuse_keras.evaluation.evaluate import main

    return main(argv)


def predict_main(argv):
    from exfuse_keras.inference.predict import main

    return main(argv)


def export_main(argv):
    from exfuse_keras.export.cli import main

    return main(argv)


def an_image(folder: Path) -> Path:
    path = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


@contextlib.contextmanager
def failing_writes(folder: Path, code: int, after: int = 64):
    """Writes to files under ``folder`` fail with OSError ``code`` after ``after`` bytes: a full
    disk (ENOSPC) or a read-only folder (EACCES) that root, which the tests may run as, would
    otherwise write into. Python's own file writes only (open / io.open)."""
    import builtins

    real_open = builtins.open
    prefix = os.path.abspath(folder) + os.sep

    class Failing(io.RawIOBase):
        def __init__(self, path):
            self.path, self.written = path, 0

        def writable(self):
            return True

        def write(self, data):
            self.written += len(data)
            if self.written > after or code != errno.ENOSPC:
                raise OSError(code, os.strerror(code), self.path)
            return len(data)

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(m in mode for m in "wax+") \
                and os.path.abspath(os.fspath(file)).startswith(prefix):
            if code != errno.ENOSPC:
                raise OSError(code, os.strerror(code), os.fspath(file))
            raw = Failing(os.fspath(file))
            real_open(file, mode).close()  # the file appears, as on a full disk
            return raw if "b" in mode else io.TextIOWrapper(io.BufferedWriter(raw))
        return real_open(file, mode, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", fake_open)
        patch.setattr(io, "open", fake_open)
        yield


def read_only(folder: Path):
    """A read-only folder: chmod 555, and for root (who writes anyway) writes that fail with EACCES."""
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        return failing_writes(folder, errno.EACCES)
    return contextlib.nullcontext()


# ---- config rows --------------------------------------------------------------------------------------


def config_file_error(text: str, name: str = "cfg.yaml", others: dict = None) -> Callable:
    def run(c: Context) -> str:
        folder = c.fresh()
        for other, content in (others or {}).items():
            (folder / other).write_text(content)
        (folder / name).write_text(text)
        return raised(lambda: load_config(folder / name), ConfigError)
    return run


def override_error(*overrides: str) -> Callable:
    return lambda c: raised(lambda: load_config(None, list(overrides)), ConfigError)


def empty_config_is_the_defaults(c: Context) -> None:
    folder = c.fresh()
    (folder / "empty.yaml").write_text("# nothing changed\n")
    assert load_config(folder / "empty.yaml") == load_config(None)


def later_file_overrides_earlier(c: Context) -> None:
    folder = c.fresh()
    (folder / "a.yaml").write_text("train: {batch_size: 4, epochs: 3}\n")
    (folder / "b.yaml").write_text("train: {batch_size: 8}\n")
    cfg = load_config_stack([folder / "a.yaml", folder / "b.yaml"])
    assert (cfg.train.batch_size, cfg.train.epochs) == (8, 3)


def train_error(*extra, config_values: Optional[dict] = None, model_dir: Optional[str] = None) -> Callable:
    """train.py's error line for a config (default: the tiny valid one) and extra arguments."""
    def run(c: Context) -> str:
        folder = c.fresh()
        config = c.write_config(folder, config_values(c) if callable(config_values) else c.config_dict())
        argv = ["--config", config, "--model-dir", model_dir(folder) if callable(model_dir) else folder / "run"]
        return cli_error(train_main, argv + list(extra))
    return run


CONFIG_CASES = [
    # id, how, run, names
    ("unknown_key", "`train: {batchsize: 4}` in the file", config_file_error("train: {batchsize: 4}\n"),
     ["cfg.yaml", "unknown key 'train.batchsize'", "did you mean 'train.batch_size'"]),
    ("unknown_section", "`trian:` section", config_file_error("trian: {epochs: 2}\n"),
     ["cfg.yaml", "unknown key 'trian'", "did you mean 'train'"]),
    ("wrong_type_int", "`train.batch_size: eight`", config_file_error("train: {batch_size: eight}\n"),
     ["cfg.yaml", "train.batch_size", "must be an integer"]),
    ("wrong_type_float_for_int", "`train.epochs: 2.5`", config_file_error("train: {epochs: 2.5}\n"),
     ["train.epochs", "must be an integer"]),
    ("wrong_type_bool", "`model.seb.enabled: 3`", override_error("model.seb.enabled=3"),
     ["model.seb.enabled", "must be true or false"]),
    ("wrong_type_list", "`data.scale_range: 2`", override_error("data.scale_range=2"),
     ["data.scale_range", "must be a list of a number"]),
    ("wrong_type_section", "`train: 5` (a section given a value)", config_file_error("train: 5\n"),
     ["cfg.yaml", "train", "must be a mapping"]),
    ("not_in_choices", "`model.backbone.norm: group`", override_error("model.backbone.norm=group"),
     ["model.backbone.norm", "one of 'batch', 'sync_batch', 'frozen'"]),
    ("out_of_range_negative", "`train.batch_size: -2`", override_error("train.batch_size=-2"),
     ["train.batch_size", "must be positive"]),
    ("out_of_range_interval", "`train.momentum: 1.5`", override_error("train.momentum=1.5"),
     ["train.momentum", "must be in [0, 1)"]),
    ("out_of_range_multiple", "`data.crop_size: 500` (not a multiple of 32)", override_error("data.crop_size=500"),
     ["data.crop_size", "multiple of 32"]),
    ("out_of_range_even_kernel", "`model.gcn_kernel: 14`", override_error("model.gcn_kernel=14"),
     ["model.gcn_kernel", "odd"]),
    ("not_finite_nan", "`train.learning_rate: .nan`", override_error("train.learning_rate=.nan"),
     ["train.learning_rate", "finite"]),
    ("not_finite_inf", "`train.weight_decay: .inf`", override_error("train.weight_decay=.inf"),
     ["train.weight_decay", "finite"]),
    ("bad_yaml", "a YAML syntax error (unclosed bracket)", config_file_error("train: {batch_size: [4\n"),
     ["cfg.yaml", "not valid YAML at line"]),
    ("top_level_not_mapping", "the file is a YAML list", config_file_error("- train\n- model\n"),
     ["cfg.yaml", "top level must be a mapping"]),
    ("duplicate_key", "`train:` twice in one file (YAML keeps the last silently)",
     config_file_error("train: {batch_size: 4}\nmodel: {gcn_kernel: 7}\ntrain: {epochs: 2}\n"),
     ["cfg.yaml", "'train'", "twice"]),
    ("missing_file", "`--config nope.yaml`", lambda c: raised(lambda: load_config(c.base / "nope.yaml"), ConfigError),
     ["nope.yaml", "config file not found"]),
    ("missing_base_file", "`base: nope.yaml` names no file",
     config_file_error("base: nope.yaml\ntrain: {epochs: 2}\n"), ["cfg.yaml", "base", "nope.yaml", "not found"]),
    ("base_loop", "a.yaml has `base: cfg.yaml`, which has `base: a.yaml`",
     config_file_error("base: a.yaml\n", others={"a.yaml": "base: cfg.yaml\n"}), ["cfg.yaml", "loops back"]),
    ("base_wrong_type", "`base: 3`", config_file_error("base: 3\n"), ["cfg.yaml", "base must be a path"]),
    ("class_names_count", "`data.num_classes: 3` with the 21 VOC names", override_error("data.num_classes=3"),
     ["data.class_names", "3 entries"]),
    ("class_weights_count", "4 `train.class_weights` for 21 classes",
     override_error("train.class_weights=[1, 1, 1, 1]"), ["train.class_weights", "21 entries"]),
    ("ignore_label_is_a_class", "`data.ignore_label: 3` with 21 classes", override_error("data.ignore_label=3"),
     ["data.ignore_label", "[num_classes, 255]"]),
    ("split_lists_half_given", "`data.folder.train_list` without `val_list`",
     override_error("data.folder.train_list=train.txt"), ["data.folder.train_list", "given together"]),
    ("mix_without_dataset_mix", "`data.mix` set but `data.dataset: voc`",
     override_error("data.mix=[{dataset: voc, val: true}]"), ["data.mix", "only when data.dataset is 'mix'"]),
    ("imagenet_weights_wrong_backbone", "`model.backbone.weights: imagenet` on a torchvision ResNeXt",
     override_error("model.backbone.weights=imagenet"), ["model.backbone.weights", "keras-convention ResNet"]),
    ("set_without_equals", "`--set train.batch_size`", override_error("train.batch_size"),
     ["--set 'train.batch_size'", "expected key=value"]),
    ("set_unknown_key", "`--set train.batchsize=4`", override_error("train.batchsize=4"),
     ["--set train.batchsize=4", "unknown key 'train.batchsize'"]),
    ("set_into_a_value", "`--set train.epochs.x=1` (a value used as a section)", override_error("train.epochs.x=1"),
     ["--set train.epochs.x=1", "train.epochs", "must be an integer"]),
    ("time_budget_multi_worker", "`train.max_train_seconds` under the multi_worker strategy",
     None, None),  # elsewhere
    ("train_cli_bad_config", "train.py with a config error: exit 2, the config's line",
     train_error(config_values=lambda c: {**c.config_dict(), "train": {"batchsize": 2}}),
     ["error:", "config.yaml", "unknown key 'train.batchsize'"]),
]
CONFIG_HANDLED = [
    ("empty_file", "an empty config file: every default", empty_config_is_the_defaults),
    ("stacked_files", "two --config files: the later one's keys win, the rest merge", later_file_overrides_earlier),
]
CONFIG_ELSEWHERE = {
    "time_budget_multi_worker": "tests/test_training.py::test_a_time_budget_is_refused_under_multi_worker",
}


# ---- data rows --------------------------------------------------------------------------------------


def validate_case(name: str) -> Callable:
    """Re-runs one row of tests/test_data_validate.py's BAD_CASES: the one-line DataError."""
    def run(c: Context) -> str:
        from exfuse_keras.data.checks import DataError, ExampleFiles, read_example
        from tests import test_data_validate as dv

        make_bad = {case[0].__name__[1:]: case[0] for case in dv.BAD_CASES}[name]
        image, mask = dv._good_pair(c.fresh())
        bad = make_bad(image, mask)
        text = raised(lambda: read_example(ExampleFiles("x", str(image), str(mask), "lists/train.txt"), 21),
                      DataError)
        assert text.startswith(f"{bad}: "), text
        return text
    return run


VALIDATE_MESSAGES = {
    "corrupt_jpeg": "corrupt or truncated image file", "truncated_jpeg": "corrupt or truncated image file",
    "truncated_png_mask": "corrupt or truncated image file", "empty_image": "empty file (0 bytes)",
    "empty_mask": "empty file (0 bytes)", "missing_image": "file not found (listed in lists/train.txt)",
    "mask_size_differs": "mask is 33x24 (WxH) but its image x.jpg is 32x24",
    "labels_out_of_range": "label values 21, 200 outside 0..20", "mask_16bit": "16-bit mask PNG",
    "mask_rgb": "RGB colour mask PNG; expected a palette", "mask_jpeg": "mask is JPEG, expected a PNG",
}


def mat_error(content: str) -> Callable:
    def run(c: Context) -> str:
        import scipy.io

        from exfuse_keras.data.checks import DataError, read_mask

        path = c.fresh() / "bad.mat"
        if content == "garbage":
            path.write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 3)
        elif content == "no_gtcls":
            scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
        else:
            scipy.io.savemat(path, {"GTcls": {"Segmentation": np.full((4, 4), 30, np.uint8)}})
        return raised(lambda: read_mask(path, 21), DataError)
    return run


def folder_error(setup: Callable, **lists) -> Callable:
    """folder_examples' DataError on a fake folder dataset changed by ``setup(root)``."""
    def run(c: Context) -> str:
        from exfuse_keras.data.checks import DataError
        from exfuse_keras.data.folder import folder_examples

        root = make_fake_folder(c.fresh() / "data", IDS[:4], num_classes=5)
        setup(root)
        return raised(lambda: folder_examples(root, **lists), DataError)
    return run


def _write_lists(train: str, val: str) -> Callable:
    def setup(root: Path) -> None:
        (root / "train.txt").write_text(train)
        (root / "val.txt").write_text(val)
    return setup


def _secret_beside(root: Path) -> None:
    make_fake_folder(root.parent / "outside", ["secret"], num_classes=5)
    _write_lists("im0\nim1\n../../outside/images/secret\n", "im2\n")(root)


def image_modes_become_rgb(c: Context) -> None:
    from exfuse_keras.data.checks import read_image

    folder = c.fresh()
    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    for mode in ("L", "RGBA", "CMYK", "P"):
        path = folder / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.fromarray(rgb).convert(mode).save(path)
        loaded = read_image(path)
        array = loaded.pixels
        assert array.shape == (6, 5, 3) and array.dtype == np.uint8, (mode, array.shape, array.dtype)


def crlf_and_blank_lines_in_split_lists(c: Context) -> None:
    from exfuse_keras.data.folder import folder_examples

    root = make_fake_folder(c.fresh() / "data", IDS[:4], num_classes=5)
    _write_lists("im0\r\n\r\n  im1  \r\n", "im2\r\nim3\r\n")(root)
    splits = folder_examples(root, train_list="train.txt", val_list="val.txt")
    assert [e.example_id for e in splits["train"]] == ["im0", "im1"]
    assert [e.example_id for e in splits["val"]] == ["im2", "im3"]


def train_on_a_bad_mask(c: Context) -> str:
    """train.py on a folder dataset with a mask whose labels exceed num_classes."""
    from exfuse_keras.data.palette import voc_palette, write_palette_png

    folder = c.fresh()
    root = make_fake_folder(folder / "data", IDS[:4], num_classes=5)
    values = np.zeros((48, 64), np.uint8)
    values[5, 5] = 9
    write_palette_png(root / "masks" / "im1.png", values, voc_palette())
    cfg = c.config_dict()
    cfg["data"]["root"] = str(root)
    config = c.write_config(folder, cfg)
    return cli_error(train_main, ["--config", config, "--model-dir", folder / "run"])


def _binary_folder(c: Context, high: int = 255) -> Path:
    """A folder dataset of black-and-white masks: 0 background, ``high`` where the object is."""
    root = make_fake_folder(c.fresh() / "data", IDS[:4], num_classes=2, palette_masks=False)
    for path in sorted((root / "masks").iterdir()):
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.where(mask > 0, high, 0).astype(np.uint8), mode="L").save(path)
    return root


def train_on_binary_masks(c: Context) -> str:
    """train.py on a folder of 0/255 masks and no label_map: refused while preparing the records."""
    root = _binary_folder(c)
    cfg = c.config_dict()
    cfg["data"].update(root=str(root), num_classes=2, class_names=["background", "object"])
    config = c.write_config(root.parent, cfg)
    return cli_error(train_main, ["--config", config, "--model-dir", root.parent / "run"])


def validate_binary_masks(c: Context) -> str:
    """data.validate's scan on the same folder: the trap is a problem of the train split."""
    from exfuse_keras.data.folder import folder_examples
    from exfuse_keras.data.validate import scan

    report = scan(folder_examples(_binary_folder(c)), 2, 255, progress=False)
    assert len(report.problems) >= 1 and all(p.kind == "labels" for p in report.problems)
    return str(report.problems[0])


def rgb_mask_with_an_unknown_colour(c: Context) -> str:
    from exfuse_keras.data.checks import DataError, mask_colours, read_mask
    from exfuse_keras.data.palette import voc_palette

    path = c.fresh() / "mask.png"
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (12, 200, 3)
    Image.fromarray(rgb).save(path)
    return raised(lambda: read_mask(path, 5, colours=mask_colours(voc_palette(5), 5, 255)), DataError)


def data_config_error(**data) -> Callable:
    def run(c: Context) -> str:
        values = c.config_dict()
        values["data"].update(data)
        return raised(lambda: load_config(str(c.write_config(c.fresh(), values))), ConfigError)
    return run


def binary_masks_with_a_label_map(c: Context) -> None:
    """0/255 masks with data.label_map {255: 1}: objects are class 1 and nothing is refused."""
    from exfuse_keras.data.checks import read_mask
    from exfuse_keras.data.folder import folder_examples
    from exfuse_keras.data.validate import scan

    root = _binary_folder(c)
    path = sorted((root / "masks").iterdir())[0]
    raw = np.asarray(Image.open(path))
    np.testing.assert_array_equal(read_mask(path, 2, label_map={255: 1}), (raw == 255).astype(np.uint8))
    report = scan(folder_examples(root), 2, 255, progress=False, label_map={255: 1})
    assert not report.problems and report.tallies["train"].pixels[1] > 0


def binary_zero_one_masks(c: Context) -> None:
    """0/1 masks with two classes: read as they are."""
    from exfuse_keras.data.checks import read_mask
    from exfuse_keras.data.folder import folder_examples
    from exfuse_keras.data.validate import scan

    root = _binary_folder(c, high=1)
    path = sorted((root / "masks").iterdir())[0]
    np.testing.assert_array_equal(read_mask(path, 2), np.asarray(Image.open(path)))
    assert not scan(folder_examples(root), 2, 255, progress=False).problems


def rgb_colour_masks_read_through_the_palette(c: Context) -> None:
    """data.mask_format: rgb: RGB, RGBA and palette-mode colour masks give the palette's indices."""
    from exfuse_keras.data.checks import mask_colours, read_mask
    from exfuse_keras.data.palette import colorize, voc_palette

    folder = c.fresh()
    labels = np.random.default_rng(3).integers(0, 5, (7, 9)).astype(np.uint8)
    labels[0, :3] = 255
    colours = mask_colours(voc_palette(5), 5, 255)
    rgb = colorize(labels, voc_palette(5))
    Image.fromarray(rgb).save(folder / "RGB.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "RGBA.png")
    # A palette PNG whose indices are not the classes (an editor's own order), drawn in their colours.
    shuffled = ((labels.astype(np.int64) + 7) % 256).astype(np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    palette[shuffled] = rgb
    image = Image.fromarray(shuffled, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    image.save(folder / "P.png")
    for mode in ("RGB", "RGBA", "P"):
        np.testing.assert_array_equal(read_mask(folder / f"{mode}.png", 5, colours=colours), labels, err_msg=mode)


def a_class_never_in_train_is_reported(c: Context) -> None:
    from exfuse_keras.data.folder import folder_examples
    from exfuse_keras.data.validate import scan

    root = _binary_folder(c, high=1)
    report = scan(folder_examples(root), 3, 255, progress=False, class_names=["bg", "object", "never"])
    assert not report.problems and report.warnings == ["train: no mask holds class(es) 2 (never)"]
    assert "warning: train: no mask holds class(es) 2 (never)" in report.summary()


DATA_CASES = [(f"validate_{name}", f"an example's {name.replace('_', ' ')} (data/checks.py)",
               validate_case(name), [message]) for name, message in VALIDATE_MESSAGES.items()] + [
    ("sbd_mat_corrupt", "an SBD .mat mask that is not a .mat file", mat_error("garbage"),
     ["bad.mat", "corrupt .mat file"]),
    ("sbd_mat_no_segmentation", "an SBD .mat without GTcls.Segmentation", mat_error("no_gtcls"),
     ["bad.mat", "no GTcls.Segmentation"]),
    ("sbd_mat_labels", "an SBD .mat with label 30 of 21 classes", mat_error("range"),
     ["bad.mat", "label values 30 outside 0..20"]),
    ("folder_no_image_folder", "`data.folder.image_dir` missing",
     folder_error(lambda root: os.rename(root / "images", root / "pictures")), ["images", "image folder not found"]),
    ("folder_duplicate_id", "im0.jpg and im0.png in images/",
     folder_error(lambda root: Image.new("RGB", (4, 4)).save(root / "images" / "im0.png")),
     ["im0.png", "two images have the id 'im0'"]),
    ("folder_too_few_images", "one image, no split lists",
     folder_error(lambda root: [p.unlink() for p in sorted((root / "images").iterdir())[1:]]),
     ["images", "need at least 2"]),
    ("split_list_missing", "`val_list` names no file", folder_error(_write_lists("im0\n", "im1\n"),
                                                                    train_list="train.txt", val_list="none.txt"),
     ["none.txt", "split list not found"]),
    ("split_lists_overlap", "an id in both split lists", folder_error(_write_lists("im0\nim1\n", "im1\n"),
                                                                      train_list="train.txt", val_list="val.txt"),
     ["val.txt", "ids also in train.txt: im1"]),
    ("split_list_outside_root", "a split list naming `../../outside/images/secret`",
     folder_error(_secret_beside, train_list="train.txt", val_list="val.txt"),
     ["train.txt", "line 3", "../../outside/images/secret", "outside the dataset folder"]),
    ("split_list_absolute_path", "a split list naming `/etc/passwd`",
     folder_error(_write_lists("im0\n/etc/passwd\n", "im2\n"), train_list="train.txt", val_list="val.txt"),
     ["train.txt", "line 2", "/etc/passwd"]),
    ("train_cli_bad_labels", "train.py on a folder dataset with label 9 of 5 classes: exit 2, one line",
     train_on_a_bad_mask, ["error:", "im1.png", "label values 9 outside 0..4", "data.label_map"]),
    ("train_cli_binary_masks", "train.py on 0/255 black-and-white masks without data.label_map",
     train_on_binary_masks, ["error:", ".png", "every mask holds only 0 and 255", "data.label_map: {255: 1}"]),
    ("validate_binary_masks", "data.validate on 0/255 masks without data.label_map", validate_binary_masks,
     ["masks", "every mask holds only 0 and 255", "data.label_map: {255: 1}"]),
    ("mask_rgb_unknown_colour", "data.mask_format: rgb and a colour outside the palette",
     rgb_mask_with_an_unknown_colour, ["mask.png", "(12, 200, 3)", "not in data.palette"]),
    ("label_map_outside_classes", "data.label_map {255: 7} with 5 classes",
     data_config_error(label_map={255: 7}), ["data.label_map[255]", "0..4"]),
    ("label_map_not_folder", "data.label_map on the VOC dataset", data_config_error(dataset="voc", label_map={1: 2}),
     ["data.label_map", "folder dataset"]),
    ("mask_format_rgb_shared_colour", "data.mask_format: rgb with two classes of one colour",
     data_config_error(mask_format="rgb", palette=[[0, 0, 0], [9, 9, 9], [9, 9, 9], [1, 2, 3], [4, 5, 6]]),
     ["data.palette", "same colour (9, 9, 9)"]),
]
DATA_HANDLED = [
    ("image_modes", "grayscale, RGBA, CMYK and palette images: read as 8-bit RGB", image_modes_become_rgb),
    ("split_list_crlf", "split lists with CRLF line ends, blank lines and spaces", crlf_and_blank_lines_in_split_lists),
    ("binary_masks_label_map", "0/255 masks with data.label_map {255: 1}: class 1", binary_masks_with_a_label_map),
    ("binary_masks_zero_one", "0/1 masks with two classes: read as they are", binary_zero_one_masks),
    ("mask_rgb_through_palette", "RGB, RGBA and palette colour masks with data.mask_format: rgb",
     rgb_colour_masks_read_through_the_palette),
    ("class_never_in_train", "a class no train mask holds: a warning line", a_class_never_in_train_is_reported),
]
DATA_ELSEWHERE = {
    "voc_builder_bad_label": "tests/test_data_validate.py::test_builder_stops_on_a_bad_label_and_writes_nothing",
    "validate_command_report": "tests/test_data_validate.py::test_validate_command_reports_every_problem",
    "validate_missing_dataset": "tests/test_data_validate.py::test_validate_command_missing_dataset",
    "too_few_examples_for_a_batch": "tests/test_data_pipeline.py::test_too_few_examples_for_a_batch",
    "too_few_examples_per_worker": "tests/test_training.py::test_resumed_training_data_starts_at_the_data_epoch_and_batch_of_the_resumed_step",
    "coco_category_names": "tests/test_data_coco.py::test_category_table_maps_the_20_voc_classes",
    "coco_rle_counts_and_size": "tests/test_data_coco.py::test_rle_decoding",
    "coco_empty_image_file": "tests/test_data_coco.py::test_instances_bad_files",
    "coco_panoptic_missing_segment": "tests/test_data_coco.py::test_panoptic_unknown_segment_id",
    "imagenet_archive_missing": "tests/test_data_imagenet.py::test_missing_archives",
    "mix_bad_entries": "tests/test_data_mix.py::test_bad_mix_settings",
    "backbone_weights_missing_or_mismatched": "tests/test_backbone.py::test_missing_or_mismatched_weights_fail_clearly",
}


# ---- model files and command lines ------------------------------------------------------------------


def keras_file_error(name: str) -> Callable:
    """predict.py with --weights one of the broken or foreign .keras files (and the run's config)."""
    def run(c: Context) -> str:
        folder = c.fresh()
        return cli_error(predict_main, [an_image(folder), "--weights", c.keras_files[name], "--config",
                                        c.run / "config.yaml", "--output", folder / "out"])
    return run


def init_from(name: str, part: str = "model") -> Callable:
    """train.py starting from one of the .keras files (train.init.from_run)."""
    return train_error(config_values=lambda c: {**c.config_dict(), "train": {
        **c.config_dict()["train"], "init": {"from_run": str(c.keras_files[name]), "part": part}}})


def backbone_weights_from(name: str) -> Callable:
    def values(c: Context) -> dict:
        cfg = c.config_dict()
        cfg["model"]["backbone"]["weights"] = str(c.keras_files[name])
        return cfg
    return train_error(config_values=values)


def init_from_other_class_count(c: Context) -> None:
    """train.init.from_run with a 3-class model: every layer but the heads copied (documented)."""
    from exfuse_keras.config import InitConfig, config_from_dict
    from exfuse_keras.model import build_model
    from exfuse_keras.training.run import initialize_from

    model = build_model(config_from_dict(c.config_dict()))
    source_path = str(c.keras_files["other_classes"])
    copied = initialize_from(model, InitConfig(from_run=source_path, part="model"))
    import keras

    source = keras.models.load_model(source_path, compile=False)
    weighted = [layer for layer in model.layers if layer.weights]
    assert 0 < copied < len(weighted) + 100
    head = model.get_layer("backbone")
    np.testing.assert_array_equal(head.weights[0].numpy(), source.get_layer("backbone").weights[0].numpy())


def config_of_another_architecture(c: Context) -> None:
    """predict.py with a run's .keras and a config of another architecture (same classes): the file's
    own architecture predicts; the config's data section is what is read."""
    import keras

    from exfuse_keras.inference.segmenter import Segmenter

    folder = c.fresh()
    values = c.config_dict()
    values["model"]["seb"] = {"enabled": False}
    values["model"]["gcn_kernel"] = 7
    config = c.write_config(folder, values)
    image = an_image(folder)
    assert cli(predict_main, [image, "--weights", c.run / "best.keras", "--config", config,
                              "--output", folder / "out"])[0] == 0
    from exfuse_keras.config import load_config as load

    expected, _ = Segmenter(keras.models.load_model(c.run / "best.keras", compile=False),
                            load(c.run / "config.yaml")).predict(str(image))
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "out" / "photo_mask.png")), expected)


def run_without_config(c: Context) -> str:
    folder = c.fresh()
    (folder / "run").mkdir()
    (folder / "run" / "best.keras").write_bytes((c.run / "best.keras").read_bytes())
    return cli_error(predict_main, [an_image(folder), "--weights", folder / "run", "--output", folder / "out"])


def predict_output(kind: str) -> Callable:
    def run(c: Context) -> str:
        folder = c.fresh()
        output = folder / "out"
        argv = [an_image(folder), "--weights", c.run, "--output", output]
        if kind == "file":
            output.write_text("a file")
            return cli_error(predict_main, argv)
        if kind == "read_only":
            with read_only(output):
                line = cli_error(predict_main, argv)
            output.chmod(0o755)
        else:
            output.mkdir()
            with failing_writes(output, errno.ENOSPC):
                line = cli_error(predict_main, argv)
        assert not [p for p in output.iterdir() if p.name.endswith(".png")], list(output.iterdir())
        return line
    return run


def train_model_dir(kind: str) -> Callable:
    def run(c: Context) -> str:
        folder = c.fresh()
        model_dir = folder / "run"
        argv = ["--config", c.config, "--model-dir", model_dir]
        if kind == "file":
            model_dir.write_text("a file")
            return cli_error(train_main, argv)
        if kind == "read_only":
            with read_only(model_dir):
                line = cli_error(train_main, argv)
            model_dir.chmod(0o755)
        else:
            model_dir.mkdir()
            with failing_writes(model_dir, errno.ENOSPC):
                line = cli_error(train_main, argv)
        assert not (model_dir / "config.yaml").exists()
        return line
    return run


def evaluate_output_in_a_file(c: Context) -> str:
    folder = c.fresh()
    (folder / "taken").write_text("a file")
    return cli_error(evaluate_main, ["--weights", c.run, "--output", folder / "taken" / "report.json",
                                     "--max-images", 1])


def export_output_is_a_file(fmt: str) -> Callable:
    def run(c: Context) -> str:
        folder = c.fresh()
        (folder / "out").write_text("a file")
        return cli_error(export_main, ["--weights", c.run, "--format", fmt, "--output", folder / "out"])
    return run


CLI_CASES = [
    ("train_missing_config_flag", "train.py without --config", lambda c: cli_error(train_main, ["--model-dir", "x"]),
     ["--config", "required"]),
    ("train_bad_strategy", "train.py --strategy gpu9", lambda c: cli_error(
        train_main, ["--config", c.config, "--model-dir", "x", "--strategy", "gpu9"]), ["--strategy", "invalid choice"]),
    ("train_model_dir_is_a_file", "train.py --model-dir naming a file", train_model_dir("file"),
     ["error:", "run", "expected a folder"]),
    ("train_model_dir_read_only", "train.py --model-dir read-only", train_model_dir("read_only"),
     ["error:", "run", "Permission denied"]),
    ("train_disk_full", "train.py with a full disk (writes fail with ENOSPC)", train_model_dir("full"),
     ["error:", "config.yaml", "No space left on device"]),
    ("train_init_truncated", "train.init.from_run: a truncated .keras", init_from("truncated"),
     ["error:", "truncated.keras", "not a complete .keras file"]),
    ("train_init_other_model", "train.init.from_run: a model sharing no layer", init_from("other_arch"),
     ["error:", "other_arch.keras", "no layer"]),
    ("train_init_backbone_missing", "train.init.from_run part backbone: a model without one",
     init_from("other_arch", "backbone"), ["error:", "other_arch.keras", "backbone"]),
    ("train_backbone_weights_lambda", "model.backbone.weights: a .keras holding a Lambda layer",
     backbone_weights_from("lambda"), ["error:", "lambda.keras", "Lambda", "safe mode"]),
    ("evaluate_missing_weights", "evaluate.py without --weights", lambda c: cli_error(evaluate_main, []),
     ["--weights", "required"]),
    ("evaluate_output_inside_a_file", "evaluate.py --output under a file", evaluate_output_in_a_file,
     ["error:", "taken", "expected a folder"]),
    ("predict_no_inputs", "predict.py with a folder holding no images", lambda c: cli_error(
        predict_main, [c.fresh(), "--weights", c.run]), ["error:", "no images"]),
    ("predict_bad_alpha", "predict.py --alpha 2", lambda c: cli_error(
        predict_main, ["x.png", "--weights", c.run, "--alpha", "2"]), ["--alpha", "0-1"]),
    ("predict_other_class_count", "--weights a 3-class model, --config of 5 classes", keras_file_error("other_classes"),
     ["error:", "three_classes.keras", "3 classes", "data.num_classes = 5"]),
    ("predict_truncated_keras", "--weights a truncated .keras", keras_file_error("truncated"),
     ["error:", "truncated.keras", "not a complete .keras file"]),
    ("predict_not_zip_keras", "--weights a text file named .keras", keras_file_error("not_zip"),
     ["error:", "not_zip.keras", "not a complete .keras file"]),
    ("predict_lambda_keras", "--weights a .keras holding a Lambda layer", keras_file_error("lambda"),
     ["error:", "lambda.keras", "Lambda", "safe mode"]),
    ("predict_unknown_class_keras", "--weights a .keras with an unregistered layer class",
     keras_file_error("unknown_class"), ["error:", "unknown_class.keras", "'Mystery'"]),
    ("predict_run_without_config", "--weights a run folder without config.yaml", run_without_config,
     ["error:", "config.yaml", "--config"]),
    ("predict_output_is_a_file", "predict.py --output naming a file", predict_output("file"),
     ["error:", "out", "expected a folder"]),
    ("predict_output_read_only", "predict.py --output read-only", predict_output("read_only"),
     ["error:", "out", "Permission denied"]),
    ("predict_disk_full", "predict.py with a full disk (writes fail with ENOSPC)", predict_output("full"),
     ["error:", "photo_mask.png", "No space left on device"]),
    ("export_missing_format", "export.py without --format", lambda c: cli_error(
        export_main, ["--weights", c.run, "--output", "x"]), ["--format", "required"]),
    ("export_output_is_a_file_tflite", "export.py --format tflite --output naming a file",
     export_output_is_a_file("tflite"), ["error:", "out", "expected a folder"]),
    ("export_output_is_a_file_saved_model", "export.py --format saved_model --output naming a file",
     export_output_is_a_file("saved_model"), ["error:", "out", "expected a folder"]),
    ("export_truncated_keras", "export.py --weights a truncated .keras", lambda c: cli_error(
        export_main, ["--weights", c.keras_files["truncated"], "--config", c.run / "config.yaml", "--format", "onnx",
                      "--output", c.fresh()]), ["error:", "truncated.keras", "not a complete .keras file"]),
    ("export_keras_without_config", "export.py --weights a .keras file, no --config", lambda c: cli_error(
        export_main, ["--weights", c.run / "best.keras", "--format", "onnx", "--output", c.fresh()]),
     ["error:", "best.keras", "pass --config"]),
]
CLI_HANDLED = [
    ("init_from_other_class_count", "train.init.from_run: a 3-class model into a 5-class one (heads left as built)",
     init_from_other_class_count),
    ("config_of_another_architecture", "predict.py: a run's .keras with a config of another architecture",
     config_of_another_architecture),
]
CLI_ELSEWHERE = {
    "evaluate_bad_protocol_flags": "tests/test_evaluation.py::test_evaluate_cli_rejects_bad_arguments_with_one_line",
    "evaluate_missing_run": "tests/test_evaluation.py::test_evaluate_cli_names_a_missing_run",
    "export_contradictory_flags": "tests/test_export.py::test_export_cli_refuses_bad_requests_in_one_line",
    "export_existing_output": "tests/test_export.py::test_existing_output_is_refused_unless_overwritten",
    "segmenter_keras_without_config": "tests/test_inference.py::test_segmenter_loads_a_run_folder_or_a_keras_file",
    "nonfinite_loss": "tests/test_nonfinite.py::test_a_nan_batch_stops_at_its_step_keeps_the_last_good_backup_and_a_rerun_resumes",
}


# ---- images given to the Python API and served requests ---------------------------------------------


def image_error(value, name: str = "image") -> Callable:
    def run(c: Context) -> str:
        from exfuse_keras.inference.segmenter import load_image

        return raised(lambda: load_image(value() if callable(value) else value), ValueError, FileNotFoundError)
    return run


IMAGE_CASES = [
    ("image_two_channels", "an [8, 8, 2] array", image_error(np.zeros((8, 8, 2), np.uint8)),
     ["expected [H, W] gray", "got shape (8, 8, 2)"]),
    ("image_batch", "a batch [1, 8, 8, 3] given as one image", image_error(np.zeros((1, 8, 8, 3), np.uint8)),
     ["got shape (1, 8, 8, 3)"]),
    ("image_1d", "a 1-D array", image_error(np.zeros(8, np.uint8)), ["got shape (8,)"]),
    ("image_empty", "a 0 x 8 image", image_error(np.zeros((0, 8, 3), np.uint8)), ["empty image"]),
    ("image_bool", "a boolean array", image_error(np.zeros((8, 8, 3), bool)), ["got dtype bool"]),
    ("image_16bit_range", "uint16 values 1000", image_error(np.full((8, 8), 1000, np.uint16)),
     ["values in 0-255, got 1000..1000"]),
    ("image_negative", "float values -1", image_error(np.full((8, 8, 3), -1.0, np.float32)), ["values in 0-255"]),
    ("image_nan", "float NaN values", image_error(np.full((8, 8, 3), np.nan, np.float32)), ["values in 0-255"]),
    ("image_missing_path", "a path naming no file", image_error("no/such/photo.jpg"),
     ["no/such/photo.jpg", "no such image file"]),
]
SERVING_ELSEWHERE = {
    "serving_not_an_image": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_empty_string": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_truncated_png": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_png_over_max_side": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_jpeg_over_max_side": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_decompression_bomb_header": "tests/test_export.py::test_bad_encoded_images_raise_invalid_argument",
    "serving_empty_batch_bytes": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_empty_batch_pixels": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_zero_size_image": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_pixels_over_max_side": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_float_over_255": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_float_nan": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_example_without_image": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_unparseable_example": "tests/test_export.py::test_bad_batches_and_tensors_raise_invalid_argument",
    "serving_logits_not_multiple_of_32": "tests/test_export.py::test_network_logits_signature_is_the_bare_network",
    "serving_rest_bad_image_400": "tests/test_serving.py::test_rest_client_round_trip_and_errors",
    "serving_rest_unknown_model_404": "tests/test_serving.py::test_rest_client_round_trip_and_errors",
    "serving_grpc_empty_string": "tests/test_serving.py::test_grpc_client_round_trip_and_errors",
    "serving_grpc_unknown_model": "tests/test_serving.py::test_grpc_client_round_trip_and_errors",
    "serving_grpc_package_missing": "tests/test_serving.py::test_grpc_without_the_optional_package_says_how_to_install_it",
    "serving_edge_sizes_handled": "tests/test_export.py::test_edge_sizes_get_correct_answers",
    "image_unreadable_file": "tests/test_inference.py::test_an_unreadable_file_is_named_in_the_error",
}


# ---- the table ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One kind of bad input: how it is provoked and what must happen."""

    id: str
    category: str
    how: str
    expect: str                     # "error", "handled" or "elsewhere"
    run: Optional[Callable] = None  # Context -> the error line ("error") or None ("handled")
    names: tuple = ()               # what the error line must contain: the file/flag/key, what was expected
    reference: str = ""             # "tests/<file>.py::<test>" for "elsewhere"


def _table() -> list[Case]:
    cases = []
    for category, errors, handled, elsewhere in (
            ("config", CONFIG_CASES, CONFIG_HANDLED, CONFIG_ELSEWHERE),
            ("data", DATA_CASES, DATA_HANDLED, DATA_ELSEWHERE),
            ("command line and model files", CLI_CASES, CLI_HANDLED, CLI_ELSEWHERE),
            ("images and serving", IMAGE_CASES, [], SERVING_ELSEWHERE)):
        for case_id, how, run, names in errors:
            if run is not None:
                cases.append(Case(case_id, category, how, "error", run, tuple(names)))
        cases += [Case(case_id, category, how, "handled", run) for case_id, how, run in handled]
        cases += [Case(case_id, category, reference.split("::")[1].replace("_", " "), "elsewhere",
                       reference=reference) for case_id, reference in elsewhere.items()]
    return cases


CASES = _table()


def test_case_ids_are_unique():
    counts = Counter(case.id for case in CASES)
    assert not [k for k, n in counts.items() if n > 1]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, ctx):
    if case.expect == "elsewhere":
        path, name = case.reference.split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{case.reference} is gone"
        return
    result = case.run(ctx)
    if case.expect == "handled":
        assert result is None
        return
    assert isinstance(result, str) and result.strip(), result
    print(f"\n{case.id}: {result.strip()}")
    assert "\n" not in result.strip(), f"more than one line:\n{result}"
    assert "Traceback" not in result
    missing = [name for name in case.names if name not in result]
    assert not missing, f"{missing} not in {result!r}"


def catalogue_counts() -> dict:
    """Counts by outcome and by category."""
    by_category = Counter((case.category, case.expect) for case in CASES)
    return {"kinds": len(CASES), "errors": sum(c.expect == "error" for c in CASES),
            "handled": sum(c.expect == "handled" for c in CASES),
            "elsewhere": sum(c.expect == "elsewhere" for c in CASES), "by_category": dict(by_category)}


def test_catalogue_counts():
    counts = catalogue_counts()
    categories = sorted({case.category for case in CASES})
    print(f"\nbad inputs: {counts['kinds']} kinds; here {counts['errors']} clean one-line errors and "
          f"{counts['handled']} correct handling; {counts['elsewhere']} provoked by other tests")
    for category in categories:
        row = [counts["by_category"].get((category, kind), 0) for kind in ("error", "handled", "elsewhere")]
        print(f"  {category}: {row[0]} errors, {row[1]} handled, {row[2]} elsewhere")
    docs = (ROOT / "docs" / "reliability.md").read_text()
    section = docs.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    for figure in (f"**{counts['kinds']} kinds**", f"**{counts['errors']}** clean one-line errors",
                   f"**{counts['handled']}** correct handling", f"**{counts['elsewhere']}** provoked by other tests"):
        assert figure in section, f"update the counts in docs/reliability.md (Bad inputs): {figure}"
