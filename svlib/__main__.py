"""``python -m svlib …`` = the ``svlib`` command; lets torchrun start it: ``torchrun --nproc_per_node 8 -m svlib train …``."""

import sys

from svlib.cli import main

sys.exit(main())
