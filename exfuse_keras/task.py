"""``ExFuseImageSegmenter``: ExFuse as a ``keras.Model`` task, shaped like keras-hub's ImageSegmenter.

Example::

    from exfuse_keras import ExFuseImageSegmenter, load_config
    from exfuse_keras.data.pipeline import make_dataset

    cfg = load_config("configs/quickstart.yaml")
    segmenter = ExFuseImageSegmenter(cfg)            # or ExFuseImageSegmenter.from_preset("runs/quickstart")
    segmenter.compile()                              # the config's optimiser, every output's loss and weight, mIoU
    segmenter.fit(make_dataset(cfg, "train", training=True, repeat=True), epochs=2, steps_per_epoch=20,
                  validation_data=make_dataset(cfg, "val", training=False, batch_size=4))
    logits = segmenter.predict(images)               # uint8/float RGB [N, H, W, 3] or [H, W, 3], any H, W
    masks = segmenter.segment(images)                # uint8 class indices [N, H, W]

The network is ``build_model``'s (every module a config switch); the task adds what a Keras user
expects of a task model:

- ``compile()`` with no arguments takes the config's optimiser and schedule
  (``train.optimizer``, ``learning_rate`` scaled to ``batch_size``, poly decay with warm-up over
  ``train.epochs`` x ``train.steps_per_epoch``), every output's loss and loss weight
  (``exfuse_keras.losses.build_losses``) and the streaming mIoU, always logged as ``miou`` (and
  ``val_miou``) whatever outputs the model has. Each argument can be given as in
  ``keras.Model.compile``.
- ``fit`` and ``evaluate`` take ``(image, mask)`` batches, as ``make_dataset`` yields them: each
  output's loss derives its target from the one mask (the ECRE labels at 1/16, the SS heads'
  class presence), so no per-output targets are needed. ``fit`` builds everything from the
  data's shapes before its first step, so the step is traced once (``_build_from_data``).
- ``predict(images)`` takes arrays of any size (padded to a multiple of 32 with ``data.mean_rgb``
  and cropped back) and returns the ``logits`` ``[N, H, W, C]`` (``[H, W, C]`` for one image);
  ``segment`` their argmax.
- ``from_preset(path)`` loads a training run's folder (``config.yaml`` and ``best.keras``), a
  ``.keras`` file of a task, or a ``.keras`` file of the plain network with ``config=``.
- ``save("x.keras")`` and ``keras.saving.load_model`` round-trip (the config travels in
  ``get_config``).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import keras
import numpy as np

from exfuse_keras.config import Config, config_from_dict, config_to_dict

OUTPUT_STRIDE = 32


def _without_weight_sources(cfg: Config) -> dict:
    """``cfg`` as a dict that builds the network without loading weights (no ImageNet download, no
    initial run): the weights come from the ``.keras`` file or the loaded network."""
    values = config_to_dict(cfg)
    values["model"]["backbone"]["weights"] = None
    values["train"]["init"]["from_run"] = None
    return values


@keras.saving.register_keras_serializable(package="exfuse_keras")
class ExFuseImageSegmenter(keras.Model):
    """ExFuse (Zhang et al., ECCV 2018) as one Keras task model.

    Input ``"image"``: RGB 0-255 ``[N, H, W, 3]``, H and W multiples of 32 (``predict`` pads any
    size). Outputs, a dict as ``build_model``'s: ``"logits"`` ``[N, H, W, C]`` and, when the config
    enables them, ``"ecre"`` ``[N, H/16, W/16, C]`` and ``"ss_res2"``.. ``[N, C]``.

    Args:
        config: a ``Config`` or its dict (``config_to_dict``).
        network: the built ExFuse network to wrap (its layers and weights are shared, nothing is
            copied); default a new ``build_model(config)``.
        **kwargs: ``keras.Model`` arguments (``name``).
    """

    def __init__(self, config, network=None, **kwargs):
        from exfuse_keras.model import build_model

        cfg = config if isinstance(config, Config) else config_from_dict(config)
        network = build_model(cfg) if network is None else network
        kwargs.setdefault("name", "exfuse_image_segmenter")
        super().__init__(inputs=network.inputs, outputs=network.output, **kwargs)
        from exfuse_keras.metrics import StreamingMeanIoU

        self.cfg = cfg
        self.miou = StreamingMeanIoU(cfg.data.num_classes, cfg.data.ignore_label, name="miou")

    # -- configuration ------------------------------------------------------------------------

    @property
    def output_names_in_order(self) -> list[str]:
        return list(self.output.keys())

    def get_config(self):
        return {"config": _without_weight_sources(self.cfg), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset: str, config: Optional[str] = None, overrides: Sequence[str] = ()):
        """The task from a training run's folder, a task's ``.keras`` file, or a network's
        ``.keras`` file with its ``config`` (the run's ``config.yaml``).

        Raises:
            FileNotFoundError, ConfigError, ModelFileError: as ``inference.loading.load_run``.
        """
        from exfuse_keras.inference.run_files import load_network
        from exfuse_keras.saving import ModelFileError

        if os.path.isfile(preset) and config is None:
            from exfuse_keras.config import ConfigError
            from exfuse_keras.saving import load_model_file

            loaded = load_model_file(preset)
            if isinstance(loaded, cls):
                return loaded
            raise ConfigError(f"{preset} holds the plain ExFuse network, not a task: pass config= "
                              "(the config.yaml of the run that trained it)")
        cfg, network = load_network(preset, config, overrides)
        if not (isinstance(network.output, dict) and "logits" in network.output):
            raise ModelFileError(f"{preset}: its model is not an ExFuse network (no 'logits' output)")
        return cls.from_network(cfg, network)

    @classmethod
    def from_network(cls, cfg: Config, network: keras.Model) -> "ExFuseImageSegmenter":
        """The task around a built network (``build_model``'s, or a run's ``best.keras``) and
        the config it was built from; the layers are shared, not copied."""
        if isinstance(network, cls):
            return network
        task = cls(_without_weight_sources(cfg), network=network)
        task.cfg = cfg
        return task

    # -- training -----------------------------------------------------------------------------

    def compile(self, optimizer="auto", loss="auto", loss_weights="auto", metrics=None, **kwargs):
        """``keras.Model.compile`` with the config's defaults for ``"auto"`` (module doc); the
        mIoU is always computed and logged as ``miou``."""
        from exfuse_keras.losses import build_losses
        from exfuse_keras.training.optim import build_optimizer

        from exfuse_keras.data.sizing import resolve_auto_sizes

        self.cfg, _ = resolve_auto_sizes(self.cfg)  # train.steps_per_epoch: auto sizes the schedule
        t = self.cfg.train
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = build_optimizer(self.cfg, t.epochs * t.steps_per_epoch)
        losses, weights = build_losses(self.cfg, self.output_names_in_order)
        if isinstance(loss, str) and loss == "auto":
            loss = losses
        if isinstance(loss_weights, str) and loss_weights == "auto":
            loss_weights = weights
        self.miou.reset_state()
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs)

    def _build_from_data(self, x, y) -> None:
        """Builds the network, compiled loss and metrics and the optimizer from the data's shapes
        (a ``tf.data.Dataset``'s ``element_spec``, or arrays' shapes), as ``fit`` and ``evaluate``
        start. Without a distribution strategy Keras builds them inside the first traced step,
        and TensorFlow then traces that step twice (it created variables): a second graph of the
        whole network (about 15 s for the ablation's small models at 64x64 on 2 CPU cores). Under
        a strategy Keras reads a batch to build them and trains without it."""
        import tensorflow as tf

        from exfuse_keras.training.compat import build_before_fit, fully_built

        if self.compiled and not fully_built(self):
            spec = None
            if isinstance(x, tf.data.Dataset):
                spec = x.element_spec
            elif isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
                spec = tuple(tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype)) for v in (x, y))
            if spec is not None:
                with self.distribute_strategy.scope():
                    build_before_fit(self, spec)

    def fit(self, x=None, y=None, **kwargs):
        """``keras.Model.fit``, built from the data's shapes first (``_build_from_data``): the
        training step is traced once."""
        self._build_from_data(x, y)
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """``keras.Model.evaluate``, built from the data's shapes first, as ``fit``."""
        self._build_from_data(x, y)
        return super().evaluate(x, y, **kwargs)

    def _targets(self, y):
        """One mask ``[N, H, W]`` becomes every output's target (its loss derives the rest)."""
        if y is None or isinstance(y, dict):
            return y
        return {name: y for name in self.output_names_in_order}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x=x, y=self._targets(y), y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        targets = self._targets(y)
        if targets is not None:
            self.miou.update_state(targets["logits"], y_pred["logits"])
        return super().compute_metrics(x, targets, y_pred, sample_weight)

    # -- inference ----------------------------------------------------------------------------

    def _padded(self, images: np.ndarray) -> tuple[np.ndarray, int, int]:
        height, width = images.shape[1:3]
        pad_h, pad_w = -height % OUTPUT_STRIDE, -width % OUTPUT_STRIDE
        if pad_h or pad_w:
            fill = np.asarray(self.cfg.data.mean_rgb, np.float32)
            padded = np.empty((images.shape[0], height + pad_h, width + pad_w, 3), np.float32)
            padded[:] = fill
            padded[:, :height, :width] = images
            images = padded
        return images, height, width

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The ``logits`` of arrays of any size (module doc); a ``tf.data.Dataset`` is passed to
        ``keras.Model.predict`` as it is (its images multiples of 32) and its logits returned.

        Args:
            x: uint8 or float RGB 0-255, ``[N, H, W, 3]`` or one ``[H, W, 3]`` image, or a dataset.

        Returns:
            float32 ``[N, H, W, C]`` (``[H, W, C]`` for one image).

        Raises:
            ValueError: an array that is not RGB images (one line naming the shape expected).
        """
        if not isinstance(x, (np.ndarray, list, tuple)):
            outputs = super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
            return outputs["logits"]
        images = np.asarray(x)
        single = images.ndim == 3
        if single:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
            raise ValueError(f"predict: expected RGB images [N, H, W, 3] or one [H, W, 3], got shape "
                             f"{list(np.asarray(x).shape)}")
        padded, height, width = self._padded(images.astype(np.float32))
        outputs = super().predict(padded, batch_size=batch_size, verbose=0 if verbose == "auto" else verbose,
                                  callbacks=callbacks)
        logits = outputs["logits"][:, :height, :width]
        return logits[0] if single else logits

    def segment(self, x, batch_size=None) -> np.ndarray:
        """uint8 class indices ``[N, H, W]`` (``[H, W]`` for one image): ``predict``'s argmax."""
        return np.argmax(self.predict(x, batch_size=batch_size), axis=-1).astype(np.uint8)
