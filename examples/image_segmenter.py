"""ExFuse as a Keras task in a few lines: build from a config, compile with its defaults, fit, predict.

    python examples/image_segmenter.py --config configs/quickstart.yaml --epochs 2 --steps 20
"""

import argparse

from exfuse_keras import ExFuseImageSegmenter, load_config
from exfuse_keras.data.pipeline import make_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="configs/quickstart.yaml")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--set", action="append", default=[])
args = parser.parse_args()

cfg = load_config(args.config, args.set)
segmenter = ExFuseImageSegmenter(cfg)   # or ExFuseImageSegmenter.from_preset("runs/quickstart")
segmenter.compile()                     # the config's optimiser, every output's loss and weight, "miou"
history = segmenter.fit(make_dataset(cfg, "train", training=True, repeat=True), epochs=args.epochs,
                        steps_per_epoch=args.steps, verbose=2,
                        validation_data=make_dataset(cfg, "val", training=False, batch_size=4))
images, _ = next(iter(make_dataset(cfg, "val", training=False, batch_size=2)))
masks = segmenter.segment(images.numpy())   # uint8 [2, H, W]; predict() gives the logits
print(f"val mIoU {history.history['val_miou'][-1]:.4f}; predicted classes {sorted(set(masks.ravel().tolist()))}")
