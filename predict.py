"""Predict masks: ``python predict.py photo.jpg photos/ --weights runs/quickstart --output predictions``."""

import sys

from exfuse_keras.onednn import prefer_onednn

prefer_onednn()  # before TensorFlow is imported (exfuse_keras/onednn.py)

from exfuse_keras.inference.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
