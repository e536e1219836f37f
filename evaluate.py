"""Evaluate ExFuse: ``python evaluate.py --weights runs/quickstart``."""

import sys

from exfuse_keras.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
