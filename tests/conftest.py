"""Suite-wide setup. The test suite names its own helper classes in configs (e.g. the callback
``tests.integration.helpers.CrashAtStep``): it allows the ``tests`` package the way a user allows theirs,
through $GEN_RESEARCH_IMPORTS (docs/security.md). Set in os.environ, so CLI subprocesses inherit it."""

import os

from gen_research.registry import IMPORTS_ENV

os.environ[IMPORTS_ENV] = ",".join(filter(None, [os.environ.get(IMPORTS_ENV, "").strip(), "tests"]))
