"""SS pretraining of a backbone on ImageNet: see exfuse_keras/pretraining/ss.py."""

import sys

from exfuse_keras.pretraining.ss import main

if __name__ == "__main__":
    sys.exit(main())
