"""The "scenes" benchmark: procedural scenes hard enough to tell ExFuse's modules apart.

The built-in ``shapes`` data is solved by any small model; every row of the ablation would tie.
Each scene here gives each ExFuse module something to fix:

- **Semantics that low levels cannot see** (what SS and SEB claim to fix). Every object draws
  its colour and texture from one sampler, whatever the class, so local appearance says nothing
  about the class (backgrounds are patterned more often than objects, so it does tell object
  from background). Shape classes (disc, square, triangle, cross) differ
  only in outline; two *context* classes differ from them only in their surroundings: a
  ``nucleus`` is a disc inside a ring, a ``boxed`` square sits inside a square frame, with a
  gap of background between them. Locally a nucleus is a disc; only the ring around it, up to
  ~60 px away, tells them apart.
- **Fine structure** (what ECRE and DAP claim to fix): ``wheel`` (a rim and spokes 1-3 px
  wide), ``wire`` (a 1-3 px curve), ``grid`` (a lattice of 1-3 px bars whose holes show what
  lies below), and the exact stride-1 boundaries of every object.
- Procedural textures on objects and background (noise at a random cell size, stripes and
  checks at a random period and orientation, gradients, flat colour), sensor noise, 2-5
  objects per image at radii from 10% to 30% of the side, and occlusion (each object keeps at
  least half of its pixels visible).

Classes (12): background, disc, square, triangle, cross, ring, nucleus, frame, boxed, wheel,
wire, grid. Defaults: 3,000 train and 500 val images of 256x256, seed 0. Masks hold class ids
only (no 255 border).

``texture_histogram_baseline`` is the calibration's floor: the best per-pixel lookup table from
a pixel's colour (16 levels per channel) and the local contrast of its 5x5 neighbourhood (4
levels) to a class.

Usage:
    python -m exfuse_keras.data.scenes --root data/scenes [--num-train N --num-val N --size S --seed K]
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from exfuse_keras.data.synthetic import (colour_bins, format_balance, keeps_earlier_visible, lookup_table_baseline,
                                         paint_contrasting, write_synthetic_dataset)

SCENES_CLASSES = ("background", "disc", "square", "triangle", "cross", "ring", "nucleus", "frame", "boxed",
                  "wheel", "wire", "grid")
# Classes told apart only by their surroundings, and classes made of 1-3 px parts.
CONTEXT_CLASSES = ("nucleus", "boxed")
# Each context class and its look-alike: the same shape, told apart only by the outline around it.
LOOK_ALIKES = {"nucleus": "disc", "boxed": "square"}
# Each of those four classes and the other member of its pair, both ways.
PAIR_PARTNER = {**LOOK_ALIKES, **{alike: context for context, alike in LOOK_ALIKES.items()}}
THIN_CLASSES = ("wheel", "wire", "grid")
# How large a plain disc or square (a context class's look-alike) is drawn. "independent": at the
# object's radius, like every shape, so it is about twice the size of the disc inside a nucleus
# or the square inside a boxed outline, and size alone tells most of them apart
# (docs/ablation.md, positive controls). "matched": the size of the object inside a ringed disc
# or boxed square of that radius, so only the outline around it tells them apart.
LOOK_ALIKE_SIZES = ("independent", "matched")
# Bumped whenever rendering changes, so cached datasets from an older renderer are regenerated.
GENERATOR_VERSION = 3
META_FILENAME = "scenes_meta.json"
DEFAULTS = {"num_train": 3000, "num_val": 500, "size": 256, "seed": 0}

# What an image holds: an object kind is drawn with probability proportional to its weight.
# A "ringed" kind draws the context pair (nucleus + ring, boxed + frame); "ring" and "frame"
# also appear alone, so an outline does not mean a context object is inside.
_KINDS = ("disc", "square", "triangle", "cross", "ring", "ringed_disc", "frame", "boxed_square", "wheel", "wire",
          "grid")
_KIND_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 0.6, 1.4, 0.6, 1.4, 1.0, 1.2, 1.0])
_TEXTURES = ("solid", "gradient", "stripes", "checks", "noise")
# Backgrounds are mostly patterned and objects mostly flat or shaded, so a small network can find
# objects from local texture changes; the class of an object is never in its texture (the same
# sampler for every class). With objects patterned as often as backgrounds, the quick-start-size
# GCN stayed at "all background" (val mIoU 0.07 after 900 steps; 0.09 with mostly flat objects).
_BACKGROUND_TEXTURE_P = (0.0, 0.2, 0.3, 0.2, 0.3)
_OBJECT_TEXTURE_P = (0.6, 0.2, 0.1, 0.05, 0.05)
# How far a texture's second colour moves towards another random colour: backgrounds are
# patterned in gentler contrast than the objects' outlines stand out from them.
_BACKGROUND_CONTRAST = (0.15, 0.5)
_OBJECT_CONTRAST = (0.3, 0.9)
_MIN_RADIUS, _MAX_RADIUS = 0.10, 0.30   # object radius as a fraction of the image side
_MIN_VISIBLE = 0.5                       # share of an object's pixels later objects may not hide
_MIN_CONTRAST = 60.0                     # RGB distance between an object's mean colour and what it covers
_PLACEMENT_TRIES = 20
_COLOUR_TRIES = 10


def _class_id(name: str) -> int:
    return SCENES_CLASSES.index(name)


def texture(rng: np.random.Generator, size: int, kind_p=_OBJECT_TEXTURE_P, contrast=_OBJECT_CONTRAST) -> np.ndarray:
    """One procedural texture (objects of every class share one sampler, the background another).

    Two random colours mixed by a pattern: flat, a linear gradient, stripes (hard or sine),
    checks (at a random period and orientation) or smooth noise (a random cell size).

    Args:
        rng: all randomness comes from it.
        size (int): side in pixels.
        kind_p: probabilities of solid, gradient, stripes, checks and noise.
        contrast: (low, high) of how far the second colour moves towards another random one.

    Returns:
        float64 [size, size, 3], values in 0..255.
    """
    c1 = rng.uniform(0.0, 255.0, size=3)
    c2 = c1 + rng.uniform(*contrast) * (rng.uniform(0.0, 255.0, size=3) - c1)
    kind = _TEXTURES[rng.choice(len(_TEXTURES), p=kind_p)]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0.0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = rng.uniform(4.0, 24.0)
    if kind == "solid":
        w = np.zeros((size, size))
    elif kind == "gradient":
        w = (u - u.min()) / max(np.ptp(u), 1e-6)
    elif kind == "stripes":
        phase = (u / period + rng.uniform()) % 1.0
        w = (phase < 0.5).astype(np.float64) if rng.uniform() < 0.5 else 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    elif kind == "checks":
        w = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    else:
        cells = int(rng.integers(4, 33))
        grid = Image.fromarray(rng.uniform(size=(cells, cells)).astype(np.float32))
        w = np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float64)
        w = (w - w.min()) / max(np.ptp(w), 1e-6)
    return c1 + w[..., None] * (c2 - c1)


def _polygon_mask(size, points):
    canvas = Image.new("1", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1)
    return np.asarray(canvas, dtype=bool)


def _regular(n, cx, cy, radius, angle):
    a = angle + np.arange(n) * 2 * np.pi / n
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)


def _cross(cx, cy, radius, angle, rng):
    # Arm half-thickness t and half-length a with the arm corners on the circle (a^2 + t^2 = 1).
    k = rng.uniform(0.3, 0.4)
    a = 1.0 / np.hypot(1.0, k)
    t = k * a
    pts = np.array([[t, a], [t, t], [a, t], [a, -t], [t, -t], [t, -a],
                    [-t, -a], [-t, -t], [-a, -t], [-a, t], [-t, t], [-t, a]])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T * radius + np.array([cx, cy])


def _rotated_square(size, cx, cy, half, angle):
    """Boolean mask of a square of half-side ``half`` rotated by ``angle``, and the rotated
    coordinates (u, v) relative to its centre (for frames and grids)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.abs(u) <= half) & (np.abs(v) <= half), u, v


def _disc(size, cx, cy, radius):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2


def _thin_width(rng) -> int:
    return int(rng.integers(1, 4))


def object_parts(kind: str, size: int, cx: float, cy: float, radius: float, rng,
                 look_alike_sizes: str = "independent") -> list:
    """The parts one object kind paints, each ``(class id, boolean [size, size] mask)``.

    A ringed disc and a boxed square have two parts (the outline and the object inside it,
    with a gap between them that stays whatever lies below); every other kind has one.
    ``look_alike_sizes="matched"`` draws a plain disc or square the size of the object inside a
    ringed disc or boxed square of the same ``radius`` (``LOOK_ALIKE_SIZES``).
    """
    if kind in ("disc", "square") and look_alike_sizes == "matched":
        ringed = object_parts("ringed_disc" if kind == "disc" else "boxed_square", size, cx, cy, radius, rng)
        return [(_class_id(kind), ringed[1][1])]
    if kind == "disc":
        return [(_class_id("disc"), _disc(size, cx, cy, radius))]
    if kind == "square":
        return [(_class_id("square"), _rotated_square(size, cx, cy, radius / np.sqrt(2), rng.uniform(0, np.pi / 2))[0])]
    if kind == "triangle":
        # A triangle covers less of its circumcircle: a larger radius evens the class areas.
        points = _regular(3, cx, cy, 1.25 * radius, rng.uniform(0, 2 * np.pi / 3))
        return [(_class_id("triangle"), _polygon_mask(size, points))]
    if kind == "cross":
        return [(_class_id("cross"), _polygon_mask(size, _cross(cx, cy, radius, rng.uniform(0, np.pi / 2), rng)))]
    if kind in ("ring", "ringed_disc"):
        thickness = rng.uniform(0.12, 0.25) * radius
        ring = _disc(size, cx, cy, radius) & ~_disc(size, cx, cy, radius - thickness)
        if kind == "ring":
            return [(_class_id("ring"), ring)]
        inner = (radius - thickness) * rng.uniform(0.45, 0.7)
        return [(_class_id("ring"), ring), (_class_id("nucleus"), _disc(size, cx, cy, inner))]
    if kind in ("frame", "boxed_square"):
        angle = rng.uniform(0, np.pi / 2)
        half = radius / np.sqrt(2) * 1.15
        outer, u, v = _rotated_square(size, cx, cy, half, angle)
        thickness = rng.uniform(0.12, 0.25) * half
        frame = outer & ~((np.abs(u) <= half - thickness) & (np.abs(v) <= half - thickness))
        if kind == "frame":
            return [(_class_id("frame"), frame)]
        inner = (half - thickness) * rng.uniform(0.45, 0.7)
        return [(_class_id("frame"), frame), (_class_id("boxed"), (np.abs(u) <= inner) & (np.abs(v) <= inner))]
    if kind == "wheel":
        canvas = Image.new("1", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=1, width=int(rng.integers(2, 4)))
        hub = radius * rng.uniform(0.08, 0.15)
        draw.ellipse([cx - hub, cy - hub, cx + hub, cy + hub], fill=1)
        spokes = int(rng.integers(4, 10))
        for a in rng.uniform(0, 2 * np.pi) + np.arange(spokes) * 2 * np.pi / spokes:
            draw.line([(cx, cy), (cx + radius * np.cos(a), cy + radius * np.sin(a))], fill=1, width=_thin_width(rng))
        return [(_class_id("wheel"), np.asarray(canvas, dtype=bool))]
    if kind == "wire":
        # A smooth random curve through the object's circle: a sine-bent chord.
        angle = rng.uniform(0, np.pi)
        t = np.linspace(-1.0, 1.0, 64)
        bend = rng.uniform(0.1, 0.4) * radius * np.sin(np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
        length = 1.6 * radius
        xs = cx + length * t * np.cos(angle) - bend * np.sin(angle)
        ys = cy + length * t * np.sin(angle) + bend * np.cos(angle)
        canvas = Image.new("1", (size, size), 0)
        ImageDraw.Draw(canvas).line(list(zip(xs, ys)), fill=1, width=_thin_width(rng), joint="curve")
        return [(_class_id("wire"), np.asarray(canvas, dtype=bool))]
    if kind == "grid":
        half = radius / np.sqrt(2) * 1.2
        outer, u, v = _rotated_square(size, cx, cy, half, rng.uniform(0, np.pi / 2))
        cell, bar = rng.uniform(6.0, 14.0), _thin_width(rng)
        bars = ((u + half) % cell < bar) | ((v + half) % cell < bar)
        return [(_class_id("grid"), outer & bars)]
    raise ValueError(f"unknown object kind {kind!r}")


def render_scene(rng: np.random.Generator, size: int, objects: Optional[list] = None,
                 look_alike_sizes: str = "independent") -> tuple:
    """Renders one scene and its exact label mask.

    Objects are drawn largest first; a placement is rejected when it would hide more than half
    of an earlier object. Each part gets its own texture, whose mean colour differs from what it
    covers by at least ``_MIN_CONTRAST``, so every boundary is visible at stride 1.

    Args:
        rng: all randomness comes from it.
        size (int): image side in pixels.
        objects (list | None): if given, one dict per object drawn is appended to it:
            ``{"kind", "radius" (px), "parts": [(class id, bool [size, size] mask of the part as
            drawn)], "visible": [bool [size, size], ...] (each part's pixels no later object
            hides)}``. The image and mask are the same either way (no extra random draws).
        look_alike_sizes (str): how large a plain disc or square is drawn (``LOOK_ALIKE_SIZES``).

    Returns:
        (image uint8 [size, size, 3], mask uint8 [size, size] of class ids).
    """
    image = texture(rng, size, _BACKGROUND_TEXTURE_P, _BACKGROUND_CONTRAST)
    mask = np.zeros((size, size), dtype=np.uint8)
    instances = np.full((size, size), -1, dtype=np.int64)
    areas, drawn = [], []
    n_objects = int(rng.integers(2, 6))
    kinds = rng.choice(len(_KINDS), size=n_objects, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum())
    radii = np.sort(rng.uniform(_MIN_RADIUS, _MAX_RADIUS, size=n_objects))[::-1] * size
    for kind_index, radius in zip(kinds, radii):
        kind = _KINDS[kind_index]
        for _ in range(_PLACEMENT_TRIES):
            cx, cy = rng.uniform(0.6 * radius, size - 0.6 * radius, size=2)
            parts = object_parts(kind, size, cx, cy, radius, rng, look_alike_sizes)
            union = np.logical_or.reduce([m for _, m in parts])
            if keeps_earlier_visible(instances, areas, union, _MIN_VISIBLE):
                break
        else:
            continue
        for cls, part in parts:
            paint_contrasting(rng, image, part, lambda: texture(rng, size), _MIN_CONTRAST, _COLOUR_TRIES)
            mask[part] = cls
        instances[union] = len(areas)
        if objects is not None:
            drawn.append({"kind": kind, "radius": float(radius), "parts": parts, "index": len(areas)})
        areas.append(int(np.count_nonzero(union)))
    for record in drawn:
        own = instances == record.pop("index")
        record["visible"] = [part & own for _, part in record["parts"]]
        objects.append(record)
    image += rng.normal(0.0, rng.uniform(0.0, 6.0), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def generate_scenes_dataset(root, num_train: int = DEFAULTS["num_train"], num_val: int = DEFAULTS["num_val"],
                            size: int = DEFAULTS["size"], seed: int = DEFAULTS["seed"], jpeg_quality: int = 95,
                            verbose: bool = True, look_alike_sizes: str = "independent") -> dict:
    """Writes the scenes benchmark under ``root`` in the VOC layout (or reuses it).

    Args:
        root (str | Path): output directory.
        num_train (int), num_val (int): images per split.
        size (int): image side in pixels.
        seed (int): base seed; image k of a split depends only on (seed, split, k).
        jpeg_quality (int): JPEG quality.
        verbose (bool): progress lines with an ETA.
        look_alike_sizes (str): ``LOOK_ALIKE_SIZES``; recorded in the meta file's args when not
            the default.

    Returns:
        The meta dict (``write_synthetic_dataset``): class pixel balance and image counts.

    Example:
        >>> meta = generate_scenes_dataset("data/scenes")        # doctest: +SKIP
        >>> print(format_balance(meta))                         # doctest: +SKIP
    """
    if look_alike_sizes not in LOOK_ALIKE_SIZES:
        raise ValueError(f"look_alike_sizes must be one of {', '.join(LOOK_ALIKE_SIZES)}, got {look_alike_sizes!r}")
    variant = {} if look_alike_sizes == "independent" else {"look_alike_sizes": look_alike_sizes}

    def render(rng, side):
        return render_scene(rng, side, look_alike_sizes=look_alike_sizes)

    return write_synthetic_dataset(root, render, SCENES_CLASSES, META_FILENAME, GENERATOR_VERSION,
                                   num_train, num_val, size, seed, jpeg_quality, verbose, label="scenes",
                                   variant=variant)


def _colour_contrast_bins(image: np.ndarray) -> np.ndarray:
    """Colour (16 levels per channel) x local contrast (4 levels of the 5x5 luma std): bins
    in [0, 4096 * 4)."""
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    padded = np.pad(luma, 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
    contrast = np.digitize(windows.std(axis=(-1, -2)), [4.0, 12.0, 30.0])
    return colour_bins(image) * 4 + contrast


def texture_histogram_baseline(root) -> float:
    """Val mIoU of the best per-pixel (colour, local contrast) -> class lookup table."""
    return lookup_table_baseline(root, len(SCENES_CLASSES), _colour_contrast_bins, 4096 * 4)


def main(argv=None):
    """Command line entry point: generates the benchmark and prints its class balance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="output directory")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-val", type=int, default=DEFAULTS["num_val"])
    parser.add_argument("--size", type=int, default=DEFAULTS["size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--look-alike-sizes", default="independent", choices=LOOK_ALIKE_SIZES,
                        help="how large plain discs and squares are drawn (module docstring)")
    parser.add_argument("--baseline", action="store_true", help="also report the texture-histogram baseline mIoU")
    args = parser.parse_args(argv)
    meta = generate_scenes_dataset(args.root, args.num_train, args.num_val, args.size, args.seed,
                                   look_alike_sizes=args.look_alike_sizes)
    print(format_balance(meta))
    if args.baseline:
        print(f"texture histogram baseline val mIoU: {texture_histogram_baseline(args.root):.4f}")


if __name__ == "__main__":
    main()
