"""In-process stand-ins for TF Serving's REST and gRPC model server, around a loaded SavedModel.

TF Serving's model server binary cannot be installed here; these do what it does with a request,
so the clients (``exfuse_keras.export.client``), the tests and the serving soak
(``exfuse_keras.bench.serving_soak``) can run against an export without it:

- REST: ``rest_predict`` turns a row-format JSON body (``{"signature_name": ..., "instances":
  [{"b64": ...}, ...]}``, each ``{"b64": ...}`` base64-decoded to raw bytes) into the signature's
  string tensor, runs the signature and answers ``{"predictions": [{output: value, ...}, ...]}``,
  or ``{"error": ...}`` with HTTP 400 for an invalid argument (a malformed body included);
  ``serve_rest`` serves it at TF Serving's URL (``/v1/models/<name>[/versions/<v>]:predict``).
- gRPC: ``PredictionService`` (tensorflow-serving-api's servicer) converts the request's
  TensorProtos, runs the signature and returns TensorProtos; bad input is ``INVALID_ARGUMENT``,
  an unknown model ``NOT_FOUND``. ``serve_grpc`` starts it on a local port.

    loaded = tf.saved_model.load("export/exfuse/1")
    with serve_rest(loaded, "exfuse") as url, serve_grpc(loaded, "exfuse") as target:
        predict_rest(images, url, "exfuse"); predict_grpc(images, target, "exfuse")

Keep the object ``loaded`` alive while serving (its signatures hold weak references to it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Optional, Sequence

DEFAULT_SIGNATURE = "serving_default"


def rest_predict(loaded, body) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of TF Serving's REST predict for a row-format ``body`` (a dict).

    Status 200 with ``{"predictions": [...]}`` (one dict of outputs per instance), or 400 with
    ``{"error": message}`` for a body TF Serving would refuse or an ``InvalidArgumentError`` of
    the signature.
    """
    import tensorflow as tf

    try:
        signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
        if signature_name not in loaded.signatures:
            return 400, {"error": f"Serving signature name: {signature_name!r} not found in signature def"}
        signature = loaded.signatures[signature_name]
        (input_name,) = signature.structured_input_signature[1]
        instances = body["instances"]
        if not isinstance(instances, list):
            raise TypeError("'instances' must be a list")
        values = [base64.b64decode(v["b64"], validate=True) if isinstance(v, dict) and set(v) == {"b64"} else v
                  for v in instances]
        inputs = tf.constant(values, dtype=tf.string, shape=[len(values)])
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error) as err:
        return 400, {"error": f"malformed request body: {err}"}
    try:
        outputs = {key: value.numpy() for key, value in signature(**{input_name: inputs}).items()}
    except tf.errors.InvalidArgumentError as err:
        return 400, {"error": err.message}
    return 200, {"predictions": [{key: value[k].tolist() for key, value in outputs.items()}
                                 for k in range(len(values))]}


def _rest_handler(loaded, paths: frozenset):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving's server

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if self.path not in paths:
                status, answer = 404, {"error": f"Servable not found for request: {self.path}"}
            else:
                try:
                    body = json.loads(data)
                except ValueError as err:
                    status, answer = 400, {"error": f"JSON Parse error: {err}"}
                else:
                    status, answer = rest_predict(loaded, body)
            reply = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def serve_rest(loaded, model_name: str = "exfuse", versions: Sequence[int] = ()) -> Iterator[str]:
    """Serves ``rest_predict`` at ``/v1/models/<model_name>:predict`` (and ``/versions/<v>:predict``
    for each of ``versions``) on a free local port, one thread per connection; yields the server's
    address (``http://127.0.0.1:<port>``)."""
    paths = frozenset([f"/v1/models/{model_name}:predict"]
                      + [f"/v1/models/{model_name}/versions/{int(v)}:predict" for v in versions])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(loaded, paths))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def prediction_service(loaded, model_name: str = "exfuse"):
    """A ``PredictionServiceServicer`` whose ``Predict`` runs ``loaded``'s signatures (module doc).
    Needs tensorflow-serving-api (``exfuse_keras.export.client.SERVING_INSTALL``)."""
    import tensorflow as tf

    from exfuse_keras.export.client import _serving_api

    grpc, predict_pb2, prediction_service_pb2_grpc = _serving_api()

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != model_name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}")
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name not in loaded.signatures:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Serving signature name: {signature_name!r} not found in signature def")
            signature = loaded.signatures[signature_name]
            try:
                inputs = {key: tf.constant(tf.make_ndarray(value)) for key, value in request.inputs.items()}
                outputs = signature(**inputs)
            except (TypeError, ValueError) as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request inputs: {err}")
            except tf.errors.InvalidArgumentError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    return PredictionService()


@contextlib.contextmanager
def serve_grpc(loaded, model_name: str = "exfuse", max_workers: int = 2,
               max_message_mb: Optional[int] = 64) -> Iterator[str]:
    """Serves ``prediction_service`` on a free local port with ``max_workers`` threads; yields the
    target (``127.0.0.1:<port>``). ``max_message_mb`` raises gRPC's 4 MB message limit."""
    from exfuse_keras.export.client import _serving_api

    grpc, _, prediction_service_pb2_grpc = _serving_api()
    options = []
    if max_message_mb:
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        prediction_service(loaded, model_name), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
