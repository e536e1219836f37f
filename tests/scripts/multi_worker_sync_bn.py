"""Synchronized BatchNorm under MultiWorkerMirroredStrategy vs one process, step by step.

Trains the tiny ExFuse (``norm: sync_batch``, SS heads on) a few SGD steps on one fixed global
batch of 4 images, either in one process (``single``) or as worker ``INDEX`` of two processes on
127.0.0.1 (``worker INDEX PORT0,PORT1``), each worker fed its half of the batch. Saves the
initial and final weights and the per-step losses to ``OUTPUT.npz``.

    python tests/scripts/multi_worker_sync_bn.py single OUTPUT
    python tests/scripts/multi_worker_sync_bn.py worker 0 PORT0,PORT1 OUTPUT
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if sys.argv[1] == "worker":
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in sys.argv[3].split(",")]},
        "task": {"type": "worker", "index": int(sys.argv[2])}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from exfuse_keras.config import config_from_dict  # noqa: E402
from exfuse_keras.training.compat import build_before_fit, patch_log_reduction  # noqa: E402
from exfuse_keras.training.run import build_training_model, with_targets  # noqa: E402
from tests.helpers import tiny_config_dict  # noqa: E402

STEPS, WORKERS, GLOBAL_BATCH = 6, 2, 4


def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (GLOBAL_BATCH, 64, 64, 3)).astype("float32")
    masks = rng.integers(0, 5, (GLOBAL_BATCH, 64, 64)).astype("int32")
    masks[:2, :40] = 255  # ignore pixels piled into worker 0's half of the batch
    return images, masks


def main():
    mode, output = sys.argv[1], sys.argv[-1]
    cfg_dict = tiny_config_dict()
    cfg_dict["model"]["backbone"]["norm"] = "sync_batch"
    cfg_dict["train"] = {"optimizer": "sgd", "learning_rate": 0.02, "warmup_steps": 0, "batch_size": GLOBAL_BATCH,
                         "weight_decay": 1e-4, "epochs": STEPS, "steps_per_epoch": 1}
    cfg = config_from_dict(cfg_dict)
    images, masks = batch()
    if mode == "single":
        strategy, index, count = tf.distribute.get_strategy(), 0, 1
    else:
        strategy, index, count = tf.distribute.MultiWorkerMirroredStrategy(), int(sys.argv[2]), WORKERS
    patch_log_reduction()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_training_model(cfg, jit_compile=False)
        names = list(model.output.keys())
        per = GLOBAL_BATCH // count

        def shard(pipeline_id):
            part = slice(pipeline_id * per, (pipeline_id + 1) * per)
            return with_targets(tf.data.Dataset.from_tensor_slices((images[part], masks[part])).batch(per).repeat(),
                                names)

        build_before_fit(model, shard(0).element_spec)
    initial = [w.numpy() for w in model.weights]
    data = (shard(0) if count == 1 else
            strategy.distribute_datasets_from_function(lambda context: shard(context.input_pipeline_id)))
    history = model.fit(data, epochs=STEPS, steps_per_epoch=1, verbose=0)
    np.savez(output, loss=np.array(history.history["loss"]), index=index,
             **{f"initial_{i}": w for i, w in enumerate(initial)},
             **{f"final_{i}": w.numpy() for i, w in enumerate(model.weights)})
    print(json.dumps({"loss": history.history["loss"]}))


if __name__ == "__main__":
    main()
