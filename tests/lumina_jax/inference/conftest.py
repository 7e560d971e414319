"""Fixtures of the inference tests (stand-ins live in inference_toys.py)."""

from inference_toys import space3, toy_emu  # noqa: F401  (fixtures)
