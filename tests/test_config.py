"""Config loading: YAML + overrides, validation errors that name the key, round trips."""

import glob
import os

import pytest

from exfuse_keras.config import Config, ConfigError, config_from_dict, load_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_valid():
    cfg = Config().validate()
    assert cfg.data.num_classes == len(cfg.data.class_names) == 21
    assert cfg.model.backbone.resolved_preprocessing == "torch"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "train:\n  batch_size: 8\nmodel:\n  dap: {kernel: 5}\n")
    cfg = load_config(path, ["train.batch_size=4", "model.ss.levels=[res3]", "model.backbone.weights=null",
                             "train.learning_rate=0.5"])
    assert cfg.train.batch_size == 4
    assert cfg.model.dap.kernel == 5
    assert cfg.model.ss.levels == ["res3"]
    assert cfg.model.backbone.weights is None
    assert cfg.train.learning_rate == 0.5 and isinstance(cfg.train.learning_rate, float)


def test_bare_on_and_off_mean_the_strings_the_docs_name(tmp_path):
    # YAML 1.1 (PyYAML) reads a bare on/off as true/false; "jit_compile: on" must still mean "on".
    path = _write(tmp_path, "train:\n  jit_compile: on\n  mixed_precision: off\n")
    cfg = load_config(path)
    assert (cfg.train.jit_compile, cfg.train.mixed_precision) == ("on", "off")
    assert load_config(None, ["train.jit_compile=off"]).train.jit_compile == "off"
    out = str(tmp_path / "saved.yaml")
    save_config(cfg, out)
    assert load_config(out).train.jit_compile == "on"
    with pytest.raises(ConfigError, match="train.optimizer must be one of 'sgd', 'adamw', got True"):
        load_config(None, ["train.optimizer=yes"])


def test_base_files_merge_key_by_key(tmp_path):
    _write(tmp_path, "model:\n  gcn_kernel: 7\n  dap: {kernel: 5, placement: refinement}\n", "base.yaml")
    path = _write(tmp_path, "base: base.yaml\nmodel:\n  dap: {kernel: 3}\n")
    cfg = load_config(path)
    assert (cfg.model.gcn_kernel, cfg.model.dap.kernel, cfg.model.dap.placement) == (7, 3, "refinement")


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = _write(tmp_path, "model:\n  sebb: {enabled: true}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert path in message and "'model.sebb'" in message and "did you mean 'model.seb'" in message
    assert "\n" not in message


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match=r"--set train.batchsize=4.*unknown key 'train.batchsize'.*train.batch_size"):
        load_config(None, ["train.batchsize=4"])


@pytest.mark.parametrize("override,key,expected", [
    ("model.gcn_kernel=abc", "model.gcn_kernel", "must be an integer"),
    ("model.seb.enabled=3", "model.seb.enabled", "must be true or false"),
    ("model.dap.kernel=4", "model.dap.kernel", "odd"),
    ("model.gcn_kernel=14", "model.gcn_kernel", "odd"),
    ("data.crop_size=500", "data.crop_size", "multiple of 32"),
    ("data.crop_size=-64", "data.crop_size", "positive multiple of 32"),
    ("train.batch_size=-2", "train.batch_size", "must be positive"),
    ("model.backbone.blocks=[3,4,-1,3]", "model.backbone.blocks", "positive"),
    ("model.backbone.norm=group", "model.backbone.norm", "one of 'batch', 'sync_batch', 'frozen'"),
    ("model.upsampling=nearest", "model.upsampling", "one of 'deconv', 'bilinear'"),
    ("model.ss.levels=[res5]", "model.ss.levels", "res2"),
    ("data.num_classes=3", "data.class_names", "3 entries"),
    ("model.backbone.weights=weights.txt", "model.backbone.weights", ".h5/.keras"),
])
def test_bad_values_name_the_key(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and expected in str(err.value)


def test_imagenet_weights_only_for_keras_resnets():
    with pytest.raises(ConfigError, match="model.backbone.weights.*keras-convention ResNet"):
        config_from_dict({"model": {"backbone": {"weights": "imagenet"}}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"cfg.yaml: not valid YAML at line \d+"):
        load_config(_write(tmp_path, "model:\n  seb: [\n"))
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.batch_size"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), ["train.batch_size=3"])
    out = str(tmp_path / "config.yaml")
    save_config(cfg, out)
    assert load_config(out) == cfg


def test_resolved_palette_is_one_colour_per_class():
    three = {"num_classes": 3, "class_names": ["a", "b", "c"]}
    # VOC's colour map by default: background black, class 1 dark red, class 2 dark green.
    assert config_from_dict({"data": three}).data.resolved_palette == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    given = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]  # one more than the classes: cut
    assert config_from_dict({"data": {**three, "palette": given}}).data.resolved_palette == given[:3]


def test_label_map_and_mask_format_read_from_set_and_survive_a_saved_config(tmp_path):

    sets = ["data.dataset=folder", "data.num_classes=2", "data.class_names=[background, object]",
            "data.label_map={255: 1}", "data.mask_format=rgb"]
    cfg = load_config(None, sets)
    assert cfg.data.label_map == {255: 1} and cfg.data.mask_format == "rgb"
    save_config(cfg, str(tmp_path / "config.yaml"))
    again = load_config(str(tmp_path / "config.yaml"))
    assert again.data.label_map == {255: 1} and again.data.mask_format == "rgb"
    with pytest.raises(ConfigError, match=r"data.label_map must be a mapping of an integer to an integer"):
        load_config(None, sets[:3] + ["data.label_map=[255, 1]"])
    with pytest.raises(ConfigError, match=r"data.mask_format must be one of 'index', 'rgb'"):
        load_config(None, sets[:3] + ["data.mask_format=colour"])
