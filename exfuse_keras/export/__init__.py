"""Export for deployment (behind export.py): SavedModel and TF Serving, TFLite, ONNX; the
serving clients.

- ``saved_model.py``: the serving graph (encoded images, image tensors, tf.Example -> masks).
- ``tf_serving.py``: ``<base>/<model>/<version>/`` and ``models.config``.
- ``client.py``: REST (plain HTTP) and gRPC clients of TF Serving.
- ``tflite.py``: fixed-size float32 / float16 / dynamic-range / int8 files, builtin ops only.
- ``onnx.py``: tf2onnx export of the network.
- ``common.py``: what they share (the logits-only network, the output folder, ``export.json``).

An export is read back as a predictor by exfuse_keras/inference/saved_model.py.
"""

from exfuse_keras.export.onnx import export_onnx
from exfuse_keras.export.saved_model import export_saved_model
from exfuse_keras.export.tf_serving import export_tf_serving
from exfuse_keras.export.tflite import export_tflite

__all__ = ["export_saved_model", "export_tf_serving", "export_tflite", "export_onnx"]
