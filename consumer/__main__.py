"""``python -m consumer`` runs the command line."""

import sys

from consumer.cli import main

sys.exit(main())
