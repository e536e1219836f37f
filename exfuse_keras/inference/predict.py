"""Images in, masks a person can look at out (behind predict.py).

    python predict.py photo.jpg photos/ --weights runs/quickstart --output predictions [--tta]

For every image (files named on the command line, and the .jpg/.jpeg/.png/.bmp files of named
folders, not recursing) writes, at the image's original size:

- ``<stem>_mask.png``: the predicted classes as an indexed (palette) PNG, pixel value = class
  index, colours from the config's ``data.palette`` (else PASCAL VOC's), as VOC's own masks;
- ``<stem>_overlay.png``: the image blended with the coloured mask (``--alpha`` of the mask).

Large images: with ``--sliding-window CROP,STRIDE`` an image is predicted band by band
(exfuse_keras/inference/sliding_bands.py) in memory bounded by a band of windows (an 8,000 x
8,000 photo in under 4 GB, docs/benchmarks.md "Large images"), with a bar of windows done /
total and the time left; ``--quiet`` turns the progress bars off (for scripts and logs).

A file that cannot be read is reported on one ``warning:`` line and skipped; the others are
still written, and the exit status is 1 at the end. Two inputs with the same stem get ``_2``,
``_3``, ... appended.
"""

from __future__ import annotations

import argparse
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(inputs) -> tuple[list[str], list[str]]:
    """(image files, problems): named files as given, folders' image files sorted by name; each file once."""
    files, problems = [], []
    for entry in inputs:
        if os.path.isdir(entry):
            found = sorted(os.path.join(entry, name) for name in os.listdir(entry)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(entry, name)))
            if not found:
                problems.append(f"{entry}: no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files in this folder")
            files += found
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            problems.append(f"{entry}: no such file or folder")
    seen = set()
    unique = [f for f in files if not (os.path.realpath(f) in seen or seen.add(os.path.realpath(f)))]
    return unique, problems


def overlay(image, coloured, alpha: float = 0.5, rows: int = 256):
    """uint8 ``[H, W, 3]``: ``(1 - alpha) * image + alpha * coloured``, in float32 ``rows`` rows at a time
    (so a large image needs no full-size float copies)."""
    import numpy as np

    blended = np.empty(np.shape(coloured), np.uint8)
    for top in range(0, len(blended), rows):
        band = ((1.0 - alpha) * np.asarray(image[top:top + rows], np.float32)
                + alpha * np.asarray(coloured[top:top + rows], np.float32))
        blended[top:top + rows] = np.clip(np.round(band), 0, 255)
    return blended


def _unique_stem(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    candidate, number = stem, 1
    while candidate in used:
        number += 1
        candidate = f"{stem}_{number}"
    used.add(candidate)
    return candidate


def main(argv=None) -> int:
    from exfuse_keras.inference.arguments import (add_model_arguments, add_protocol_arguments,
                                                  protocol_from_arguments, segmenter_from_arguments)

    parser = argparse.ArgumentParser(description="Predict segmentation masks: a palette PNG and an overlay per image.")
    parser.add_argument("inputs", nargs="+", help="image files (jpg, png, bmp) or folders of them")
    add_model_arguments(parser)
    parser.add_argument("--output", default="predictions", help="output folder (created)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay, 0-1")
    add_protocol_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for scripts and logs)")
    args = parser.parse_args(argv)
    import exfuse_keras.task  # noqa: F401  (registers ExFuseImageSegmenter: --weights may be a task's .keras)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha: expected a value in 0-1, got {args.alpha}")

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from exfuse_keras.atomic import atomic_path, check_folder, os_error_line
    from exfuse_keras.data.palette import write_palette_png
    from exfuse_keras.inference.segmenter import load_image

    files, problems = list_images(args.inputs)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not files:
        print("error: no images to predict", file=sys.stderr)
        return 2
    try:
        check_folder(args.output, "--output")
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    segmenter = segmenter_from_arguments(args)
    if segmenter is None:
        return 2
    scales, flip = protocol_from_arguments(args)
    used, failed = set(), len(problems)
    for path in tqdm(files, desc="predicting", unit="img", disable=args.quiet or len(files) < 2):
        try:
            image = load_image(path, as_float32=False)
        except (OSError, ValueError) as err:
            tqdm.write(f"warning: skipped {err}", file=sys.stderr)
            failed += 1
            continue
        mask, _ = segmenter.predict(image, scales=scales, flip=flip, sliding_window=args.sliding_window,
                                    probabilities=False, progress=not args.quiet)
        stem = _unique_stem(path, used)
        # Each file written beside its target and renamed in: a kill leaves no half-written PNG.
        try:
            with atomic_path(os.path.join(args.output, f"{stem}_mask.png")) as tmp:
                write_palette_png(tmp, mask.astype(np.uint8), segmenter.palette)
            with atomic_path(os.path.join(args.output, f"{stem}_overlay.png")) as tmp:
                Image.fromarray(overlay(image, segmenter.colorize(mask), args.alpha)).save(tmp, format="PNG")
        except OSError as err:  # a full disk or a read-only folder: every later image would fail the same way
            print(f"error: {os_error_line(err)}", file=sys.stderr)
            return 2
    written = len(files) - (failed - len(problems))
    print(f"{written} of {len(files)} images written to {args.output}"
          + (f"; {failed} problem(s) reported above" if failed else ""))
    return 1 if failed else 0
