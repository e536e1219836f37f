"""Inference: test-time augmentation, sliding windows and the Segmenter API."""
