"""Inference: test-time augmentation, sliding windows and the Segmenter API."""

from exfuse_keras.inference.segmenter import Segmenter, load_image

__all__ = ["Segmenter", "load_image"]
