"""``python -m detzoo ...`` (and ``torchrun --nproc_per_node=N -m detzoo train ...``): the ``detzoo`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
