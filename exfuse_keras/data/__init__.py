"""Datasets, palettes and input pipelines."""
