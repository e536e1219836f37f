"""Densely Adjacent Prediction (ExFuse Sec. 3.2)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="exfuse")
class DenselyAdjacentPrediction(keras.layers.Layer):
    """Each pixel's score for class c averages the votes of its k x k neighbours.

    The input has ``C * k^2`` channels; channel ``c * k^2 + a * k + b`` at pixel (i', j') is
    the vote for class c at pixel ``(i' - a + p, j' - b + p)``, ``p = k // 2``::

        out[n, i, j, c] = 1/k^2 * sum_{a, b < k} x[n, i + a - p, j + b - p, c * k^2 + a * k + b]

    with zeros outside the image (exfuse-spec.md). Written as pad + k^2 strided slices so it
    stays rank 4 and converts to TFLite builtins.

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

    def call(self, x):
        k, p = self.kernel_size, self.kernel_size // 2
        k2 = k * k
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        total = None
        for a in range(k):
            for b in range(k):
                vote = padded[:, a:a + height, b:b + width, a * k + b::k2]
                total = vote if total is None else total + vote
        return total / tf.cast(k2, x.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] // self.kernel_size ** 2)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}
