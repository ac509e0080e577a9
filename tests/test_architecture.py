"""Structural rules of the product design, checked so they cannot rot quietly."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


def test_geo_never_imports_services_maps_or_web():
    bad = {}
    for p in sorted((ROOT / "geo").rglob("*.py")):
        hit = _imports(p) & {"services", "maps", "fastapi", "folium", "typer", "rich", "uvicorn", "esda", "libpysal"}
        if hit:
            bad[str(p.relative_to(ROOT))] = sorted(hit)
    assert not bad, f"geo/ must stay pure: {bad}"


def test_maps_never_imports_services():
    bad = [str(p) for p in (ROOT / "maps").rglob("*.py") if "services" in _imports(p)]
    assert not bad


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    demo_cmd = next(b for b in blocks if "harmspot demo" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
    assert demo_cmd.startswith("python3.11 -m venv .venv")
