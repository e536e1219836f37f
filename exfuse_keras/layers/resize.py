"""Resizing that works for any input height and width.

``UpSampling2D(interpolation="bilinear")`` and ``keras.layers.Resizing`` need static sizes
(or leak ``training=True``, keras-hub#2495); these layers take the target size from tensors
at run time, so the model accepts unknown height/width and converts to TFLite's
RESIZE_BILINEAR.
"""

import keras
import tensorflow as tf


def resize(x, size, method: str = "bilinear"):
    """``tf.image.resize`` computed in float32 and cast back to ``x``'s dtype.

    TensorFlow's bilinear resize always computes (and returns) float32. Fed a bfloat16 or
    float16 tensor, its gradient under XLA meets the other branches' low-precision gradients in
    one AddN and the training step does not compile ("Seen floating point types of different
    precisions", tensorflow#81273). Casting the input to float32 first makes the op, its output
    and its gradient all float32, with the casts (whose gradients are casts) at the boundary.
    """
    return tf.cast(tf.image.resize(tf.cast(x, tf.float32), size, method=method), x.dtype)


@keras.saving.register_keras_serializable(package="exfuse")
class ResizeToMatch(keras.layers.Layer):
    """Resizes ``inputs[0]`` to the spatial size of ``inputs[1]``.

    Shapes: ``[N, h, w, C]`` and ``[N, H, W, *]`` -> ``[N, H, W, C]``.

    Args:
        interpolation (str): ``"bilinear"`` (features, probabilities) or ``"nearest"`` (labels).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        x = ResizeToMatch("bilinear")([coarse, fine])    # coarse resized to fine's H, W at run time
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        return resize(x, size, self.interpolation)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="exfuse")
class BilinearUpsampling(keras.layers.Layer):
    """Bilinear upsampling by an integer factor. Shapes: ``[N, H, W, C] -> [N, fH, fW, C]``.

    Args:
        factor (int): the integer scale factor.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        s = BilinearUpsampling(2)(scores)    # [N, H, W, C] -> [N, 2H, 2W, C], H and W may be unknown
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.factor = int(factor)

    def call(self, x):
        size = tf.shape(x)[1:3] * self.factor
        return resize(x, size)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
