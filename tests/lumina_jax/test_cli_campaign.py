"""`lumina-jax generate`: numeric options out of range stop before any campaign work."""

import pytest
from typer.testing import CliRunner

from lumina_jax.cli import app
from lumina_jax.errors import UserError


@pytest.mark.parametrize("option,value,message", [
    ("--seed", "-1", "--seed must be >= 0, got -1"),
    ("--seed", str(2**64), "--seed must be below 2**63"),
    ("--synth-workers", "0", "--synth-workers must be >= 1, got 0"),
    ("--synth-workers", "-2", "--synth-workers must be >= 1, got -2"),
    ("--jobs-per-gpu", "-1", "--jobs-per-gpu must be >= 1, got -1"),
    ("--gpu-threads", "0", "--gpu-threads must be >= 1"),
    ("--cpu-threads", "0", "--cpu-threads must be >= 1"),
    ("--n-packets", "0", "--n-packets must be >= 1"),
    ("--n-iters", "0", "--n-iters must be >= 1"),
    ("--nlte-start-iter", "-1", "--nlte-start-iter must be >= 0"),
])
def test_out_of_range_options_are_refused_before_any_work(monkeypatch, tmp_path, option, value, message):
    import runners.campaign

    def reached(*a, **k):
        raise AssertionError("the campaign started")

    monkeypatch.setattr(runners.campaign, "generate", reached)
    out = tmp_path / "c.h5"
    r = CliRunner().invoke(app, ["generate", "--stage", "1", "--n-models", "4", "--out", str(out), option, value])
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output
    assert list(tmp_path.iterdir()) == []

