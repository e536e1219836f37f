"""The scenes benchmark (exfuse_keras/data/scenes.py): determinism, valid labels, the classes
each ExFuse module is meant to fix, and a local-appearance baseline far below a trained model."""

import numpy as np
import pytest
from scipy import ndimage

from exfuse_keras.data.scenes import (CONTEXT_CLASSES, SCENES_CLASSES, THIN_CLASSES, generate_scenes_dataset,
                                      render_scene, texture_histogram_baseline)
from exfuse_keras.data.synthetic import load_pairs

SIZE = 128


@pytest.fixture(scope="module")
def small_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes_small")
    meta = generate_scenes_dataset(root, num_train=80, num_val=24, size=SIZE, seed=0, verbose=False)
    return root, meta


def test_render_is_deterministic_for_a_seed():
    a_image, a_mask = render_scene(np.random.default_rng([3, 0, 7]), SIZE)
    b_image, b_mask = render_scene(np.random.default_rng([3, 0, 7]), SIZE)
    c_image, _ = render_scene(np.random.default_rng([4, 0, 7]), SIZE)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_image, c_image)


def test_generated_files_repeat_byte_for_byte(tmp_path):
    first = generate_scenes_dataset(tmp_path / "a", num_train=4, num_val=2, size=64, seed=5, verbose=False)
    second = generate_scenes_dataset(tmp_path / "b", num_train=4, num_val=2, size=64, seed=5, verbose=False)
    assert first == second
    for split in ("train", "val"):
        for (ia, ma), (ib, mb) in zip(load_pairs(tmp_path / "a", split), load_pairs(tmp_path / "b", split)):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(ma, mb)


def test_masks_hold_only_class_ids_and_every_class_appears(small_scenes):
    root, meta = small_scenes
    seen = np.zeros(len(SCENES_CLASSES), np.int64)
    for split in ("train", "val"):
        for image, mask in load_pairs(root, split):
            assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
            assert set(np.unique(mask)) <= set(range(len(SCENES_CLASSES))) | {255}
            seen += np.bincount(mask.ravel(), minlength=256)[:len(SCENES_CLASSES)] > 0
    assert len(SCENES_CLASSES) >= 10
    np.testing.assert_array_equal(seen, np.array(meta["class_image_counts"]["train"])
                                  + np.array(meta["class_image_counts"]["val"]))
    # Each context and thin class in at least 10% of the 104 images.
    for name in CONTEXT_CLASSES + THIN_CLASSES:
        assert seen[SCENES_CLASSES.index(name)] >= 10, name
    balance = meta["class_balance"]["train"]
    assert abs(sum(balance) - 1.0) < 1e-9 and balance[0] < 0.9


def test_wires_are_one_to_three_pixels_wide():
    """No 4x4 square fits inside a wire (a stroke 1-3 px wide in any direction) except where it
    crosses itself or another wire: an opening with a 4x4 square keeps almost nothing of it."""
    survived = total = 0
    for k in range(60):
        _, mask = render_scene(np.random.default_rng([0, 0, k]), SIZE)
        part = mask == SCENES_CLASSES.index("wire")
        survived += ndimage.binary_opening(part, np.ones((4, 4), bool)).sum()
        total += part.sum()
    assert total > 0 and survived <= 0.05 * total, (survived, total)


def test_grids_have_holes_and_wheels_have_thin_spokes():
    """A grid is a lattice of bars around background holes; a wheel's spokes and rim are thin,
    so most of a wheel lies within 1.5 px of its edge."""
    holes, thin, wheel_pixels = [], 0, 0
    for k in range(60):
        _, mask = render_scene(np.random.default_rng([0, 0, k]), SIZE)
        grid = mask == SCENES_CLASSES.index("grid")
        if grid.sum() > 200:
            holes.append(ndimage.label(ndimage.binary_fill_holes(grid) & ~grid)[1])
        wheel = mask == SCENES_CLASSES.index("wheel")
        wheel_pixels += wheel.sum()
        thin += (ndimage.distance_transform_edt(np.pad(wheel, 1))[1:-1, 1:-1][wheel] <= 1.5).sum()
    assert holes and np.median(holes) >= 8 and np.mean(np.array(holes) >= 2) >= 0.9, holes
    assert wheel_pixels > 0 and thin >= 0.6 * wheel_pixels, (thin, wheel_pixels)


def test_context_objects_sit_inside_their_outline_with_a_gap():
    """A nucleus only appears with a ring (a boxed square with a frame), never touching it: locally
    it is a disc (a square); only the surrounding outline tells the classes apart."""
    pairs = {"nucleus": "ring", "boxed": "frame"}
    found = {name: 0 for name in pairs}
    for k in range(80):
        _, mask = render_scene(np.random.default_rng([0, 0, k]), SIZE)
        for inner, outline in pairs.items():
            part = mask == SCENES_CLASSES.index(inner)
            if not part.any():
                continue
            found[inner] += 1
            assert (mask == SCENES_CLASSES.index(outline)).any()
            touching = ndimage.binary_dilation(part) & (mask == SCENES_CLASSES.index(outline))
            # Occlusion by a later object may cut the gap; most of the boundary keeps it.
            assert touching.sum() <= 0.2 * part.sum()
    assert all(count >= 5 for count in found.values()), found


def test_texture_histogram_baseline_is_far_below_the_target(small_scenes):
    root, _ = small_scenes
    assert texture_histogram_baseline(root) < 0.3


def test_pipeline_generates_what_data_synthetic_asks_for(tmp_path):
    """data.synthetic's arguments reach the generator: a missing dataset is generated with them,
    and asking for other ones regenerates it (records included)."""
    from exfuse_keras.config import config_from_dict
    from exfuse_keras.data.pipeline import num_examples, prepare_builder

    def data(num_train):
        return config_from_dict({"data": {"dataset": "scenes", "root": str(tmp_path / "scenes"), "num_classes": 12,
                                          "class_names": list(SCENES_CLASSES), "crop_size": 64,
                                          "synthetic": {"size": 64, "num_train": num_train, "num_val": 2}}}).data

    prepare_builder(data(3))
    assert num_examples(data(3), "train") == 3
    prepare_builder(data(5))
    assert num_examples(data(5), "train") == 5 and num_examples(data(5), "val") == 2
    assert next(load_pairs(tmp_path / "scenes", "train"))[0].shape == (64, 64, 3)


def test_matched_look_alikes_are_drawn_as_the_object_inside_an_outline(tmp_path):
    """look_alike_sizes="matched": a plain disc (square) is exactly the inner part a ringed disc
    (boxed square) of the same radius and random state would draw; the default keeps the object's
    own radius, and only the matched variant is recorded in the meta file's args."""
    from exfuse_keras.data.scenes import object_parts

    for kind, outlined in (("disc", "ringed_disc"), ("square", "boxed_square")):
        for k in range(5):
            plain = object_parts(kind, 96, 40.0, 50.0, 20.0, np.random.default_rng(k), "matched")
            inner = object_parts(outlined, 96, 40.0, 50.0, 20.0, np.random.default_rng(k))[1][1]
            assert len(plain) == 1 and plain[0][0] == SCENES_CLASSES.index(kind)
            np.testing.assert_array_equal(plain[0][1], inner)
            independent = object_parts(kind, 96, 40.0, 50.0, 20.0, np.random.default_rng(k))[0][1]
            assert independent.sum() > 1.5 * inner.sum()  # the confound the variant removes
    default = generate_scenes_dataset(tmp_path / "a", num_train=2, num_val=2, size=64, verbose=False)
    matched = generate_scenes_dataset(tmp_path / "b", num_train=2, num_val=2, size=64, verbose=False,
                                      look_alike_sizes="matched")
    assert "look_alike_sizes" not in default["args"] and matched["args"]["look_alike_sizes"] == "matched"
    with pytest.raises(ValueError, match="look_alike_sizes must be one of independent, matched"):
        generate_scenes_dataset(tmp_path / "c", num_train=2, num_val=2, size=64, look_alike_sizes="big")


def test_render_reports_each_object_and_its_visible_parts():
    """``objects``: the visible parts, painted in drawing order, give the mask back; the image and
    mask are those rendered without asking for objects."""
    for k in range(6):
        image, mask = render_scene(np.random.default_rng([0, 1, k]), SIZE)
        objects = []
        again, mask_again = render_scene(np.random.default_rng([0, 1, k]), SIZE, objects)
        np.testing.assert_array_equal(image, again)
        np.testing.assert_array_equal(mask, mask_again)
        painted = np.zeros_like(mask)
        for record in objects:
            for (cls, part), visible in zip(record["parts"], record["visible"]):
                assert not (visible & ~part).any()
                painted[visible] = cls
        np.testing.assert_array_equal(painted, mask)
