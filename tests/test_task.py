"""``ExFuseImageSegmenter``: compile's defaults against the plain network's losses, the one
``miou`` against numpy, predict at any size, the .keras round trip and from_preset."""

import keras
import numpy as np
import pytest

from exfuse_keras import ExFuseImageSegmenter, build_model
from exfuse_keras.config import ConfigError, config_from_dict, save_config
from exfuse_keras.losses import build_losses
from tests.helpers import tiny_config_dict


@pytest.fixture(scope="module")
def cfg():
    values = tiny_config_dict()
    values["train"] = {"batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "warmup_steps": 0}
    return config_from_dict(values)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    masks = rng.integers(0, 5, (2, 64, 64)).astype("int32")
    masks[:, :4] = 255
    return images, masks


def _numpy_miou(predicted, truth, num_classes, ignore=255):
    keep = truth != ignore
    confusion = np.bincount(truth[keep] * num_classes + predicted[keep], minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes).astype(float)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return np.mean(tp[union > 0] / union[union > 0])


def test_compile_defaults_give_the_networks_losses_and_one_miou(cfg, batch):
    images, masks = batch
    task = ExFuseImageSegmenter(cfg)
    task.compile()
    network = build_model(cfg)
    network.set_weights(task.get_weights())
    losses, weights = build_losses(cfg, list(network.output.keys()))
    network.compile(loss=losses, loss_weights=weights)
    got = task.evaluate(images, masks, batch_size=2, return_dict=True, verbose=0)
    expected = network.evaluate(images, {k: masks for k in network.output}, batch_size=2, return_dict=True,
                                verbose=0)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert set(task.output.keys()) == {"logits", "ecre", "ss_res2", "ss_res3", "ss_res4"}
    predicted = task.predict(images).argmax(-1)
    assert got["miou"] == pytest.approx(_numpy_miou(predicted, masks, 5), abs=1e-6)
    history = task.fit(images, masks, batch_size=2, epochs=1, validation_data=(images, masks), verbose=0)
    assert {"loss", "miou", "val_loss", "val_miou"} <= set(history.history)
    assert np.isfinite(history.history["loss"][0])


def test_fit_traces_its_step_once_and_trains_as_keras_fit_does(cfg, batch, monkeypatch):
    """The task builds from the data's shapes before fit: one trace of the training step where
    Keras' own fit, with no strategy, traces it twice; the same batches, so the same weights."""
    import tensorflow as tf
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    traces = []
    original = TensorFlowTrainer.train_step

    def counted(self, data):
        traces.append(self.name)
        return original(self, data)

    monkeypatch.setattr(TensorFlowTrainer, "train_step", counted)
    images, masks = batch
    data = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2).repeat()
    keras.utils.set_random_seed(0)
    ours = ExFuseImageSegmenter(cfg, name="ours")
    start = ours.get_weights()
    ours.compile()
    ours.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    assert traces == ["ours"]
    plain = ExFuseImageSegmenter(cfg, name="plain")
    plain.set_weights(start)
    plain.compile()
    keras.Model.fit(plain, data, epochs=1, steps_per_epoch=2, verbose=0)
    assert traces[1:] == ["plain", "plain"], "Keras' own fit traced once: the rebuild is no longer needed"
    moved = max(float(np.abs(a - b).max()) for a, b in zip(plain.get_weights(), start))
    differ = max(float(np.abs(a - b).max()) for a, b in zip(ours.get_weights(), plain.get_weights()))
    assert moved > 1e-3 and differ <= 1e-5 * max(1.0, moved), (moved, differ)
    ours.fit(images, masks, batch_size=2, epochs=1, verbose=0)  # arrays too; built already, no new trace
    assert traces.count("ours") == 1


def test_predict_takes_any_size_and_one_image(cfg):
    task = ExFuseImageSegmenter(cfg)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 70, 3)).astype("uint8")
    logits = task.predict(image)
    assert logits.shape == (50, 70, 5)
    padded = np.empty((1, 64, 96, 3), "float32")
    padded[:] = np.asarray(cfg.data.mean_rgb, "float32")
    padded[0, :50, :70] = image
    np.testing.assert_allclose(logits, task(padded, training=False)["logits"].numpy()[0, :50, :70],
                               rtol=1e-5, atol=1e-5)
    assert task.segment(np.stack([image, image])).shape == (2, 50, 70)
    with pytest.raises(ValueError, match=r"predict: expected RGB images \[N, H, W, 3\] or one \[H, W, 3\], "
                                         r"got shape \[50, 70\]"):
        task.predict(image[..., 0])


def test_the_task_round_trips_through_a_keras_file_and_loads_a_run(cfg, tmp_path, batch):
    images, _ = batch
    task = ExFuseImageSegmenter(cfg)
    expected = task.predict(images)
    task.save(tmp_path / "task.keras")
    loaded = keras.saving.load_model(tmp_path / "task.keras")
    assert isinstance(loaded, ExFuseImageSegmenter) and loaded.cfg == cfg
    np.testing.assert_allclose(loaded.predict(images), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(ExFuseImageSegmenter.from_preset(str(tmp_path / "task.keras")), ExFuseImageSegmenter)

    # A training run's folder: the plain network's best.keras and its config.yaml.
    run = tmp_path / "run"
    run.mkdir()
    network = build_model(cfg)
    network.set_weights(task.get_weights())
    network.save(run / "best.keras")
    save_config(cfg, str(run / "config.yaml"))
    from_run = ExFuseImageSegmenter.from_preset(str(run))
    np.testing.assert_allclose(from_run.predict(images), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="plain ExFuse network, not a task: pass config="):
        ExFuseImageSegmenter.from_preset(str(run / "best.keras"))
    from_file = ExFuseImageSegmenter.from_preset(str(run / "best.keras"), config=str(run / "config.yaml"))
    np.testing.assert_allclose(from_file.predict(images), expected, rtol=1e-5, atol=1e-5)


def test_the_inference_api_and_the_commands_load_runs_as_the_task(cfg, tmp_path, batch):
    """load_run (evaluate.py, predict.py, export.py and Segmenter.load) gives the task around the
    file's network, its layers shared rather than copied, and Segmenter takes the task alone."""
    from exfuse_keras.inference import Segmenter
    from exfuse_keras.inference.loading import load_run

    images, _ = batch
    run = tmp_path / "run"
    run.mkdir()
    network = build_model(cfg)
    network.save(run / "best.keras")
    save_config(cfg, str(run / "config.yaml"))
    loaded_cfg, task = load_run(str(run))
    assert isinstance(task, ExFuseImageSegmenter) and task.cfg == loaded_cfg == cfg
    wrapped = ExFuseImageSegmenter.from_network(cfg, network)
    assert all(a is b for a, b in zip(wrapped.weights, network.weights)) and len(wrapped.weights) == len(network.weights)
    expected = np.argmax(np.asarray(network(images, training=False)["logits"]), axis=-1)
    segmenter = Segmenter.load(str(run))
    assert isinstance(segmenter.model, ExFuseImageSegmenter)
    masks = [Segmenter(task).predict(image)[0] for image in images]
    np.testing.assert_array_equal(np.stack(masks), expected)
    with pytest.raises(ValueError, match="pass cfg"):
        Segmenter(network)
