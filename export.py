"""Export ExFuse for deployment:
``python export.py --weights runs/quickstart --format saved_model --output export/quickstart``."""

import sys

from exfuse_keras.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
