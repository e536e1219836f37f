"""Trains the tiny ExFuse a few steps on one device and on 2 MirroredStrategy replicas.

Run as a script (it must configure two logical CPUs before TensorFlow starts); prints JSON
with both runs' per-step losses and the largest weight difference.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from exfuse_keras.config import config_from_dict  # noqa: E402
from exfuse_keras.training.run import build_training_model, with_targets  # noqa: E402
from tests.helpers import tiny_config_dict  # noqa: E402


def run(strategy, cfg, initial_weights, images, masks, steps):
    with strategy.scope():
        model = build_training_model(cfg, jit_compile=False)
        model.set_weights(initial_weights)
    data = with_targets(tf.data.Dataset.from_tensor_slices((images, masks)).batch(len(images)).repeat(),
                        list(model.output.keys()))
    history = model.fit(data, epochs=steps, steps_per_epoch=1, verbose=0)
    return history.history, [w.numpy() for w in model.weights]


def main():
    norm = sys.argv[1] if len(sys.argv) > 1 else "sync_batch"
    cfg_dict = tiny_config_dict()
    cfg_dict["model"]["backbone"]["norm"] = norm
    cfg_dict["train"] = {"optimizer": "sgd", "learning_rate": 0.05, "warmup_steps": 0, "batch_size": 4,
                         "weight_decay": 1e-4, "epochs": 4, "steps_per_epoch": 1}
    cfg = config_from_dict(cfg_dict)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    masks = rng.integers(0, 5, (4, 64, 64)).astype("int32")
    masks[:2, :40] = 255  # ignore pixels piled into replica 0's half of the batch
    keras.utils.set_random_seed(0)
    initial = build_training_model(cfg, jit_compile=False).get_weights()
    one, w_one = run(tf.distribute.OneDeviceStrategy("/cpu:0"), cfg, initial, images, masks, 4)
    two, w_two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), cfg, initial, images, masks, 4)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(w_one, w_two))
    scale = max(float(np.abs(a).max()) for a in w_one)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(initial, w_one))
    print(json.dumps({"one": one, "two": two, "max_weight_diff": diff, "max_weight": scale,
                      "max_update": moved}))


if __name__ == "__main__":
    main()
