"""``python -m hivetrain`` is the ``hivetrain`` command."""

import sys

from hivetrain.cli import main

sys.exit(main())
