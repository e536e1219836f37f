"""Input normalisation inside the model: the model takes RGB float 0-255 pixels.

Keeping the one copy of the preprocessing in the graph means the data pipeline, evaluation
and every export feed raw pixels and cannot disagree about it.
"""

import keras
from keras import ops

# keras.applications' caffe-style ResNet weights: BGR order, ImageNet mean subtracted, no scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision-style weights: RGB scaled to [0, 1], then ImageNet mean/std.
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
TORCH_RGB_STD = (0.229, 0.224, 0.225)
MODES = ("caffe", "torch", "scale")


@keras.saving.register_keras_serializable(package="exfuse")
class InputNormalization(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what the backbone's weights expect.

    Shapes: ``[N, H, W, 3] -> [N, H, W, 3]``.

    Args:
        mode (str): ``"caffe"`` (keras.applications ResNet: RGB->BGR, minus the BGR mean),
            ``"torch"`` (x/255, minus mean, over std) or ``"scale"`` (x/127.5 - 1).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        x = InputNormalization("caffe")(image)    # RGB 0-255 -> what keras.applications' ResNet expects
    """

    def __init__(self, mode="torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_BGR_MEAN, self.compute_dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_RGB_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(TORCH_RGB_STD, self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x / 127.5 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
