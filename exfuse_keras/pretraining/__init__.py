"""Backbone pretraining: semantic supervision on ImageNet (ss.py)."""
