"""``python -m gen_research``: see :mod:`gen_research.cli`."""

import sys

from gen_research.cli import main

if __name__ == "__main__":
    sys.exit(main())
