"""`python -m cdrtrace.cli`: the `cdrtrace` command."""
import sys

from . import main

sys.exit(main())
