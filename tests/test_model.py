"""build_model: every shipped config, output keys per switch, any input size, saving, fit, BN."""

import glob
import os

import keras
import numpy as np
import pytest

from exfuse_keras import build_model
from exfuse_keras.backbones.resnext import build_classifier
from exfuse_keras.layers import BoundaryRefinement
from exfuse_keras.config import BackboneConfig, config_from_dict, load_config
from exfuse_keras.summary import count_flops, main as summary_main, summarize
from tests.helpers import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _network(path):
    """What the built model depends on: the config's model section and class count."""
    cfg = load_config(path, ["model.backbone.weights=null"])
    return repr(cfg.model), cfg.data.num_classes


# Configs that build the same network (a stage and its model, a data config and its base) sit side
# by side, and the last network built is reused: 17 builds for 30 configs, each a full-size model.
SHIPPED_BY_NETWORK = sorted(SHIPPED, key=lambda p: (_network(p), p))
_LAST_BUILT = {}


def _built(cfg, path):
    key = _network(path)
    if key not in _LAST_BUILT:
        _LAST_BUILT.clear()
        _LAST_BUILT[key] = build_model(cfg)
    return _LAST_BUILT[key]


def _layer_names(model):
    return [layer.name for layer in model.layers]


def _expected_keys(cfg):
    keys = {"logits"}
    if cfg.model.ecre.supervised:
        keys.add("ecre")
    keys.update(f"ss_{level}" for level in cfg.model.ss.levels)
    return keys


@pytest.mark.parametrize("path", SHIPPED_BY_NETWORK, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_config_builds_with_matching_outputs(path):
    cfg = load_config(path, ["model.backbone.weights=null"])
    model = _built(cfg, path)
    names = _layer_names(model)
    assert set(model.output.keys()) == _expected_keys(cfg)
    # A switched-off module leaves no layers behind.
    assert any(n.startswith(("seb_", "recurrent_seb")) for n in names) == cfg.model.seb.enabled
    assert ("ecre_subpixel" in names) == cfg.model.ecre.enabled
    levels = cfg.model.decoder_levels
    assert ("up_res5" in names) == (not cfg.model.ecre.enabled and "res5" in levels and len(levels) > 1)
    assert ("dap" in names) == cfg.model.dap.enabled
    assert ("br_stride1" in names) == ("res2" in levels and (not cfg.model.dap.enabled
                                                            or cfg.model.dap.placement != "upsampling"))
    assert {n for n in names if n.startswith("gcn_")} == {f"gcn_{level}" for level in levels}
    assert sum(n.startswith("ss_head_") for n in names) == len(cfg.model.ss.levels)
    # An eager call: predict() would trace the whole full-size graph first (7.4 s against 1.7 s for
    # ExFuse-R101 on a 2-core Zen 3).
    out = model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    c = cfg.data.num_classes
    assert out["logits"].shape == (1, 64, 64, c)
    if "ecre" in out:
        assert out["ecre"].shape == (1, 4, 4, c)
    for level in cfg.model.ss.levels:
        assert out[f"ss_{level}"].shape == (1, c)


def test_lr_is_a_block_count_setting():
    standard = load_config(os.path.join(ROOT, "configs/ablation/row2_ss.yaml"))
    rearranged = load_config(os.path.join(ROOT, "configs/ablation/row3_ss_lr.yaml"))
    assert standard.model.backbone.blocks == [3, 4, 23, 3] and rearranged.model.backbone.blocks == [8, 8, 9, 8]
    assert sum(standard.model.backbone.blocks) == sum(rearranged.model.backbone.blocks) == 33


@pytest.mark.parametrize("height,width", [(64, 96), (96, 64), (32, 160)])
def test_any_size_divisible_by_32(height, width, tiny_config):
    model = build_model(tiny_config)
    out = model(np.random.default_rng(0).uniform(0, 255, (2, height, width, 3)).astype("float32"))
    assert out["logits"].shape == (2, height, width, 5)
    assert out["ecre"].shape == (2, height // 16, width // 16, 5)


def test_dap_before_the_final_refinement_keeps_the_decoders_depth(rng):
    """placement upsampling_br: the decoder without DAP with its last upsampling replaced by DAP's,
    the final Boundary Refinement kept (so DAP's ablation row differs from its reference by DAP)."""
    plain = build_model(config_from_dict(tiny_config_dict(dap={"enabled": False})))
    dap = build_model(config_from_dict(tiny_config_dict(dap={"enabled": True, "placement": "upsampling_br"})))
    refinements = lambda m: [l.name for l in m.layers if isinstance(l, BoundaryRefinement)]  # noqa: E731
    assert refinements(dap) == refinements(plain) and refinements(dap)[-1] == "br_stride1"
    # logits = BR(DAP(x)): the refinement reads DAP's averaged scores (random weights: an
    # untrained BR is the identity, which would hide where it sits).
    br = dap.get_layer("br_stride1")
    br.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in br.get_weights()])
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    before_dap = keras.Model(dap.input, dap.get_layer("br_stride2").output)(x)
    expected = dap.get_layer("br_stride1")(dap.get_layer("dap")(before_dap))
    np.testing.assert_allclose(dap.predict(x, verbose=0)["logits"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("placement,upsampling", [("upsampling", "deconv"), ("refinement", "deconv"),
                                                  ("upsampling", "bilinear"), ("upsampling_br", "deconv")])
def test_keras_round_trip_of_the_whole_model(placement, upsampling, tmp_path, rng):
    cfg = config_from_dict(tiny_config_dict(dap={"enabled": True, "kernel": 3, "placement": placement},
                                            upsampling=upsampling))
    model = build_model(cfg)
    x = rng.uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    got = reloaded.predict(x, verbose=0)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


def test_outputs_stay_float32_under_mixed_precision(tiny_config):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(tiny_config)
        out = model(np.zeros((1, 64, 64, 3), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("gcn_res5").compute_dtype == "float16"
    assert all(str(v.dtype) == "<dtype: 'float32'>" for v in out.values())


def test_inference_leaves_batchnorm_statistics_unchanged(tiny_config, rng):
    model = build_model(tiny_config)
    before = [w.numpy().copy() for w in model.non_trainable_weights]
    assert before, "the tiny model has BatchNorm moving statistics"
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    model(x, training=False)
    model.predict(x, verbose=0)
    for old, new in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())
    model(x, training=True)
    assert any(not np.array_equal(old, new.numpy()) for old, new in zip(before, model.non_trainable_weights))


def test_a_few_fit_steps_lower_the_loss(rng):
    keras.utils.set_random_seed(0)
    cfg = config_from_dict(tiny_config_dict(ecre={"enabled": True, "supervised": False}, ss={"levels": []}))
    model = build_model(cfg)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    # A learnable target: the class is the brightest channel's index (0..2) or 3/4 for dark/bright pixels.
    y = np.argmax(x, axis=-1)
    y[x.mean(-1) < 60] = 3
    y[x.mean(-1) > 200] = 4
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    history = model.fit(x, {"logits": y}, epochs=15, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]


def test_flops_counter_against_formulas():
    inputs = keras.Input((None, None, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4, name="grouped")(inputs)
    x = keras.layers.Conv2DTranspose(6, 4, strides=2, padding="same", name="deconv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(10, name="dense")(x)
    flops = count_flops(keras.Model(inputs, x), 16, 16)
    assert flops["grouped"] == 2 * 16 * 16 * 16 * 3 * 3 * (8 // 4)
    assert flops["deconv"] == 2 * 16 * 16 * 16 * 4 * 4 * 6
    assert flops["dense"] == 2 * 6 * 10


def test_resnet101_flops_match_the_reference_count():
    cfg = BackboneConfig(blocks=[3, 4, 23, 3], cardinality=1, base_width=64)
    total = sum(count_flops(build_classifier(cfg), 224, 224).values())
    assert total / 1e9 == pytest.approx(15.6, abs=0.1)  # docs/design.md: 15.6 GFLOPs at 224x224


def test_summary_parts_and_command(tiny_config, capsys):
    rows = summarize(build_model(tiny_config), 64, 64)
    assert {"backbone", "SEB", "GCN", "ECRE", "decoder", "final stage", "SS heads", "total"} <= set(rows)
    assert rows["total"]["params"] == build_model(tiny_config).count_params()
    assert rows["total"]["gflops"] == pytest.approx(sum(r["gflops"] for k, r in rows.items() if k != "total"))
    assert summary_main(["--config", os.path.join(ROOT, "configs/quickstart.yaml"), "--size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "backbone" in printed and "GFLOPs @ 64x64" in printed
    assert summary_main(["--config", os.path.join(ROOT, "configs/quickstart.yaml"), "--size", "60"]) == 2


# -- the ablation's positive controls: model.decoder_levels ---------------------------------------

def _control(**model):
    values = tiny_config_dict(seb={"enabled": False}, ecre={"enabled": False, "supervised": False},
                              dap={"enabled": False}, ss={"levels": []}, **model)
    return config_from_dict(values)


def _numpy_bilinear(x, factor):
    """Bilinear upsampling by ``factor`` with half-pixel centres (tf.image.resize's), in numpy."""
    def axis_weights(n):
        src = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n - 1)
        return low, high, src - low

    out = x
    for axis in (1, 2):
        low, high, w = axis_weights(x.shape[axis])
        shape = [1] * out.ndim
        shape[axis] = -1
        w = w.reshape(shape)
        out = np.take(out, low, axis=axis) * (1 - w) + np.take(out, high, axis=axis) * w
    return out


def test_the_stride_8_control_resizes_its_stride_8_scores_to_the_input(rng, tmp_path):
    cfg = _control(decoder_levels=["res3", "res4", "res5"])
    model = build_model(cfg)
    names = {layer.name for layer in model.layers}
    assert {"gcn_res3", "gcn_res4", "gcn_res5", "predict_upsampling"} <= names
    assert not names & {"gcn_res2", "br_res2", "up_stride2", "br_stride1"}
    images = rng.uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    coarse = keras.Model(model.input, model.get_layer("br_fused_res3").output)(images, training=False).numpy()
    assert coarse.shape == (2, 8, 12, 5)
    logits = model(images, training=False)["logits"].numpy()
    np.testing.assert_allclose(logits, _numpy_bilinear(coarse, 8), rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "stride8.keras")
    model.save(path)
    again = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(again(images, training=False)["logits"].numpy(), logits, rtol=1e-5, atol=1e-5)


def test_the_context_control_sees_less_of_the_image_than_the_baseline():
    """res2 alone with a 1x1 GCN: the centre's scores depend on a smaller window than the GCN
    baseline's, and pixels outside it (changed at random) leave them exactly as they were."""
    keras.utils.set_random_seed(0)
    blind = build_model(_control(decoder_levels=["res2"], gcn_kernel=1))
    assert [layer.name for layer in blind.layers if layer.name.startswith("gcn_")] == ["gcn_res2"]
    keras.utils.set_random_seed(0)
    baseline = build_model(_control())
    from exfuse_keras.ablation.window import centre_window

    radius, image = centre_window(blind, 128)
    baseline_radius, _ = centre_window(baseline, 128)
    assert radius < baseline_radius, (radius, baseline_radius)
    changed = image.copy()
    outside = np.ones(image.shape[1:3], bool)
    outside[64 - radius - 1:64 + radius + 2, 64 - radius - 1:64 + radius + 2] = False
    changed[0][outside] = np.random.default_rng(1).uniform(0, 255, (int(outside.sum()), 3))
    before = blind(image, training=False)["logits"].numpy()[0, 64, 64]
    after = blind(changed, training=False)["logits"].numpy()[0, 64, 64]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    moved = baseline(changed, training=False)["logits"].numpy()[0, 64, 64] - \
        baseline(image, training=False)["logits"].numpy()[0, 64, 64]
    assert np.abs(moved).max() > 1e-4


@pytest.mark.parametrize("levels, switch, expected", [
    ([], {}, "at least one"), (["res6"], {}, "distinct entries"), (["res2", "res2"], {}, "distinct entries"),
    (["res2", "res3", "res4"], {"ecre": {"enabled": True, "supervised": False}}, "must hold res5"),
    (["res3", "res4", "res5"], {"dap": {"enabled": True}}, "must hold res2"),
])
def test_decoder_levels_are_refused_in_one_line(levels, switch, expected):
    from exfuse_keras.config import ConfigError

    values = tiny_config_dict(seb={"enabled": False}, ecre={"enabled": False, "supervised": False},
                              dap={"enabled": False}, ss={"levels": []}, decoder_levels=levels)
    values["model"].update(switch)
    with pytest.raises(ConfigError, match="model.decoder_levels") as err:
        config_from_dict(values)
    assert expected in str(err.value) and "\n" not in str(err.value)
