"""PASCAL VOC colour palette and palette-PNG helpers (pure numpy + Pillow)."""

import numpy as np
from PIL import Image


def voc_palette(n=256):
    """Returns the standard PASCAL VOC colour map.

    Each index spreads its bits over the high bits of R, G and B (bit 0 of
    each octal digit to R, bit 1 to G, bit 2 to B, most significant first).

    Args:
        n: number of entries.

    Returns:
        uint8 array of shape [n, 3].
    """
    c = np.arange(n, dtype=np.int64)
    pal = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for ch in range(3):
            pal[:, ch] |= ((c >> ch) & 1) << (7 - j)
        c = c >> 3
    return pal.astype(np.uint8)


def _full_palette(palette):
    """Pads `palette` to 256 entries with the VOC colours for the rest.

    Padding with VOC (rather than black) keeps index 255 at VOC's
    (224, 224, 192) "void" colour when the given palette is short.

    Args:
        palette: array-like [K, 3] with K <= 256 and values in 0..255.

    Returns:
        uint8 array of shape [256, 3].
    """
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) > 256:
        raise ValueError(f"palette must have shape [K<=256, 3], got {palette.shape}")
    if palette.size and (palette.min() < 0 or palette.max() > 255):
        raise ValueError("palette values must lie in 0..255")
    full = voc_palette(256)
    full[: len(palette)] = palette
    return full


def write_palette_png(path, mask, palette):
    """Writes a label mask as an indexed (mode "P") PNG, like VOC annotations.

    Args:
        path: output file path.
        mask: uint8 array [H, W] of class indices (255 = void).
        palette: array-like [K, 3]; padded to 256 entries with voc_palette.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"mask must be uint8 [H, W], got {mask.dtype} {mask.shape}")
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    img.putpalette(_full_palette(palette).reshape(-1).tolist())
    img.save(path, format="PNG")


def colorize(mask, palette):
    """Maps a label mask to RGB colours.

    Indices beyond the given palette get the VOC colour, so 255 renders as
    (224, 224, 192) unless the palette defines entry 255 itself; this matches
    what write_palette_png stores.

    Args:
        mask: integer array [H, W] with values in 0..255.
        palette: array-like [K, 3].

    Returns:
        uint8 array [H, W, 3].
    """
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask values must lie in 0..255")
    return _full_palette(palette)[mask.astype(np.uint8)]
