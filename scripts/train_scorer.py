"""Train the answer scorer: the same as ``python -m rag.train.scorer`` (its --help has the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.train.scorer import main

if __name__ == "__main__":
    sys.exit(main())
