"""Evaluate ExFuse: ``python evaluate.py --weights runs/quickstart``."""

import sys

from exfuse_keras.onednn import prefer_onednn

prefer_onednn()  # before TensorFlow is imported (exfuse_keras/onednn.py)

from exfuse_keras.evaluation.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
