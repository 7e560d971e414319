"""Shared test settings."""

import atexit
import os
import shutil
import tempfile
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
# One persistent compilation cache for the whole run, in a temporary folder: many tests compile
# the same programs (synthesizer, emulator, sampler kernels) and reuse them from here.  Set
# before JAX is imported, in the process that starts the run; pytest-xdist workers and the CLI
# subprocesses the tests start inherit it.  A size cap makes JAX lock the folder (filelock), so
# concurrent workers never read a half-written entry.
if "LUMINA_JAX_TESTS_XLA_DIR" not in os.environ:
    _XLA_DIR = tempfile.mkdtemp(prefix="lumina-jax-tests-xla-")
    os.environ["LUMINA_JAX_TESTS_XLA_DIR"] = _XLA_DIR
    atexit.register(shutil.rmtree, _XLA_DIR, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["LUMINA_JAX_TESTS_XLA_DIR"]
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The read-only reference data beside the repository (never committed); skip when absent."""
    if not (SHARED_DATA / "sn2011fe").is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA / 'sn2011fe'} not present on this machine")
    return SHARED_DATA
