"""Sub-pixel upsampling for Explicit Channel Resolution Embedding (ExFuse Sec. 3.2, Fig. 5)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="exfuse")
class SubPixelUpsampling(keras.layers.Layer):
    """ESPCN sub-pixel upsampling: a conv to ``filters * r^2`` channels, then depth_to_space.

    ExFuse replaces the top deconvolution (res5 scores -> res4 resolution) with this and
    supervises its output; channel group ``(i * r + j) * filters + c`` becomes sub-pixel
    ``(i, j)`` of channel c (TensorFlow's DCR order). Converts to TFLite's single
    DEPTH_TO_SPACE op.

    Shapes: ``[N, H, W, C_in] -> [N, rH, rW, filters]``.

    Args:
        filters (int): output channels.
        block_size (int): the upsampling factor r.
        kernel_size (int): size of the convolution producing the ``filters * r^2`` channels.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        up = SubPixelUpsampling(21, block_size=2, name="ecre_subpixel")
        s = up(res5_scores)          # [N, 16, 16, 21] -> [N, 32, 32, 21]
    """

    def __init__(self, filters, block_size=2, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.block_size = block_size
        self.kernel_size = kernel_size
        self.conv = keras.layers.Conv2D(filters * block_size ** 2, kernel_size, padding="same", name="conv",
                                        dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x):
        return ops.depth_to_space(self.conv(x), self.block_size)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        r = self.block_size
        return (n, None if h is None else h * r, None if w is None else w * r, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "block_size": self.block_size,
                "kernel_size": self.kernel_size}
