"""ONNX export (tf2onnx) of the network: ``images`` float32 ``[N, H, W, 3]`` RGB 0-255, any N and
any H, W multiples of 32 -> ``logits`` float32 ``[N, H, W, C]`` (normalisation inside, auxiliary
heads dropped). Padding to 32 and the argmax stay with the caller, as for TFLite; onnxruntime
reproduces the Keras logits to float rounding (tested).
"""

from __future__ import annotations

import tensorflow as tf

DEFAULT_OPSET = 17


def export_onnx(model, path: str, opset: int = DEFAULT_OPSET) -> str:
    """Writes the ONNX file ``path`` and returns it."""
    try:
        import tf2onnx
    except ImportError:
        raise ImportError("ONNX export needs tf2onnx: pip install tf2onnx==1.17.0 onnx (requirements-test.txt)") \
            from None
    from exfuse_keras.export.common import logits_model

    network = logits_model(model)
    function = tf.function(lambda images: {"logits": tf.cast(network(images, training=False), tf.float32)})
    from exfuse_keras.atomic import atomic_path

    with atomic_path(path) as tmp:  # a kill leaves the old file or the new one
        tf2onnx.convert.from_function(function, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                                                 name="images")],
                                      opset=opset, output_path=tmp)
    return path
