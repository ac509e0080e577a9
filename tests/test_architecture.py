"""Structural rules of the product design, checked so they cannot rot quietly.

The import graph is read from the source with :mod:`ast` (every ``import``, at module level or inside a
function, and the lazy re-export tables ``_WHERE`` of package ``__init__`` files, which import their
submodules on first use). On that graph:

* imports go one way: ``services`` -> ``maps`` -> ``geo``; ``geo`` uses neither (nor any web library);
* inside ``geo`` the stages are ranked (:data:`GEO_STAGES`); a module imports only its own stage and
  lower-ranked ones, so two stages of one rank (hot spots, RTM, Grip, Minerva, patrol) never lean on
  each other;
* inside ``services`` the store is the floor: ``services.store`` imports no other part of ``services``,
  and its backends never import one another;
* there is no import cycle anywhere, lazy or not.

The graph builder itself is tested on a planted package (a cycle, a wrong-way import), so these rules
can fail.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geo", "maps", "services", "data")

#: Rank of each stage of ``geo``: a module may import its own stage or a lower-ranked one only.
GEO_STAGES = {
    "geo": -1, "geo._lazy": -1,  # the package root (CRS names) and its lazy re-export helper
    "geo.core": 0,
    "geo.units": 1,
    "geo.hotspots": 2, "geo.rtm": 2, "geo.grip": 2, "geo.minerva": 2, "geo.patrol": 2,
    "geo.evaluation": 3,
    "geo.synth": 4,
}
#: Libraries that belong to the web, the command line or the reference implementations, never to geo/.
NOT_IN_GEO = {"services", "maps", "fastapi", "folium", "typer", "rich", "uvicorn", "esda", "libpysal"}


# ----------------------------------------------------------------------------------- graph builder
def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """``{dotted module name: path}`` for every ``.py`` under ``packages`` (``__init__`` -> the package)."""
    out = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def import_graph(root: Path, packages=PACKAGES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(internal graph ``{module: modules it imports}``, external ``{module: top-level libraries}``)."""
    mods = module_files(root, packages)

    def resolve(target: str) -> str | None:
        if (root / (target.replace(".", "/") + ".c")).exists():  # a compiled extension: a leaf
            return target
        parts = target.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        deps, ext = set(), set()
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" for a in node.names]
            elif (is_pkg and isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "_WHERE" for t in node.targets)):
                targets = [f"{name}.{v.value}" for v in node.value.values]  # lazy re-exports
            for t in targets:
                r = resolve(t)
                if r is not None:
                    deps.add(r)
                else:
                    ext.add(t.split(".")[0])
        deps.discard(name)
        graph[name], external[name] = deps, ext
    return graph, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def geo_stage(module: str) -> str | None:
    """The ranked stage a ``geo`` module belongs to (longest match in :data:`GEO_STAGES`)."""
    parts = module.split(".")
    while parts:
        if ".".join(parts) in GEO_STAGES:
            return ".".join(parts)
        parts.pop()
    return None


def wrong_way_imports(graph) -> list[str]:
    """Every import that breaks the direction rules (one line each, for the failure message)."""
    bad = []
    for a, deps in sorted(graph.items()):
        top = a.split(".")[0]
        for d in sorted(deps):
            dtop = d.split(".")[0]
            if top == "geo" and dtop != "geo":
                bad.append(f"{a} -> {d} (geo uses neither services nor maps)")
            elif top == "maps" and dtop == "services":
                bad.append(f"{a} -> {d} (maps never uses services)")
            elif top == "data" and dtop in {"services", "maps"}:
                bad.append(f"{a} -> {d} (boundary loaders use geo only)")
            elif top == "geo" and dtop == "geo":
                sa, sd = geo_stage(a), geo_stage(d)
                if sa != sd and GEO_STAGES[sd] >= GEO_STAGES[sa]:
                    bad.append(f"{a} -> {d} (stage {sa} rank {GEO_STAGES[sa]} may not use {sd} rank {GEO_STAGES[sd]})")
            if a.startswith("services.store") and dtop == "services" and not d.startswith("services.store"):
                bad.append(f"{a} -> {d} (the store is the floor of services)")
            backends = ("services.store.duckdb_store", "services.store.postgis_store")
            if a in backends and d in backends:
                bad.append(f"{a} -> {d} (store backends are independent)")
    return bad


# ------------------------------------------------------------------------------------------ rules
GRAPH, EXTERNAL = import_graph(ROOT)


def test_every_geo_module_has_a_ranked_stage():
    unranked = [m for m in GRAPH if m.startswith("geo") and geo_stage(m) is None]
    assert not unranked, f"new geo/ folders need a rank in GEO_STAGES: {unranked}"


def test_imports_go_one_way():
    bad = wrong_way_imports(GRAPH)
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, f"import cycles (lazy imports included): {found}"


def test_geo_never_imports_web_cli_or_reference_libraries():
    bad = {m: sorted(ext & NOT_IN_GEO) for m, ext in EXTERNAL.items() if m.startswith("geo") and ext & NOT_IN_GEO}
    assert not bad, f"geo/ must stay pure: {bad}"


def test_every_lazy_export_resolves():
    """Each name a package ``__init__`` re-exports is defined in the submodule it points at."""
    import importlib

    missing = []
    for m, path in module_files(ROOT).items():
        if path.name != "__init__.py":
            continue
        pkg = importlib.import_module(m)
        for name, sub in getattr(pkg, "_WHERE", {}).items():
            if not hasattr(importlib.import_module(f"{m}.{sub}"), name):
                missing.append(f"{m}.{name} -> {sub}")
            if (path.parent / f"{name}.py").exists() or (path.parent / name).is_dir():
                missing.append(f"{m}.{name} is also a submodule name (the module would shadow it)")
    assert not missing, missing


# --------------------------------------------------------------------- the checker can fail
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_a_planted_cycle_and_wrong_way_imports(tmp_path):
    """Planted truth: a lazy cycle through a package facade, a geo -> maps import, a rank-2 stage using a
    sibling, and the store leaning on the service."""
    _write(tmp_path, {
        "geo/__init__.py": "",
        "geo/units/__init__.py": "_WHERE = {'Lattice': 'lattice'}\n",
        "geo/units/lattice.py": "def f():\n    from geo.units import Lattice\n",
        "geo/hotspots/__init__.py": "",
        "geo/hotspots/kde.py": "from geo.rtm.model import x\nimport maps.webmap\n",
        "geo/rtm/__init__.py": "",
        "geo/rtm/model.py": "from geo.core.errors import E\n",
        "geo/core/__init__.py": "",
        "geo/core/errors.py": "from ..units.lattice import Lattice\n",
        "maps/__init__.py": "",
        "maps/webmap.py": "from services.api import app\n",
        "services/__init__.py": "",
        "services/api.py": "",
        "services/store/__init__.py": "",
        "services/store/duckdb_store.py": "from services.api import app\nfrom . import postgis_store\n",
        "services/store/postgis_store.py": "",
        "data/__init__.py": "",
    })
    graph, _ext = import_graph(tmp_path)
    assert cycles(graph) == [["geo.units", "geo.units.lattice"]]
    bad = wrong_way_imports(graph)
    assert any(b.startswith("geo.hotspots.kde -> maps.webmap") for b in bad)
    assert any(b.startswith("geo.hotspots.kde -> geo.rtm.model") for b in bad)
    assert any(b.startswith("geo.core.errors -> geo.units.lattice") for b in bad)  # relative import resolved
    assert any(b.startswith("maps.webmap -> services.api") for b in bad)
    assert any(b.startswith("services.store.duckdb_store -> services.api") for b in bad)
    assert any(b.startswith("services.store.duckdb_store -> services.store.postgis_store") for b in bad)
    assert not any(b.startswith("geo.rtm.model") for b in bad)  # rank 2 using rank 0 is the flow


# ---------------------------------------------------------------------------------- set-up
def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    demo_cmd = next(b for b in blocks if "harmspot demo" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
    assert demo_cmd.startswith("python3.11 -m venv .venv")


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_architecture_doc_names_every_geo_stage(doc):
    """The architecture page shows the flow through every stage folder that exists."""
    text = (ROOT / doc).read_text()
    missing = [s for s in GEO_STAGES if s.count(".") == 1 and not s.endswith("_lazy")
               and f"{s.replace('.', '/')}/" not in text]
    assert not missing, f"{doc} does not show {missing}"
