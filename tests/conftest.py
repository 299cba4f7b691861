"""Shared set-up for every test directory (unit/, e2e/, docs/).

tests/ itself holds the helpers (``helpers.py``, ``ds_fixtures.py``) that the test files import by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
