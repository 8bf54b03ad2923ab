"""Hypothesis profiles: `fast` (default test run) and `long` (GPTFL_HYPOTHESIS_PROFILE=long)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("GPTFL_HYPOTHESIS_PROFILE", "fast"))
