"""Predict masks: ``python predict.py photo.jpg photos/ --weights runs/quickstart --output predictions``."""

import sys

from exfuse_keras.inference.predict import main

if __name__ == "__main__":
    sys.exit(main())
