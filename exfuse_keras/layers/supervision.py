"""Semantic Supervision head (ExFuse Sec. 3.1, Fig. 3)."""

import keras

from exfuse_keras.layers.normalization import SyncBatchNormalization


@keras.saving.register_keras_serializable(package="exfuse")
class SemanticSupervisionHead(keras.layers.Layer):
    """An auxiliary classifier on an early stage, so low-level features carry semantics.

    Fig. 3's shape: stride-2 3x3 conv blocks (conv, BN, ReLU) down to the res5 resolution,
    global average pooling, a dense classifier. In ImageNet pretraining the target is the
    image class (softmax); in segmentation training it is the multi-hot set of classes
    present in the crop (sigmoid), so the head outputs logits.

    Shapes: ``[N, H, W, C_in] -> [N, num_classes]``.

    Args:
        num_classes (int): classifier outputs.
        num_downsamples (int): stride-2 blocks (res2: 3, res3: 2, res4: 1 to reach res5's
            stride 32).
        channels (int): width of the conv blocks.
        synchronized (bool): synchronise BatchNorm statistics across replicas (as the
            backbone's ``sync_batch`` norm does), so the head is replica-invariant too.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Example::

        head = SemanticSupervisionHead(21, num_downsamples=3, channels=256, name="ss_head_res2")
        presence_logits = head(res2)     # [N, 128, 128, 256] -> [N, 21]
    """

    def __init__(self, num_classes, num_downsamples, channels=256, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        if num_downsamples < 0:
            raise ValueError(f"num_downsamples must be >= 0, got {num_downsamples!r}")
        self.num_classes = num_classes
        self.num_downsamples = num_downsamples
        self.channels = channels
        self.synchronized = synchronized
        self.blocks = []
        for i in range(num_downsamples):
            self.blocks.append((
                keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name=f"conv{i + 1}",
                                    dtype=self.dtype_policy),
                (SyncBatchNormalization if synchronized else keras.layers.BatchNormalization)(
                    name=f"bn{i + 1}", dtype=self.dtype_policy),
            ))
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool", dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = input_shape
        for conv, bn in self.blocks:
            conv.build(shape)
            shape = (shape[0], None, None, self.channels)
            bn.build(shape)
        self.classifier.build((shape[0], shape[-1]))

    def call(self, x, training=None):
        for conv, bn in self.blocks:
            x = keras.ops.relu(bn(conv(x), training=training))
        return self.classifier(self.pool(x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_downsamples": self.num_downsamples, "channels": self.channels,
                "synchronized": self.synchronized}
