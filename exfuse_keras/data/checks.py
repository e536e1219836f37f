"""Reading one example from disk with every check that keeps a wrong label out of training.

The TFDS builders (voc.py, folder.py) and the validation command (validate.py) read files only
through these functions, so a file the validator accepts is a file the builders accept, and a
problem stops preparation with the same one-line message the validator reports.

Handled silently (the result is what the file means): grayscale, CMYK, RGBA, palette and 16-bit
grayscale images become 8-bit RGB. Masks are read as ``data.mask_format`` says: class indices
(a palette PNG's indices, a single-channel PNG's values) or colours looked up in the classes'
palette (``mask_colours``), then ``data.label_map`` replaces values (``{255: 1}`` for 0/255
black-and-white masks). Everything else that could turn into a wrong label raises
``DataError``: a missing, empty, corrupt or truncated file, a mask that is not a lossless
8-bit palette or single-channel PNG (16-bit, RGB, JPEG) when indices are expected, a colour
outside the palette, a label value outside ``[0, num_classes)`` other than the ignore label, a
mask whose size differs from its image. ``MaskTally`` counts labels over a split, for the
checks no single file can fail: a dataset whose masks hold only 0 and the ignore label
(binary masks read as background and ignored pixels), and classes that never occur.

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

__all__ = ["DataError", "ExampleFiles", "LoadedImage", "MaskTally", "mask_colours", "mask_reading", "read_image", "read_mask",
           "read_example", "files_fingerprint"]

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
                        f"(ignore label {ignore_label}); raise data.num_classes, or map them with "
                        f"data.label_map (e.g. {{{int(bad[0])}: 1}})")


def mask_colours(palette, num_classes: int, ignore_label: int) -> dict:
    """``{(r, g, b): label}`` for ``data.mask_format: rgb``: the classes' colours, and the ignore
    label's (``data.palette``'s entry if it has one, else VOC's void colour, as
    ``palette.colorize`` draws it).

    Raises:
        ValueError: two classes (or a class and the ignore label) share a colour.
    """
    from exfuse_keras.data.palette import _full_palette

    full = _full_palette(np.asarray(palette, np.int64).reshape(-1, 3))
    colours = {}
    for label in [*range(num_classes), ignore_label]:
        colour = tuple(int(v) for v in full[label])
        if colour in colours:
            raise ValueError(f"data.palette: labels {colours[colour]} and {label} have the same colour {colour}; "
                             "data.mask_format: rgb needs one colour per label")
        colours[colour] = label
    return colours


def mask_reading(data) -> dict:
    """``read_mask``'s ``colours`` and ``label_map`` for a config's data section."""
    colours = None
    if data.mask_format == "rgb":
        from exfuse_keras.data.palette import voc_palette

        palette = data.palette if data.palette is not None else voc_palette(data.num_classes).tolist()
        colours = mask_colours(palette, data.num_classes, data.ignore_label)
    return {"colours": colours, "label_map": dict(data.label_map) or None}


def _labels_from_colours(path, image: Image.Image, colours: dict) -> np.ndarray:
    if image.mode in _IMAGE_MODES_16BIT or image.mode == "I":
        raise DataError("mask_format", path, "16-bit mask PNG; expected an 8-bit colour PNG (data.mask_format: rgb)")
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int64)
    labels = np.array(list(colours.values()), np.uint8)
    order = np.argsort(keys)
    keys, labels = keys[order], labels[order]
    found = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[found] == codes
    if not known.all():
        unknown = np.unique(codes[~known])
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:3])
        raise DataError("labels", path, f"{unknown.size} colour(s) not in data.palette, e.g. {shown} "
                        "(data.mask_format: rgb reads each pixel's colour as the class of that palette "
                        "colour; expected only the classes' and the ignore label's colours)")
    return labels[found]


def read_mask(path, num_classes: int, ignore_label: int = 255, listed_in: Optional[str] = None,
              colours: Optional[dict] = None, label_map: Optional[dict] = None) -> np.ndarray:
    """Reads a mask as class labels: a palette or single-channel 8-bit PNG, an SBD .mat file,
    or (``colours`` given) a colour PNG.

    A palette PNG gives its palette indices (the VOC convention: index = class, 255 = void),
    never its colours, unless ``colours`` is given (``data.mask_format: rgb``): then every mask
    PNG (RGB, RGBA, palette, grey) is read as colours, each looked up in ``colours``.

    Args:
        path: ``.png`` mask, or SBD ``cls/<id>.mat`` (``GTcls.Segmentation``).
        num_classes: labels must lie in ``[0, num_classes)``...
        ignore_label: ...or equal this.
        listed_in: the split list naming it, quoted when the file is missing.
        colours: ``{(r, g, b): label}`` (``mask_colours``) to read colour masks.
        label_map: ``{value: label}`` applied to the values read (``data.label_map``).

    Returns:
        uint8 [H, W] class indices.

    Raises:
        DataError: missing, empty, corrupt, not a lossless 8-bit mask, a colour outside
        ``colours``, or bad labels.
    """
    if os.fspath(path).endswith(".mat"):
        mask = _read_sbd_mask(path, listed_in)
    else:
        image = _open(path, listed_in)
        if image.format != "PNG":
            raise DataError("mask_format", path, f"mask is {image.format}, expected a PNG (lossless; "
                            "JPEG compression changes label values)")
        if colours is not None:
            mask = _labels_from_colours(path, image, colours)
        else:
            if image.mode in _IMAGE_MODES_16BIT or image.mode == "I":
                raise DataError("mask_format", path, "16-bit mask PNG; expected an 8-bit palette or "
                                "single-channel PNG of class indices")
            if image.mode in ("RGB", "RGBA"):
                raise DataError("mask_format", path, f"{image.mode} colour mask PNG; expected a palette "
                                "(mode P) or single-channel PNG of class indices, or data.mask_format: rgb "
                                "for masks drawn in data.palette's colours")
            if image.mode not in ("P", "L"):
                raise DataError("mask_format", path, f"mask mode {image.mode!r}; expected a palette "
                                "(mode P) or single-channel 8-bit PNG of class indices")
            mask = np.asarray(image)
    if label_map:
        table = np.arange(256, dtype=np.uint8)
        for value, label in label_map.items():
            table[int(value)] = int(label)
        mask = table[mask]
    _check_labels(path, mask, num_classes, ignore_label)
    return mask


class MaskTally:
    """Label counts over a split's masks, for what no single file shows.

    ``add(path, mask)`` for each mask read; then ``binary_trap()`` says whether every mask holds
    only 0 and the ignore label (0/255 black-and-white masks: read as they are, every object
    pixel would be ignored and the model would learn background alone), and ``absent()`` lists
    the classes no mask holds.
    """

    def __init__(self, num_classes: int, ignore_label: int):
        self.num_classes, self.ignore_label = num_classes, ignore_label
        self.pixels = np.zeros(256, np.int64)
        self.images = np.zeros(256, np.int64)
        self.first_path: Optional[str] = None

    def add(self, path, mask: np.ndarray) -> None:
        counts = np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256)
        self.pixels += counts
        self.images += counts > 0
        if self.first_path is None:
            self.first_path = os.fspath(path)

    def binary_trap(self) -> Optional[DataError]:
        """The error for a split whose masks hold only 0 and the ignore label, else None."""
        others = np.delete(self.pixels, [0, self.ignore_label])
        if self.first_path is None or self.pixels[self.ignore_label] == 0 or others.any():
            return None
        images = int(self.images[self.ignore_label])
        return DataError("labels", self.first_path,
                         f"every mask holds only 0 and {self.ignore_label} (in {images} of them "
                         f"{self.ignore_label} covers {self.pixels[self.ignore_label] / self.pixels.sum():.0%} of the "
                         f"pixels), and {self.ignore_label} is data.ignore_label: training would ignore every "
                         f"object pixel and learn background only. For black-and-white masks set "
                         f"data.label_map: {{{self.ignore_label}: 1}} (and data.num_classes: 2)")

    def absent(self) -> list[int]:
        """The classes in ``[0, num_classes)`` that no mask holds."""
        return [k for k in range(self.num_classes) if self.pixels[k] == 0]

    def absent_names(self, class_names=()) -> str:
        """``absent()`` for a message: ``"2 (car), 5 (bus)"`` (the index alone past ``class_names``)."""
        return ", ".join(f"{k} ({class_names[k]})" if k < len(class_names) else str(k) for k in self.absent())


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


def read_example(files: ExampleFiles, num_classes: int, ignore_label: int = 255,
                 colours: Optional[dict] = None, label_map: Optional[dict] = None) -> tuple[LoadedImage, np.ndarray]:
    """Reads and checks one image and its mask.

    Args:
        files: where the example lives.
        num_classes: labels must lie in ``[0, num_classes)`` or equal ``ignore_label``.
        ignore_label: the label of pixels that no loss or metric counts.
        colours, label_map: how the mask is read (``read_mask``).

    Returns:
        (LoadedImage, mask uint8 [H, W]).

    Raises:
        DataError: anything ``read_image`` / ``read_mask`` reject, or a mask whose size
        differs from its image's (reported against the mask).
    """
    image = read_image(files.image_path, files.listed_in)
    mask = read_mask(files.mask_path, num_classes, ignore_label, files.listed_in, colours, label_map)
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
