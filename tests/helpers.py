"""Helpers the tests share (imported as ``from tests.helpers import ...``; conftest.py holds the
fixtures only): a tiny ExFuse config, ``run_layer_test``, the checks every public layer gets, and
``serve_keras_downloads``, keras.applications' weight downloads answered by a local file."""

import os

import numpy as np


def tiny_config_dict(**model_overrides):
    """A tiny ExFuse (every module on) for fast tests: ~0.3 M parameters, 5 classes."""
    model = {
        "backbone": {"blocks": [1, 1, 1, 1], "cardinality": 1, "base_width": 64, "base_channels": 8,
                     "stem_channels": 8, "preprocessing": "scale", "zero_init_residual": False},
        "gcn_kernel": 5,
        "gcn_init_scale": 1.0,
        "seb": {"enabled": True},
        "ecre": {"enabled": True, "supervised": True},
        "dap": {"enabled": True, "kernel": 3},
        "ss": {"levels": ["res2", "res3", "res4"], "channels": 16},
    }
    for key, value in model_overrides.items():
        model[key] = value
    return {"model": model,
            "data": {"num_classes": 5, "class_names": ["bg", "a", "b", "c", "d"], "crop_size": 64}}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) and not np.isscalar(value[0]) else [value]


def run_layer_test(layer_cls, init_kwargs: dict, input_shape, expected_output_shape, *,
                   expected_num_trainable_weights: int, expected_num_non_trainable_weights: int = 0,
                   tmp_path, input_range=(-1.0, 1.0), mixed_output_dtype="float16", atol=1e-5, seed=0):
    """The checks every public layer gets, in the spirit of keras-hub's ``run_layer_test``.

    1. Built on symbolic inputs of ``input_shape`` and called eagerly on random ones: both give
       ``expected_output_shape``, with the expected trainable and non-trainable weight counts.
    2. One training step (SGD, mean squared error to a random target): the loss is finite and
       every trainable weight changes (or the layer has none).
    3. Per-layer mixed precision, ``dtype="mixed_float16"`` (the global policy left alone):
       outputs in ``mixed_output_dtype``, every variable float32, and every sublayer of a
       composite layer built with the parent's policy.
    4. ``get_config`` / ``from_config``, and a ``.keras`` round trip in safe mode of a model with
       unknown height and width, which then predicts the same at the given size and at the
       transposed one (height and width swapped).

    Args:
        layer_cls: the layer class.
        init_kwargs: its constructor's arguments.
        input_shape: ``(B, H, W, C)``, or a list of them for a layer called on a list.
        expected_output_shape: the output's shape for ``input_shape`` (a list of shapes for a layer
            with several outputs).
        expected_num_trainable_weights, expected_num_non_trainable_weights: weight counts.
        tmp_path: a folder for the ``.keras`` file.
        input_range: the random inputs' (low, high).
        mixed_output_dtype: the output dtype under ``mixed_float16`` (``"float32"`` for a layer
            whose output is meant to stay float32).
        atol: tolerance of the reloaded model's predictions.
        seed: the random inputs' seed.

    Returns:
        The layer of step 1 (built, trained one step).
    """
    import keras

    shapes = [tuple(s) for s in _as_list(input_shape)]
    many = isinstance(input_shape, (list, tuple)) and not np.isscalar(input_shape[0])
    rng = np.random.default_rng(seed)

    def arrays_of(sizes):
        return [rng.uniform(*input_range, size).astype("float32") for size in sizes]

    def call_input(values):
        return values if many else values[0]

    arrays = arrays_of(shapes)

    # 1. Symbolic and eager shapes, weight counts.
    layer = layer_cls(**init_kwargs)
    symbolic = [keras.Input(batch_shape=s) for s in shapes]
    several = not np.isscalar(expected_output_shape[0])
    expected_shapes = [tuple(s) for s in expected_output_shape] if several else [tuple(expected_output_shape)]

    def as_outputs(value):
        return list(value) if several else [value]

    output = layer(call_input(symbolic))
    assert [tuple(o.shape) for o in as_outputs(output)] == expected_shapes, f"symbolic output shape {output}"
    eager = layer_cls(**init_kwargs)(call_input(arrays))
    assert [tuple(o.shape) for o in as_outputs(eager)] == expected_shapes, f"eager output shape {eager}"
    assert len(layer.trainable_weights) == expected_num_trainable_weights, \
        f"{len(layer.trainable_weights)} trainable weights: {[w.path for w in layer.trainable_weights]}"
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, \
        f"{len(layer.non_trainable_weights)} non-trainable weights: {[w.path for w in layer.non_trainable_weights]}"

    # 2. One training step.
    if layer.trainable_weights:
        model = keras.Model(symbolic, output)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [w.numpy().copy() for w in layer.trainable_weights]
        targets = [rng.standard_normal(s).astype("float32") for s in expected_shapes]
        loss = float(np.sum(model.train_on_batch(call_input(arrays), targets if several else targets[0])))
        assert np.isfinite(loss), f"training loss {loss}"
        unchanged = [w.path for w, old in zip(layer.trainable_weights, before) if np.array_equal(w.numpy(), old)]
        assert not unchanged, f"weights a training step did not change: {unchanged}"

    # 3. The per-layer mixed-precision policy.
    mixed = layer_cls(**init_kwargs, dtype="mixed_float16")
    for mixed_output in as_outputs(mixed(call_input(arrays))):
        assert keras.backend.standardize_dtype(mixed_output.dtype) == mixed_output_dtype, \
            f"output dtype {mixed_output.dtype} under mixed_float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in mixed.weights), \
        [(w.path, w.dtype) for w in mixed.weights]
    policies = {sub.name: sub.dtype_policy.name for sub in mixed._flatten_layers(include_self=False)}
    assert all(p == "mixed_float16" for p in policies.values()), f"sublayers' dtype policies: {policies}"

    # 4. Config and .keras round trips, unknown height and width.
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    unknown = [keras.Input((None, None, s[-1])) for s in shapes]
    model = keras.Model(unknown, layer(call_input(unknown)))
    path = os.path.join(tmp_path, f"{layer.name}.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    restored = [lay for lay in reloaded.layers if lay.name == layer.name][0]
    assert restored.get_config() == config
    transposed = arrays_of([(s[0], s[2], s[1], s[3]) for s in shapes])
    for values in (arrays, transposed):
        expected = as_outputs(model.predict(call_input(values), verbose=0))
        for got, want in zip(as_outputs(reloaded.predict(call_input(values), verbose=0)), expected):
            np.testing.assert_allclose(got, want, atol=atol)
    return layer


def serve_keras_downloads(monkeypatch, path: str) -> list:
    """keras' ``get_file`` (what keras.applications downloads its weights with) returns ``path``
    instead of downloading; the returned list gains each (file name, URL) asked for."""
    from keras.src.utils import file_utils

    requested = []

    def fake_get_file(fname, origin, **kwargs):
        requested.append((fname, origin))
        return path

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    return requested
