"""TF Serving: the version layout and models.config, the clients' requests decoded the way TF
Serving decodes them, saved_model_cli, and loading in a fresh process through TF Serving's own
(TF1 graph + saver) loading path.

The model server itself cannot be installed here: its in-process stand-ins
(``exfuse_keras.export.local_serving``: REST predict on a local HTTP server, an in-process gRPC
``PredictionService``) do what it does with a request.
Every mask must equal the Python inference API's (``Segmenter``) exactly.
"""

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from exfuse_keras.config import config_from_dict
from exfuse_keras.export import client
from exfuse_keras.export.local_serving import rest_predict, serve_grpc, serve_rest
from exfuse_keras.export.saved_model import SIGNATURES
from exfuse_keras.export.tf_serving import export_tf_serving, models_config
from exfuse_keras.inference import Segmenter
from exfuse_keras.model import build_model
from tests.helpers import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny untrained ExFuse exported for TF Serving into a base that already holds version 1 of
    it and another model: (base, version folder, loaded SavedModel, segmenter, images)."""
    cfg = config_from_dict(tiny_config_dict())
    keras.utils.set_random_seed(1)
    model = build_model(cfg)
    base = tmp_path_factory.mktemp("serving")
    (base / "exfuse" / "1").mkdir(parents=True)
    (base / "other" / "3").mkdir(parents=True)
    path = export_tf_serving(cfg, model, str(base), "exfuse", with_probabilities=True)
    images = [_image(45, 70, 1), _image(64, 33, 2), _image(1, 1, 3)]
    return base, path, tf.saved_model.load(path), Segmenter(model, cfg), images


def _assert_results_match(results, images, segmenter):
    assert len(results) == len(images)
    for (mask, probabilities), image in zip(results, images, strict=True):
        expected_mask, expected_probabilities = segmenter.predict(image)
        np.testing.assert_array_equal(mask, expected_mask)
        np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-6)


def test_export_goes_to_the_next_version_and_models_config_lists_every_model(served):
    base, path, _, _, _ = served
    assert path == str(base / "exfuse" / "2") and os.path.isfile(os.path.join(path, "saved_model.pb"))
    text = (base / "models.config").read_text()
    assert text == models_config(str(base))
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        pytest.skip("tensorflow-serving-api not installed (requirements-serving.txt): models.config not parsed")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = {(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config}
    assert entries == {("exfuse", "/models/exfuse", "tensorflow"), ("other", "/models/other", "tensorflow")}


def test_saved_model_cli_lists_the_signatures(served):
    _, path, _, _, _ = served
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--all", "--dir", path], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in out.stdout
    serving_default = out.stdout.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['image_bytes'] tensor_info:" in serving_default and "DT_STRING" in serving_default
    assert "outputs['mask'] tensor_info:" in serving_default and "DT_UINT8" in serving_default


def test_rest_body_decoded_like_tf_serving_gives_the_python_api_masks(served):
    _, _, loaded, segmenter, images = served
    body = json.loads(json.dumps(client.rest_request_body(images)))  # what goes over the wire
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == len(images)
    assert all(set(instance) == {"b64"} for instance in body["instances"])
    status, answer = rest_predict(loaded, body)
    assert status == 200
    _assert_results_match(client.parse_rest_response(json.loads(json.dumps(answer))), images, segmenter)
    # The tf.Example signature through the same body format.
    status, answer = rest_predict(loaded, client.rest_request_body(images, "serving_examples"))
    assert status == 200
    _assert_results_match(client.parse_rest_response(answer), images, segmenter)


def test_the_client_sends_files_as_they_are_and_arrays_as_png(served, tmp_path):
    _, _, _, _, images = served
    path = tmp_path / "photo.jpg"
    Image.fromarray(images[0]).save(path, quality=90)
    body = client.rest_request_body([str(path), images[1]])
    assert base64.b64decode(body["instances"][0]["b64"]) == path.read_bytes()
    decoded = Image.open(io.BytesIO(base64.b64decode(body["instances"][1]["b64"])))
    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded), images[1])


@pytest.fixture
def rest_server(served):
    """TF Serving's REST predict URL on a local port: the server's address."""
    _, _, loaded, _, _ = served
    with serve_rest(loaded, "exfuse", versions=[2]) as url:
        yield url


def test_rest_client_round_trip_and_errors(served, rest_server):
    _, _, _, segmenter, images = served
    _assert_results_match(client.predict_rest(images, rest_server, "exfuse"), images, segmenter)
    _assert_results_match(client.predict_rest(images[:1], rest_server, "exfuse", version=2), images[:1], segmenter)
    with pytest.raises(client.ServingError, match="(?s)HTTP 400: .*Unknown image file format"):
        client.predict_rest([b"not an image"], rest_server, "exfuse")
    with pytest.raises(client.ServingError, match="HTTP 404"):
        client.predict_rest(images[:1], rest_server, "missing")
    for body in (b"{not json", b'{"instances": [7]}', b'{"instances": [{"b64": "@@"}]}',
                 b'{"signature_name": "nope", "instances": []}'):
        request = urllib.request.Request(client.rest_url(rest_server, "exfuse"), data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=60)
        assert answer.value.code == 400 and "error" in json.loads(answer.value.read())


def test_grpc_client_round_trip_and_errors(served):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api not installed (requirements-serving.txt)")
    _, _, loaded, segmenter, images = served
    with serve_grpc(loaded, "exfuse") as target:
        _assert_results_match(client.predict_grpc(images, target, "exfuse"), images, segmenter)
        _assert_results_match(client.predict_grpc(images, target, "exfuse", signature_name="serving_examples"),
                              images, segmenter)
        with pytest.raises(client.ServingError, match="(?s)INVALID_ARGUMENT: .*empty string"):
            client.predict_grpc([b""], target, "exfuse")
        with pytest.raises(client.ServingError, match="NOT_FOUND"):
            client.predict_grpc(images[:1], target, "missing")


FRESH_PROCESS = r"""
import sys
import numpy as np
import tensorflow as tf

path, output, *files = sys.argv[1:]
encoded = [open(f, "rb").read() for f in files]
# TF Serving's loading path: a TF1 graph, variables restored by the SavedModel's saver.
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    signature = meta_graph.signature_def["serving_default"]
    graph = session.run({k: v.name for k, v in signature.outputs.items()},
                        {signature.inputs["image_bytes"].name: encoded})
loaded = tf.saved_model.load(path)
eager = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
np.savez(output, graph_mask=graph["mask"], eager_mask=eager["mask"].numpy(), height=graph["height"],
         width=graph["width"])
"""


def test_a_fresh_process_loads_the_export_like_tf_serving(served, tmp_path):
    _, path, _, segmenter, images = served
    files = []
    for k, image in enumerate(images):
        files.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(image).save(files[-1])
    output = str(tmp_path / "masks.npz")
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, output, *files], capture_output=True,
                         text=True, timeout=600, cwd=str(tmp_path), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = np.load(output)
    np.testing.assert_array_equal(result["graph_mask"], result["eager_mask"])
    results = client.predictions_from_outputs({"mask": result["graph_mask"], "height": result["height"],
                                               "width": result["width"]})
    for (mask, probabilities), image in zip(results, images, strict=True):
        assert probabilities is None
        np.testing.assert_array_equal(mask, segmenter.predict(image)[0])


def test_grpc_without_the_optional_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(ImportError, match="requirements-serving.txt"):
        client.predict_grpc([b"x"], "127.0.0.1:1")
