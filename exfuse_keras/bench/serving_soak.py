"""Serving soak: mixed good and bad requests through an exported SavedModel behind the in-process
TF Serving stand-ins (gRPC and REST), checking every answer and the server's memory.

Usage::

    python -m exfuse_keras.bench.serving_soak [--requests 10000] [--clients 8] [--json soak.json]
        [--model configs/quickstart.yaml] [--set key=value ...]

The model (``--model``: a config YAML, built with random weights; a training run's folder or a
``.keras`` file, loaded) is exported for TF Serving (``export_tf_serving``) into a temporary
folder, reloaded, and served by ``exfuse_keras.export.local_serving`` in this process: gRPC
``PredictionService`` and REST predict. ``--clients`` threads then send ``--requests`` requests,
one image each (the empty batch: none), half over gRPC and half over REST, in a seeded shuffled
order that gives every (kind, transport) pair the same share. Request kinds (``KINDS``):

- valid, answered OK: RGB JPEG and PNG, grayscale JPEG and PNG, RGBA PNG, 16-bit grayscale PNG,
  of sizes from 1x1 to 333x250 (``SIZES``);
- invalid, answered INVALID_ARGUMENT (REST: HTTP 400): random bytes, a JPEG or PNG cut in half,
  an empty string, a JPEG or PNG whose header claims 60000x60000 pixels (beyond ``export.max_side``;
  a few hundred bytes), and an empty batch.

Every OK answer's mask must equal the one the reloaded signature gives for the same bytes when
called directly (computed once per payload during warm-up). Before timing, every payload goes
through both servers once and ``--warmup`` more mixed requests are sent; the resident memory
(RSS) of this process, servers and clients together, is read then, every half second during the
run and at the end. Reported: answers per kind and code, crashes (an answer that is neither OK nor
INVALID_ARGUMENT: a dropped connection, HTTP 5xx, UNKNOWN/INTERNAL; or a server that no longer
answers a valid request at the end), wrong codes, wrong masks, RSS growth after warm-up, p50/p99
latency per kind (send to answer received, both transports) and throughput. The exit status is 1
when there is a crash, a wrong code, a wrong mask or an RSS growth over ``--max-rss-growth`` %.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from exfuse_keras.machine import cpu_description

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(ROOT, "configs", "quickstart.yaml")
OK, INVALID = "OK", "INVALID_ARGUMENT"
TRANSPORTS = ("grpc", "rest")
# (height, width) of the valid images: a 1x1, odd sizes, and up to the quick start's 2.5x.
SIZES = ((1, 1), (17, 31), (64, 64), (97, 130), (128, 128), (200, 150), (240, 320), (333, 250))
HUGE_SIDE = 60000
PAYLOADS_PER_KIND = 8


def _photo(height: int, width: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """uint8 [H, W, channels]: a random colour grid upsampled, with noise (compresses like a photo)."""
    from PIL import Image

    grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC)).astype(np.int16)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    if channels == 4:
        image = np.concatenate([image, rng.integers(0, 256, (height, width, 1), dtype=np.uint8)], axis=-1)
    return image


def _encode(array: np.ndarray, fmt: str) -> bytes:
    """``array`` (uint8 [H, W], [H, W, 3], [H, W, 4] or uint16 [H, W]) as a JPEG or PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(array)
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _gray(array: np.ndarray) -> np.ndarray:
    return np.asarray(array[..., :3].mean(axis=-1), np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(side: int = HUGE_SIDE) -> bytes:
    """A PNG whose IHDR (CRCs correct) claims ``side`` x ``side`` RGB pixels, with one tiny IDAT."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def huge_jpeg(rng: np.random.Generator, side: int = HUGE_SIDE) -> bytes:
    """A small valid JPEG whose start-of-frame marker is rewritten to claim ``side`` x ``side``."""
    data = bytearray(_encode(_photo(16, 16, rng), "JPEG"))
    sof = next(k for k in range(2, len(data) - 9) if data[k] == 0xFF and data[k + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)  # marker, length (2), precision (1), H, W
    return bytes(data)


def _sized(make: Callable) -> Callable:
    """A payload maker over ``SIZES``: ``make(array [H, W, 4], rng) -> bytes``."""
    def payload(k: int, rng: np.random.Generator) -> bytes:
        height, width = SIZES[k % len(SIZES)]
        return make(_photo(height, width, rng, channels=4), rng)
    return payload


@dataclass(frozen=True)
class Kind:
    """A request kind: its name, the code it must get and how to make its ``k``-th payload."""
    name: str
    expected: str
    payload: Callable[[int, np.random.Generator], Optional[bytes]]  # None: an empty batch


KINDS = (
    Kind("jpeg_rgb", OK, _sized(lambda a, rng: _encode(a[..., :3], "JPEG"))),
    Kind("png_rgb", OK, _sized(lambda a, rng: _encode(a[..., :3], "PNG"))),
    Kind("jpeg_gray", OK, _sized(lambda a, rng: _encode(_gray(a), "JPEG"))),
    Kind("png_gray", OK, _sized(lambda a, rng: _encode(_gray(a), "PNG"))),
    Kind("png_rgba", OK, _sized(lambda a, rng: _encode(a, "PNG"))),
    Kind("png_gray16", OK, _sized(lambda a, rng: _encode(_gray(a).astype(np.uint16) * 257, "PNG"))),
    Kind("corrupt_bytes", INVALID, lambda k, rng: rng.bytes(int(rng.integers(1, 4096)))),
    Kind("truncated_jpeg", INVALID, _sized(lambda a, rng: (lambda d: d[:len(d) // 2])(_encode(a[..., :3], "JPEG")))),
    Kind("truncated_png", INVALID, _sized(lambda a, rng: (lambda d: d[:len(d) // 2])(_encode(a[..., :3], "PNG")))),
    Kind("empty_string", INVALID, lambda k, rng: b""),
    Kind("huge_jpeg_header", INVALID, lambda k, rng: huge_jpeg(rng, HUGE_SIDE - k)),
    Kind("huge_png_header", INVALID, lambda k, rng: huge_png(HUGE_SIDE - k)),
    Kind("empty_batch", INVALID, lambda k, rng: None),
)


@dataclass
class Payload:
    """One prepared request: its kind, bytes, the gRPC request, the REST body and the reference masks."""
    kind: Kind
    data: Optional[bytes]
    grpc_request: object
    rest_body: bytes
    masks: Optional[list] = None  # the signature's own answer, cropped (valid kinds)


def make_payloads(model_name: str, seed: int = 0) -> list[Payload]:
    """``PAYLOADS_PER_KIND`` payloads of every kind, with their gRPC requests and REST bodies."""
    from exfuse_keras.export import client

    rng = np.random.default_rng(seed)
    payloads = []
    for kind in KINDS:
        for k in range(PAYLOADS_PER_KIND):
            data = kind.payload(k, rng)
            images = [] if data is None else [data]
            payloads.append(Payload(kind, data, client.grpc_request(images, model_name),
                                    json.dumps(client.rest_request_body(images)).encode()))
    return payloads


def reference_masks(loaded, payloads: list[Payload]) -> None:
    """Fills ``masks`` of every valid payload from a direct call of ``serving_default``."""
    import tensorflow as tf

    from exfuse_keras.export.client import predictions_from_outputs

    signature = loaded.signatures["serving_default"]
    for payload in payloads:
        if payload.kind.expected == OK:
            outputs = signature(image_bytes=tf.constant([payload.data]))
            payload.masks = [mask for mask, _ in predictions_from_outputs({k: v.numpy() for k, v in outputs.items()})]


def schedule(requests: int, seed: int) -> list[tuple[int, str, int]]:
    """(kind index, transport, payload index within the kind) per request: blocks of every
    (kind, transport) pair, each block shuffled, so every pair gets the same share."""
    rng = random.Random(seed)
    pairs = [(k, t) for k in range(len(KINDS)) for t in TRANSPORTS]
    order = []
    while len(order) < requests:
        block = pairs[:]
        rng.shuffle(block)
        order += [(k, t, rng.randrange(PAYLOADS_PER_KIND)) for k, t in block]
    return order[:requests]


class Client:
    """One client thread's connections: a gRPC channel and stub, and REST over HTTP/1.1 keep-alive."""

    def __init__(self, grpc_target: str, rest_url: str, timeout: float):
        import http.client
        import urllib.parse

        from exfuse_keras.export.client import _serving_api

        self._grpc, _, prediction_service_pb2_grpc = _serving_api()
        limit = 64 * 1024 * 1024
        self._channel = self._grpc.insecure_channel(grpc_target, options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        url = urllib.parse.urlsplit(rest_url)
        self._http = lambda: http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        self._connection = self._http()
        self._path = url.path
        self._timeout = timeout

    def send(self, payload: Payload, transport: str) -> tuple[str, float, Optional[list], str]:
        """(code, seconds, cropped masks of an OK answer, error message) of one request. The code is
        OK, INVALID_ARGUMENT (HTTP 400 for REST), another gRPC code, ``HTTP <status>`` or the
        exception's class name for a dropped connection."""
        import tensorflow as tf

        from exfuse_keras.export.client import parse_rest_response, predictions_from_outputs

        started = time.perf_counter()
        if transport == "grpc":
            try:
                response = self._stub.Predict(payload.grpc_request, timeout=self._timeout)
            except self._grpc.RpcError as err:
                return err.code().name, time.perf_counter() - started, None, err.details() or ""
            elapsed = time.perf_counter() - started
            outputs = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
            return OK, elapsed, [mask for mask, _ in predictions_from_outputs(outputs)], ""
        try:
            self._connection.request("POST", self._path, body=payload.rest_body,
                                     headers={"Content-Type": "application/json"})
            answer = self._connection.getresponse()
            status, text = answer.status, answer.read()
        except Exception as err:  # noqa: BLE001 (a dropped or refused connection is recorded, not raised)
            self._connection.close()
            self._connection = self._http()
            return type(err).__name__, time.perf_counter() - started, None, str(err)
        elapsed = time.perf_counter() - started
        if status == 200:
            return OK, elapsed, [mask for mask, _ in parse_rest_response(json.loads(text))], ""
        code = INVALID if status == 400 else f"HTTP {status}"
        try:
            message = json.loads(text).get("error", "")
        except ValueError:
            message = text.decode("utf-8", "replace")
        return code, elapsed, None, message

    def close(self) -> None:
        self._connection.close()
        self._channel.close()


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 1e6


def run_requests(order, payloads, grpc_target, rest_url, clients, timeout, progress=None):
    """Sends ``order`` with ``clients`` threads. Returns (one record per request: kind, transport,
    code, ms, wrong mask; the first error message per (kind, transport, code))."""
    records = [None] * len(order)
    messages = {}
    next_index = iter(range(len(order)))
    lock = threading.Lock()

    def worker():
        client = Client(grpc_target, rest_url, timeout)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                kind_index, transport, k = order[index]
                payload = payloads[kind_index * PAYLOADS_PER_KIND + k]
                code, seconds, masks, message = client.send(payload, transport)
                wrong_mask = code == OK and payload.kind.expected == OK and not (
                    len(masks) == len(payload.masks)
                    and all(np.array_equal(a, b) for a, b in zip(masks, payload.masks, strict=True)))
                records[index] = (payload.kind.name, transport, code, 1000 * seconds, wrong_mask)
                if code != OK or wrong_mask:
                    with lock:
                        messages.setdefault(f"{payload.kind.name} {transport} {code}",
                                            message[:400] or ("wrong mask" if wrong_mask else ""))
                if progress is not None:
                    progress(code)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records, messages


def _percentile(values, q) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def summarize(records: list[tuple]) -> dict:
    """Counts per kind, transport and code; crashes, wrong codes and masks; latency per kind."""
    expected = {kind.name: kind.expected for kind in KINDS}
    counts, latency = {}, {}
    crashes = wrong_codes = wrong_masks = 0
    for kind, transport, code, ms, wrong_mask in records:
        by_code = counts.setdefault(kind, {}).setdefault(transport, {})
        by_code[code] = by_code.get(code, 0) + 1
        latency.setdefault(kind, []).append(ms)
        latency.setdefault(f"all {transport}", []).append(ms)
        if code not in (OK, INVALID):
            crashes += 1
        elif code != expected[kind]:
            wrong_codes += 1
        wrong_masks += wrong_mask
    return {"counts": counts, "crashes": crashes, "wrong_codes": wrong_codes, "wrong_masks": wrong_masks,
            "latency_ms": {name: {"n": len(values), "p50": _percentile(values, 50), "p99": _percentile(values, 99)}
                           for name, values in latency.items()}}


def load_model(spec: str, overrides):
    """(config, model, description) for ``--model``: a config YAML (random weights), a run folder
    or a ``.keras`` file (its weights)."""
    import keras

    from exfuse_keras.config import load_config
    from exfuse_keras.inference.loading import load_run
    from exfuse_keras.model import build_model

    if spec.endswith((".yaml", ".yml")):
        cfg = load_config(spec, list(overrides))
        keras.utils.set_random_seed(0)
        model = build_model(cfg)
        return cfg, model, f"{os.path.relpath(spec, ROOT)}, random weights ({model.count_params():,} parameters)"
    cfg, model = load_run(spec, overrides=list(overrides))
    return cfg, model, f"{spec} ({model.count_params():,} parameters)"


def print_report(results: dict) -> None:
    """The soak's outcome, and a Markdown table of answers and latency per kind."""
    rss = results["rss_mb"]
    print(f"\n{results['requests']} requests, {results['clients']} clients: {results['wall_s']} s, "
          f"{results['throughput_rps']} requests/s")
    print(f"crashes {results['crashes']}, wrong codes {results['wrong_codes']}, wrong masks {results['wrong_masks']}, "
          f"servers answer after the soak: {results['servers_alive_after']}")
    print(f"RSS {rss['after_warmup']} MB after warm-up -> {rss['end']} MB at the end "
          f"({results['rss_growth_percent']:+.1f} %), max {rss['max']} MB")
    print("\n| kind | expected | gRPC answers | REST answers | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for kind in KINDS:
        by_transport = results["counts"].get(kind.name, {})
        cells = [", ".join(f"{code} {n}" for code, n in sorted(by_transport.get(t, {}).items())) or "-"
                 for t in TRANSPORTS]
        latency = results["latency_ms"].get(kind.name, {"p50": "-", "p99": "-"})
        print(f"| {kind.name} | {kind.expected} | {cells[0]} | {cells[1]} | {latency['p50']} | {latency['p99']} |")
    for transport in TRANSPORTS:
        latency = results["latency_ms"].get(f"all {transport}")
        if latency:
            print(f"| all {transport} | | | | {latency['p50']} | {latency['p99']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests timed (after the warm-up)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a config YAML (random weights), a run folder or a .keras file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--warmup", type=int, default=200, help="mixed requests sent before the baseline RSS")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="RSS growth allowed after warm-up, %%")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be at least 1")

    import tensorflow as tf
    from tqdm import tqdm

    from exfuse_keras.export.local_serving import serve_grpc, serve_rest
    from exfuse_keras.export.tf_serving import export_tf_serving

    cfg, model, description = load_model(args.model, args.set)
    with tempfile.TemporaryDirectory(prefix="serving-soak-") as base:
        started = time.perf_counter()
        path = export_tf_serving(cfg, model, base, "exfuse")
        export_seconds = time.perf_counter() - started
        del model  # not needed once exported: only the reloaded export serves
        loaded = tf.saved_model.load(path)
        payloads = make_payloads("exfuse", args.seed)
        reference_masks(loaded, payloads)
        print(f"model: {description}; exported in {export_seconds:.1f} s; {len(payloads)} payloads of "
              f"{len(KINDS)} kinds; {args.clients} clients; CPU: {cpu_description()}", flush=True)
        with serve_grpc(loaded, "exfuse", max_workers=args.clients) as grpc_target, \
                serve_rest(loaded, "exfuse") as rest_server:
            rest = f"{rest_server}/v1/models/exfuse:predict"
            warm = [(k // PAYLOADS_PER_KIND, t, k % PAYLOADS_PER_KIND) for k in range(len(payloads))
                    for t in TRANSPORTS] + schedule(args.warmup, args.seed + 1)
            warm_records, warm_messages = run_requests(warm, payloads, grpc_target, rest, args.clients, args.timeout)
            rss = [(0.0, _rss_mb())]
            done = threading.Event()

            def sample():
                while not done.wait(0.5):
                    rss.append((time.perf_counter() - soak_started, _rss_mb()))

            bar = tqdm(total=args.requests, desc="soak", unit="req", mininterval=1.0, disable=args.no_progress)
            failures = [0]
            order = schedule(args.requests, args.seed)
            bar_lock = threading.Lock()

            def progress(code):
                with bar_lock:
                    failures[0] += code not in (OK, INVALID)
                    bar.update(1)
                    if bar.n % 100 == 0:
                        bar.set_postfix(crashes=failures[0], rss_mb=f"{_rss_mb():.0f}", refresh=False)

            monitor = threading.Thread(target=sample, daemon=True)
            soak_started = time.perf_counter()
            monitor.start()
            records, messages = run_requests(order, payloads, grpc_target, rest, args.clients, args.timeout, progress)
            wall = time.perf_counter() - soak_started
            done.set()
            monitor.join()
            bar.close()
            rss.append((wall, _rss_mb()))
            # A valid request through each server after the soak: both still answer.
            alive, _ = run_requests([(0, t, 0) for t in TRANSPORTS], payloads, grpc_target, rest, 1, args.timeout)

    summary = summarize(records)
    warm_summary = summarize(warm_records)
    servers_alive = all(code == OK and not wrong_mask for _, _, code, _, wrong_mask in alive)
    crashes = summary["crashes"] + warm_summary["crashes"] + (not servers_alive)
    rss_values = [value for _, value in rss]
    growth = 100 * (rss_values[-1] - rss_values[0]) / rss_values[0]
    quarters = [min(rss, key=lambda s: abs(s[0] - q * wall))[1] for q in (0.25, 0.5, 0.75)]
    results = {
        "command": " ".join(["python -m exfuse_keras.bench.serving_soak", *(sys.argv[1:] if argv is None else argv)]),
        "cpu": cpu_description(), "tensorflow": tf.__version__, "model": description, "export_s": round(export_seconds, 1),
        "requests": args.requests, "clients": args.clients, "warmup_requests": len(warm),
        "kinds": {kind.name: kind.expected for kind in KINDS},
        "wall_s": round(wall, 1), "throughput_rps": round(args.requests / wall, 1),
        "crashes": crashes, "servers_alive_after": servers_alive,
        "wrong_codes": summary["wrong_codes"] + warm_summary["wrong_codes"],
        "wrong_masks": summary["wrong_masks"] + warm_summary["wrong_masks"],
        "rss_mb": {"after_warmup": round(rss_values[0], 1), "at_25_50_75_percent": [round(v, 1) for v in quarters],
                   "end": round(rss_values[-1], 1), "max": round(max(rss_values), 1)},
        "rss_growth_percent": round(growth, 2),
        "counts": summary["counts"], "latency_ms": summary["latency_ms"], "messages": {**warm_messages, **messages},
    }
    results["passed"] = (crashes == 0 and results["wrong_codes"] == 0 and results["wrong_masks"] == 0
                         and growth < args.max_rss_growth)
    if args.json:
        from exfuse_keras.atomic import atomic_write

        atomic_write(args.json, json.dumps(results, indent=2) + "\n")

    print_report(results)
    print("PASSED" if results["passed"] else "FAILED")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
