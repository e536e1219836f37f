"""Train ExFuse from your own short script with plain ``model.fit``, on the project's public API.

    python examples/fit_with_the_api.py --config configs/quickstart.yaml --epochs 2 --steps 20

train.py adds the run directory, resume, distribution and callbacks on top of exactly this.
"""

import argparse

import keras

from exfuse_keras import build_model, load_config
from exfuse_keras.data.pipeline import make_dataset
from exfuse_keras.losses import build_losses
from exfuse_keras.metrics import StreamingMeanIoU


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    cfg = load_config(args.config, args.set)
    model = build_model(cfg)
    outputs = list(model.output.keys())
    losses, loss_weights = build_losses(cfg, outputs)

    def targets(image, mask):  # every output's loss derives its own target from the one mask
        return image, {name: mask for name in outputs}

    train = make_dataset(cfg, "train", training=True, repeat=True).map(targets)
    val = make_dataset(cfg, "val", training=False, batch_size=4).map(targets)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=losses, loss_weights=loss_weights,
                  metrics={"logits": [StreamingMeanIoU(cfg.data.num_classes, name="miou")]})
    history = model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps, validation_data=val, verbose=2)
    key = "val_logits_miou" if len(outputs) > 1 else "val_miou"
    print(f"val mIoU after {args.epochs} epochs: {history.history[key][-1]:.4f}")


if __name__ == "__main__":
    main()
