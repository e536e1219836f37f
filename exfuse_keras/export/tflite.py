"""TFLite export for phones: the network at one fixed input size, TFLite builtin ops only.

The model file takes float32 ``[1, H, W, 3]`` RGB pixels 0-255 (``H, W`` = ``export.tflite_size``
or ``--tflite-size``, multiples of 32; normalisation is inside) and gives float32 logits
``[1, H, W, C]``; the app resizes or pads its picture to ``H x W`` and takes the argmax. The
auxiliary heads are dropped. Quantisation (``--tflite-quantization``):

- ``float32``: the network as trained (logits within 1e-4 x max |logit| of Keras, tested).
- ``float16``: float16 weights (half the file), computed in float32 (or float16 on GPU delegates).
- ``dynamic``: int8 weights, activations quantised on the fly (a quarter of the file).
- ``int8``: full integer: int8 weights and activations, every op an int8 kernel (the form NPUs
  and DSPs run), activation ranges calibrated on ``calibration_batches`` batches of the training
  input pipeline (augmented crops, resized to the input size). Input and output stay float32:
  the file begins with one QUANTIZE and ends with one DEQUANTIZE, so the same calling code works
  for every variant and the app needs no scale/zero-point arithmetic.
- ``int8_io``: the ``int8`` network with integer ends, for apps that want only the label map:
  int8 ``[1, H, W, 3]`` in, each RGB pixel value less 128 (scale 1, zero point -128; a byte's
  top bit flipped), int8 logits out (scale and zero point in the file's output details; their
  argmax is the label map, no dequantisation needed). It moves a quarter of the bytes in and out
  and has no QUANTIZE or DEQUANTIZE; uint8 input would not do: TFLite's uint8 -> int8 QUANTIZE
  runs outside XNNPACK, 0.9 ms at 512² on the Xeon of docs/benchmarks.md, more than it saves.
  Its calibration has one more image, a 0..255 ramp that pins the input's range; it takes part
  in every activation's range as the others do, so its ranges differ slightly from int8's.

Conversion goes through a SavedModel with a fixed-shape signature (``from_saved_model``) and
allows ``TFLITE_BUILTINS`` only (``TFLITE_BUILTINS_INT8`` for int8), so a model that would need
TensorFlow (Flex) ops fails to convert instead of producing a file phones cannot run;
``operator_names`` reads the op list back from the file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from exfuse_keras.config import OUTPUT_STRIDE

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "int8_io")
# The variants whose activations are calibrated (int8 kernels throughout).
CALIBRATED = ("int8", "int8_io")
DEFAULT_CALIBRATION_BATCHES = 8


def _size(size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0 or height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise ValueError(f"--tflite-size {height},{width}: expected HEIGHT,WIDTH, positive multiples of {OUTPUT_STRIDE}")
    return height, width


@contextlib.contextmanager
def _constant_composed_kernels(network):
    """Traces ``DenselyAdjacentUpsampling``'s convolution kernel as a constant.

    The layer rebuilds that kernel from its weights at every call (so training's gradients reach
    them). Traced as is, the converter does not fold the rebuild: the file recomputed it at run
    time (PAD, ADD, MUL, TRANSPOSE) and the convolution had a non-constant filter, which XNNPACK
    does not take, so TFLite's builtin kernel ran it: 42 ms of ExFuse-ResNet-101's 227 ms in int8
    at 512x512, 103 of 865 ms in float32 (docs/benchmarks.md, "Int8 TFLite, per op"). Inside this
    context each such layer uses its kernel evaluated once, the same values.
    """
    from exfuse_keras.layers import DenselyAdjacentUpsampling

    layers = [layer for layer in network._flatten_layers() if isinstance(layer, DenselyAdjacentUpsampling)]
    for layer in layers:
        kernel = tf.constant(layer._subpixel_kernel().numpy())
        layer._subpixel_kernel = lambda kernel=kernel: kernel
    try:
        yield
    finally:
        for layer in layers:
            del layer._subpixel_kernel


def _is_2x_deconvolution(layer) -> bool:
    """A ``Conv2DTranspose`` as the decoder builds its 2x upsampling (4x4, stride 2, 'same')."""
    import keras

    return (type(layer) is keras.layers.Conv2DTranspose and tuple(layer.kernel_size) == (4, 4)
            and tuple(layer.strides) == (2, 2) and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
            and layer.output_padding is None and layer.data_format == "channels_last")


@contextlib.contextmanager
def _subpixel_deconvolutions(network):
    """Traces each 2x ``Conv2DTranspose`` of the decoder in its sub-pixel form.

    A 4x4 stride-2 'same' deconvolution is a 3x3 convolution to 4C channels and depth_to_space(2),
    the same sums (``exfuse_keras.layers.dap.subpixel_kernel``, with its kernel a constant here).
    The int8 file then runs CONV_2D and DEPTH_TO_SPACE instead of TRANSPOSE_CONV, which XNNPACK
    runs several times slower for the same work on the Xeon of docs/benchmarks.md ("Int8 TFLite,
    per op"). The Keras model is left as it was: training keeps ``Conv2DTranspose``.
    """
    from exfuse_keras.layers.dap import subpixel_kernel

    layers = [layer for layer in network._flatten_layers() if _is_2x_deconvolution(layer)]
    for layer in layers:
        kernel = tf.constant(subpixel_kernel(tf.convert_to_tensor(layer.kernel), crop=1).numpy())
        bias = tf.constant(layer.bias.numpy()) if layer.use_bias else None

        def call(inputs, layer=layer, kernel=kernel, bias=bias):
            x = tf.nn.depth_to_space(tf.nn.conv2d(inputs, tf.cast(kernel, inputs.dtype), 1, "SAME"), 2)
            if bias is not None:
                x = x + tf.cast(bias, x.dtype)
            return layer.activation(x)

        layer.call = call
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


def _write_fixed_size_saved_model(model, size: tuple[int, int], folder: str) -> None:
    """The logits of ``model`` for ``[1, H, W, 3]`` as a SavedModel, with the weights that the
    network derives from its weights traced as constants (``_constant_composed_kernels``) and the
    decoder's deconvolutions in their sub-pixel form (``_subpixel_deconvolutions``).
    Keras' ExportArchive, not a plain ``tf.Module``: the converter freezes the variables of the
    former into constants, but keeps those of the latter as READ_VARIABLE ops (weights missing
    from the file)."""
    import keras

    from exfuse_keras.export.common import logits_model

    network = logits_model(model)
    archive = keras.export.ExportArchive()
    with _constant_composed_kernels(network), _subpixel_deconvolutions(network):
        archive.add_endpoint("serve", lambda image: {"logits": tf.cast(network(image, training=False), tf.float32)},
                             input_signature=[tf.TensorSpec([1, *size, 3], tf.float32, name="image")])
        archive.write_out(folder, verbose=False)


def calibration_images(cfg, size: Sequence[int], batches: int = DEFAULT_CALIBRATION_BATCHES,
                       batch_size: Optional[int] = None, progress: bool = True) -> Iterable[np.ndarray]:
    """float32 ``[1, H, W, 3]`` images: ``batches`` training batches (augmented crops of
    ``data.crop_size``, seeded by ``train.seed``), each crop resized (bilinear) to ``size``.
    ``progress``: a bar over the batches on a terminal (the converter runs the model on each)."""
    from tqdm import tqdm

    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.data.progress import bar_disable

    height, width = _size(size)
    dataset = make_dataset(cfg, "train", training=True, batch_size=batch_size).take(batches)
    for images, _ in tqdm(dataset, total=batches, desc="int8 calibration", unit="batch",
                          disable=bar_disable(progress)):
        if tuple(images.shape[1:3]) != (height, width):
            images = tf.image.resize(images, (height, width), method="bilinear")
        for image in tf.clip_by_value(images, 0.0, 255.0).numpy():
            yield image[None]


def convert(model, size: Sequence[int], quantization: str = "float32",
            representative: Optional[Callable[[], Iterable[np.ndarray]]] = None) -> bytes:
    """The TFLite flatbuffer of ``model``'s logits at ``size`` (module doc).

    Args:
        model: the Keras model (dict outputs: only ``"logits"`` is kept).
        size: (height, width), multiples of 32.
        quantization: one of ``QUANTIZATIONS``.
        representative: for ``int8``: a callable returning an iterable of float32 ``[1, H, W, 3]``
            images (``lambda: calibration_images(cfg, size)``).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"--tflite-quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if quantization in CALIBRATED and representative is None:
        raise ValueError(f"{quantization} quantisation needs calibration images (representative)")
    size = _size(size)
    with tempfile.TemporaryDirectory(prefix="exfuse_tflite_") as folder:
        _write_fixed_size_saved_model(model, size, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization in CALIBRATED:
            images = representative
            if quantization == "int8_io":
                # The input's range is calibrated like any activation's: one image holding 0 and 255
                # makes it exactly 0..255, so the int8 input is the pixel value less 128 (scale 1,
                # zero point -128).
                images = lambda: itertools.chain([_full_range_image(size)], representative())  # noqa: E731
                converter.inference_input_type, converter.inference_output_type = tf.int8, tf.int8
            converter.representative_dataset = lambda: ([image] for image in images())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()
    if quantization == "int8_io":
        scale, zero_point = interpreter(flatbuffer).get_input_details()[0]["quantization"]
        if (scale, zero_point) != (1.0, -128):
            raise RuntimeError(f"int8_io: the input was quantised with scale {scale} and zero point {zero_point}, "
                               "not the pixel values less 128 (scale 1, zero point -128)")
    return flatbuffer


def _full_range_image(size: tuple[int, int]) -> np.ndarray:
    """float32 ``[1, H, W, 3]``: a ramp of the pixel values 0..255 (and gray where it ends)."""
    height, width = size
    image = np.full((height * width, 3), 127.5, np.float32)
    ramp = np.arange(min(256, height * width), dtype=np.float32)
    image[:ramp.size] = ramp[:, None]
    image[-1] = 255.0
    image[0] = 0.0
    return image.reshape(1, height, width, 3)


def export_tflite(cfg, model, path: str, quantization: str = "float32", size: Optional[Sequence[int]] = None,
                  calibration_batches: int = DEFAULT_CALIBRATION_BATCHES,
                  representative: Optional[Callable[[], Iterable[np.ndarray]]] = None) -> str:
    """Writes the ``.tflite`` file ``path`` and returns it.

    Args:
        cfg: the model's config (``export.tflite_size`` by default; the training data for int8).
        quantization: one of ``QUANTIZATIONS``.
        size: (height, width); default ``cfg.export.tflite_size``.
        calibration_batches: int8: training batches (``train.batch_size`` images each) to calibrate on.
        representative: int8: other calibration images (``convert``'s argument) instead of the
            training pipeline's.
    """
    size = _size(size or cfg.export.tflite_size)
    if quantization in CALIBRATED and representative is None:
        if calibration_batches < 1:
            raise ValueError(f"--calibration-batches {calibration_batches}: int8 needs at least one batch")
        representative = lambda: calibration_images(cfg, size, calibration_batches)  # noqa: E731
    from exfuse_keras.atomic import atomic_write

    flatbuffer = convert(model, size, quantization, representative)
    atomic_write(path, flatbuffer)  # a kill leaves the old file or the new one
    return path


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes of a ``.tflite`` file: builtin op names (``CONV_2D``), or the custom
    code of a custom op (Flex ops are custom ops named ``Flex...``)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    result = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            result.append((code.CustomCode() or b"").decode())
        else:
            result.append(names.get(builtin, str(builtin)))
    return result


def interpreter(path_or_bytes, num_threads: int = 2):
    """An allocated ``ai_edge_litert`` Interpreter for a ``.tflite`` file or its bytes."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(path_or_bytes, (bytes, bytearray)):
        runner = Interpreter(model_content=bytes(path_or_bytes), num_threads=num_threads)
    else:
        runner = Interpreter(model_path=os.fspath(path_or_bytes), num_threads=num_threads)
    runner.allocate_tensors()
    return runner


def run(runner, image: np.ndarray, raw: bool = False) -> np.ndarray:
    """Logits ``[1, H, W, C]`` of one ``[1, H, W, 3]`` image of RGB values 0..255 (the file's
    input size), float32; an ``int8_io`` file gets the pixels less 128 as int8 (rounded; an int8
    image is passed as it is) and its int8 logits are dequantised, unless ``raw``: then they come
    back as the file gives them (the argmax is the same)."""
    (inputs,), (outputs,) = runner.get_input_details(), runner.get_output_details()
    if inputs["dtype"] == np.int8 and np.asarray(image).dtype != np.int8:
        image = (np.clip(np.rint(image), 0, 255) - 128).astype(np.int8)
    runner.set_tensor(inputs["index"], np.asarray(image, inputs["dtype"]).reshape(inputs["shape"]))
    runner.invoke()
    logits = runner.get_tensor(outputs["index"])
    if raw or outputs["dtype"] == np.float32:
        return logits
    scale, zero_point = outputs["quantization"]
    return (logits.astype(np.float32) - zero_point) * np.float32(scale)
