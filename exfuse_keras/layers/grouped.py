"""ResNeXt's grouped 3x3 convolution (cardinality; Xie et al., CVPR 2017, Sec. 3.3), trainable on CPU.

TensorFlow has no grouped convolution kernel for CPUs, so Keras 3 runs ``Conv2D(groups > 1)``
there through XLA. Its forward pass is fast, its gradient is not: on a 2-core Intel Xeon (Emerald
Rapids), one 3x3 convolution of 256 channels in 32 groups at 2 x 64 x 64 took 8.1 s per training
step (forward, input and kernel gradients) against 0.15 s, 53x less, for the same convolution
written as a dense one with a block-diagonal kernel, which oneDNN runs
(``python -m exfuse_keras.bench.grouped_conv``). That is what kept ResNeXt-101 from training on
CPUs (50 steps of ``gcn_baseline.yaml`` had not finished in 17 minutes; now 3-5 minutes).

``GroupedConv2D`` is a ``keras.layers.Conv2D`` with the same weights (kernel
``[kh, kw, C_in / groups, C_out]``, so ImageNet weights load by name as before) and two forms of
the same convolution:

- inference, and every call on a machine with a GPU: Keras' grouped convolution, as before
  (the graph exported to SavedModel and TFLite holds the grouped CONV_2D);
- training on a CPU-only machine: the kernel tiled ``groups`` times along its input axis and
  multiplied by a constant block-diagonal mask, ``W[:, :, i, o] = K[:, :, i mod (C_in / groups), o]``
  where input channel ``i`` and output channel ``o`` are in the same group and 0 elsewhere, then
  one dense convolution. The zeros add nothing, so both forms give the same outputs, and the
  gradient reaches the grouped kernel through the tiling.

Shapes: ``[N, H, W, C_in] -> [N, H', W', C_out]`` as ``Conv2D``; channels last only in the
dense form (the backbones here are channels last).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def block_diagonal_mask(in_channels: int, out_channels: int, groups: int) -> np.ndarray:
    """``[C_in, C_out]`` float32, 1 where input and output channel share a group, else 0."""
    group_in = np.arange(in_channels) // (in_channels // groups)
    group_out = np.arange(out_channels) // (out_channels // groups)
    return (group_in[:, None] == group_out[None, :]).astype("float32")


def _cpu_only() -> bool:
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


@keras.saving.register_keras_serializable(package="exfuse")
class GroupedConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with ``groups > 1`` that trains fast on CPUs (module docstring)."""

    def call(self, inputs, training=None):
        if not (training and self.groups > 1 and self.data_format == "channels_last" and _cpu_only()):
            return super().call(inputs)
        kernel = self.kernel
        in_channels = kernel.shape[2] * self.groups
        dense = ops.tile(kernel, (1, 1, self.groups, 1))
        mask = ops.cast(block_diagonal_mask(in_channels, self.filters, self.groups), dense.dtype)
        outputs = ops.conv(inputs, dense * mask, strides=list(self.strides), padding=self.padding,
                           dilation_rate=self.dilation_rate, data_format=self.data_format)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        return self.activation(outputs) if self.activation is not None else outputs
