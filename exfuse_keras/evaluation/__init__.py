"""Evaluation: the VOC metric over a split (behind evaluate.py)."""
