"""Densely Adjacent Prediction (ExFuse Sec. 3.2)."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="exfuse")
class DenselyAdjacentPrediction(keras.layers.Layer):
    """Each pixel's score for class c averages the votes of its k x k neighbours.

    The input has ``C * k^2`` channels; channel ``c * k^2 + a * k + b`` at pixel (i', j') is
    the vote for class c at pixel ``(i' - a + p, j' - b + p)``, ``p = k // 2``::

        out[n, i, j, c] = 1/k^2 * sum_{a, b < k} x[n, i + a - p, j + b - p, c * k^2 + a * k + b]

    with zeros outside the image (exfuse-spec.md). Computed with two fixed (constant, not
    trainable) kernels: a depthwise k x k convolution with zero 'same' padding that moves
    channel ``c*k^2 + a*k + b`` by its tap (a, b), then a 1x1 convolution summing each class's
    k^2 channels and dividing by k^2. Both are TFLite builtins (DEPTHWISE_CONV_2D, CONV_2D),
    and on CPU this trained about 3x faster than pad + k^2 strided channel slices (tiny
    quick-start model at 128x128). Cost per pixel: C*k^2*(k^2 + 1) multiply-adds.

    Shapes: ``[N, H, W, C * k^2] -> [N, H, W, C]``.

    Args:
        kernel_size: k, odd (3 in the paper).
    """

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.kernel_size = kernel_size

    def build(self, input_shape):
        k2 = self.kernel_size ** 2
        if input_shape[-1] is None or input_shape[-1] % k2:
            raise ValueError(f"{self.name}: input channels must be a multiple of k^2 = {k2}, "
                             f"got {input_shape[-1]}")
        k = self.kernel_size
        classes = input_shape[-1] // k2
        shift = np.zeros((k, k, classes * k2, 1), dtype="float32")
        average = np.zeros((1, 1, classes * k2, classes), dtype="float32")
        for c in range(classes):
            for a in range(k):
                for b in range(k):
                    shift[a, b, c * k2 + a * k + b, 0] = 1.0
                    average[0, 0, c * k2 + a * k + b, c] = 1.0 / k2
        self._shift_kernel, self._average_kernel = shift, average

    def call(self, x):
        shifted = tf.nn.depthwise_conv2d(x, tf.constant(self._shift_kernel, x.dtype), strides=[1, 1, 1, 1],
                                         padding="SAME")
        return tf.nn.conv2d(shifted, tf.constant(self._average_kernel, x.dtype), strides=1, padding="VALID")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] // self.kernel_size ** 2)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}
