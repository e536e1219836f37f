"""Clients of an exported model behind TF Serving: REST over plain HTTP, and gRPC.

    from exfuse_keras.export.client import predict_rest, predict_grpc

    results = predict_rest(["photo.jpg", image_array], "http://localhost:8501", model_name="exfuse")
    mask, probabilities = results[0]       # uint8 [H, W] at the image's size; None without probabilities
    results = predict_grpc(["photo.jpg"], "localhost:8500", model_name="exfuse")

Images go over the wire encoded (JPEG/PNG file bytes as they are; arrays and PIL images as PNG),
so a request stays small and the server decodes them (``serving_default``). REST sends
``{"signature_name": ..., "instances": [{"b64": <base64>}, ...]}``: TF Serving turns each
``{"b64": ...}`` back into the raw bytes of one string tensor element. gRPC sends a
``PredictRequest`` whose input ``image_bytes`` is that string tensor; it needs the optional
``tensorflow-serving-api`` package (``pip install --no-deps -r requirements-serving.txt``).
``signature_name="serving_examples"`` wraps each image in a ``tf.train.Example`` instead.

The server answers a padded batch (``mask`` ``[B, Hmax, Wmax]`` with ``height``/``width``); both
clients return one ``(mask, probabilities)`` per image, cropped to the image's own size.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from typing import Optional, Sequence

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
# The input of each signature that takes encoded images (exfuse_keras/export/saved_model.py).
INPUT_NAMES = {"serving_default": "image_bytes", "serving_examples": "examples"}
EXAMPLE_IMAGE_KEY = "image/encoded"
SERVING_INSTALL = ("pip install --no-deps -r requirements-serving.txt (tensorflow-serving-api, beside grpcio "
                   "and protobuf)")


class ServingError(RuntimeError):
    """The server refused or failed a request (its message included)."""


def encode_image(image) -> bytes:
    """Bytes to send: file bytes for a path or ``bytes``; PNG for a numpy array or PIL image."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            if array.size and (array.min() < 0 or array.max() > 255):
                raise ValueError(f"expected pixel values 0-255, got {array.min()}..{array.max()}")
            array = np.round(array).astype(np.uint8)
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _payloads(images: Sequence, signature_name: str) -> list[bytes]:
    if signature_name not in INPUT_NAMES:
        raise ValueError(f"signature_name {signature_name!r}: the clients send encoded images, to one of "
                         f"{sorted(INPUT_NAMES)}")
    encoded = [encode_image(image) for image in images]
    if signature_name == "serving_examples":
        import tensorflow as tf

        encoded = [tf.train.Example(features=tf.train.Features(feature={
            EXAMPLE_IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))})).SerializeToString()
            for data in encoded]
    return encoded


def rest_request_body(images: Sequence, signature_name: str = DEFAULT_SIGNATURE) -> dict:
    """The JSON body of a REST predict request (row format, one ``{"b64": ...}`` per image)."""
    payloads = _payloads(images, signature_name)
    return {"signature_name": signature_name,
            "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in payloads]}


def rest_url(server: str = "http://localhost:8501", model_name: str = "exfuse", version: Optional[int] = None) -> str:
    version_part = f"/versions/{int(version)}" if version is not None else ""
    return f"{server.rstrip('/')}/v1/models/{model_name}{version_part}:predict"


def predictions_from_outputs(outputs: dict) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """``(mask uint8 [h, w], probabilities [h, w, C] or None)`` per image from a padded batch of
    outputs (``mask``, ``height``, ``width``, optional ``probabilities``)."""
    masks = np.asarray(outputs["mask"], np.uint8)
    heights, widths = np.asarray(outputs["height"]).reshape(-1), np.asarray(outputs["width"]).reshape(-1)
    probabilities = outputs.get("probabilities")
    results = []
    for k, (height, width) in enumerate(zip(heights, widths, strict=True)):
        mask = masks[k, :height, :width]
        probs = None if probabilities is None else np.asarray(probabilities[k], np.float32)[:height, :width]
        results.append((mask, probs))
    return results


def parse_rest_response(response: dict) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """Results from a REST predict response (``{"predictions": [{"mask": ..., ...}, ...]}``)."""
    if "error" in response:
        raise ServingError(response["error"])
    rows = response["predictions"]
    results = []
    for row in rows:
        outputs = {key: np.asarray(value)[None] for key, value in row.items()}
        results += predictions_from_outputs(outputs)
    return results


def predict_rest(images: Sequence, server: str = "http://localhost:8501", model_name: str = "exfuse",
                 version: Optional[int] = None, signature_name: str = DEFAULT_SIGNATURE,
                 timeout: float = 60.0) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """Predicts ``images`` (paths, bytes, arrays, PIL images) through TF Serving's REST API.

    Raises:
        ServingError: the server's error message (e.g. an image over the export's max_side).
    """
    url = rest_url(server, model_name, version)
    body = json.dumps(rest_request_body(images, signature_name)).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            response = json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        try:
            text = json.loads(text).get("error", text)
        except ValueError:
            pass
        raise ServingError(f"{url}: HTTP {err.code}: {text}") from None
    except urllib.error.URLError as err:
        raise ServingError(f"{url}: {err.reason}") from None
    return parse_rest_response(response)


def _serving_api():
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as err:
        raise ImportError(f"gRPC needs the optional tensorflow-serving-api package ({err}): {SERVING_INSTALL}") \
            from None
    return grpc, predict_pb2, prediction_service_pb2_grpc


def grpc_request(images: Sequence, model_name: str = "exfuse", version: Optional[int] = None,
                 signature_name: str = DEFAULT_SIGNATURE):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``images``."""
    import tensorflow as tf

    _, predict_pb2, _ = _serving_api()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    payloads = _payloads(images, signature_name)
    request.inputs[INPUT_NAMES[signature_name]].CopyFrom(
        tf.make_tensor_proto(np.array(payloads, dtype=object), dtype=tf.string, shape=[len(payloads)]))
    return request


def predict_grpc(images: Sequence, server: str = "localhost:8500", model_name: str = "exfuse",
                 version: Optional[int] = None, signature_name: str = DEFAULT_SIGNATURE, timeout: float = 60.0,
                 max_message_mb: int = 64) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """Predicts ``images`` through TF Serving's gRPC ``PredictionService.Predict``.

    ``max_message_mb`` raises gRPC's 4 MB default for answers with probabilities.

    Raises:
        ImportError: tensorflow-serving-api is not installed (with the command that installs it).
        ServingError: the server's status code and message.
    """
    import tensorflow as tf

    grpc, _, prediction_service_pb2_grpc = _serving_api()
    request = grpc_request(images, model_name, version, signature_name)
    limit = max_message_mb * 1024 * 1024
    with grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", limit),
                                                ("grpc.max_send_message_length", limit)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as err:
            raise ServingError(f"{server}: {err.code().name}: {err.details()}") from None
    return predictions_from_outputs({key: tf.make_ndarray(value) for key, value in response.outputs.items()})
