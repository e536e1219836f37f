"""The serving soak script (exfuse_keras/bench/serving_soak.py) on a few requests: it runs as a
command, every request gets the code its kind must get over gRPC and REST, and the counts add up.
The 10,000-request soak itself is run by hand (docs/reliability.md, "Serving soak")."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from exfuse_keras.bench import serving_soak
from tests.helpers import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_bad_payloads_are_what_their_names_say():
    rng = np.random.default_rng(0)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # PIL refuses to open them otherwise
    try:
        assert Image.open(io.BytesIO(serving_soak.huge_png())).size == (serving_soak.HUGE_SIDE,) * 2
        assert Image.open(io.BytesIO(serving_soak.huge_jpeg(rng))).size == (serving_soak.HUGE_SIDE,) * 2
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    kinds = {kind.name: kind for kind in serving_soak.KINDS}
    assert kinds["empty_string"].payload(0, rng) == b"" and kinds["empty_batch"].payload(0, rng) is None
    for name in ("png_gray", "png_rgba", "png_gray16", "jpeg_gray"):
        image = Image.open(io.BytesIO(kinds[name].payload(2, rng)))
        assert (image.mode, image.size) == ({"png_gray": "L", "png_rgba": "RGBA", "png_gray16": "I;16",
                                              "jpeg_gray": "L"}[name], (64, 64))


def test_a_short_soak_answers_every_request_with_its_kinds_code(tmp_path):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api not installed (requirements-serving.txt)")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict()))
    output = tmp_path / "soak.json"
    requests, clients = 60, 4
    out = subprocess.run([sys.executable, "-m", "exfuse_keras.bench.serving_soak", "--requests", str(requests),
                          "--clients", str(clients), "--warmup", "0", "--model", str(config), "--json", str(output),
                          "--max-rss-growth", "1000", "--no-progress"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(output.read_text())
    assert (result["requests"], result["clients"]) == (requests, clients)
    assert result["crashes"] == 0 and result["servers_alive_after"]
    assert result["wrong_codes"] == 0 and result["wrong_masks"] == 0 and result["passed"]
    counted = 0
    for kind in serving_soak.KINDS:
        by_transport = result["counts"][kind.name]
        assert set(by_transport) == {"grpc", "rest"}, kind.name  # 60 requests cover every (kind, transport)
        for transport, codes in by_transport.items():
            assert set(codes) == {kind.expected}, (kind.name, transport, codes)
            counted += codes[kind.expected]
        assert result["latency_ms"][kind.name]["n"] == sum(sum(c.values()) for c in by_transport.values())
        if kind.expected == serving_soak.INVALID:
            assert result["messages"][f"{kind.name} rest INVALID_ARGUMENT"]  # a reason is given
    assert counted == requests
    assert result["rss_mb"]["after_warmup"] > 0 and result["throughput_rps"] > 0
    for transport in ("grpc", "rest"):  # refused for the reason that applies
        assert "max_side" in result["messages"][f"huge_png_header {transport} INVALID_ARGUMENT"]
        assert "max_side" in result["messages"][f"huge_jpeg_header {transport} INVALID_ARGUMENT"]
        assert "empty string" in result["messages"][f"empty_string {transport} INVALID_ARGUMENT"]
        assert "batch is empty" in result["messages"][f"empty_batch {transport} INVALID_ARGUMENT"]
