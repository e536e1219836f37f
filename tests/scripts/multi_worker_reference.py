"""The single-process reference for the two-worker MultiWorkerMirroredStrategy test.

Trains the config's model on the default strategy, fed exactly the global batches the two
workers of a ``train.py --strategy multi_worker`` run see together: each step concatenates
worker 0's per-replica batch and worker 1's (the input pipelines ``make_dataset`` builds for
``InputContext(2, i, 2)``). Saves the final model and prints the per-epoch losses and the largest weight update as JSON.

    python tests/scripts/multi_worker_reference.py CONFIG OUTPUT.keras
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from exfuse_keras.config import load_config  # noqa: E402
from exfuse_keras.data.pipeline import make_dataset  # noqa: E402
from exfuse_keras.training.run import build_training_model, with_targets  # noqa: E402

WORKERS = 2


def global_batches(cfg):
    pipelines = [make_dataset(cfg, "train", training=True, epoch=0, repeat=True,
                              input_context=tf.distribute.InputContext(WORKERS, i, WORKERS))
                 for i in range(WORKERS)]
    return tf.data.Dataset.zip(tuple(pipelines)).map(
        lambda *parts: tuple(tf.concat([part[k] for part in parts], axis=0) for k in range(2)))


def main():
    config, output = sys.argv[1], sys.argv[2]
    cfg = load_config(config)
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    model = build_training_model(cfg, jit_compile=False)
    initial = model.get_weights()
    data = with_targets(global_batches(cfg), list(model.output.keys()))
    history = model.fit(data, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch, verbose=0)
    model.save(output)
    moved = max(float(abs(a - b).max()) for a, b in zip(initial, model.get_weights()))
    print(json.dumps(dict(history.history, max_update=moved)))


if __name__ == "__main__":
    main()
