"""Hypothesis runs derandomized by default, so that the suite is deterministic (the same
examples every run, no example database written).  HYPOTHESIS_PROFILE=explore searches
with fresh random examples and a larger budget."""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
