"""Semantic Embedding Branch (ExFuse Sec. 3.1, Fig. 4)."""

import keras
import tensorflow as tf

from exfuse_keras.layers.resize import resize


@keras.saving.register_keras_serializable(package="exfuse")
class SemanticEmbeddingBranch(keras.layers.Layer):
    """Embeds the semantics of every higher level into a low-level feature map.

    ``x_l <- x_l * prod_h upsample_bilinear(conv3x3(x_h))`` over all higher levels h: each
    3x3 conv maps x_h to x_l's channel count at x_h's own (coarser) resolution, is resized
    bilinearly to x_l's size, and the products gate x_l element-wise. Applied to res2, res3
    and res4 before their Global Convolution.

    Shapes: ``[x_l, x_h1, x_h2, ...]`` with ``x_l: [N, H, W, C_l]`` and
    ``x_h: [N, H / 2^j, W / 2^j, C_h]`` -> ``[N, H, W, C_l]``.

    Initialisation (the paper does not state one): with ``gate_init="identity"`` every 3x3
    conv starts with a zero kernel and a bias of one, so each gate is exactly 1 and the branch
    starts as the identity (the GCN baseline's features); training learns the gating. With
    ``"glorot"`` (Keras' default conv init) the untrained gates are products of random-sign
    noise that scramble the low-level features: trained from scratch on the quick start this
    learned more slowly (docs/design.md, "SEB").

    Args:
        kernel_size (int): size of the convolution on each higher level (the paper's is 3).
        gate_init (str): ``"identity"`` or ``"glorot"``, see above.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        # res3 [N, 64, 64, 512], res4 [N, 32, 32, 1024], res5 [N, 16, 16, 2048]
        seb = SemanticEmbeddingBranch(gate_init="identity", name="seb_res3")
        res3 = seb([res3, res4, res5])   # [N, 64, 64, 512]
    """

    GATE_INITS = ("identity", "glorot")

    def __init__(self, kernel_size=3, gate_init="identity", **kwargs):
        super().__init__(**kwargs)
        if gate_init not in self.GATE_INITS:
            raise ValueError(f"gate_init must be one of {self.GATE_INITS}, got {gate_init!r}")
        self.kernel_size = kernel_size
        self.gate_init = gate_init
        self.convs = []

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError(f"{self.name}: expects [low, high_1, ...] with at least one higher level")
        channels = input_shape[0][-1]
        for i, high_shape in enumerate(input_shape[1:]):
            init = ({"kernel_initializer": "zeros", "bias_initializer": "ones"} if self.gate_init == "identity"
                    else {})
            conv = keras.layers.Conv2D(channels, self.kernel_size, padding="same", name=f"conv_high{i + 1}",
                                       dtype=self.dtype_policy, **init)
            conv.build(high_shape)
            self.convs.append(conv)

    def call(self, inputs):
        low, highs = inputs[0], inputs[1:]
        size = tf.shape(low)[1:3]
        out = low
        for conv, high in zip(self.convs, highs):
            out = out * tf.cast(resize(conv(high), size), out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "gate_init": self.gate_init}
