"""SS pretraining: the classifier's heads, their losses, and its backbone as stage 1's weights."""

import os

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import exfuse_keras.layers  # noqa: F401
from exfuse_keras.config import config_from_dict, load_config
from tests.helpers import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def _config(tmp_path, val_batch_size=4):
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (tmp_path / name).touch()
    d = tiny_config_dict()
    d["data"].update({"root": str(tmp_path), "shuffle_buffer": 4, "imagenet": {"image_size": SIZE}})
    d["train"] = {"batch_size": 4, "epochs": 2, "steps_per_epoch": 2, "optimizer": "sgd", "learning_rate": 0.01,
                  "warmup_steps": 0, "seed": 1, "val_batch_size": val_batch_size, "ss_loss_weight": 0.5}
    return config_from_dict(d)


@pytest.fixture
def cfg(tmp_path):
    return _config(tmp_path)


def test_classifier_heads_and_their_losses(cfg):
    from exfuse_keras.pretraining.ss import build_pretraining_model

    model = build_pretraining_model(cfg, num_classes=10)
    assert list(model.output.keys()) == ["logits", "ss_res2", "ss_res3", "ss_res4"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    labels = np.array([1, 7, 3], np.int32)
    outputs = model(images, training=False)
    for name, logits in outputs.items():
        assert tuple(logits.shape) == (3, 10), name
    # The total loss is the softmax CE of every head, SS heads weighted by train.ss_loss_weight.
    def ce(logits):
        logits = np.asarray(logits, np.float64)
        log_softmax = logits - logits.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        return -log_softmax[np.arange(3), labels].mean()

    expected = {name: ce(value) for name, value in outputs.items()}
    result = model.evaluate(images, {name: labels for name in outputs}, batch_size=3, verbose=0, return_dict=True)
    for name in outputs:
        np.testing.assert_allclose(result[f"{name}_loss"], expected[name], rtol=1e-5, err_msg=name)
    total = expected["logits"] + 0.5 * sum(expected[f"ss_res{i}"] for i in (2, 3, 4))
    np.testing.assert_allclose(result["loss"], total, rtol=1e-5)


def test_pretraining_run_gives_stage_one_its_backbone(cfg, tmp_path):
    from exfuse_keras.model import build_model
    from exfuse_keras.pretraining.ss import BACKBONE_FILE, pretrain

    run_dir = str(tmp_path / "ss_run")
    with tfds.testing.mock_data(num_examples=8):
        result = pretrain(cfg, run_dir, strategy_name="default", verbose=0)
    assert result["epochs_run"] == 2
    for name in ("config.yaml", "versions.json", "best.keras", "last.keras", "history.csv", BACKBONE_FILE):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    history = open(os.path.join(run_dir, "history.csv")).read()
    for key in ("ss_res2_loss", "ss_res4_loss", "logits_top1", "val_logits_top5"):
        assert key in history, key

    # Stage 1 names the file as model.backbone.weights: every backbone weight arrives.
    classifier = keras.models.load_model(os.path.join(run_dir, "best.keras"), compile=False)
    seg_cfg = config_from_dict({**tiny_config_dict(), "data": {"num_classes": 5, "class_names": list("abcde")}})
    seg_cfg.model.backbone.weights = os.path.join(run_dir, BACKBONE_FILE)
    segmentation = build_model(seg_cfg)
    source = classifier.get_layer("backbone").get_weights()
    target = segmentation.get_layer("backbone").get_weights()
    assert len(source) == len(target) > 0
    for a, b in zip(source, target):
        np.testing.assert_array_equal(a, b)
    fresh = build_model(config_from_dict({**tiny_config_dict(), "data": {"num_classes": 5,
                                                                         "class_names": list("abcde")}}))
    assert any(not np.array_equal(a, b) for a, b in zip(source, fresh.get_layer("backbone").get_weights()))


def test_shipped_pretraining_config_loads():
    cfg = load_config(os.path.join(ROOT, "configs", "pretraining", "resnext101_lr_ss.yaml"))
    assert cfg.model.backbone.blocks == [8, 8, 9, 8] and cfg.model.ss.levels == ["res2", "res3", "res4"]
    assert cfg.model.backbone.weights is None


def test_validation_fills_the_last_batch_with_images_no_loss_or_accuracy_counts(tmp_path):
    """8 val images, 3 per replica, 2 replicas: batches of 6 and 2 + 4 black fillers labelled -1
    (an empty per-replica batch crashes oneDNN's convolution); the model's val loss, top-1 and
    top-5 on the filled batch are those of the real images alone."""
    from exfuse_keras.pretraining.ss import FILLER_LABEL, build_pretraining_model, pretraining_validation_dataset

    cfg = _config(tmp_path, val_batch_size=3)
    with tfds.testing.mock_data(num_examples=8):
        single = [(i.numpy(), t["logits"].numpy()) for i, t in pretraining_validation_dataset(cfg, ["logits"], 1)]
        batches = [(i.numpy(), t["logits"].numpy()) for i, t in pretraining_validation_dataset(cfg, ["logits"], 2)]
    assert [len(i) for i, _ in single] == [3, 3, 2] and [len(i) for i, _ in batches] == [6, 6]
    labels = np.concatenate([t for _, t in batches])
    images = np.concatenate([i for i, _ in batches])
    np.testing.assert_array_equal(labels[:8], np.concatenate([t for _, t in single]))
    assert (labels[8:] == FILLER_LABEL).all() and (labels[:8] >= 0).all() and not images[8:].any()

    model = build_pretraining_model(cfg, num_classes=10)
    rng = np.random.default_rng(1)
    real = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    real_labels = np.array([1, 7, 3], np.int32)
    filled = np.concatenate([real, np.zeros((3, SIZE, SIZE, 3), np.float32)])
    filled_labels = np.concatenate([real_labels, np.full(3, FILLER_LABEL, np.int32)])
    names = list(model.output.keys())
    alone = model.evaluate(real, {n: real_labels for n in names}, batch_size=3, verbose=0, return_dict=True)
    with_fillers = model.evaluate(filled, {n: filled_labels for n in names}, batch_size=6, verbose=0,
                                  return_dict=True)
    for key in ("loss", "logits_loss", "logits_top1", "logits_top5"):
        np.testing.assert_allclose(with_fillers[key], alone[key], rtol=1e-5, err_msg=key)
    assert alone["logits_top5"] > 0.0  # counting the fillers as wrong would have lowered it


def test_command_line_errors_are_one_line_naming_what_was_expected(tmp_path, capsys):
    from exfuse_keras.pretraining.ss import main

    config = os.path.join(ROOT, "configs", "pretraining", "resnext101_lr_ss.yaml")
    (tmp_path / "a_file").touch()
    (tmp_path / "empty").mkdir()
    cases = [
        (["--model-dir", str(tmp_path / "a_file")], "a_file: is a file, expected a folder (--model-dir"),
        (["--model-dir", str(tmp_path / "run"), "--set", f"data.root={tmp_path / 'empty'}"],
         "ILSVRC2012_img_train.tar: ImageNet archive not found"),
        (["--model-dir", str(tmp_path / "run"), "--set", "train.batch_sise=4"], "did you mean 'train.batch_size'"),
    ]
    for extra, expected in cases:
        assert main(["--config", config, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and expected in err[-1], (extra, err)
