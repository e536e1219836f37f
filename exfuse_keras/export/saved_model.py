"""SavedModel export: the trained network with padding, test-time augmentation, resizing back and
argmax inside the graph, behind one signature per input type (TF Serving, TF's C++/Java/Go APIs).

Signatures (every output is batch-first, so TF Serving's REST "instances" format applies):

- ``serving_default``: ``image_bytes`` tf.string ``[B]``, encoded JPEG / PNG / GIF / BMP / WebP
  images of any sizes (RGB, gray or RGBA; alpha dropped; EXIF orientation not applied) ->
  ``mask`` uint8 ``[B, Hmax, Wmax]`` padded with ``MASK_PADDING`` (255) beyond each image to the
  batch's largest one, ``height`` and ``width`` int32 ``[B]`` (crop ``mask[i, :height[i],
  :width[i]]``) and, when exported with probabilities, ``probabilities`` float32
  ``[B, Hmax, Wmax, C]`` (padded with 0). Images are predicted one at a time, so a batch may
  mix sizes and memory is bounded by the largest image.
- ``serving_images`` (uint8) and ``serving_images_float32`` (float32, values 0-255):
  ``images`` ``[B, H, W, 3]`` RGB, any H and W, the batch predicted at once -> the same outputs.
- ``serving_examples``: ``examples`` tf.string ``[B]``, serialized ``tf.train.Example`` s with
  the encoded image in the bytes feature ``image/encoded`` -> as ``serving_default``.
- ``network_logits``: ``images`` float32 ``[B, H, W, 3]``, H and W multiples of 32 -> ``logits``
  ``[B, H, W, C]``: the bare network (what ``exfuse_keras.inference.loading`` calls a predictor;
  evaluate.py runs exports through it).

Per image the graph runs exactly what ``Segmenter.forward_function`` runs in Python (it is
traced from it): padding to a multiple of 32 with the training mean colour, the protocol of the
config's ``eval`` section (scales, flip, sliding window) or the one given at export, every view
resized back to the image's size, and the argmax of the logits (one view) or of the averaged
probabilities (several). Normalisation is inside the model.

Bad input never crashes the server: bytes that are not an image, an empty string, an empty
batch, an image with a side over ``max_side`` (checked from the JPEG / PNG header before
decoding, so a small file that would decode to a huge image is refused cheaply), float pixels
outside 0-255, or a ``tf.Example`` without ``image/encoded`` all raise ``InvalidArgumentError``
(HTTP 400 from TF Serving); a 1x1 image gets a 1x1 mask.

Beside the graph, ``assets.extra/`` (the SavedModel folder for files the graph does not read)
holds ``config.yaml`` (the model's config, its ``eval`` section set to the exported protocol)
and ``export.json`` (classes, palette, protocol, signatures, versions).
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf

from exfuse_keras.config import OUTPUT_STRIDE, EvalConfig
from exfuse_keras.export.common import METADATA_FILE, export_metadata, logits_model, prepare_output_dir, write_json
from exfuse_keras.inference.saved_model import CONFIG_FILE, EXTRA_DIR

SIGNATURES = ("serving_default", "serving_images", "serving_images_float32", "serving_examples", "network_logits")
MASK_PADDING = 255
EXAMPLE_IMAGE_KEY = "image/encoded"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INT32_MAX = 2 ** 31 - 1


def _after(value: tf.Tensor, *assertions) -> tf.Tensor:
    """``value``, computed only once ``assertions`` have passed (explicit, so it holds inside loops)."""
    with tf.control_dependencies(assertions):
        return tf.identity(value)


def _check_size(heights: tf.Tensor, widths: tf.Tensor, max_side: int) -> tf.Operation:
    """Asserts every image is at least 1x1 and at most ``max_side`` per side (scalars or [B])."""
    fits = (tf.minimum(heights, widths) >= 1) & (tf.maximum(heights, widths) <= max_side)
    return tf.debugging.Assert(
        tf.reduce_all(fits),
        [f"image sizes must be at least 1x1 and at most max_side={max_side} per side (for larger images, export "
         f"with a larger export.max_side); heights, widths:", heights, widths], summarize=16)


def _header_size(encoded: tf.Tensor) -> tf.Tensor:
    """int32 [2] (height, width) of one encoded image: from the header for JPEG and PNG (nothing
    decoded), by decoding for the other formats. InvalidArgumentError for bytes that are no image."""
    length = tf.strings.length(encoded)

    def png_size():
        # IHDR: width and height as big-endian uint32 at bytes 16-23.
        fields = tf.cast(tf.reshape(tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8), [2, 4]),
                         tf.int64)
        size = tf.reduce_sum(fields * tf.constant([2 ** 24, 2 ** 16, 2 ** 8, 1], tf.int64), axis=1)
        return tf.cast(tf.minimum(tf.reverse(size, [0]), _INT32_MAX), tf.int32)

    def decoded_size():
        return tf.shape(_decode(encoded))[:2]

    is_png = tf.logical_and(length >= 24, tf.equal(tf.strings.substr(encoded, 0, 8), PNG_SIGNATURE))
    return tf.case([(tf.io.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded)[:2]),
                    (is_png, png_size)], default=decoded_size, exclusive=False)


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3]; InvalidArgumentError for an empty string or bytes that are no image."""
    checked = _after(encoded, tf.debugging.Assert(tf.strings.length(encoded) > 0,
                                                  ["image_bytes: an empty string is not an image"]))
    image = tf.io.decode_image(checked, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


class SegmentationServing:
    """The serving functions (module doc) around a Keras model.

    Args:
        model: the trained model (dict outputs; only ``"logits"`` is kept).
        cfg: its config (``data.mean_rgb`` pads images; ``data.num_classes``).
        protocol: the test-time protocol (``Segmenter.forward_function``'s).
        max_side: the largest image height or width accepted.
        with_probabilities: add the ``probabilities`` output to every signature but ``network_logits``.
    """

    def __init__(self, model, cfg, protocol: EvalConfig, max_side: int = 2048, with_probabilities: bool = False):
        from exfuse_keras.inference.segmenter import Segmenter

        self.model = logits_model(model)
        self._forward = Segmenter(self.model, cfg).forward_function(protocol)
        self._max_side = int(max_side)
        self._with_probabilities = with_probabilities
        self._num_classes = cfg.data.num_classes

    def endpoints(self) -> dict:
        """{signature name: (function, input signature)}."""
        strings = [tf.TensorSpec([None], tf.string)]
        images = tf.TensorSpec([None, None, None, 3], tf.float32)
        return {"serving_default": (self._serve_encoded, strings),
                "serving_images": (self._serve_images, [tf.TensorSpec([None, None, None, 3], tf.uint8)]),
                "serving_images_float32": (self._serve_images, [images]),
                "serving_examples": (self._serve_examples, strings),
                "network_logits": (self._network_logits, [images])}

    def write(self, path: str) -> None:
        """Saves the SavedModel with Keras' ExportArchive: it registers the variables the functions
        use so that TF Serving's (C++, TF1-style) loader restores them; a plain ``tf.Module``
        holding the model reloads in Python but leaves them uninitialised there. The model is not
        ``track()``-ed: in Keras 3.15 that stores every weight twice (as ``model.export`` does)."""
        import keras

        archive = keras.export.ExportArchive()
        for name, (function, signature) in self.endpoints().items():
            archive.add_endpoint(name, function, input_signature=signature)
        archive.write_out(path, verbose=False)

    def _outputs(self, masks, heights, widths, probabilities) -> dict:
        outputs = {"mask": masks, "height": heights, "width": widths}
        if self._with_probabilities:
            outputs["probabilities"] = probabilities
        return outputs

    def _serve_encoded(self, image_bytes):
        image_bytes = _after(image_bytes, tf.debugging.Assert(tf.size(image_bytes) > 0,
                                                              ["image_bytes: the batch is empty"]))
        sizes = tf.map_fn(_header_size, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.int32))
        # Ops of a loop body run as soon as their own inputs are ready, so each allocation waits
        # for its own check: the padding for the whole batch, the decoding for the image's.
        checked = _after(sizes, _check_size(sizes[:, 0], sizes[:, 1], self._max_side))
        max_height, max_width = tf.reduce_max(checked[:, 0]), tf.reduce_max(checked[:, 1])

        def predict_one(args):
            encoded, size = args
            image = _decode(_after(encoded, _check_size(size[0], size[1], self._max_side)))
            image = _after(image, tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(image)[:2], size)),
                ["decoded image size differs from its header's:", tf.shape(image)[:2], size]))
            mask, probabilities = self._forward(tf.cast(image, tf.float32)[None])
            pad = [[0, max_height - size[0]], [0, max_width - size[1]]]
            mask = tf.pad(tf.cast(mask[0], tf.uint8), pad, constant_values=MASK_PADDING)
            if not self._with_probabilities:
                return mask
            return mask, tf.pad(probabilities[0], pad + [[0, 0]])

        masks = tf.TensorSpec([None, None], tf.uint8)
        if self._with_probabilities:
            masks = (masks, tf.TensorSpec([None, None, self._num_classes], tf.float32))
        # One image at a time (parallel_iterations=1): memory stays that of the largest image.
        results = tf.map_fn(predict_one, (image_bytes, sizes), parallel_iterations=1, fn_output_signature=masks)
        masks, probabilities = results if self._with_probabilities else (results, None)
        return self._outputs(masks, sizes[:, 0], sizes[:, 1], probabilities)

    def _serve_images(self, images):
        shape = tf.shape(images)
        checks = [tf.debugging.Assert(shape[0] > 0, ["images: the batch is empty"]),
                  _check_size(shape[1], shape[2], self._max_side)]
        if images.dtype.is_floating:
            checks.append(tf.debugging.Assert(tf.reduce_all((images >= 0.0) & (images <= 255.0)),
                                              ["images: float pixel values must be in 0..255 (RGB, not "
                                               "normalised), got min/max", tf.reduce_min(images),
                                               tf.reduce_max(images)]))
        images = _after(tf.cast(images, tf.float32), *checks)
        masks, probabilities = self._forward(images)
        return self._outputs(tf.cast(masks, tf.uint8), tf.fill(shape[:1], shape[1]), tf.fill(shape[:1], shape[2]),
                             probabilities)

    def _serve_examples(self, examples):
        features = tf.io.parse_example(examples, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return self._serve_encoded(features[EXAMPLE_IMAGE_KEY])

    def _network_logits(self, images):
        shape = tf.shape(images)
        images = _after(images, tf.debugging.Assert(
            tf.logical_and(tf.equal(shape[1] % OUTPUT_STRIDE, 0), tf.equal(shape[2] % OUTPUT_STRIDE, 0)),
            [f"network_logits: height and width must be multiples of {OUTPUT_STRIDE}, got", shape[1], shape[2]]))
        return {"logits": tf.cast(self.model(images, training=False), tf.float32)}


def export_saved_model(cfg, model, path: str, *, protocol: Optional[EvalConfig] = None,
                       with_probabilities: bool = False, source: Optional[str] = None,
                       overwrite: bool = False) -> str:
    """Writes the SavedModel of the module doc to the folder ``path`` and returns ``path``.

    Args:
        cfg: the model's config (``export.max_side``; ``eval`` is the default protocol).
        model: the trained Keras model.
        protocol: the test-time protocol baked into the graph (default ``cfg.eval``).
        with_probabilities: add the ``probabilities`` output (large: C floats per pixel).
        source: where the model came from, recorded in ``export.json``.
        overwrite: replace a non-empty ``path``.
    """
    import dataclasses

    from exfuse_keras.config import save_config
    from exfuse_keras.inference.segmenter import Segmenter

    from exfuse_keras.atomic import atomic_path

    protocol = Segmenter.resolve_protocol(protocol or cfg.eval)
    prepare_output_dir(path, overwrite)
    # Written to <path>.partial-<pid> and swapped in whole: a kill leaves the old export or the new.
    with atomic_path(path, directory=True) as tmp:
        SegmentationServing(model, cfg, protocol, cfg.export.max_side, with_probabilities).write(tmp)
        extra = os.path.join(tmp, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        save_config(dataclasses.replace(cfg, eval=protocol), os.path.join(extra, CONFIG_FILE))
        write_json(os.path.join(extra, METADATA_FILE), export_metadata(
            cfg, "saved_model", source=source, protocol=dataclasses.asdict(protocol), max_side=cfg.export.max_side,
            mask_padding=MASK_PADDING, with_probabilities=with_probabilities, signatures=list(SIGNATURES)))
    return path
