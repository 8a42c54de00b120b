"""Entry point of ``python -m pneumo``."""
import sys

from pneumo.cli import main

if __name__ == "__main__":
    sys.exit(main())
