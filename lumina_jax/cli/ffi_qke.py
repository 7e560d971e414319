"""``lumina-jax ffi solve`` and ``ffi generate``: the QKE ground-truth solver (box3d_jax.qke).

Commands (added to the ``ffi`` group of :mod:`lumina_jax.cli.ffi`):
  ffi solve IN.h5 --out OUT.h5 [--json]          asymptotic states of every row of IN.h5
  ffi generate --n N --out FILE.h5 [--resume]    sample initial moments, solve, write a dataset
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lumina_jax.cli._output import check_out_file
from lumina_jax.cli.ffi import emit, ffi_app
from lumina_jax.errors import ParameterError


def register(app: typer.Typer) -> None:
    """Add ``solve`` and ``generate`` to the ``ffi`` group (``app`` is the main app; unused)."""
    register_into(ffi_app)


def _config(n_z: int, order: int, t_end_growth: float, cfl: float, n_wavelengths: float, lsa_order: int,
            seed: int, conservation_tol: float):
    from box3d_jax import qke

    return qke.QKEConfig(
        n_z=n_z, lebedev_order=order, t_end_growth=t_end_growth, cfl=cfl, n_wavelengths=n_wavelengths,
        lsa_order=lsa_order, seed=seed, conservation_tol=conservation_tol,
    ).validate()


def _progress(disable: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=Console(stderr=True), transient=False, disable=disable,
    )


def register_into(ffi_app: typer.Typer) -> None:
    """Attach the commands to an existing ``ffi`` Typer group."""

    @ffi_app.command("solve")
    def solve_cmd(
        infile: Path = typer.Argument(..., help="HDF5 file with F4_initial(1|ccm) [n, 4, 2, 3] (Rhea/Emu format)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output HDF5: F4_initial, F4_final, F4_final_stddev, growthRate."),
        n_z: int = typer.Option(128, help="Cells (Fourier modes) along the box."),
        order: int = typer.Option(29, help="Lebedev order of the directions (29: 302, 17: 110)."),
        t_end_growth: float = typer.Option(60.0, help="Run length in e-folding times 1/Γ_LSA."),
        cfl: float = typer.Option(0.4, help="Time step × max‖H‖."),
        n_wavelengths: float = typer.Option(8.0, help="Box length in fastest-growing wavelengths."),
        lsa_order: int = typer.Option(17, help="Lebedev order of the box-sizing LSA (0: same as --order)."),
        seed: int = typer.Option(0, help="Seed of the random off-diagonal perturbations (row i: seed + i)."),
        batch: int = typer.Option(1, min=1, help="Rows evolved together under jax.vmap (GPU: larger)."),
        conservation_tol: float = typer.Option(1e-6, help="Flag runs whose conservation error exceeds this (n_tot)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --out (never the input file)."),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    ) -> None:
        """Run the multi-angle QKE solver on every row of IN.h5 and write the asymptotic states.

        Rows whose run fails an acceptance test (no saturation within t_end/3, conservation,
        late-time fluctuations) are still written, and listed in the summary.
        """
        import numpy as np

        from box3d_jax import io, qke

        cfg = _config(n_z, order, t_end_growth, cfl, n_wavelengths, lsa_order, seed, conservation_tol)
        check_out_file(out, force=force, inputs=(infile,))
        ds = io.read_dataset(infile)
        if ds.nf != 3:
            raise ParameterError(f"{infile}: the QKE solver needs NF = 3 data, got NF = {ds.nf}")
        if (ds.F4_initial[..., 3].sum(axis=(1, 2)) <= 0).any():
            raise ParameterError(f"{infile}: a row has zero total number density")
        fins, stds, growth, results = [], [], [], []
        t0 = time.perf_counter()
        with _progress(as_json) as prog:
            task = prog.add_task("QKE", total=ds.n, info="")
            for s in range(0, ds.n, batch):
                blk = ds.F4_initial[s : s + batch]
                f, sd, g, r = qke.asymptotic_state(blk, cfg, seed=seed + s, batch=batch)
                fins.append(f)
                stds.append(sd)
                growth.append(g * qke.SQRT2_GF_OVER_HBAR)
                results += r
                prog.update(task, advance=len(blk), info=f"{sum(x.ok for x in results)} accepted")
        seconds = time.perf_counter() - t0
        growth_arr = np.nan_to_num(np.concatenate(growth), nan=0.0)
        io.write_dataset(out, ds.F4_initial, np.concatenate(fins), np.concatenate(stds), growth_arr)
        summary = {
            "input": str(infile),
            "output": str(out),
            "n_points": ds.n,
            "n_accepted": sum(r.ok for r in results),
            "rejected": {i: r.reason for i, r in enumerate(results) if not r.ok},
            "max_conservation_error": max(r.conservation_err for r in results),
            "growth_rate_fit_over_lsa": [  # null where no rate could be fitted
                (r.growth_rate / r.growth_lsa if r.growth_lsa > 0 else None) for r in results
            ],
            "resolution": {"n_z": n_z, "n_dir": int(qke.lebedev.n_points(order))},
            "seconds": round(seconds, 2),
        }
        emit(summary, as_json)

    @ffi_app.command("generate")
    def generate_cmd(
        n: int = typer.Option(..., "--n", min=1, help="Number of accepted points wanted."),
        out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 (Rhea/Emu format + generation metadata)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an existing file made with the same settings."),
        n_z: int = typer.Option(128, help="Cells (Fourier modes) along the box."),
        order: int = typer.Option(29, help="Lebedev order of the directions (29: 302, 17: 110)."),
        t_end_growth: float = typer.Option(60.0, help="Run length in e-folding times 1/Γ_LSA."),
        cfl: float = typer.Option(0.4, help="Time step × max‖H‖."),
        n_wavelengths: float = typer.Option(8.0, help="Box length in fastest-growing wavelengths."),
        lsa_order: int = typer.Option(17, help="Lebedev order of the box-sizing LSA (0: same as --order)."),
        gamma_min: float = typer.Option(0.01, help="Skip unstable points growing slower than this (√2G_F n_tot/ħ)."),
        p_stable: float = typer.Option(0.25, help="Probability of keeping a stable candidate."),
        seed: int = typer.Option(0, help="Campaign seed (sampling and perturbations)."),
        batch: int = typer.Option(1, min=1, help="Runs evolved together under jax.vmap (GPU: larger)."),
        checkpoint_every: int = typer.Option(10, min=1, help="Rewrite the file (atomically) every this many points."),
        conservation_tol: float = typer.Option(1e-6, help="Reject runs whose conservation error exceeds this (n_tot)."),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    ) -> None:
        """Sample physical initial moments, run the QKE solver and write a training dataset."""
        from box3d_jax import generate as G

        if not 0.0 <= p_stable <= 1.0:
            raise ParameterError(f"--p-stable must be in [0, 1], got {p_stable}")
        cfg = _config(n_z, order, t_end_growth, cfl, n_wavelengths, lsa_order, seed, conservation_tol)
        scfg = G.SamplerConfig(p_stable=p_stable, gamma_min=gamma_min)
        check_out_file(out, force=True)  # an existing file: G.generate refuses it unless --resume
        t0 = time.perf_counter()
        with _progress(as_json) as prog:
            task = prog.add_task("generate", total=n, info="")

            def cb(done: int, total: int, stats: dict) -> None:
                prog.update(task, completed=done,
                            info=f"rejected {stats['rejected']}, skipped {stats['skipped']}")

            stats = G.generate(out, n, cfg, sampler=scfg, seed=seed, resume=resume, batch=batch,
                               checkpoint_every=checkpoint_every, on_progress=cb)
        summary = {"output": str(out), **stats, "seconds": round(time.perf_counter() - t0, 1)}
        emit(summary, as_json)
