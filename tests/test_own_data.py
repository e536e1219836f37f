"""A user's own data end to end, through the console scripts ``pip install .`` gives: a folder of
photos with black-and-white (0/255) masks and a test split, refused without ``data.label_map``,
then validated, browsed, trained, evaluated on test, exported and predicted with it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from exfuse_keras.cli import COMMANDS
from tests.data_fakes import make_fake_folder
from tests.helpers import tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IDS = [f"photo{k}" for k in range(8)]


def _script(name):
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e . (make setup does)")
    return str(path)


def _run(name, *arguments):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.run([_script(name), *map(str, arguments)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)


def test_every_command_is_installed_as_a_console_script():
    assert set(COMMANDS) == {"exfuse-train", "exfuse-evaluate", "exfuse-predict", "exfuse-export",
                             "exfuse-validate", "exfuse-browse"}
    for name in COMMANDS:
        _script(name)
    out = _run("exfuse-validate", "--help")
    assert out.returncode == 0 and "--config" in out.stdout


def test_black_and_white_masks_from_a_folder_to_a_prediction(tmp_path):
    root = make_fake_folder(tmp_path / "data", IDS, num_classes=2, palette_masks=False)
    for path in (root / "masks").iterdir():
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(path)
    (root / "train.txt").write_text("\n".join(IDS[:4]))
    (root / "val.txt").write_text("\n".join(IDS[4:6]))
    (root / "test.txt").write_text("\n".join(IDS[6:]))
    values = tiny_config_dict()
    values["data"] = {"dataset": "folder", "root": str(root), "num_classes": 2,
                      "class_names": ["background", "object"], "crop_size": "auto", "label_map": {255: 1},
                      "folder": {"train_list": "train.txt", "val_list": "val.txt", "test_list": "test.txt"}}
    values["train"] = {"batch_size": 2, "val_batch_size": 2, "epochs": 1, "steps_per_epoch": "auto", "warmup_steps": 0}
    config = tmp_path / "my_data.yaml"
    config.write_text(yaml.safe_dump(values))
    unmapped = ["--set", "data.label_map={}"]

    # Without the label map: validate reports the trap, train refuses it and leaves no records.
    out = _run("exfuse-validate", "--config", config, "--no-progress", *unmapped)
    assert out.returncode == 1 and "every mask holds only 0 and 255" in out.stdout, out.stdout + out.stderr
    out = _run("exfuse-train", "--config", config, "--model-dir", tmp_path / "refused", *unmapped)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "data.label_map: {255: 1}" in errors[0], out.stderr[-2000:]
    assert not [p for p in (root / "tfds").rglob("*") if "incomplete" in p.name]

    # With it: every command works, and what the masks hold is class 1.
    out = _run("exfuse-validate", "--config", config, "--no-progress")
    assert out.returncode == 0 and "checked 8 examples: 0 problem(s)" in out.stdout, out.stdout
    out = _run("exfuse-browse", "--config", config, "--count", "2", "--output", tmp_path / "browse.png",
               "--no-progress")
    assert out.returncode == 0 and (tmp_path / "browse.png").is_file(), out.stderr[-2000:]
    object_line = next(line for line in out.stdout.splitlines() if line.split()[:2] == ["1", "object"])
    assert int(object_line.split()[2].replace(",", "")) > 0

    run = tmp_path / "run"
    out = _run("exfuse-train", "--config", config, "--model-dir", run)
    assert out.returncode == 0 and (run / "best.keras").is_file(), out.stderr[-3000:]
    assert "\r" not in out.stdout
    # Sized by the data: 48 x 64 photos give the smallest crop, 4 train images in batches of 2 two steps.
    assert "data.crop_size: auto -> 64" in out.stdout and "train.steps_per_epoch: auto -> 2" in out.stdout, out.stdout
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert (recorded["data"]["crop_size"], recorded["train"]["steps_per_epoch"]) == (64, 2)
    out = _run("exfuse-evaluate", "--weights", run, "--split", "test")
    assert out.returncode == 0 and "test: 2 images" in out.stdout, out.stderr[-3000:]
    assert (run / "eval_test.json").is_file()
    out = _run("exfuse-evaluate", "--weights", run, "--split", "test", "--set", "data.folder.test_list=null",
               "--set", "data.label_map={255: 1}")
    assert out.returncode == 2 and "no 'test' split" in out.stderr, out.stderr[-2000:]
    out = _run("exfuse-export", "--weights", run, "--format", "saved_model", "--output", tmp_path / "export")
    assert out.returncode == 0 and (tmp_path / "export" / "saved_model.pb").is_file(), out.stderr[-3000:]
    out = _run("exfuse-predict", root / "images" / f"{IDS[6]}.jpg", "--weights", run, "--output", tmp_path / "pred")
    assert out.returncode == 0, out.stderr[-3000:]
    mask = np.asarray(Image.open(tmp_path / "pred" / f"{IDS[6]}_mask.png"))
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 1}
