"""`python -m cdrtrace.cli`: the `cdrtrace` command."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
