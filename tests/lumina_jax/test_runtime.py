"""The XLA:CPU flags of ``lumina_jax._runtime``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A vmapped L-BFGS (a while-loop line search) over the stage-1 log density with the
# checkpoint's correlated emulator error: with jaxlib 0.10's concurrency-optimised CPU
# schedule this program never returned (all threads parked); with the package's flag it
# finishes in well under a minute on 2 cores.
PROGRAM = textwrap.dedent("""
    import numpy as np, jax, optax
    import lumina_jax
    from lumina_jax.emulator import load_emulator
    from lumina_jax.inference.likelihood import make_likelihood_data
    from lumina_jax.inference.density import flatten_model, make_setup, z_from_values
    from lumina_jax.observed import observation_from_model
    emu = load_emulator("lumina_jax/checkpoints/stage1_synth.h5")
    setup = make_setup(emu.space, n_poly=2)
    f = np.asarray(emu.spectrum(setup.base_theta()))
    obs = observation_from_model(emu.wavelength, f, emu.wavelength, emu.preprocess, noise_frac=0.02, seed=0)
    data = make_likelihood_data(obs.wavelength, obs.flux, obs.sigma, obs.mask, emu_basis=np.asarray(emu.error_basis),
                                stride=8)
    fm = flatten_model(setup, emu.spectrum_and_sigma, data)
    zs = jax.vmap(lambda u: z_from_values(fm, u, 0.0, 0.02))(jax.random.uniform(jax.random.PRNGKey(0), (8, 15)))
    neg = lambda z: -fm.logdensity(z)
    solver, vg = optax.lbfgs(), optax.value_and_grad_from_state(neg)
    def polish(z):
        def step(c, _):
            z, s = c
            v, g = vg(z, state=s)
            u, s = solver.update(g, s, z, value=v, grad=g, value_fn=neg)
            return (optax.apply_updates(z, u), s), v
        return jax.lax.scan(step, (z, solver.init(z)), None, length=50)[0][0]
    out = np.asarray(jax.jit(jax.vmap(polish))(zs))
    print("finite", bool(np.isfinite(out).all()))
""")


def test_package_sets_the_flag_unless_opted_out(monkeypatch):
    from lumina_jax import _runtime

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    _runtime.configure_xla_cpu()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_enable_concurrency_optimized_scheduler=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
    _runtime.configure_xla_cpu()  # the user's choice wins
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("LUMINA_JAX_XLA_DEFAULTS", "1")
    _runtime.configure_xla_cpu()
    assert os.environ["XLA_FLAGS"] == ""


def test_single_thread_option_adds_its_flags_and_jax_accepts_them(monkeypatch):
    from lumina_jax import _runtime

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    monkeypatch.setenv("LUMINA_JAX_SINGLE_THREAD", "1")
    _runtime.configure_xla_cpu()  # the user's own value of a flag wins
    assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_multi_thread_eigen=true",
                                               "--xla_cpu_enable_concurrency_optimized_scheduler=false",
                                               "intra_op_parallelism_threads=1"]
    # XLA aborts on a flag it does not know: a fresh process must start and compute with them
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["LUMINA_JAX_SINGLE_THREAD"] = "1"
    code = ("import os, lumina_jax, jax.numpy as jnp; print(os.environ['XLA_FLAGS']); "
            "print(float(jnp.linalg.solve(jnp.eye(3) * 2.0, jnp.ones(3)).sum()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    flags, value = out.stdout.split("\n")[:2]
    assert "--xla_cpu_multi_thread_eigen=false" in flags and "intra_op_parallelism_threads=1" in flags
    assert float(value) == 1.5


def test_box3d_jax_sets_the_same_flags():
    # box3d_jax keeps its own copy (it imports nothing from lumina_jax); the two must not drift
    from box3d_jax import _runtime as box3d_runtime
    from lumina_jax import _runtime

    assert box3d_runtime.FLAGS == _runtime.FLAGS


def test_vmapped_while_loop_over_the_woodbury_likelihood_finishes():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LUMINA_JAX_XLA_DEFAULTS")}
    try:
        r = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the vmapped L-BFGS program hung (XLA:CPU deadlock is back)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "finite True" in r.stdout


CACHE_PROGRAM = textwrap.dedent("""
    import jax, jax.numpy as jnp
    import lumina_jax
    from lumina_jax._runtime import configure_compilation_cache
    hits = []
    jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name))
    print("dir", configure_compilation_cache())
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1.0)
    print("value", float(f(jnp.ones((3, 3)))[0, 0]))
    print("hits", sum("cache_hits" in h for h in hits))
    print("max", jax.config.jax_compilation_cache_max_size)
""")


def _cache_run(env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "LUMINA_JAX_XLA_CACHE"))}
    r = subprocess.run([sys.executable, "-c", CACHE_PROGRAM], cwd=ROOT, env={**base, **env}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(line.split(" ", 1) for line in r.stdout.splitlines())


def test_cli_compilation_cache_stores_and_reuses_programs(tmp_path):
    env = {"LUMINA_JAX_CACHE": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    first = _cache_run(env)
    assert first["dir"] == str(tmp_path / "xla") and first["hits"] == "0" and first["max"] == str(1 << 30)
    assert any((tmp_path / "xla").iterdir()), "nothing was written to the cache folder"
    second = _cache_run(env)  # a new process finds the compiled program: same value, one hit or more
    assert int(second["hits"]) >= 1 and second["value"] == first["value"]


def test_compilation_cache_off_switch_and_users_choice(tmp_path):
    off = _cache_run({"LUMINA_JAX_CACHE": str(tmp_path), "LUMINA_JAX_XLA_CACHE": "0"})
    assert off["dir"] == "None" and not (tmp_path / "xla").exists()
    mine = tmp_path / "mine"
    chosen = _cache_run({"LUMINA_JAX_CACHE": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": str(mine)})
    assert chosen["dir"] == str(mine) and not (tmp_path / "xla").exists()
    capped = _cache_run({"LUMINA_JAX_CACHE": str(tmp_path), "JAX_COMPILATION_CACHE_MAX_SIZE": "12345"})
    assert capped["max"] == "12345"


def test_unusable_cache_folder_leaves_the_cache_off(tmp_path, monkeypatch):
    import jax

    from lumina_jax import _runtime

    before = jax.config.jax_compilation_cache_dir  # the test run's own folder (tests/conftest.py)
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        assert _runtime.configure_compilation_cache({"LUMINA_JAX_CACHE": str(blocker)}) is None  # mkdir fails
        monkeypatch.setattr(_runtime.os, "access", lambda *a: False)  # exists, not writable (any user, root too)
        assert _runtime.configure_compilation_cache({"LUMINA_JAX_CACHE": str(tmp_path / "ro")}) is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_cli_main_turns_the_cache_on_before_running(monkeypatch):
    import lumina_jax.cli as cli

    calls = []
    monkeypatch.setattr(cli, "configure_compilation_cache", lambda: calls.append("cache"))
    monkeypatch.setattr(sys, "argv", ["lumina-jax", "--help"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0 and calls == ["cache"]
