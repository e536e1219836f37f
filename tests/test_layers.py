"""Each ExFuse layer against an independent numpy reference, plus ``run_layer_test`` (shapes,
weights, a training step, mixed precision, ``.keras`` round trip, unknown sizes) for every public layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import exfuse_keras.layers
from exfuse_keras.layers import (BilinearUpsampling, BilinearUpsamplingInitializer, BoundaryRefinement,
                                 DenselyAdjacentPrediction, DenselyAdjacentUpsampling, GlobalConvolution, GroupedConv2D,
                                 InputNormalization, RecurrentSemanticEmbedding,
                                 ResizeToMatch, SemanticEmbeddingBranch, SemanticSupervisionHead,
                                 SubPixelUpsampling, SyncBatchNormalization)
from tests.helpers import run_layer_test
from tests.reference import bilinear_resize, conv2d_same, dap_reference


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


@pytest.mark.parametrize("k", [3, 5])
def test_dap_matches_formula_including_borders(rng, k):
    x = _random(rng, 2, 5, 7, 3 * k * k)
    out = DenselyAdjacentPrediction(k)(x).numpy()
    assert out.shape == (2, 5, 7, 3)
    np.testing.assert_allclose(out, dap_reference(x, k), atol=1e-5)


def test_dap_reads_the_right_neighbour(rng):
    # One vote in channel group (a, b) = (0, 2) at pixel (2, 2) is for pixel (2 - 0 + 1, 2 - 2 + 1) = (3, 1).
    x = np.zeros((1, 5, 5, 9), "float32")
    x[0, 2, 2, 0 * 3 + 2] = 9.0
    out = DenselyAdjacentPrediction(3)(x).numpy()[0, :, :, 0]
    expected = np.zeros((5, 5))
    expected[3, 1] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dap_validation():
    with pytest.raises(ValueError, match="odd"):
        DenselyAdjacentPrediction(2)
    with pytest.raises(ValueError, match="multiple of k"):
        DenselyAdjacentPrediction(3)(np.zeros((1, 4, 4, 10), "float32"))


def _deconv_reference(x, kernel, bias):
    """Keras' Conv2DTranspose(stride 2, kernel 4, 'same') by its formula: the full transposed
    convolution V[t, s] = sum_{i,j} x[i, j] W[t - 2i, s - 2j], cropped by one pixel per side."""
    n, h, w, _ = x.shape
    full = np.zeros((n, 2 * h + 2, 2 * w + 2, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            full[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum("ni,rsoi->nrso", x[:, i, j], kernel)
    return full[:, 1:-1, 1:-1] + bias


@pytest.mark.parametrize("k,size", [(3, (4, 6)), (3, (1, 3)), (5, (3, 2)), (5, (1, 3)), (7, (4, 5)), (1, (2, 3))])
def test_densely_adjacent_upsampling_is_deconv_then_dap_with_its_gradients(rng, k, size):
    """The fused layer against the two layers it replaces (and their formula), including the
    border pixels, where DAP drops the votes from outside the image."""
    classes, channels = 3, 4
    x = tf.constant(_random(rng, 2, *size, channels))
    fused = DenselyAdjacentUpsampling(classes, k, kernel_initializer="glorot_uniform", name="up_dap")
    fused.build(x.shape)
    fused.set_weights([_random(rng, 4, 4, classes * k * k, channels), _random(rng, classes * k * k)])
    deconv = keras.layers.Conv2DTranspose(classes * k * k, 4, strides=2, padding="same")
    deconv.build(x.shape)
    deconv.set_weights(fused.get_weights())
    dap = DenselyAdjacentPrediction(k)

    kernel, bias = fused.get_weights()
    expected = dap_reference(_deconv_reference(x.numpy(), kernel, bias), k)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out, reference = fused(x), dap(deconv(x))
        weights = tf.constant(_random(rng, *expected.shape))
        loss, reference_loss = tf.reduce_sum(out * weights), tf.reduce_sum(reference * weights)
    assert out.shape == (2, 2 * size[0], 2 * size[1], classes)
    np.testing.assert_allclose(reference.numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # Traced with unknown height and width (a model for any size): the border bands are padded
    # to full maps instead of subtracted in place (k > 3); the same values either way.
    traced = tf.function(fused.call, input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)])
    np.testing.assert_allclose(traced(x).numpy(), expected, atol=1e-4)
    for got, want in zip(tape.gradient(loss, [x, fused.kernel, fused.bias]),
                         tape.gradient(reference_loss, [x, deconv.kernel, deconv.bias])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize("size,crop", [(4, 1), (6, 2), (8, 3), (10, 4), (3, 1)])
def test_subpixel_kernel_turns_a_stride_two_deconvolution_into_conv_and_depth_to_space(rng, size, crop):
    from exfuse_keras.layers.dap import subpixel_kernel

    x = tf.constant(_random(rng, 2, 3, 5, 4))
    kernel = tf.constant(_random(rng, size, size, 3, 4))     # Conv2DTranspose layout [S, S, C_out, C_in]
    full = tf.nn.conv2d_transpose(x, kernel, (2, 2 * 3 + size - 2, 2 * 5 + size - 2, 3), strides=2, padding="VALID")
    expected = full[:, crop:crop + 6, crop:crop + 10].numpy()
    got = tf.nn.depth_to_space(tf.nn.conv2d(x, subpixel_kernel(kernel, crop), 1, "SAME"), 2).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_densely_adjacent_upsampling_starts_as_the_bilinear_deconvolution_it_replaces():
    fused = DenselyAdjacentUpsampling(2, 3)
    fused.build((None, None, None, 2))
    deconv = keras.layers.Conv2DTranspose(18, 4, strides=2, padding="same",
                                          kernel_initializer=BilinearUpsamplingInitializer())
    deconv.build((None, None, None, 2))
    for got, want in zip(fused.get_weights(), deconv.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert [w.path.rsplit("/", 1)[-1] for w in fused.weights] == ["kernel", "bias"]


def test_subpixel_equals_conv_then_depth_to_space(rng):
    x = _random(rng, 2, 3, 4, 6)
    layer = SubPixelUpsampling(5, block_size=2, name="subpixel")
    out = layer(x).numpy()
    assert out.shape == (2, 6, 8, 5)
    conv = layer.conv(x).numpy()
    np.testing.assert_allclose(out, tf.nn.depth_to_space(conv, 2).numpy(), atol=1e-6)
    # DCR order: sub-pixel (i, j) of channel c comes from conv channel (i * r + j) * C + c.
    assert np.allclose(out[:, 1::2, 0::2, 3], conv[..., (1 * 2 + 0) * 5 + 3], atol=1e-6)


def test_subpixel_and_dap_convert_to_single_tflite_builtins(rng):
    inputs = keras.Input((8, 8, 4))
    x = SubPixelUpsampling(9 * 2, block_size=2)(inputs)
    outputs = DenselyAdjacentPrediction(3)(x)
    model = keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops.count("DEPTH_TO_SPACE") == 1
    assert "RESHAPE" not in ops and "TRANSPOSE" not in ops
    assert not any(op.startswith("Flex") for op in ops)
    interpreter.allocate_tensors()
    x_in = _random(rng, 1, 8, 8, 4)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x_in)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x_in).numpy(), atol=1e-5)


def test_seb_matches_hand_computation(rng):
    low, high1, high2 = _random(rng, 1, 8, 8, 3), _random(rng, 1, 4, 4, 5), _random(rng, 1, 2, 2, 7)
    layer = SemanticEmbeddingBranch(name="seb")
    out = layer([low, high1, high2]).numpy()
    assert out.shape == low.shape
    kernels = []
    for conv, shape in zip(layer.convs, [(3, 3, 5, 3), (3, 3, 7, 3)]):
        kernel = rng.standard_normal(shape).astype("float32") * 0.3
        bias = rng.standard_normal(3).astype("float32") * 0.1
        conv.set_weights([kernel, bias])
        kernels.append((kernel, bias))
    out = layer([low, high1, high2]).numpy()
    gate1 = bilinear_resize(conv2d_same(high1, *kernels[0]), 8, 8)
    gate2 = bilinear_resize(conv2d_same(high2, *kernels[1]), 8, 8)
    np.testing.assert_allclose(out, low * gate1 * gate2, rtol=1e-4, atol=1e-5)


def test_seb_starts_as_the_identity_and_its_gates_still_learn(rng):
    low, high1, high2 = _random(rng, 2, 8, 6, 3), _random(rng, 2, 4, 3, 5), _random(rng, 2, 2, 2, 7)
    layer = SemanticEmbeddingBranch(name="seb")
    np.testing.assert_array_equal(layer([low, high1, high2]).numpy(), low)
    # The zero kernels get a non-zero gradient (the symmetric start is broken by the features).
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer([low, high1, high2]) * _random(rng, 2, 8, 6, 3))
    grads = tape.gradient(loss, [conv.kernel for conv in layer.convs])
    assert all(float(tf.reduce_max(tf.abs(g))) > 1e-3 for g in grads)
    glorot = SemanticEmbeddingBranch(gate_init="glorot", name="seb_glorot")
    assert np.abs(glorot([low, high1, high2]).numpy() - low).max() > 1e-2
    with pytest.raises(ValueError, match="gate_init"):
        SemanticEmbeddingBranch(gate_init="ones")


def test_gcn_matches_two_separable_branches(rng):
    x = _random(rng, 1, 9, 7, 4)
    layer = GlobalConvolution(3, kernel_size=5, name="gcn")
    out = layer(x).numpy()
    w = {name: getattr(layer, name).get_weights() for name in ("left_kx1", "left_1xk", "right_1xk", "right_kx1")}
    left = conv2d_same(conv2d_same(x, *w["left_kx1"]), *w["left_1xk"])
    right = conv2d_same(conv2d_same(x, *w["right_1xk"]), *w["right_kx1"])
    np.testing.assert_allclose(out, left + right, rtol=1e-4, atol=1e-4)
    assert w["left_kx1"][0].shape == (5, 1, 4, 3) and w["right_1xk"][0].shape == (1, 5, 4, 3)
    with pytest.raises(ValueError, match="odd"):
        GlobalConvolution(3, kernel_size=4)


def test_gcn_output_scale_sets_the_second_convolutions_variance():
    """Glorot-uniform variance 2 / (fan_in + fan_out), times output_scale, for each branch's second
    convolution (the first keeps Keras's default); the sample variance of a large kernel matches."""
    layer = GlobalConvolution(64, kernel_size=15, output_scale=0.1)
    layer.build((None, 16, 16, 256))
    for name, scale in (("left_kx1", 1.0), ("left_1xk", 0.1), ("right_1xk", 1.0), ("right_kx1", 0.1)):
        kernel = getattr(layer, name).kernel.numpy()
        receptive = kernel.shape[0] * kernel.shape[1]
        expected = scale * 2.0 / (receptive * kernel.shape[2] + receptive * kernel.shape[3])
        assert np.var(kernel) == pytest.approx(expected, rel=0.05), name
    with pytest.raises(ValueError, match="output_scale"):
        GlobalConvolution(3, output_scale=0.0)


def test_boundary_refinement_is_residual(rng):
    x = _random(rng, 2, 6, 5, 4)
    layer = BoundaryRefinement(4, residual_initializer="glorot_uniform", name="br")
    out = layer(x).numpy()
    assert np.abs(layer.conv2.get_weights()[0]).max() > 0  # the residual term is really there
    w1, w2 = layer.conv1.get_weights(), layer.conv2.get_weights()
    expected = x + conv2d_same(np.maximum(conv2d_same(x, *w1), 0), *w2)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_boundary_refinement_starts_as_identity(rng):
    """The residual's last convolution starts at zero, so a chain of BRs keeps the scores' spread
    (with Glorot each multiplied it by about 1.3: an untrained decoder's loss was 21, not ln C)."""
    x = _random(rng, 2, 6, 5, 4)
    layer = BoundaryRefinement(4)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    assert np.abs(layer.conv1.get_weights()[0]).max() > 0  # only the last convolution starts at zero
    clone = BoundaryRefinement.from_config(BoundaryRefinement(4, residual_initializer="glorot_uniform").get_config())
    assert np.abs(np.asarray(clone(x)) - x).max() > 1e-3


def test_untrained_decoder_starts_with_moderate_logits():
    """An untrained quick-start-size GCN baseline starts with logits of moderate spread. Before the
    zero-initialised BR residuals the cpu ablation preset's began with logits of std 15 and a loss
    of 21 for 12 classes."""
    from exfuse_keras import build_model, load_config

    cfg = load_config("configs/quickstart.yaml", ["model.seb.enabled=false", "model.ecre.enabled=false",
                                                   "model.ecre.supervised=false", "model.dap.enabled=false",
                                                   "model.ss.levels=[]"])
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    logits = model(images, training=True)["logits"].numpy()
    assert logits.std() < 2.5, logits.std()  # 1.7 now; 4.9 with Glorot-initialised residuals


def test_resize_layers_match_numpy_bilinear(rng):
    x = _random(rng, 1, 3, 5, 2)
    np.testing.assert_allclose(BilinearUpsampling(2)(x).numpy(), bilinear_resize(x, 6, 10), atol=1e-5)
    ref = np.zeros((1, 7, 4, 1), "float32")
    np.testing.assert_allclose(ResizeToMatch()([x, ref]).numpy(), bilinear_resize(x, 7, 4), atol=1e-5)


def test_input_normalization_matches_keras_applications(rng):
    pixels = rng.uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    caffe = InputNormalization("caffe", name="norm")(pixels).numpy()
    np.testing.assert_allclose(caffe, keras.applications.resnet.preprocess_input(pixels.copy()), atol=1e-4)
    torch = InputNormalization("torch")(pixels).numpy()
    expected = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch, expected, atol=1e-5)
    np.testing.assert_allclose(InputNormalization("scale")(pixels).numpy(), pixels / 127.5 - 1, atol=1e-6)


def test_semantic_supervision_head(rng):
    x = _random(rng, 2, 16, 16, 6)
    head = SemanticSupervisionHead(num_classes=4, num_downsamples=3, channels=8, name="ss")
    out = head(x, training=False).numpy()
    assert out.shape == (2, 4)
    # Three stride-2 blocks take 16x16 to res5's 2x2 before pooling.
    y = x
    for conv, bn in head.blocks:
        y = keras.ops.relu(bn(conv(y), training=False))
    assert y.shape[1:3] == (2, 2)
    np.testing.assert_allclose(out, head.classifier(keras.ops.mean(y, axis=(1, 2))).numpy(), atol=1e-5)


def test_bilinear_initializer_upsamples_and_repeats_classes(rng):
    x = rng.uniform(size=(1, 4, 4, 2)).astype("float32")
    deconv = keras.layers.Conv2DTranspose(2 * 9, 4, strides=2, padding="same", use_bias=False,
                                          kernel_initializer=BilinearUpsamplingInitializer())
    out = deconv(x).numpy()
    # Every one of the 9 copies of class c is the same bilinear upsampling of input channel c.
    np.testing.assert_allclose(out[..., 0:9], np.repeat(out[..., :1], 9, axis=-1))
    np.testing.assert_allclose(out[..., 9:18], np.repeat(out[..., 9:10], 9, axis=-1))
    # Interior pixels equal the half-pixel bilinear resize.
    np.testing.assert_allclose(out[0, 1:-1, 1:-1, 0], bilinear_resize(x, 8, 8)[0, 1:-1, 1:-1, 0], atol=1e-5)
    config = keras.initializers.serialize(BilinearUpsamplingInitializer())
    assert isinstance(keras.initializers.deserialize(config), BilinearUpsamplingInitializer)


# (class, constructor arguments, input shape(s), output shape, trainable and non-trainable weights, options)
LAYER_TESTS = [
    (DenselyAdjacentPrediction, {"kernel_size": 3}, (2, 8, 6, 18), (2, 8, 6, 2), 0, 0, {}),
    (DenselyAdjacentUpsampling, {"num_classes": 3, "kernel_size": 3}, (2, 4, 6, 3), (2, 8, 12, 3), 2, 0, {}),
    (SubPixelUpsampling, {"filters": 5, "block_size": 2}, (2, 3, 4, 6), (2, 6, 8, 5), 2, 0, {}),
    (GlobalConvolution, {"filters": 3, "kernel_size": 5, "output_scale": 0.1}, (2, 9, 7, 4), (2, 9, 7, 3), 8, 0, {}),
    (BoundaryRefinement, {"filters": 4, "residual_initializer": "glorot_uniform"}, (2, 6, 5, 4), (2, 6, 5, 4), 4, 0, {}),
    (BilinearUpsampling, {"factor": 2}, (2, 3, 5, 2), (2, 6, 10, 2), 0, 0, {}),
    (ResizeToMatch, {"interpolation": "nearest"}, [(2, 3, 5, 2), (2, 7, 4, 1)], (2, 7, 4, 2), 0, 0, {}),
    (InputNormalization, {"mode": "caffe"}, (2, 4, 6, 3), (2, 4, 6, 3), 0, 0,
     {"input_range": (0.0, 255.0), "atol": 1e-4}),
    (SemanticEmbeddingBranch, {}, [(2, 8, 6, 3), (2, 4, 3, 5), (2, 2, 2, 7)], (2, 8, 6, 3), 4, 0, {}),
    # Random gates and refinements, so one step reaches every weight (zero kernels pass no gradient).
    (RecurrentSemanticEmbedding, {"iterations": 2, "gate_init": "glorot", "refinement_init": "glorot_uniform"},
     [(2, 8, 6, 3), (2, 4, 3, 5), (2, 2, 2, 7), (2, 1, 1, 9)],
     [(2, 8, 6, 3), (2, 4, 3, 5), (2, 2, 2, 7), (2, 1, 1, 9)], 2 * 12 + 6, 0, {}),
    (SemanticSupervisionHead, {"num_classes": 4, "num_downsamples": 3, "channels": 8}, (2, 16, 16, 6), (2, 4),
     11, 6, {}),
    (SyncBatchNormalization, {"epsilon": 1e-5}, (2, 5, 3, 4), (2, 5, 3, 4), 2, 2, {"mixed_output_dtype": "float16"}),
    (GroupedConv2D, {"filters": 8, "kernel_size": 3, "padding": "same", "groups": 2}, (2, 5, 7, 4), (2, 5, 7, 8), 2, 0,
     {}),
]


def test_sync_batch_normalization_moments_survive_a_large_mean():
    """Training-mode moments against numpy float64, for channels whose mean dwarfs their spread
    (Keras's float32 E[x^2] - E[x]^2 loses the variance there). The split over replicas and
    workers: tests/test_training.py."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 6, 5, 3)) * [1.0, 0.5, 2.0] + [1e4, -3e3, 0.0]).astype("float32")
    mean = x.astype("float64").mean(axis=(0, 1, 2))
    variance = x.astype("float64").var(axis=(0, 1, 2))
    layer = SyncBatchNormalization(epsilon=1e-5)
    layer.build(x.shape)
    got_mean, got_variance = (v.numpy() for v in layer._moments(tf.constant(x), None))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-7)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-5)
    # The float32 formula Keras's synchronized layer uses, for contrast: the variance is lost.
    stock = keras.layers.BatchNormalization(synchronized=True)
    stock.build(x.shape)
    assert abs(stock._moments(tf.constant(x), None)[1].numpy()[0] - variance[0]) > 0.1 * variance[0]



@pytest.mark.parametrize("layer_cls, kwargs, input_shape, output_shape, trainable, non_trainable, options",
                         LAYER_TESTS, ids=[case[0].__name__ for case in LAYER_TESTS])
def test_layer(layer_cls, kwargs, input_shape, output_shape, trainable, non_trainable, options, tmp_path):
    run_layer_test(layer_cls, kwargs, input_shape, output_shape, expected_num_trainable_weights=trainable,
                   expected_num_non_trainable_weights=non_trainable, tmp_path=tmp_path, **options)


def test_every_public_layer_gets_the_layer_test():
    public = {name for name in exfuse_keras.layers.__all__
              if isinstance(getattr(exfuse_keras.layers, name), type)
              and issubclass(getattr(exfuse_keras.layers, name), keras.layers.Layer)}
    assert public == {case[0].__name__ for case in LAYER_TESTS}
