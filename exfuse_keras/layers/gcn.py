"""The GCN baseline's two modules (Peng et al., "Large Kernel Matters", CVPR 2017, Fig. 2).

ExFuse (Sec. 2, Fig. 2) builds on them: every backbone stage is scored by a Global
Convolution block and refined by Boundary Refinement in the top-down decoder.
"""

import keras


@keras.saving.register_keras_serializable(package="exfuse")
class GlobalConvolution(keras.layers.Layer):
    """Global Convolutional Network block: a separable k x k receptive field.

    Two branches, (k x 1 then 1 x k) and (1 x k then k x 1), summed; no BN, no ReLU inside
    (GCN paper Sec. 3.1). Shapes: ``[N, H, W, C_in] -> [N, H, W, filters]``.

    Initialisation: each branch's second convolution draws its kernel from a Glorot-uniform
    distribution whose variance is multiplied by ``output_scale`` (1.0: Keras's default). On a
    randomly initialised ResNet-101 at 256² the default scores, summed over the four levels by the
    decoder, gave logits of std 1.7 and a first loss of 4.9 for 21 classes (ln 21 = 3.0);
    ``output_scale=0.1`` starts the scores near a uniform guess (docs/training.md, "Starting
    from random weights").

    Args:
        filters (int): output channels (the number of classes in ExFuse).
        kernel_size (int): k, odd; the GCN paper's best is 15.
        output_scale (float): variance scale of the second convolutions' initialiser, > 0.
        **kwargs: standard ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Example::

        gcn = GlobalConvolution(21, kernel_size=15, name="gcn_res5")
        scores = gcn(res5)          # [N, 16, 16, 2048] -> [N, 16, 16, 21]
    """

    def __init__(self, filters, kernel_size=15, output_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if not output_scale > 0:
            raise ValueError(f"output_scale must be positive, got {output_scale!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.output_scale = float(output_scale)
        k = kernel_size
        second = keras.initializers.VarianceScaling(self.output_scale, mode="fan_avg", distribution="uniform")
        conv = lambda shape, name, init="glorot_uniform": keras.layers.Conv2D(  # noqa: E731
            filters, shape, padding="same", name=name, kernel_initializer=init, dtype=self.dtype_policy)
        self.left_kx1 = conv((k, 1), "left_kx1")
        self.left_1xk = conv((1, k), "left_1xk", second)
        self.right_1xk = conv((1, k), "right_1xk")
        self.right_kx1 = conv((k, 1), "right_kx1", second)

    def build(self, input_shape):
        mid_shape = (*input_shape[:3], self.filters)
        self.left_kx1.build(input_shape)
        self.left_1xk.build(mid_shape)
        self.right_1xk.build(input_shape)
        self.right_kx1.build(mid_shape)

    def call(self, x):
        return self.left_1xk(self.left_kx1(x)) + self.right_kx1(self.right_1xk(x))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "output_scale": self.output_scale}


@keras.saving.register_keras_serializable(package="exfuse")
class BoundaryRefinement(keras.layers.Layer):
    """Boundary Refinement: a residual ``S + conv3x3(relu(conv3x3(S)))`` (GCN paper Fig. 2c).

    Shapes: ``[N, H, W, filters] -> [N, H, W, filters]``.

    The residual branch's last convolution starts at zero, so an untrained BR is the identity
    (as a ResNet block whose last BatchNorm scale starts at zero, Goyal et al. 2017). The
    decoder chains up to 11 of them on the score maps; with the Glorot default each multiplied
    the scores' spread by about 1.3, so an untrained quick-start-size model began with logits of
    standard deviation 15 and a loss of 21 (against ln C = 2.5 for 12 classes), and spent its
    first several hundred steps predicting background everywhere (docs/ablation.md).

    Args:
        filters (int): channels of the score map (input and output).
        residual_initializer (str | keras.initializers.Initializer): the second convolution's
            kernel initializer (default ``"zeros"``; ``"glorot_uniform"`` is Keras's default).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        refined = BoundaryRefinement(21)(scores)    # [N, H, W, 21] -> [N, H, W, 21]
    """

    def __init__(self, filters, residual_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.residual_initializer = keras.initializers.get(residual_initializer)
        self.conv1 = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1",
                                         dtype=self.dtype_policy)
        self.conv2 = keras.layers.Conv2D(filters, 3, padding="same", name="conv2", dtype=self.dtype_policy,
                                         kernel_initializer=self.residual_initializer)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(f"{self.name}: expects {self.filters} input channels, got {input_shape[-1]}")
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)

    def call(self, x):
        return x + self.conv2(self.conv1(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "residual_initializer": keras.initializers.serialize(self.residual_initializer)}
