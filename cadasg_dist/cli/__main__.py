"""``python -m cadasg_dist.cli ARGS``: the ``cadasg`` command."""

import sys

from cadasg_dist.cli import main

sys.exit(main())
