"""benchmarks/docs_figures.py: every docs/*.png has an entry, --list and --dry-run print each
figure's commands without running any, bad --only names are one-line errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "docs_figures.py"
PNGS = sorted(p.stem for p in (ROOT / "docs").glob("*.png"))


def _module():
    spec = importlib.util.spec_from_file_location("benchmarks_docs_figures", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "LUMINA_BIN"}
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def inputs(tmp_path):
    """Stand-ins for the SN 2011fe folder and a LUMINA-SN binary (never run: --dry-run)."""
    data = tmp_path / "sn2011fe"
    data.mkdir()
    for n in ("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv"):
        (data / n).write_text("")
    lumina = tmp_path / "lumina"
    lumina.write_text("")
    return ["--data", str(data), "--lumina-bin", str(lumina)]


def test_every_docs_figure_has_an_entry_whose_commands_write_it():
    mod = _module()
    assert PNGS and sorted(mod.FIGURES) == PNGS
    values = {mod.PY: "python", mod.DATA: "DATA", mod.LUMINA: "LUMINA"}
    for name, fig in mod.FIGURES.items():
        args = [a for group in mod.commands(fig, values) for cmd in group for a in cmd]
        assert f"docs/{name}.png" in args, name
        assert fig.cost and (fig.expensive == fig.cost.startswith("EXPENSIVE")), name
    for name in ("coverage_stage1", "sn2011fe_chain"):
        assert mod.FIGURES[name].expensive
    assert mod.order(list(mod.FIGURES)).index("sn2011fe_chain") < mod.order(list(mod.FIGURES)).index("sn2011fe_abundance")


def test_list_prints_every_figure_with_its_command_inputs_and_cost(inputs):
    code, out, err = _run("--list", *inputs)
    assert code == 0, err
    for name in PNGS:
        assert f"\n{name}  (docs/{name}.png" in "\n" + out, name
    assert out.count("  cost:   ") == out.count("  inputs: ") == len(PNGS)
    assert "lumina-jax check coverage --stage 1 --n 50" in out and "EXPENSIVE" in out
    assert "python benchmarks/compare_sn2011fe.py --data " in out


def test_dry_run_prints_the_commands_and_runs_none(inputs):
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("*.png")}
    code, out, err = _run("--dry-run", *inputs)
    assert code == 0, err
    lines = out.splitlines()
    for name in PNGS:  # each figure either runs (its commands printed) or is skipped with a reason
        ran = f"== {name}: " in out
        skipped = [ln for ln in lines if ln.startswith(f"skip {name}: ")]
        assert ran != bool(skipped) and len(skipped) <= 1, name
    assert f"$ python benchmarks/compare_lumina.py --lumina-bin {inputs[3]}" in out
    assert "--out docs/sn2011fe_comparison.png" in out and "--figure docs/sn2011fe_chain.png" in out
    # the abundance figure reads the chain's stage-3 fit: after it in the same run
    assert out.index("== sn2011fe_chain:") < out.index("== sn2011fe_abundance:")
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("*.png")} == before


def test_only_runs_a_subset_and_fails_on_a_figure_that_cannot_run(inputs, tmp_path):
    code, out, err = _run("--dry-run", "--only", "sn2011fe_comparison", *inputs)
    assert code == 0 and out.startswith("== sn2011fe_comparison:") and "lumina" not in out, (out, err)
    code, out, _ = _run("--dry-run", "--only", "lumina_comparison", "--lumina-bin", str(tmp_path / "none"))
    assert code == 1 and out.startswith("skip lumina_comparison: no LUMINA-SN binary")


def test_unknown_only_name_is_a_one_line_error():
    code, out, err = _run("--only", "sn2011fe_comparison,nope", "--dry-run")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: unknown figure 'nope' for --only; known: ")
