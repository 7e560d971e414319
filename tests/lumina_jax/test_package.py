import jax
import jax.numpy as jnp

import lumina_jax


def test_real_package_imported_and_float64_enabled():
    # guards against the tests/lumina_jax folder shadowing the package (pytest import modes)
    assert lumina_jax.__file__.endswith("lumina_jax/__init__.py")
    assert jax.config.jax_enable_x64
    assert jnp.ones(1).dtype == jnp.float64


# ----------------------------------------------------------------------------- layering
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(lumina_jax.__file__).resolve().parents[1]
PACKAGES = ("lumina_jax", "box3d_jax", "runners")


def _module_imports() -> dict[str, set[str]]:
    """{module: modules of our packages it imports anywhere in its body (lazy imports too)}."""
    files = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    graph = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import submodule` depends on the submodule; `from pkg import name`
                # on the module that defines the name (the package itself, or further below)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # an attribute or a package's name -> the module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    found.add(t)
        graph[mod] = found
    return graph


def test_no_import_cycles_between_our_modules():
    graph = _module_imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles[:3]


def test_layers_import_only_downwards():
    graph = _module_imports()
    for mod, deps in graph.items():
        if mod.startswith("lumina_jax.inference"):
            bad = {d for d in deps if d.startswith(("lumina_jax.cli", "lumina_jax.workflows", "runners"))}
            assert not bad, f"{mod} (maths) imports {sorted(bad)}"
        if mod.startswith("lumina_jax") and not mod.startswith(("lumina_jax.cli", "lumina_jax.__main__")):
            assert not {d for d in deps if d.startswith("lumina_jax.cli")}, f"{mod} imports the CLI"
        if mod.startswith("box3d_jax"):
            assert not {d for d in deps if d.startswith("lumina_jax")}, f"{mod} imports lumina_jax"
    inference = [p for p in (ROOT / "lumina_jax" / "inference").glob("*.py")]
    for path in inference:  # no plotting and no files in the maths
        text = path.read_text()
        assert "matplotlib" not in text and "open(" not in text and ".write_text(" not in text, path.name
