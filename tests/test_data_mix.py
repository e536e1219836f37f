"""Dataset mixing (``data.dataset: mix``): proportions, determinism under (seed, epoch), splits,
sharding, and the config's checks."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from exfuse_keras.config import ConfigError, config_from_dict, load_config
from exfuse_keras.data.pipeline import make_dataset, num_examples, seeded_epochs
from exfuse_keras.data.validate import main as validate_main
from tests.data_fakes import make_fake_folder, make_fake_voc

A_IDS = [f"a{k:02d}" for k in range(10)]
B_IDS = [f"b{k:02d}" for k in range(4)]


def _names(dataset):
    return [record.numpy().decode() for _, record in dataset]


def _sources(weight_a=1.0, weight_b=1.0):
    return [(tf.data.Dataset.from_tensor_slices(A_IDS), len(A_IDS), weight_a),
            (tf.data.Dataset.from_tensor_slices(B_IDS), len(B_IDS), weight_b)]


def test_weights_set_each_datasets_share_exactly():
    # Weight 2: every b twice per epoch; weight 0.5: a random half of the a's, once each.
    names = _names(seeded_epochs(_sources(0.5, 2.0), shuffle_buffer=100, seed=1, epoch=0, pipeline_id=0,
                                 batch_size=1, repeat=False))
    counts = collections.Counter(names)
    assert len(names) == 5 + 8
    assert all(counts[b] == 2 for b in B_IDS)
    picked = [a for a in A_IDS if counts[a]]
    assert len(picked) == 5 and all(counts[a] == 1 for a in picked)
    other_epoch = _names(seeded_epochs(_sources(0.5, 2.0), 100, 1, 1, 0, 1, False))
    assert {a for a in other_epoch if a.startswith("a")} != set(picked)  # another half (C(10,5) = 252)


def test_datasets_are_interleaved_not_concatenated():
    names = _names(seeded_epochs(_sources(), 100, seed=0, epoch=0, pipeline_id=0, batch_size=1, repeat=False))
    b_positions = [k for k, name in enumerate(names) if name.startswith("b")]
    assert sorted(names) == sorted(A_IDS + B_IDS)
    assert b_positions != list(range(len(A_IDS), len(names)))
    assert b_positions != list(range(len(B_IDS)))


def test_same_seed_and_epoch_same_order():
    def order(seed, epoch):
        return _names(seeded_epochs(_sources(0.5, 2.0), 100, seed, epoch, 0, 1, False))

    first = order(3, 2)
    tf.random.set_seed(99)  # TensorFlow's global seed must not matter
    assert order(3, 2) == first
    assert order(3, 3) != first and order(4, 2) != first


def test_epoch_length_drops_the_leftover_and_repeat_continues():
    sources = _sources(1.0, 2.0)  # 18 examples per epoch
    one = _names(seeded_epochs(sources, 100, 0, 4, 0, batch_size=4, repeat=False))
    assert len(one) == 16
    repeated = _names(seeded_epochs(sources, 100, 0, 4, 0, batch_size=4, repeat=True).take(32))
    assert repeated[:16] == one
    assert repeated[16:] == _names(seeded_epochs(sources, 100, 0, 5, 0, batch_size=4, repeat=False))


@pytest.fixture(scope="module")
def mix_roots(tmp_path_factory):
    voc = tmp_path_factory.mktemp("mix_voc")
    make_fake_voc(voc, train=A_IDS, val=["va", "vb", "vc"], extra_jpegs=())
    folder = tmp_path_factory.mktemp("mix_folder")
    make_fake_folder(folder, B_IDS + ["bv"], num_classes=21)
    (folder / "train.txt").write_text("\n".join(B_IDS))
    (folder / "val.txt").write_text("bv\n")
    return voc, folder


def _mix_cfg(voc, folder, weight_b=2.0):
    return config_from_dict({
        "data": {"dataset": "mix", "crop_size": 32, "shuffle_buffer": 8, "root": str(voc),
                 "folder": {"train_list": "train.txt", "val_list": "val.txt"},
                 "mix": [{"dataset": "voc", "val": True},
                         {"dataset": "folder", "root": str(folder), "weight": weight_b}]},
        "train": {"batch_size": 3, "seed": 5}})


def test_mix_through_the_pipeline(mix_roots):
    cfg = _mix_cfg(*mix_roots)
    assert num_examples(cfg.data, "train") == len(A_IDS) + 2 * len(B_IDS)
    assert num_examples(cfg.data, "val") == 3  # the voc entry's val only
    batches = [(i.numpy(), m.numpy()) for i, m in make_dataset(cfg, "train", training=True, epoch=1)]
    assert len(batches) == 18 // 3
    for image, mask in batches:
        assert image.shape == (3, 32, 32, 3) and mask.shape == (3, 32, 32)
        assert set(np.unique(mask)) <= set(range(21)) | {255}
    again = [(i.numpy(), m.numpy()) for i, m in make_dataset(cfg, "train", training=True, epoch=1)]
    for (image, mask), (image2, mask2) in zip(batches, again):
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(mask, mask2)
    names = [n.decode() for _, _, meta in make_dataset(cfg, "val", training=False, batch_size=2, return_meta=True)
             for n in meta["file_name"].numpy()]
    assert sorted(names) == ["va", "vb", "vc"]


def test_each_input_pipeline_mixes_its_own_shards(mix_roots):
    cfg = _mix_cfg(*mix_roots, weight_b=1.0)
    total = 0
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        count = num_examples(cfg.data, "train", context)
        total += count
        cfg.train.batch_size = 2  # 1 per replica
        batches = list(make_dataset(cfg, "train", training=True, input_context=context))
        assert len(batches) == count
    assert total == len(A_IDS) + len(B_IDS)


def test_validate_scans_every_entry(mix_roots, tmp_path, capsys):
    voc, folder = mix_roots
    config = tmp_path / "mix.yaml"
    config.write_text(f"""
data:
  dataset: mix
  root: {voc}
  folder: {{train_list: train.txt, val_list: val.txt}}
  mix:
    - {{dataset: coco_voc, root: {tmp_path / "no_coco"}}}
    - {{dataset: voc, val: true}}
    - {{dataset: folder, root: {folder}}}
""")
    assert validate_main(["--config", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "coco_voc: not scanned" in out
    assert f"checked {len(A_IDS) + 3 + len(B_IDS) + 1} examples: 0 problem(s)" in out


@pytest.mark.parametrize("overrides, message", [
    (["data.dataset=mix"], "data.mix must list the datasets to mix"),
    (["data.mix=[{dataset: voc, val: true}]"], "data.mix is read only when data.dataset is 'mix'"),
    (["data.dataset=mix", "data.mix=[{dataset: mix, val: true}]"], "data.mix[0].dataset must be one of"),
    (["data.dataset=mix", "data.mix=[{weight: 2, val: true}]"], "data.mix[0].dataset must be one of"),
    (["data.dataset=mix", "data.mix=[{dataset: voc, weight: 0, val: true}]"], "data.mix[0].weight must be positive"),
    (["data.dataset=mix", "data.mix=[{dataset: voc}, {dataset: coco_voc}]"], "at least one entry with 'val: true'"),
    (["data.dataset=mix", "data.mix=[{dataset: voc, wieght: 2}]"], "did you mean 'data.mix[0].weight'"),
    (["data.coco.source=lvis"], "data.coco.source must be one of 'panoptic', 'instances'"),
    (["data.imagenet.eval_crop_fraction=0"], "data.imagenet.eval_crop_fraction must be in (0, 1]"),
])
def test_bad_mix_settings(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_stage1_config():
    cfg = load_config("configs/stages/exfuse_resnext101_stage1.yaml")
    assert cfg.data.dataset == "mix"
    assert [(c.dataset, c.val) for c in cfg.data.mix] == [("coco_voc", False), ("train_aug", True)]
