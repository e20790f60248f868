"""`python -m ditlib ...`: the command line is `ditlib.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
