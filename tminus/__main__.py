"""``python -m tminus``: the same command as ``tminus`` (used to start child processes)."""

import sys

from tminus.deployments.cli import main

sys.exit(main())
