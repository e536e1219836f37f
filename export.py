"""Export ExFuse for deployment:
``python export.py --weights runs/quickstart --format saved_model --output export/quickstart``."""

import sys

from exfuse_keras.onednn import prefer_onednn

prefer_onednn()  # before TensorFlow is imported (exfuse_keras/onednn.py)

from exfuse_keras.export.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
