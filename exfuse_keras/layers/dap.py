"""Densely Adjacent Prediction (ExFuse Sec. 3.2)."""

import keras
import numpy as np
import tensorflow as tf


def subpixel_taps(size: int, crop: int) -> tuple[int, np.ndarray]:
    """How a stride-2 deconvolution becomes a stride-1 convolution and depth_to_space.

    ``conv2d_transpose(x, K, strides=2, padding="VALID")`` (K: ``size`` taps) cropped by ``crop``
    pixels at the start is, along one axis, ``out[2m + d] = sum_j x[m + j] K[d + crop - 2j]``
    (d = 0, 1; taps outside 0..size-1 count zero). Returns (J, index): the convolution has
    2J + 1 taps (zero 'same' padding reproduces the deconvolution's zeros outside the image) and
    ``index[t, d] = d + crop - 2(t - J)`` is the deconvolution tap behind phase d's tap t
    (outside [0, size) for a zero tap).
    """
    reach = [j for d in (0, 1) for j in range(-size, size + 1) if 0 <= d + crop - 2 * j < size]
    half = max(max(reach), -min(reach))
    taps = np.arange(2 * half + 1)[:, None]
    return half, np.arange(2)[None, :] + crop - 2 * (taps - half)


def subpixel_kernel(kernel, crop: int):
    """The stride-1 convolution kernel ``[T, T, C_in, 4 C]`` that, followed by
    ``depth_to_space(2)``, computes the stride-2 deconvolution with ``kernel`` (Conv2DTranspose's
    layout ``[S, S, C, C_in]``) cropped by ``crop`` at the start (``subpixel_taps``). Built with
    gathers, so gradients reach ``kernel``; depth_to_space's channel order is
    ``(d_row * 2 + d_col) * C + c``."""
    size = kernel.shape[0]
    half, index = subpixel_taps(size, crop)
    reach = 2 * half + 2  # zero padding so that every index, in range or not, reads K or a zero
    padded = tf.pad(kernel, [[reach, reach], [reach, reach], [0, 0], [0, 0]])
    taps, classes, channels = index.shape[0], kernel.shape[2], kernel.shape[3]
    flat = (index + reach).reshape(-1)
    rows = tf.gather(padded, flat, axis=0)                     # [T*2, S', C, C_in]
    both = tf.gather(rows, flat, axis=1)                       # [T*2, T*2, C, C_in]
    both = tf.reshape(both, (taps, 2, taps, 2, classes, channels))
    both = tf.transpose(both, (0, 2, 5, 1, 3, 4))              # [T, T, C_in, 2, 2, C]
    return tf.reshape(both, (taps, taps, channels, 4 * classes))


@keras.saving.register_keras_serializable(package="exfuse")
class DenselyAdjacentPrediction(keras.layers.Layer):
    """Each pixel's score for class c averages the votes of its k x k neighbours.

    The input has ``C * k^2`` channels; channel ``c * k^2 + a * k + b`` at pixel (i', j') is
    the vote for class c at pixel ``(i' - a + p, j' - b + p)``, ``p = k // 2``::

        out[n, i, j, c] = 1/k^2 * sum_{a, b < k} x[n, i + a - p, j + b - p, c * k^2 + a * k + b]

    with zeros outside the image (docs/design.md, "DAP"). Computed with two fixed (constant, not
    trainable) kernels: a depthwise k x k convolution with zero 'same' padding that moves
    channel ``c*k^2 + a*k + b`` by its tap (a, b), then a 1x1 convolution summing each class's
    k^2 channels and dividing by k^2. Both are TFLite builtins (DEPTHWISE_CONV_2D, CONV_2D),
    and on CPU this trained about 3x faster than pad + k^2 strided channel slices (tiny
    quick-start model at 128x128). Cost per pixel: C*k^2*k^2 multiply-adds for the shift and
    C*k^2*C for the sum (a dense 1x1 convolution whose kernel is mostly zeros): 3.0 GFLOPs at
    512x512 for C = 21, k = 3.

    Shapes: ``[N, H, W, C * k^2] -> [N, H, W, C]``.

    Args:
        kernel_size (int): k, odd (3 in the paper).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        votes = keras.layers.Conv2DTranspose(21 * 9, 4, strides=2, padding="same")(s)
        logits = DenselyAdjacentPrediction(3)(votes)    # [N, H, W, 189] -> [N, H, W, 21]
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


@keras.saving.register_keras_serializable(package="exfuse")
class DenselyAdjacentUpsampling(keras.layers.Layer):
    """The last 2x upsampling to C*k^2 votes and Densely Adjacent Prediction (Sec. 3.2, DAP
    placement "upsampling"), computed as one deconvolution without the vote map.

    Its weights and its function are those of ``Conv2DTranspose(C*k^2, 4, strides=2,
    padding="same")`` followed by ``DenselyAdjacentPrediction(k)`` (tested to float32 rounding,
    gradients included). Both are linear, so together they are one stride-2 deconvolution
    from C_in to C channels with a (k+3) x (k+3) kernel,

        K[r, s, c, i] = 1/k^2 * sum_{a, b < k} W[r + a - 2p, s + b - 2p, c*k^2 + a*k + b, i],

    (p = k // 2, W's taps outside 0..3 are zero), rebuilt from W at every step so gradients
    reach W, and bias 1/k^2 * sum_{a,b} bias[c*k^2 + a*k + b]. It runs in its sub-pixel form:
    a stride-1 convolution from C_in to 4C channels (3 x 3 for k = 3) and depth_to_space(2),
    the same sums (``subpixel_kernel``), which int8 TFLite runs faster. The deconvolution counts every
    vote; DAP counts zeros for votes from outside the image, so the pixels within p of the
    border subtract the outside votes: the deconvolution's spill beyond its 'same' crop (one
    row or column, computed from the input's border row or column) and the bias beyond that.

    Why: the C*k^2-channel map (189 channels at full resolution for VOC) and DAP's passes over
    it were the most memory-bound part of a training step (docs/benchmarks.md).

    Shapes: ``[N, H, W, C_in] -> [N, 2H, 2W, C]``.

    Args:
        num_classes (int): C.
        kernel_size (int): k, odd (3 in the paper).
        kernel_initializer (str | keras.initializers.Initializer | None): for W (default:
            bilinear upsampling, each vote a copy of its class; needs C_in = C).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        # s: [N, 256, 256, 21] scores at stride 2
        logits = DenselyAdjacentUpsampling(21, kernel_size=3, name="dap")(s)   # [N, 512, 512, 21]
    """

    TAPS = 4  # the 2x deconvolution's kernel (GCN's), initialised bilinear

    def __init__(self, num_classes, kernel_size=3, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        from exfuse_keras.layers.initializers import BilinearUpsamplingInitializer

        self.kernel_initializer = keras.initializers.get(kernel_initializer or BilinearUpsamplingInitializer())
        self.num_classes = int(num_classes)
        self.kernel_size = kernel_size
        self._dap = DenselyAdjacentPrediction(kernel_size, name="votes", dtype=self.dtype_policy)
        self._dap.build((None, None, None, self.num_classes * kernel_size ** 2))

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"{self.name}: the number of input channels must be known")
        votes = self.num_classes * self.kernel_size ** 2
        # Conv2DTranspose's layout and names, so its checkpoints and this layer's are interchangeable.
        self.kernel = self.add_weight(name="kernel", shape=(self.TAPS, self.TAPS, votes, input_shape[-1]),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(votes,), initializer="zeros")

    def _votes_kernel(self):
        """W as [4, 4, C, k, k, C_in]."""
        k = self.kernel_size
        return tf.reshape(self.kernel, (self.TAPS, self.TAPS, self.num_classes, k, k, -1))

    def _composed_kernel(self):
        k, p = self.kernel_size, self.kernel_size // 2
        w = self._votes_kernel()
        total = 0.0
        for a in range(k):
            for b in range(k):
                total += tf.pad(w[:, :, :, a, b, :], [[2 * p - a, a], [2 * p - b, b], [0, 0], [0, 0]])
        return total / k ** 2

    def _subpixel_kernel(self):
        """The composed deconvolution kernel as a stride-1 convolution's (``subpixel_kernel``)."""
        return subpixel_kernel(self._composed_kernel(), self.kernel_size // 2 + 1)

    def _dap_valid(self, canvas):
        """DAP over a vote canvas, keeping only positions whose k x k window lies inside it."""
        p = self.kernel_size // 2
        return self._dap(canvas)[:, p:tf.shape(canvas)[1] - p, p:tf.shape(canvas)[2] - p, :]

    def call(self, x):
        k, p = self.kernel_size, self.kernel_size // 2
        dtype = x.dtype
        kernel, bias = tf.cast(self.kernel, dtype), tf.cast(self.bias, dtype)
        n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        # The composed deconvolution, cropped to [p + 1, p + 1 + 2H), as a stride-1 convolution
        # and depth_to_space: the same sums, but a CONV_2D that int8 TFLite runs in XNNPACK at
        # about 1/3 of the TRANSPOSE_CONV's time (docs/benchmarks.md, "Int8 TFLite, per op").
        composed = tf.cast(self._subpixel_kernel(), dtype)
        out = tf.nn.depth_to_space(tf.nn.conv2d(x, composed, strides=1, padding="SAME"), 2)
        mean_bias = tf.reduce_mean(tf.reshape(bias, (self.num_classes, k * k)), axis=-1)
        out = out + mean_bias
        if p == 0:
            return out
        votes = self.num_classes * k * k
        # The deconvolution's spill beyond its 'same' crop: full row 0 / 2H+1 (from the input's
        # first / last row and the kernel's first / last tap row), full column 0 / 2W+1.
        spill_shape = tf.stack([n, 1, 2 * w + 2, votes])
        top = tf.nn.conv2d_transpose(x[:, :1], kernel[:1], spill_shape, strides=[1, 1, 2, 1], padding="VALID")
        bottom = tf.nn.conv2d_transpose(x[:, -1:], kernel[-1:], spill_shape, strides=[1, 1, 2, 1], padding="VALID")
        spill_shape = tf.stack([n, 2 * h + 2, 1, votes])
        left = tf.nn.conv2d_transpose(x[:, :, :1], kernel[:, :1], spill_shape, strides=[1, 2, 1, 1], padding="VALID")
        right = tf.nn.conv2d_transpose(x[:, :, -1:], kernel[:, -1:], spill_shape, strides=[1, 2, 1, 1],
                                       padding="VALID")
        bias_map = lambda rows, cols: tf.zeros(tf.stack([n, rows, cols, votes]), dtype) + bias  # noqa: E731

        def rows_band(spill, outside_first):
            # Canvas rows: p outside rows then 2p image rows (zero: not outside votes), or the
            # reverse; columns [-p, 2W + p). The spill row lies next to the image, bias beyond it.
            ring = tf.concat([bias_map(1, p - 1), spill + bias, bias_map(1, p - 1)], axis=2)
            ring = tf.concat([bias_map(p - 1, 2 * w + 2 * p), ring] if outside_first
                             else [ring, bias_map(p - 1, 2 * w + 2 * p)], axis=1)
            image = tf.zeros(tf.stack([n, 2 * p, 2 * w + 2 * p, votes]), dtype)
            return self._dap_valid(tf.concat([ring, image] if outside_first else [image, ring], axis=1))

        def cols_band(spill, outside_first):
            # Canvas rows [-p, 2H + p) (rows outside the image are the row bands' votes: zero
            # here), p outside columns then 2p image columns, or the reverse.
            ring = tf.concat([bias_map(2 * h, p - 1), spill[:, 1:-1] + bias] if outside_first
                             else [spill[:, 1:-1] + bias, bias_map(2 * h, p - 1)], axis=2)
            image = tf.zeros(tf.stack([n, 2 * h, 2 * p, votes]), dtype)
            band = tf.concat([ring, image] if outside_first else [image, ring], axis=2)
            band = tf.pad(band, [[0, 0], [p, p], [0, 0], [0, 0]])
            return self._dap_valid(band)

        bands = rows_band(top, True), rows_band(bottom, False), cols_band(left, True), cols_band(right, False)
        if p == 1 or (x.shape[1] is not None and x.shape[2] is not None and min(x.shape[1], x.shape[2]) >= p):
            # Each band subtracted where it lies (2H, 2W >= 2p: the top and bottom bands do not
            # overlap): no full-size map is made for a band of p rows.
            top, bottom, left, right = bands
            out = tf.concat([out[:, :, :p] - left, out[:, :, p:2 * w - p], out[:, :, 2 * w - p:] - right], axis=2)
            return tf.concat([out[:, :p] - top, out[:, p:2 * h - p], out[:, 2 * h - p:] - bottom], axis=1)
        # Small or unknown sizes (H or W may be below p): each band padded to the full map.
        pad_rows = lambda band, before, after: tf.pad(band, [[0, 0], [before, after], [0, 0], [0, 0]])  # noqa: E731
        pad_cols = lambda band, before, after: tf.pad(band, [[0, 0], [0, 0], [before, after], [0, 0]])  # noqa: E731
        outside = (pad_rows(bands[0], 0, 2 * h - p) + pad_rows(bands[1], 2 * h - p, 0)
                   + pad_cols(bands[2], 0, 2 * w - p) + pad_cols(bands[3], 2 * w - p, 0))
        return out - outside

    def compute_output_shape(self, input_shape):
        double = lambda d: None if d is None else 2 * d  # noqa: E731
        return (input_shape[0], double(input_shape[1]), double(input_shape[2]), self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kernel_size": self.kernel_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
