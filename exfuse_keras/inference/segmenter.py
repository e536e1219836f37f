"""The Python inference API: ``Segmenter.load(run).predict(image) -> (mask, probabilities)``.

    from exfuse_keras.inference import Segmenter

    segmenter = Segmenter.load("runs/quickstart")            # or a .keras file + config=...
    mask, probabilities = segmenter.predict("photo.jpg")     # [H, W] uint8, [H, W, C] float32
    mask, _ = segmenter.predict(image, tta=True)             # the paper's 6 scales + flip
    mask, _ = segmenter.predict(big_image, sliding_window=(512, 341))

Images of any size, as numpy arrays (``[H, W]`` gray, ``[H, W, 1]``, ``[H, W, 3]`` RGB or
``[H, W, 4]`` RGBA whose alpha is dropped; uint8 or any integer or float type with values
0-255), PIL images (any mode that converts to RGB), ``tf.Tensor`` s, or image file paths (EXIF
orientation applied, so the mask lines up with the picture as viewers show it). The mask and
probabilities come back at the image's own size. The model normalises pixels itself, so
inputs are raw 0-255 RGB.

Prediction is ``tta.predict_probabilities`` (or ``sliding.predict_sliding``) around the model
compiled once with ``tf.function`` over dynamic batch and image sizes, so new sizes and new
settings do not retrace it. With one view (scale 1, no flip, no sliding window) the mask is the argmax of the logits,
exactly what training's metric scores; with several it is the argmax of the averaged
probabilities.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from exfuse_keras.config import EvalConfig
from exfuse_keras.inference.sliding import predict_sliding
from exfuse_keras.inference.tta import PAPER_SCALES, predict_probabilities, view_logits

IMAGE_SHAPES = "[H, W] gray, [H, W, 1], [H, W, 3] RGB or [H, W, 4] RGBA"


def load_image(image, name: str = "image") -> np.ndarray:
    """Any accepted image (module doc) as float32 ``[H, W, 3]`` RGB 0-255.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable file, or an array of the wrong shape, type or range (one line
            naming what was expected).
    """
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such image file")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError) as err:  # PIL reports bad files with all three
            raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
        name = path
    if isinstance(image, Image.Image):
        # Palette, gray, RGBA (alpha dropped), CMYK, ...; 16-bit and float modes go through the range check.
        image = image.convert("RGB") if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F") else np.asarray(image)
    if isinstance(image, (tf.Tensor, tf.Variable)):
        image = image.numpy()
    array = np.asarray(image)
    if array.dtype.kind not in "uif":
        raise ValueError(f"{name}: expected an integer or float image with values 0-255, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., :3] if array.shape[-1] != 1 else array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"{name}: expected {IMAGE_SHAPES}, got shape {tuple(np.shape(image))}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: empty image, shape {tuple(np.shape(image))}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    low, high = array.min(), array.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"{name}: expected values in 0-255, got {low}..{high}")
    return array.astype(np.float32)


def _logits_fn(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``images -> float32 logits`` for a Keras model (``training=False``) or any predictor callable."""
    import keras

    if not callable(model):
        raise TypeError(f"Segmenter: expected a Keras model or a callable images -> logits, got {type(model).__name__}")

    def logits(images):
        outputs = model(images, training=False) if isinstance(model, keras.Model) else model(images)
        if isinstance(outputs, dict):
            outputs = outputs["logits"]
        return tf.cast(outputs, tf.float32)

    return logits


class Segmenter:
    """Semantic segmentation of images of any size with a trained ExFuse model.

    Args:
        model: a Keras model (``build_model``'s, or loaded from a run) or any predictor callable
            ``images [B, H, W, 3] float32 0-255 -> logits [B, H, W, C]`` (H, W multiples of 32;
            see exfuse_keras/inference/loading.py).
        cfg: the model's config: ``data.num_classes``, ``class_names``, ``palette`` and
            ``mean_rgb`` (the colour images are padded with) are used.
    """

    def __init__(self, model, cfg):
        self.model = model
        self.cfg = cfg
        self._compiled_logits = tf.function(_logits_fn(model),
                                            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

    @classmethod
    def load(cls, path: str, config: Optional[str] = None, overrides: Sequence[str] = ()) -> "Segmenter":
        """A Segmenter from a training run's folder or a ``.keras`` file (with ``config``, its config.yaml)."""
        from exfuse_keras.inference.loading import load_predictor

        cfg, predictor = load_predictor(os.fspath(path), config, list(overrides))
        return cls(predictor, cfg)

    @property
    def num_classes(self) -> int:
        return self.cfg.data.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.cfg.data.class_names)

    @property
    def palette(self) -> np.ndarray:
        """uint8 ``[C, 3]``: the config's ``data.palette``, else the PASCAL VOC colours."""
        return np.asarray(self.cfg.data.resolved_palette, np.uint8)

    @staticmethod
    def views(tta: bool = False, scales: Optional[Sequence[float]] = None,
              flip: Optional[bool] = None) -> tuple[tuple[float, ...], bool]:
        """(scales, flip): ``tta`` picks the paper's protocol (6 scales + flip) over one view;
        ``scales`` and ``flip`` override either."""
        scales = tuple(float(s) for s in (scales if scales is not None else PAPER_SCALES if tta else (1.0,)))
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales: expected positive scales, got {list(scales)}")
        return scales, bool(tta if flip is None else flip)

    @staticmethod
    def resolve_protocol(base: EvalConfig, scales: Optional[Sequence[float]] = None, flip: Optional[bool] = None,
                         sliding_window: Optional[Sequence[int]] = None) -> EvalConfig:
        """The test-time protocol: the arguments given, else ``base``'s (a config's ``eval``
        section: what evaluate.py and export.py run), checked and as plain lists.

        Raises:
            ValueError: a scale that is not positive, or a bad ``(crop, stride)`` window.
        """
        scales, flip = Segmenter.views(scales=base.scales if scales is None else scales,
                                       flip=base.flip if flip is None else flip)
        if sliding_window is None:
            sliding_window = base.sliding_window
        return EvalConfig(scales=list(scales), flip=flip,
                          sliding_window=None if sliding_window is None else list(_window(sliding_window)))

    def forward_function(self, protocol: Optional[EvalConfig] = None) -> Callable:
        """``images [B, H, W, 3] float32 -> (mask [B, H, W] int64, probabilities [B, H, W, C])``
        under the test-time ``protocol`` (scales, flip, sliding window; default one view).

        The model runs as one ``tf.function`` traced once for any batch and size; the views
        around it (resizing, flipping, padding, averaging) run as eager TF ops. Tracing the
        whole protocol instead would trace the network once per view (12 times for 6 scales +
        flip), which costs far more than the few eager ops save.
        """
        protocol = self.resolve_protocol(protocol or EvalConfig())
        fill = tuple(self.cfg.data.mean_rgb)
        scales, flip = tuple(protocol.scales), protocol.flip
        logits_fn = self._compiled_logits
        if protocol.sliding_window is not None:
            crop, stride = protocol.sliding_window

            def forward(images):
                probabilities = predict_sliding(logits_fn, images, crop, stride, scales, flip, fill)
                return tf.argmax(probabilities, axis=-1), probabilities
        elif scales == (1.0,) and not flip:
            def forward(images):
                logits = view_logits(logits_fn, images, fill)
                return tf.argmax(logits, axis=-1), tf.nn.softmax(logits, axis=-1)
        else:
            def forward(images):
                probabilities = predict_probabilities(logits_fn, images, scales, flip, fill)
                return tf.argmax(probabilities, axis=-1), probabilities
        return forward

    def predict(self, image, tta: bool = False, scales: Optional[Sequence[float]] = None,
                flip: Optional[bool] = None, sliding_window: Optional[Sequence[int]] = None):
        """(mask, probabilities) of one image at its own size.

        Args:
            image: see the module doc (array, PIL image, tensor or file path).
            tta: the paper's multi-scale + flip protocol (``PAPER_SCALES``, flip).
            scales, flip: override the views (``scales=[0.75, 1.0, 1.25], flip=True``).
            sliding_window: ``(crop, stride)`` to predict overlapping windows (sliding.py).

        Returns:
            mask ``[H, W]`` (uint8 for up to 256 classes, else int32) and probabilities
            ``[H, W, C]`` float32, as numpy arrays.
        """
        return self.predict_batch([image], tta, scales, flip, sliding_window)[0]

    def predict_batch(self, images: Sequence, tta: bool = False, scales: Optional[Sequence[float]] = None,
                      flip: Optional[bool] = None, sliding_window: Optional[Sequence[int]] = None,
                      batch_size: int = 8) -> list:
        """``predict`` for a list of images (any sizes): a list of (mask, probabilities).

        Images of equal size are run ``batch_size`` at a time.
        """
        scales, flip = self.views(tta, scales, flip)
        forward = self.forward_function(EvalConfig(list(scales), flip, sliding_window))
        arrays = [load_image(image, f"images[{i}]") for i, image in enumerate(images)]
        results = [None] * len(arrays)
        by_size = {}
        for index, array in enumerate(arrays):
            by_size.setdefault(array.shape, []).append(index)
        mask_dtype = np.uint8 if self.num_classes <= 256 else np.int32
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                masks, probabilities = forward(tf.constant(np.stack([arrays[i] for i in chunk])))
                masks, probabilities = masks.numpy().astype(mask_dtype), probabilities.numpy()
                for k, index in enumerate(chunk):
                    results[index] = (masks[k], probabilities[k])
        return results

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]``: the mask in the palette's colours."""
        from exfuse_keras.data.palette import colorize

        return colorize(mask, self.palette)


def _window(sliding_window) -> tuple[int, int]:
    values = tuple(sliding_window)
    if len(values) != 2 or any(int(v) != v for v in values) or not 0 < values[1] <= values[0]:
        raise ValueError(f"sliding_window: expected (crop, stride) integers with 0 < stride <= crop, "
                         f"got {sliding_window}")
    return int(values[0]), int(values[1])
