"""Initializers for the decoder's learned upsampling."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="exfuse")
class BilinearUpsamplingInitializer(keras.initializers.Initializer):
    """Starts a stride-s Conv2DTranspose as bilinear upsampling (as in FCN).

    Kernel shape ``[k, k, out, in]`` (Keras' Conv2DTranspose layout); output channel o
    copies input channel ``o // (out / in)``, so a deconvolution that widens C to C * m
    channels (DAP's C * k^2) starts as m copies of each class. Takes no arguments.

    Example::

        up = keras.layers.Conv2DTranspose(21, 4, strides=2, padding="same",
                                          kernel_initializer=BilinearUpsamplingInitializer())
    """

    def __call__(self, shape, dtype=None):
        kh, kw, out_channels, in_channels = shape
        if out_channels % in_channels:
            raise ValueError(f"output channels {out_channels} must be a multiple of input channels {in_channels}")

        def profile(size):
            factor = (size + 1) // 2
            centre = factor - 1 if size % 2 == 1 else factor - 0.5
            return 1 - np.abs(np.arange(size) - centre) / factor

        kernel = np.zeros(shape, dtype="float32")
        bilinear = np.outer(profile(kh), profile(kw))
        repeat = out_channels // in_channels
        for o in range(out_channels):
            kernel[:, :, o, o // repeat] = bilinear
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)

    def get_config(self):
        return {}
