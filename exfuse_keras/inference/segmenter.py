"""The Python inference API: ``Segmenter.load(run).predict(image) -> (mask, probabilities)``.

    from exfuse_keras.inference import Segmenter

    segmenter = Segmenter.load("runs/quickstart")            # or a .keras file + config=...
    segmenter = Segmenter(ExFuseImageSegmenter.from_preset("runs/quickstart"))   # the same, on the task
    mask, probabilities = segmenter.predict("photo.jpg")     # [H, W] uint8, [H, W, C] float32
    mask, _ = segmenter.predict(image, tta=True)             # the paper's 6 scales + flip
    mask, _ = segmenter.predict(big_image, sliding_window=(512, 341), probabilities=False)

Images of any size, as numpy arrays (``[H, W]`` gray, ``[H, W, 1]``, ``[H, W, 3]`` RGB or
``[H, W, 4]`` RGBA whose alpha is dropped; uint8 or any integer or float type with values
0-255), PIL images (any mode that converts to RGB), ``tf.Tensor`` s, or image file paths (EXIF
orientation applied, so the mask lines up with the picture as viewers show it). The mask and
probabilities come back at the image's own size. The model normalises pixels itself, so
inputs are raw 0-255 RGB.

Prediction is ``tta.predict_probabilities`` (or ``sliding.predict_sliding``) around the model
compiled once with ``tf.function`` over dynamic batch and image sizes, so new sizes and new
settings do not retrace it. A sliding window runs one image at a time, band by band
(``sliding_bands.predict_sliding_bands``): memory is bounded by a band of windows, not the
image, and ``progress`` shows windows done / total with the time left. With one view (scale 1,
no flip, no sliding window) the mask is the argmax of the logits, exactly what training's metric
scores; with several it is the argmax of the averaged probabilities.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from exfuse_keras.config import EvalConfig
from exfuse_keras.inference.sliding import predict_sliding
from exfuse_keras.inference.sliding_bands import predict_sliding_bands
from exfuse_keras.inference.tta import PAPER_SCALES, predict_probabilities, view_logits

IMAGE_SHAPES = "[H, W] gray, [H, W, 1], [H, W, 3] RGB or [H, W, 4] RGBA"


def load_image(image, name: str = "image", as_float32: bool = True) -> np.ndarray:
    """Any accepted image (module doc) as float32 ``[H, W, 3]`` RGB 0-255.

    ``as_float32=False`` keeps the pixels' own type (a decoded file is uint8: 192 MB for an
    8,000 x 8,000 image, 768 MB as float32).

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
        except Image.DecompressionBombError as err:  # Pillow's guard, before decoding: "Image size (N pixels) ..."
            raise ValueError(f"{path}: too large for Pillow's default guard ({err}); if the file is trusted, "
                             "raise PIL.Image.MAX_IMAGE_PIXELS (None: no limit) before predicting") from None
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
    return array.astype(np.float32) if as_float32 else array


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
            ``mean_rgb`` (the colour images are padded with) are used. Optional for an
            ``ExFuseImageSegmenter`` (exfuse_keras/task.py), which carries its own.

    Attributes:
        max_probability_bytes: ``predict`` refuses to return probabilities larger than this
            (1 GiB: an image of 3,600 x 3,600 pixels with 21 classes) as an array; pass
            ``probabilities=False`` or an array to write them into instead.
    """

    max_probability_bytes = 1 << 30

    def __init__(self, model, cfg=None):
        if cfg is None:
            cfg = getattr(model, "cfg", None)
            if cfg is None:
                raise ValueError("Segmenter: pass cfg (the model's config); only an ExFuseImageSegmenter "
                                 "carries its own")
        self.model = model
        self.cfg = cfg
        self._compiled_logits = tf.function(_logits_fn(model),
                                            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

    @classmethod
    def load(cls, path: str, config: Optional[str] = None, overrides: Sequence[str] = ()) -> "Segmenter":
        """A Segmenter from a training run's folder or a ``.keras`` file (with ``config``, its
        config.yaml), on the ``ExFuseImageSegmenter`` task ``load_run`` gives; or from an
        exported SavedModel folder."""
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
                flip: Optional[bool] = None, sliding_window: Optional[Sequence[int]] = None,
                probabilities=True, progress: Optional[bool] = None):
        """(mask, probabilities) of one image at its own size.

        Args:
            image: see the module doc (array, PIL image, tensor or file path).
            tta: the paper's multi-scale + flip protocol (``PAPER_SCALES``, flip).
            scales, flip: override the views (``scales=[0.75, 1.0, 1.25], flip=True``).
            sliding_window: ``(crop, stride)`` to predict overlapping windows, band by band
                (sliding_bands.py): the way to predict a large image in bounded memory.
            probabilities: True to return them (refused, with a ``ValueError`` naming the size,
                above ``max_probability_bytes``), False for the mask alone (None in their
                place), or an array ``[H, W, C]`` to write them into and return
                (``numpy.lib.format.open_memmap`` keeps a large image's on disk).
            progress: with a sliding window, a bar of windows done / total with the time left
                on stderr: True, False, or None for only when stderr is a terminal.

        Returns:
            mask ``[H, W]`` (uint8 for up to 256 classes, else int32) and probabilities
            ``[H, W, C]`` float32, as numpy arrays.
        """
        targets = probabilities if isinstance(probabilities, bool) else [probabilities]
        return self.predict_batch([image], tta, scales, flip, sliding_window, probabilities=targets,
                                  progress=progress)[0]

    def predict_batch(self, images: Sequence, tta: bool = False, scales: Optional[Sequence[float]] = None,
                      flip: Optional[bool] = None, sliding_window: Optional[Sequence[int]] = None,
                      batch_size: int = 8, probabilities=True, progress: Optional[bool] = None) -> list:
        """``predict`` for a list of images (any sizes): a list of (mask, probabilities).

        Images of equal size are run ``batch_size`` at a time; with a sliding window, one at a
        time, band by band. ``probabilities``: True, False, or one array per image to write into.
        """
        scales, flip = self.views(tta, scales, flip)
        names = [image if isinstance(image, (str, os.PathLike)) else f"images[{i}]" for i, image in enumerate(images)]
        arrays = [load_image(image, name, as_float32=False) for name, image in zip(names, images)]
        targets = self._probability_targets(arrays, names, probabilities)
        mask_dtype = np.uint8 if self.num_classes <= 256 else np.int32
        if sliding_window is not None:
            crop, stride = _window(sliding_window)
            fill = tuple(self.cfg.data.mean_rgb)
            results = []
            for array, target in zip(arrays, targets):
                if target is True:
                    target = np.empty((*array.shape[:2], self.num_classes), np.float32)
                out = None if target is False else target
                mask = predict_sliding_bands(self._compiled_logits, array, crop, stride, scales, flip, fill,
                                             probabilities=out, progress=progress, mask_dtype=mask_dtype)
                results.append((mask, out))
            return results
        forward = self.forward_function(EvalConfig(list(scales), flip, None))
        results = [None] * len(arrays)
        by_size = {}
        for index, array in enumerate(arrays):
            by_size.setdefault(array.shape, []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                masks, computed = forward(tf.constant(np.stack([arrays[i].astype(np.float32) for i in chunk])))
                masks, computed = masks.numpy().astype(mask_dtype), computed.numpy()
                for k, index in enumerate(chunk):
                    target = targets[index]
                    if target is True:
                        results[index] = (masks[k], computed[k])
                    elif target is False:
                        results[index] = (masks[k], None)
                    else:
                        target[...] = computed[k]
                        results[index] = (masks[k], target)
        return results

    def _probability_targets(self, arrays: list, names: list, probabilities) -> list:
        """Per image: True (return a new array; size checked), False (none) or the caller's array."""
        if isinstance(probabilities, bool):
            for array, name in zip(arrays, names):
                height, width = array.shape[:2]
                size = height * width * self.num_classes * 4
                if probabilities and size > self.max_probability_bytes:
                    raise ValueError(
                        f"{name}: the probabilities of a {height}x{width} image with {self.num_classes} classes take "
                        f"{_megabytes(size)} as float32, over Segmenter.max_probability_bytes "
                        f"({_megabytes(self.max_probability_bytes)}); pass probabilities=False for the mask alone, "
                        f"or an array [{height}, {width}, {self.num_classes}] to write them into "
                        f"(numpy.lib.format.open_memmap keeps them on disk)")
            return [probabilities] * len(arrays)
        targets = list(probabilities)
        if len(targets) != len(arrays):
            raise ValueError(f"probabilities: expected True, False or one array per image ({len(arrays)}), "
                             f"got {len(targets)}")
        for target, array, name in zip(targets, arrays, names):
            if tuple(np.shape(target)) != (*array.shape[:2], self.num_classes):
                raise ValueError(f"{name}: expected a probabilities array [{array.shape[0]}, {array.shape[1]}, "
                                 f"{self.num_classes}], got shape {tuple(np.shape(target))}")
        return targets

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]``: the mask in the palette's colours."""
        from exfuse_keras.data.palette import colorize

        return colorize(mask, self.palette)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e7 else f"{size / 1e6:.2f} MB"


def _window(sliding_window) -> tuple[int, int]:
    values = tuple(sliding_window)
    if len(values) != 2 or any(int(v) != v for v in values) or not 0 < values[1] <= values[0]:
        raise ValueError(f"sliding_window: expected (crop, stride) integers with 0 < stride <= crop, "
                         f"got {sliding_window}")
    return int(values[0]), int(values[1])
