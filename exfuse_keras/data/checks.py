"""Reading one example from disk with every check that keeps a wrong label out of training.

The TFDS builders (voc.py, folder.py) and the validation command (validate.py) read files only
through these functions, so a file the validator accepts is a file the builders accept, and a
problem stops preparation with the same one-line message the validator reports.

Handled silently (the result is what the file means): grayscale, CMYK, RGBA, palette and 16-bit
grayscale images become 8-bit RGB. Everything else that could turn into a wrong label raises
``DataError``: a missing, empty, corrupt or truncated file, a mask that is not a lossless
8-bit palette or single-channel PNG (16-bit, RGB, JPEG), a label value outside
``[0, num_classes)`` other than the ignore label, a mask whose size differs from its image.

No TensorFlow here: these functions run in the builders' Python generators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import Optional

import numpy as np
import scipy.io
from PIL import Image

__all__ = ["DataError", "ExampleFiles", "LoadedImage", "read_image", "read_mask", "read_example",
           "files_fingerprint"]

# PIL modes holding a single 16-bit channel (PNG "I;16" and its byte orders).
_IMAGE_MODES_16BIT = ("I;16", "I;16B", "I;16L")
_IMAGE_MODES_TO_RGB = ("L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "1")


class DataError(ValueError):
    """A problem with one data file, reported as one line: ``<file>: <problem>``.

    Attributes:
        kind: a short category for counting problems (``missing``, ``empty``, ``corrupt``,
            ``mask_format``, ``labels``, ``size_mismatch``, ``image_format``, ``duplicate``,
            ``outside``: a split list naming a path outside the dataset).
        path: the file at fault.
        problem: what is wrong with it and, where it helps, what was expected.
    """

    def __init__(self, kind: str, path, problem: str):
        self.kind = kind
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class ExampleFiles:
    """Where one example lives on disk.

    Attributes:
        example_id: the id used in split lists and as the record's ``file_name``.
        image_path: the image file (JPEG, PNG, ...).
        mask_path: a palette or single-channel PNG, or an SBD ``cls/*.mat`` file.
        listed_in: the split list (or folder) that named this example, for messages.
    """

    example_id: str
    image_path: str
    mask_path: str
    listed_in: str


@dataclasses.dataclass
class LoadedImage:
    """A decoded image and what to store for it.

    Attributes:
        pixels: uint8 [H, W, 3] RGB.
        encoded: the file's own bytes when TensorFlow decodes them to the same RGB image (an
            RGB JPEG, kept as is to avoid re-encoding), else None (store ``pixels``).
        converted_from: the PIL mode converted to RGB (e.g. ``"L"``, ``"CMYK"``), or None.
    """

    pixels: np.ndarray
    encoded: Optional[bytes]
    converted_from: Optional[str]


def _open(path, listed_in: Optional[str], content: Optional[bytes] = None) -> Image.Image:
    """Opens and fully decodes an image file (or ``content``, the bytes of the file ``path`` names).

    Missing, empty and corrupt files raise DataError.
    """
    if content is None and not os.path.isfile(path):
        where = f" (listed in {listed_in})" if listed_in else ""
        raise DataError("missing", path, f"file not found{where}")
    if (len(content) if content is not None else os.path.getsize(path)) == 0:
        raise DataError("empty", path, "empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(content) if content is not None else path)
        # Image.open reads only the header; load() decodes every pixel, which is what
        # detects a truncated or corrupt file.
        image.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... by decoder
        raise DataError("corrupt", path, f"corrupt or truncated image file ({err})") from None
    return image


def read_image(path, listed_in: Optional[str] = None, content: Optional[bytes] = None) -> LoadedImage:
    """Reads an image as 8-bit RGB.

    Args:
        path: image file.
        listed_in: the split list naming it, quoted when the file is missing.
        content: the file's bytes when they are already in memory (e.g. read from another
            TFDS dataset); ``path`` then only names the image in messages.

    Returns:
        LoadedImage with ``pixels`` uint8 [H, W, 3].

    Raises:
        DataError: missing, empty, corrupt/truncated, or a mode with no RGB meaning.
    """
    image = _open(path, listed_in, content)
    if image.mode == "RGB":
        pixels = np.asarray(image)
        encoded = None
        if image.format == "JPEG":
            if content is not None:
                encoded = content
            else:
                with open(path, "rb") as f:
                    encoded = f.read()
        return LoadedImage(pixels, encoded, None)
    if image.mode in _IMAGE_MODES_16BIT:
        # Keep the 8 most significant bits; PIL's convert("RGB") would clip at 255 instead.
        gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return LoadedImage(np.repeat(gray[..., None], 3, axis=-1), None, image.mode)
    if image.mode in _IMAGE_MODES_TO_RGB:
        # RGBA and LA drop their alpha channel; CMYK and YCbCr convert with PIL's formulas.
        return LoadedImage(np.asarray(image.convert("RGB")), None, image.mode)
    raise DataError("image_format", path, f"unsupported image mode {image.mode!r}; expected an 8-bit "
                    "RGB, grayscale, RGBA, CMYK or palette image")


def _check_labels(path, mask: np.ndarray, num_classes: int, ignore_label: int) -> None:
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise DataError("labels", path, f"label values {shown} outside 0..{num_classes - 1} "
                        f"(ignore label {ignore_label})")


def read_mask(path, num_classes: int, ignore_label: int = 255,
              listed_in: Optional[str] = None) -> np.ndarray:
    """Reads a class-index mask: a palette or single-channel 8-bit PNG, or an SBD .mat file.

    A palette PNG gives its palette indices (the VOC convention: index = class, 255 = void),
    never its colours.

    Args:
        path: ``.png`` mask, or SBD ``cls/<id>.mat`` (``GTcls.Segmentation``).
        num_classes: labels must lie in ``[0, num_classes)``...
        ignore_label: ...or equal this.
        listed_in: the split list naming it, quoted when the file is missing.

    Returns:
        uint8 [H, W] class indices.

    Raises:
        DataError: missing, empty, corrupt, not a lossless 8-bit index mask, or bad labels.
    """
    if os.fspath(path).endswith(".mat"):
        mask = _read_sbd_mask(path, listed_in)
    else:
        image = _open(path, listed_in)
        if image.format != "PNG":
            raise DataError("mask_format", path, f"mask is {image.format}, expected a PNG (lossless; "
                            "JPEG compression changes label values)")
        if image.mode in _IMAGE_MODES_16BIT or image.mode == "I":
            raise DataError("mask_format", path, "16-bit mask PNG; expected an 8-bit palette or "
                            "single-channel PNG of class indices")
        if image.mode in ("RGB", "RGBA"):
            raise DataError("mask_format", path, f"{image.mode} colour mask PNG; expected a palette "
                            "(mode P) or single-channel PNG of class indices")
        if image.mode not in ("P", "L"):
            raise DataError("mask_format", path, f"mask mode {image.mode!r}; expected a palette "
                            "(mode P) or single-channel 8-bit PNG of class indices")
        mask = np.asarray(image)
    _check_labels(path, mask, num_classes, ignore_label)
    return mask


def _read_sbd_mask(path, listed_in: Optional[str]) -> np.ndarray:
    """Reads ``GTcls.Segmentation`` from an SBD ``cls/*.mat`` file (uint8 [H, W])."""
    if not os.path.isfile(path):
        where = f" (listed in {listed_in})" if listed_in else ""
        raise DataError("missing", path, f"file not found{where}")
    if os.path.getsize(path) == 0:
        raise DataError("empty", path, "empty file (0 bytes)")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises ValueError, TypeError, OSError... by corruption
        raise DataError("corrupt", path, f"corrupt .mat file ({err})") from None
    segmentation = getattr(mat.get("GTcls"), "Segmentation", None)
    if segmentation is None:
        raise DataError("mask_format", path, "no GTcls.Segmentation; expected an SBD cls/*.mat file")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer) \
            or segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
        raise DataError("mask_format", path, f"GTcls.Segmentation is {segmentation.dtype} "
                        f"{list(segmentation.shape)}; expected a 2-D array of class indices 0..255")
    return segmentation.astype(np.uint8)


def read_example(files: ExampleFiles, num_classes: int,
                 ignore_label: int = 255) -> tuple[LoadedImage, np.ndarray]:
    """Reads and checks one image and its mask.

    Args:
        files: where the example lives.
        num_classes: labels must lie in ``[0, num_classes)`` or equal ``ignore_label``.
        ignore_label: the label of pixels that no loss or metric counts.

    Returns:
        (LoadedImage, mask uint8 [H, W]).

    Raises:
        DataError: anything ``read_image`` / ``read_mask`` reject, or a mask whose size
        differs from its image's (reported against the mask).
    """
    image = read_image(files.image_path, files.listed_in)
    mask = read_mask(files.mask_path, num_classes, ignore_label, files.listed_in)
    if mask.shape != image.pixels.shape[:2]:
        raise DataError("size_mismatch", files.mask_path,
                        f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                        f"{os.path.basename(files.image_path)} is "
                        f"{image.pixels.shape[1]}x{image.pixels.shape[0]}")
    return image, mask


def files_fingerprint(paths, extra: str = "") -> str:
    """A short hash of file names, sizes and modification times (not contents: fast).

    Prepared records remember the fingerprint of the files they were built from, so records
    from files that have since changed (a regenerated built-in dataset, an edited folder) are
    rebuilt rather than silently reused.

    Paths are resolved first (``os.path.realpath``), so a ``data.root`` given once relative and
    once absolute, or through a symlink, fingerprints the same and does not rebuild the records.

    Args:
        paths: files to fingerprint; missing ones count as missing.
        extra: settings that also shape the records (split lists, class count...).

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256(extra.encode())
    for path in sorted(os.path.realpath(os.fspath(p)) for p in paths):
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:16]
