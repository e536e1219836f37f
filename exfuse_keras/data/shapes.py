"""Procedurally generated "shapes" segmentation dataset in the PASCAL VOC layout.

Each image shows 1-4 geometric objects (circle, square, triangle, cross, ring)
on a textured background with a little clutter. Every object gets its own
random colour and texture from the same sampler whatever its class, so only
the shape tells the classes apart; `colour_histogram_baseline` checks that.

Written in the VOC layout by exfuse_keras/data/synthetic.py, with `shapes_meta.json` last.

Usage:
    python -m exfuse_keras.data.shapes --root DIR --num-train N --num-val N --size S --seed K
"""

import argparse

import numpy as np
from PIL import Image, ImageDraw

from exfuse_keras.data.synthetic import (VOC_SUBDIR, colour_bins, format_balance, keeps_earlier_visible,
                                         lookup_table_baseline, paint_contrasting, write_synthetic_dataset)

SHAPES_CLASSES = ("background", "circle", "square", "triangle", "cross", "ring")

# Bumped whenever rendering changes, so cached datasets from an older renderer
# are regenerated instead of silently reused.
GENERATOR_VERSION = 3

META_FILENAME = "shapes_meta.json"

_TEXTURE_KINDS = ("solid", "gradient", "stripes", "noise")
# Backgrounds are always textured and objects mostly flat, so a small CNN can tell object
# from background locally (texture) and must learn the class from the shape; colour is
# uniformly random for both. With textured objects as often as textured backgrounds, the
# tiny quick-start model stayed at "all background" for its first thousand steps.
_BACKGROUND_TEXTURE_P = (0.0, 0.3, 0.3, 0.4)
_OBJECT_TEXTURE_P = (0.8, 0.2, 0.0, 0.0)

_MIN_SCALE, _MAX_SCALE = 0.3, 0.75  # object extent as a fraction of the image side
# A triangle covers far less of its circumcircle than the other shapes; a
# larger circumradius brings its area (and class frequency) closer to theirs.
_RADIUS_FACTOR = {"triangle": 1.25}
_MIN_VISIBLE = 0.5  # fraction of each object that must stay unoccluded
_MIN_CONTRAST = 70.0  # RGB distance between an object's mean colour and what it covers
_PLACEMENT_TRIES = 20
_COLOUR_TRIES = 10


def _random_colour(rng):
    """Uniform RGB colour; the single colour sampler for every class and the background."""
    return rng.uniform(0.0, 255.0, size=3)


def _texture(rng, size, kind_p, contrast_range):
    """Samples a [size, size, 3] float texture mixing two random colours.

    Args:
        rng: np.random.Generator.
        size: image side in pixels.
        kind_p: probabilities of solid / gradient / stripes / noise.
        contrast_range: (lo, hi) bounds of how far the second colour moves
            from the first towards another random colour.

    Returns:
        float64 array [size, size, 3] with values in 0..255.
    """
    c1 = _random_colour(rng)
    c2 = c1 + rng.uniform(*contrast_range) * (_random_colour(rng) - c1)
    kind = _TEXTURE_KINDS[rng.choice(len(_TEXTURE_KINDS), p=kind_p)]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0.0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "solid":
        w = np.zeros((size, size))
    elif kind == "gradient":
        w = (proj - proj.min()) / max(np.ptp(proj), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.2) * size
        phase = (proj / period + rng.uniform()) % 1.0
        w = (phase < 0.5).astype(np.float64) if rng.uniform() < 0.5 else 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    else:
        cells = int(rng.integers(3, 9))
        grid = Image.fromarray(rng.uniform(size=(cells, cells)).astype(np.float32))
        w = np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float64)
        w = (w - w.min()) / max(np.ptp(w), 1e-6)
    return c1 + w[..., None] * (c2 - c1)


def _polygon(shape, cx, cy, radius, angle, rng):
    """Vertices of a square, triangle or cross with circumradius `radius`."""
    if shape == "square":
        pts = np.array([[np.cos(a), np.sin(a)] for a in np.pi / 4 + np.arange(4) * np.pi / 2])
    elif shape == "triangle":
        pts = np.array([[np.cos(a), np.sin(a)] for a in np.pi / 2 + np.arange(3) * 2 * np.pi / 3])
    else:
        # Arm half-thickness t and half-length a with the arm corners on the
        # unit circle (a^2 + t^2 = 1).
        k = rng.uniform(0.3, 0.4)
        a = 1.0 / np.hypot(1.0, k)
        t = k * a
        pts = np.array([[t, a], [t, t], [a, t], [a, -t], [t, -t], [t, -a],
                        [-t, -a], [-t, -t], [-a, -t], [-a, t], [-t, t], [-t, a]])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T * radius + np.array([cx, cy])
    return [tuple(p) for p in pts]


def _shape_mask(shape, size, cx, cy, radius, rng):
    """Rasterises one object to a boolean [size, size] mask.

    The image and the label map are both painted through this one mask, which
    is what keeps the labels pixel-exact.
    """
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
        if shape == "ring":
            r = radius * rng.uniform(0.45, 0.65)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=0)
    else:
        # Rotating a shape by its symmetry angle changes nothing, so sample
        # within one period only.
        period = {"square": np.pi / 2, "triangle": 2 * np.pi / 3, "cross": np.pi / 2}[shape]
        draw.polygon(_polygon(shape, cx, cy, radius, rng.uniform(0.0, period), rng), fill=1)
    return np.asarray(canvas, dtype=bool)


def _draw_clutter(rng, image, size):
    """Paints small blobs and thin lines that belong to the background class."""
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(int(v) for v in _random_colour(rng))
        x, y = rng.uniform(0, size, size=2)
        if rng.uniform() < 0.5:
            # Kept well below the smallest object (15% of the side) so blobs
            # are not mistaken for circles.
            rx, ry = rng.uniform(0.01, 0.03, size=2) * size
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)
        else:
            length = rng.uniform(0.08, 0.25) * size
            a = rng.uniform(0.0, np.pi)
            end = (x + length * np.cos(a), y + length * np.sin(a))
            draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 3)))


def render_example(rng, size):
    """Renders one image and its exact label mask.

    Objects are drawn largest first and a placement is rejected when it would
    hide more than half of an earlier object, so every object stays
    recognisable; the mask holds the class of the top-most object at every
    pixel and 0 elsewhere (no 255 border).

    Args:
        rng: np.random.Generator; all randomness comes from it.
        size: image side in pixels.

    Returns:
        (image uint8 [size, size, 3], mask uint8 [size, size]).
    """
    background = _texture(rng, size, _BACKGROUND_TEXTURE_P, (0.2, 0.7))
    canvas = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(np.uint8))
    _draw_clutter(rng, canvas, size)
    image = np.asarray(canvas, dtype=np.float64).copy()

    mask = np.zeros((size, size), dtype=np.uint8)
    instances = np.full((size, size), -1, dtype=np.int64)
    areas = []
    n_objects = int(rng.integers(1, 4))
    classes = rng.integers(1, len(SHAPES_CLASSES), size=n_objects)
    scales = np.sort(rng.uniform(_MIN_SCALE, _MAX_SCALE, size=n_objects))[::-1]
    for cls, scale in zip(classes, scales):
        shape = SHAPES_CLASSES[cls]
        radius = scale * size / 2 * _RADIUS_FACTOR.get(shape, 1.0)
        for _ in range(_PLACEMENT_TRIES):
            # Centres keep most of the object inside the frame.
            cx, cy = rng.uniform(0.7 * radius, size - 0.7 * radius, size=2)
            obj = _shape_mask(shape, size, cx, cy, radius, rng)
            if keeps_earlier_visible(instances, areas, obj, _MIN_VISIBLE):
                break
        else:
            continue
        paint_contrasting(rng, image, obj, lambda: _texture(rng, size, _OBJECT_TEXTURE_P, (0.3, 0.8)),
                          _MIN_CONTRAST, _COLOUR_TRIES)
        mask[obj] = cls
        instances[obj] = len(areas)
        areas.append(int(np.count_nonzero(obj)))

    # Sensor-like noise, independent of the labels.
    image += rng.normal(0.0, rng.uniform(0.0, 6.0), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def generate_shapes_dataset(root, num_train=1200, num_val=200, size=128, seed=0,
                            jpeg_quality=95, verbose=True):
    """Writes the shapes dataset under `root` in the PASCAL VOC layout (or reuses it).

    See ``write_synthetic_dataset`` for the determinism and reuse rules.

    Args:
        root: output directory.
        num_train: number of training images.
        num_val: number of validation images.
        size: image side in pixels.
        seed: base random seed.
        jpeg_quality: JPEG quality of the images.
        verbose: print a progress line every 200 images.

    Returns:
        The meta dict: generator_version, args, classes, and per split the
        class pixel counts and class balance (pixel fractions).
    """
    return write_synthetic_dataset(root, render_example, SHAPES_CLASSES, META_FILENAME, GENERATOR_VERSION,
                                   num_train, num_val, size, seed, jpeg_quality, verbose, label="shapes")


def colour_histogram_baseline(root):
    """mIoU of the best per-pixel colour -> class lookup table.

    The table is fitted on the train split (majority class per 16x16x16 RGB
    bin) and scored on val, both read back from the JPEGs the models see. A
    low score shows that colour alone does not give the class away.

    Args:
        root: dataset root written by generate_shapes_dataset.

    Returns:
        Validation mIoU in [0, 1].
    """
    return lookup_table_baseline(root, len(SHAPES_CLASSES), colour_bins, 4096)


def main(argv=None):
    """Command line entry point: generates the dataset and prints its class balance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="output directory")
    parser.add_argument("--num-train", type=int, default=1200)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--baseline", action="store_true",
                        help="also report the colour-histogram baseline mIoU")
    args = parser.parse_args(argv)
    meta = generate_shapes_dataset(args.root, args.num_train, args.num_val, args.size,
                                   args.seed, args.jpeg_quality)
    print(format_balance(meta))
    if args.baseline:
        print(f"colour histogram baseline val mIoU: {colour_histogram_baseline(args.root):.4f}")


if __name__ == "__main__":
    main()
