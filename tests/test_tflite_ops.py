"""The TFLite op profiler (exfuse_keras/bench/tflite_ops.py) and what it showed about the export:
a one-op model cut from a file computes what that op computes inside the whole file; kernels are
labelled XNNPACK or builtin as the interpreter runs them; and the exported ExFuse file gives DAP's
deconvolution a constant kernel (XNNPACK runs it) while reproducing Keras' logits."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.bench import tflite_ops
from exfuse_keras.config import config_from_dict
from exfuse_keras.export import tflite
from exfuse_keras.model import build_model
from tests.helpers import tiny_config_dict

SIZE = 64


@pytest.fixture(scope="module")
def exfuse_float32():
    """(Keras model, its float32 TFLite file at 64x64): the tiny ExFuse, DAP fused into the last deconvolution."""
    keras.utils.set_random_seed(0)
    model = build_model(config_from_dict(tiny_config_dict()))
    return model, tflite.convert(model, (SIZE, SIZE), "float32")


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
def test_a_one_op_model_computes_what_the_op_computes_in_the_whole_file(exfuse_float32):
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    _, flatbuffer = exfuse_float32
    whole = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    whole.allocate_tensors()
    image = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    whole.set_tensor(whole.get_input_details()[0]["index"], image)
    whole.invoke()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    operators = model.subgraphs[0].operators
    for index in range(len(operators)):
        single = Interpreter(model_content=tflite_ops.one_op_model(model, index))
        single.allocate_tensors()
        tensors = model.subgraphs[0].tensors
        feeds = [t for t in operators[index].inputs if t >= 0 and not tflite_ops._is_constant(model, tensors[t])]
        for detail, tensor in zip(single.get_input_details(), dict.fromkeys(feeds)):
            single.set_tensor(detail["index"], whole.get_tensor(tensor))
        single.invoke()
        expected = whole.get_tensor(operators[index].outputs[0])
        got = single.get_tensor(single.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()),
                                   err_msg=f"operator {index}")


def test_profile_labels_each_op_with_its_kernel_and_types():
    inputs = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = keras.layers.Lambda(lambda t: tf.reverse(t, axis=[-1]))(x)   # REVERSE_V2: not in XNNPACK
    model = keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    rows = tflite_ops.profile(converter.convert(), threads=1, repeats=2)
    assert [(r["op"], r["kernel"], r["inputs"], r["output"]) for r in rows] == [
        ("CONV_2D", "XNNPACK", "FLOAT32", "FLOAT32"), ("REVERSE_V2", "builtin", "FLOAT32", "FLOAT32")]
    conv = rows[0]
    assert conv["weights"] == "FLOAT32/FLOAT32" and conv["weight_shape"] == [4, 3, 3, 3]
    assert conv["input_shape"] == [1, 16, 16, 3] and conv["output_shape"] == [1, 16, 16, 4]
    assert all(r["ms"] > 0 for r in rows)
    table = tflite_ops.by_kind(rows)
    assert "| CONV_2D | XNNPACK | FLOAT32 → FLOAT32 | 1 |" in table and "| all | | | 2 |" in table


def test_the_exported_dap_convolution_has_a_constant_kernel_run_by_xnnpack(exfuse_float32):
    model, flatbuffer = exfuse_float32
    rows = tflite_ops.profile(flatbuffer, threads=1, repeats=1)
    deconvolutions = [r for r in rows if r["op"] == "TRANSPOSE_CONV"]
    assert all(r["weights"].startswith("INT32/FLOAT32") for r in deconvolutions)   # shape, kernel
    dap = [r for r in rows if "/dap" in r["name"]]
    # DAP's upsampling is one stride-1 CONV_2D (3x3, C_in -> 4C) and DEPTH_TO_SPACE, its kernel a constant.
    main = [r for r in dap if r["op"] == "CONV_2D" and "votes" not in r["name"]]   # not DAP's border bands
    assert len(main) == 1 and main[0]["weights"].startswith("FLOAT32/") and main[0]["weight_shape"][1:3] == [3, 3]
    assert "DEPTH_TO_SPACE" in [r["op"] for r in dap]
    # The decoder's 2x deconvolutions are exported in the same sub-pixel form: the only
    # TRANSPOSE_CONVs left are DAP's one-row border spills.
    assert deconvolutions and all("/dap" in r["name"] and 1 in r["weight_shape"][1:3] for r in deconvolutions)
    assert any(r["op"] == "DEPTH_TO_SPACE" and "/up_" in r["name"] for r in rows)
    assert all(r["kernel"] == "XNNPACK" for r in rows), [r for r in rows if r["kernel"] != "XNNPACK"]
    assert not [r for r in rows if r["op"] in ("PAD", "ADD", "TRANSPOSE") and not r["inputs"]]   # nothing rebuilt
    image = np.random.default_rng(1).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(image, training=False)["logits"].numpy()
    got = tflite.run(tflite.interpreter(flatbuffer), image)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert "_subpixel_kernel" not in vars(model.get_layer("dap"))   # the model is left as it was
    assert not [layer.name for layer in model._flatten_layers() if "call" in vars(layer)]
