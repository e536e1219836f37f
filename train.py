"""Train ExFuse: ``python train.py --config configs/quickstart.yaml --model-dir runs/quickstart``."""

import sys

from exfuse_keras.training.run import main

if __name__ == "__main__":
    sys.exit(main())
