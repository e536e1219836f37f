"""Training: the run driver behind train.py."""
