"""Independent numpy references for the layers' maths (no Keras, no TensorFlow)."""

import numpy as np


def conv2d_same(x, kernel, bias=None):
    """Stride-1 'same' convolution with zero padding. x [N,H,W,Ci], kernel [kh,kw,Ci,Co]."""
    kh, kw = kernel.shape[:2]
    # TF 'same' pads (k-1)//2 before and the rest after.
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, [(0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)])
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[3]), dtype=np.float64)
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("nhwi,io->nhwo", padded[:, a:a + h, b:b + w, :], kernel[a, b])
    if bias is not None:
        out += bias
    return out


def bilinear_resize(x, out_h, out_w):
    """Bilinear resize with half-pixel centres and edge clamping (TF2 / PyTorch align_corners=False)."""
    n, h, w, c = x.shape

    def axis_weights(out_size, in_size):
        src = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        src = np.clip(src, 0, in_size - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, in_size - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis_weights(out_h, h)
    x0, x1, fx = axis_weights(out_w, w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


def dap_reference(x, k):
    """Densely Adjacent Prediction by a direct loop over its formula (docs/design.md, "DAP")."""
    n, h, w, ck = x.shape
    classes, p = ck // (k * k), k // 2
    out = np.zeros((n, h, w, classes))
    for i in range(h):
        for j in range(w):
            for c in range(classes):
                for a in range(k):
                    for b in range(k):
                        ii, jj = i + a - p, j + b - p
                        if 0 <= ii < h and 0 <= jj < w:
                            out[:, i, j, c] += x[:, ii, jj, c * k * k + a * k + b]
    return out / (k * k)
