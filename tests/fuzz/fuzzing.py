"""Shared Hypothesis settings for the fuzz tests: bounded (a few minutes in all on the CI machine), reproducible.

``derandomize=True``: every run tries the same examples (a CI failure reproduces locally with the same command);
a failure prints the falsifying example and a ``@reproduce_failure`` blob. To explore new examples, run
``DEPLOYKIT_FUZZ_EXPLORE=1 python -m pytest tests/fuzz --hypothesis-seed=N`` (N reproduces that exploration).
``DEPLOYKIT_FUZZ_EXAMPLES`` scales every test's example count (default 1)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXPLORE = os.environ.get("DEPLOYKIT_FUZZ_EXPLORE") == "1"
SCALE = float(os.environ.get("DEPLOYKIT_FUZZ_EXAMPLES", "1"))


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=not EXPLORE,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
