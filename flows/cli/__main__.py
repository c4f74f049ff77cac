"""``python -m flows.cli``: the ``avff`` command from a checkout (tests and benchmarks run it so)."""

import sys

from flows.cli import main

sys.exit(main())
