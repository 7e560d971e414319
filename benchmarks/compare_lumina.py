"""LUMINA-SN and the embedded synthesizer on the same models, beside TARDIS and SN 2011fe.

Two models, each exported with ``lumina-jax lumina export-ref`` (our atomic data and plasma
state) and run through a LUMINA-SN binary (200,000 packets, 10 iterations, rotation spectrum):

* the TARDIS configuration ``../shared/data/sn2011fe/sn2011fe.yml`` -- beside TARDIS's own
  spectrum of it and the observed SN 2011fe spectrum near B maximum;
* the SN 2011fe-like stage-1 model of ``lumina_jax.synth.state.SN2011FE_LIKE``.

All spectra are normalised by their mean over 3500-9000 A on the synthesizer's 5 A grid; the
script prints the normalised RMS of every pair and writes docs/lumina_comparison.png (and JSON
with --json).  LUMINA runs are kept in --workdir and reused when their spectrum exists.

    python benchmarks/compare_lumina.py --lumina-bin /path/to/lumina [--workdir runs/lumina_compare]
        [--n-packets 200000] [--n-iters 10] [--line-interaction scatter|downbranch|macroatom]
        [--radiation-field power_law|transfer]
        [--models tardis_config,sn2011fe_like] [--data ../shared/data/sn2011fe]
        [--out docs/lumina_comparison.png] [--json]

LUMINA's spectrum is a Monte Carlo histogram: its noise enters every RMS against it.
``--noise-from OTHER_WORKDIR`` (a finished run of the same models with other ``--n-packets`` or
seeds) adds the RMS between the two LUMINA spectra of each model: what the noise alone gives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax.numpy as jnp  # noqa: E402

from lumina_jax.ejecta import build_ejecta  # noqa: E402
from lumina_jax.lumina_export import export_reference  # noqa: E402
from lumina_jax.params import load_space  # noqa: E402
from lumina_jax.synth import SynthConfig, Synthesizer  # noqa: E402
from lumina_jax.synth.state import SN2011FE_LIKE  # noqa: E402
from lumina_jax.tardis_config import read_tardis_yaml  # noqa: E402

BAND = (3500.0, 9000.0)
Z_M101 = 0.000804  # heliocentric redshift of M101


def normalised(wl, flux, grid):
    f = np.interp(grid, wl, flux)
    band = (grid >= BAND[0]) & (grid <= BAND[1])
    return f / f[band].mean()


def run_lumina(binary: Path, ejecta, work: Path, n_packets: int, n_iters: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Export the reference of ``ejecta`` into ``work/ref`` and run LUMINA in ``work/run`` (reused if done)."""
    ref, run = work / "ref", work / "run"
    spec = run / "lumina_spectrum_rotation.csv"
    if not spec.exists():
        if not ref.exists():
            export_reference(ref, ejecta, n_packets=n_packets, n_iterations=n_iters)
        run.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        t0 = time.time()
        with open(run / "lumina.log", "w") as log:
            rc = subprocess.run([str(binary), str(ref.resolve()), str(n_packets), str(n_iters), "rotation"], cwd=run,
                                stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0 or not spec.exists():
            raise SystemExit(f"error: LUMINA failed (exit {rc}); see {run / 'lumina.log'}")
        (run / "seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    d = np.loadtxt(spec, delimiter=",", skiprows=1)
    text = (run / "lumina.log").read_text(errors="replace")
    from runners.backends.lumina import parse_stdout

    fig = parse_stdout(text)
    info = {"L_emitted_over_requested": (fig.l_emitted / fig.l_requested) if fig.l_emitted and fig.l_requested
            else None, "escape_fraction": fig.escape_fraction, "t_inner_K": fig.t_inner,
            "seconds": float((run / "seconds.txt").read_text()) if (run / "seconds.txt").exists() else None}
    return d[:, 0], d[:, 1] / 1e8, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = next((a / "shared" / "data" / "sn2011fe" for a in ROOT.parents
                    if (a / "shared" / "data" / "sn2011fe").exists()), ROOT.parent / "shared" / "data" / "sn2011fe")
    ap.add_argument("--lumina-bin", type=Path, default=os.environ.get("LUMINA_BIN"),
                    help="LUMINA-SN binary (default $LUMINA_BIN)")
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "lumina_compare")
    ap.add_argument("--n-packets", type=int, default=200_000)
    ap.add_argument("--n-iters", type=int, default=10)
    ap.add_argument("--line-interaction", choices=("scatter", "downbranch", "macroatom"), default=None,
                    help="the synthesizer's line interaction (default: that of configs/synth.yaml)")
    ap.add_argument("--radiation-field", choices=("power_law", "transfer"), default=None,
                    help="the synthesizer's radiation field (default: that of configs/synth.yaml; the exported "
                         "reference is LUMINA's starting state either way, which it then iterates itself)")
    ap.add_argument("--models", default="tardis_config,sn2011fe_like",
                    help="comma-separated subset of tardis_config,sn2011fe_like")
    ap.add_argument("--noise-from", type=Path, default=None,
                    help="workdir of another finished LUMINA run of the same models (reports the LUMINA-LUMINA RMS)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "lumina_comparison.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.lumina_bin is None or not Path(args.lumina_bin).is_file():
        raise SystemExit("error: give --lumina-bin (a LUMINA-SN binary built from its public source) or set LUMINA_BIN")
    files = [args.data / n for n in ("sn2011fe.yml", "tardis_spectrum.csv", "sn2011fe_observed_Bmax.csv")]
    for f in files:
        if not f.exists():
            raise SystemExit(f"error: {f} not found (the SN 2011fe data lie in ../shared/data/sn2011fe)")
    tardis = np.loadtxt(files[1], delimiter=",", skiprows=1)
    obs = np.loadtxt(files[2], delimiter=",", skiprows=1)
    space = load_space(1)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    known = {"tardis_config": lambda: read_tardis_yaml(files[0]),
             "sn2011fe_like": lambda: build_ejecta(jnp.asarray(space.from_dict(SN2011FE_LIKE)), space)}
    if not wanted or any(m not in known for m in wanted):
        raise SystemExit(f"error: --models takes a comma-separated subset of {','.join(known)}, got {args.models!r}")
    models = {m: known[m]() for m in wanted}
    config = SynthConfig.load()
    if args.line_interaction is not None:
        config = config.replace(line_interaction=args.line_interaction)
    if args.radiation_field is not None:
        config = config.replace(radiation_field=args.radiation_field)
    synth = Synthesizer.default(space, config)
    wl = synth.wavelength
    grid = wl[(wl >= BAND[0]) & (wl <= BAND[1])]
    rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    res, curves = {"band_A": list(BAND), "line_interaction": config.line_interaction,
                   "radiation_field": config.radiation_field,
                   "n_packets": args.n_packets, "n_iters": args.n_iters}, {}
    for name, ej in models.items():
        l_ours, st = synth.spectrum_of_ejecta(ej)
        lw, lf, info = run_lumina(Path(args.lumina_bin), ej, args.workdir / name, args.n_packets, args.n_iters)
        c = {"ours": normalised(wl, np.asarray(l_ours), grid), "lumina": normalised(lw, lf, grid)}
        r = {"rms_ours_vs_lumina": rms(c["ours"], c["lumina"]), "t_inner_ours_K": float(st["t_inner"]),
             "lumina": info}
        if args.noise_from is not None:
            other = args.noise_from / name / "run" / "lumina_spectrum_rotation.csv"
            if not other.exists():
                raise SystemExit(f"error: --noise-from: {other} not found (run that workdir first)")
            d = np.loadtxt(other, delimiter=",", skiprows=1)
            r["rms_lumina_vs_lumina_other"] = rms(c["lumina"], normalised(d[:, 0], d[:, 1], grid))
        if name == "tardis_config":
            c["tardis"] = normalised(tardis[:, 0], tardis[:, 1], grid)
            c["observed"] = normalised(obs[:, 0] / (1 + Z_M101), obs[:, 1], grid)
            for a, b in (("ours", "tardis"), ("lumina", "tardis"), ("ours", "observed"), ("lumina", "observed"),
                         ("tardis", "observed")):
                r[f"rms_{a}_vs_{b}"] = rms(c[a], c[b])
        res[name], curves[name] = r, c
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 1, figsize=(10, 0.5 + 3.5 * len(curves)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    style = {"observed": ("0.3", "SN 2011fe observed (B max)"),
             "tardis": ("tab:orange", "'TARDIS' file (a Planck function with three dips)"),
             "lumina": ("tab:green", f"LUMINA-SN (our reference export, {args.n_packets:,} packets)"),
             "ours": ("tab:blue", f"lumina-jax synthesizer ({config.line_interaction}, {config.radiation_field})")}
    titles = {"tardis_config": "TARDIS configuration (sn2011fe.yml)",
              "sn2011fe_like": "SN 2011fe-like stage-1 model (lumina_jax.synth.state.SN2011FE_LIKE)"}
    for ax, (name, c) in zip(axes, curves.items()):
        for key in ("observed", "tardis", "lumina", "ours"):
            if key in c:
                col, lab = style[key]
                ax.plot(grid, c[key], color=col, lw=1.0 if key != "ours" else 1.3, label=lab)
        r = res[name]
        text = f"RMS ours-LUMINA {r['rms_ours_vs_lumina']:.3f}"
        if "rms_ours_vs_tardis" in r:
            text += (f"\nours-TARDIS {r['rms_ours_vs_tardis']:.3f}, LUMINA-TARDIS {r['rms_lumina_vs_tardis']:.3f}"
                     f"\nvs observed: ours {r['rms_ours_vs_observed']:.3f}, LUMINA {r['rms_lumina_vs_observed']:.3f}, "
                     f"TARDIS {r['rms_tardis_vs_observed']:.3f}")
        ax.text(0.99, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
        ax.set_title(titles[name], fontsize=10)
        ax.set_ylabel("flux / mean(3500–9000 Å)")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("rest wavelength [Å]")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    res["figure"] = str(args.out)
    print(json.dumps(res, indent=1) if args.json else "\n".join(
        f"{k}: {v:.3f}" for name in models for k, v in res[name].items() if k.startswith("rms")))


if __name__ == "__main__":
    main()
