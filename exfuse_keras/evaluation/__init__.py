"""Evaluation: the VOC metric over a split (behind evaluate.py), its pictures and a prediction gallery."""
