"""``python -m aihwkit_nabn ...``: the same as the ``aihwkit-nabn`` console script."""

import sys

from .cli import main

sys.exit(main())
