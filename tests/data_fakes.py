"""Small fake datasets on disk for the data tests: a VOCdevkit + SBD tree and a user folder.

Every mask is a pure function of its id (``fake_mask``), so tests can compare records with the
exact expected labels. Images are colour-coded by label (``label_colours``): a pixel's class can
be read back from its colour, which the augmentation tests use to check alignment.
"""

import hashlib

import numpy as np
import scipy.io
from PIL import Image

from exfuse_keras.data.palette import voc_palette, write_palette_png
from exfuse_keras.data.voc import SBD_SUBDIR, VOC_SUBDIR

# VOC train / val and SBD train / val ids. "b" is in VOC train and SBD (VOC's mask wins), "d"
# and "e" are VOC val images also in SBD (train_aug must drop them), "h" is an SBD image
# missing from VOC's JPEGImages (read from SBD's img/).
VOC_TRAIN = ["a", "b", "c"]
VOC_VAL = ["d", "e"]
SBD_TRAIN = ["b", "d", "f", "g"]
SBD_VAL = ["e", "h"]
TRAIN_AUG = ["a", "b", "c", "f", "g", "h"]
FAKE_SIZE = (48, 64)  # H, W: not square, so a transposed mask would be caught


def label_colours(num_classes=21):
    """Distinct, well separated colours per class (index 255 -> grey), uint8 [256, 3]."""
    colours = np.full((256, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(1)
    colours[:num_classes] = rng.integers(0, 256, size=(num_classes, 3))
    return colours


def fake_mask(example_id, num_classes=21, size=FAKE_SIZE, border=True):
    """Blocks of random classes (seeded by the id) with a 255 border ring like VOC's, uint8 [H, W]."""
    seed = int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, num_classes, size=(3, 4)).astype(np.uint8)
    mask = np.kron(blocks, np.ones((size[0] // 3, size[1] // 4), dtype=np.uint8))
    if border:
        mask[size[0] // 3, :] = 255
    return mask


def write_image(path, mask, num_classes=21, fmt="JPEG"):
    """Writes the colour-coded image of a mask (JPEG quality 100, or PNG)."""
    image = label_colours(num_classes)[mask]
    kwargs = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(image).save(path, format=fmt, **kwargs)


def make_fake_voc(root, train=VOC_TRAIN, val=VOC_VAL, extra_jpegs=("f", "g"), num_classes=21):
    """Writes <root>/VOCdevkit/VOC2012 with palette PNG masks; returns the VOC2012 folder."""
    voc = root / VOC_SUBDIR
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for example_id in list(train) + list(val):
        mask = fake_mask(example_id, num_classes)
        write_palette_png(voc / "SegmentationClass" / f"{example_id}.png", mask, voc_palette())
        write_image(voc / "JPEGImages" / f"{example_id}.jpg", mask, num_classes)
    for example_id in extra_jpegs:
        write_image(voc / "JPEGImages" / f"{example_id}.jpg", fake_mask(example_id, num_classes, border=False))
    for split, ids in (("train", train), ("val", val)):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def make_fake_sbd(root, train=SBD_TRAIN, val=SBD_VAL):
    """Writes <root>/benchmark_RELEASE/dataset with cls/*.mat masks (no 255, like SBD)."""
    sbd = root / SBD_SUBDIR
    (sbd / "cls").mkdir(parents=True, exist_ok=True)
    (sbd / "img").mkdir(parents=True, exist_ok=True)
    for example_id in list(train) + list(val):
        mask = fake_mask(example_id, border=False)
        scipy.io.savemat(sbd / "cls" / f"{example_id}.mat", {"GTcls": {
            "Segmentation": mask, "Boundaries": np.zeros((21, 1), dtype=object),
            "CategoriesPresent": np.unique(mask[mask > 0]).astype(np.uint8)}})
        write_image(sbd / "img" / f"{example_id}.jpg", mask)
    for split, ids in (("train", train), ("val", val)):
        (sbd / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return sbd


def make_fake_folder(root, ids, num_classes=5, palette_masks=True):
    """Writes <root>/images/<id>.jpg and <root>/masks/<id>.png (palette or single-channel)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for example_id in ids:
        mask = fake_mask(example_id, num_classes)
        write_image(root / "images" / f"{example_id}.jpg", mask, num_classes)
        if palette_masks:
            write_palette_png(root / "masks" / f"{example_id}.png", mask, voc_palette())
        else:
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{example_id}.png")
    return root
