"""The step profiler (exfuse_keras/bench/profile_step.py): op events attributed to the right layers."""

from exfuse_keras.bench.profile_step import format_profile, layer_of, op_type_of, profile


def test_op_names_map_to_their_layer_forward_and_backward():
    assert layer_of("gradient_tape/exfuse_1/dap_1/depthwise") == "dap"
    assert layer_of("exfuse_1/dap_1/depthwise") == "dap"
    assert layer_of("gradient_tape/exfuse_1/gcn_res2_1/left_kx1_1/Conv2DBackpropFilter") == "gcn_res2"
    assert layer_of("exfuse/backbone/conv1_conv/convolution") == "backbone"
    assert layer_of("compile_loss/logits_loss/SparseSoftmaxCrossEntropyWithLogits") == "compile_loss"
    assert layer_of("sgd/Mul_848") == "sgd"
    assert op_type_of("_MklNativeConv2DBackpropFilterWithBias") == "Conv2DBackpropFilterWithBias"
    assert op_type_of("_MklFusedConv2D") == "FusedConv2D" and op_type_of("Conv2D") == "Conv2D"


def test_a_profiled_quickstart_step_attributes_time_to_every_module():
    result = profile("quickstart", size=64, batch=2)
    layers = result["by_layer"]
    for layer in ("backbone", "gcn_res2", "seb_res2", "dap", "ss_head_res2", "up_stride2"):
        assert layers[layer] > 0, (layer, sorted(layers))
    assert abs(sum(layers.values()) - sum(result["by_type"].values())) < 1e-6
    # The backward pass is in the trace (with oneDNN on, as a fused "...WithBias" kernel too).
    assert sum(ms for op, ms in result["by_type"].items() if op.startswith("Conv2DBackpropFilter")) > 0
    text = format_profile(result, top=5)
    assert "ms wall" in text and text.count("\n") == 2 + 2 * 6
