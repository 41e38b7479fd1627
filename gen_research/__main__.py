"""``python -m gen_research``: see :mod:`gen_research.commands.main`."""

import sys

from gen_research.commands.main import main

if __name__ == "__main__":
    sys.exit(main())
