"""Shared test settings."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# JAX compiles on first call: no per-example deadline; a modest example count keeps CI fast.
settings.register_profile(
    "ci", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")

# Tests that call the CLI's main() must never write compiled programs into the user's cache
# (tests/lumina_jax/test_runtime.py checks the cache in a subprocess with a temporary folder).
os.environ["LUMINA_JAX_XLA_CACHE"] = "0"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The read-only reference data beside the repository (never committed); skip when absent."""
    if not (SHARED_DATA / "sn2011fe").is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA / 'sn2011fe'} not present on this machine")
    return SHARED_DATA
