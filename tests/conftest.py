"""Shared set-up for every test directory (unit/, e2e/, docs/).

tests/ itself holds the helpers (``helpers.py``, ``ds_fixtures.py``) that the test files import by name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Before any test imports huggingface_hub or tokenizers: the forked runs (forked_run.py) inherit what the test
# process imported, and these are read at import time. The hub is never reachable from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
