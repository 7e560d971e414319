"""Fixtures of the runner tests (the stand-in LUMINA lives in runner_helpers.py)."""

from runner_helpers import _tiny_ref, fake_lumina, lumina_ref, space1  # noqa: F401
