"""The public API and the import layering, kept by tests: every exported name exists and is documented,
the core never imports a step or the CLI, steps never import the orchestrator, the CLI or another step's
private modules, and the hardware model imports without torch."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import crosslayer

SRC = Path(crosslayer.__file__).parent
DOCS = SRC.parents[1] / "docs"
CORE = {"__init__", "errors", "config", "fileio", "device", "report", "stage", "checkpoint", "rundir", "stats",
        "train", "data", "models", "viz"}
ORCHESTRATION = {"flow", "core_stages", "cli"}
STEPS = sorted(info.name for info in pkgutil.iter_modules(crosslayer.__path__)
               if info.ispkg and info.name not in CORE | ORCHESTRATION)


def _imports(path: Path) -> list[str]:
    """Every crosslayer module ``path`` imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("crosslayer")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crosslayer"):
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _files(top: str) -> list[Path]:
    p = SRC / top
    return sorted(p.rglob("*.py")) if p.is_dir() else [SRC / f"{top}.py"]


def test_every_exported_name_resolves_and_is_documented() -> None:
    api_doc = (DOCS / "api.md").read_text(encoding="utf-8")
    missing_doc = []
    for name in crosslayer.__all__:
        obj = getattr(crosslayer, name)
        if name != "__version__":
            assert obj.__doc__, f"crosslayer.{name} has no docstring"
            if f"`{name}`" not in api_doc and f"{name}(" not in api_doc:
                missing_doc.append(name)
    assert not missing_doc, f"exported but not in docs/api.md: {missing_doc}"


@pytest.mark.parametrize("package", [*STEPS, "data", "models"])
def test_every_package_all_resolves(package: str) -> None:
    mod = importlib.import_module(f"crosslayer.{package}")
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"crosslayer.{package}.__all__ names {name!r}, which it does not define"


def test_cli_uses_only_exported_names() -> None:
    """A name the CLI imports from a package is in that package's (or module's) ``__all__``."""
    bad = []
    for f in _files("cli"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crosslayer"):
                if node.module.startswith("crosslayer.cli"):
                    continue
                mod = importlib.import_module(node.module)
                exported = set(getattr(mod, "__all__", []))
                bad += [f"{f.name}: {node.module}.{a.name}" for a in node.names if a.name not in exported]
    assert not bad, f"CLI imports names no __all__ exports: {bad}"


def test_core_imports_no_step_flow_or_cli() -> None:
    bad = []
    for top in sorted(CORE - {"__init__"}):  # the package facade re-exports every step's verb, lazily
        for f in _files(top):
            for m in _imports(f):
                t = _top(m)
                if t in STEPS or t in ORCHESTRATION:
                    bad.append(f"{f.relative_to(SRC)} imports {m}")
    assert not bad, "core modules must not import steps, the flow or the CLI:\n" + "\n".join(bad)


def test_steps_import_no_flow_cli_or_private_modules_of_other_steps() -> None:
    bad = []
    for step in STEPS:
        for f in _files(step):
            for m in _imports(f):
                t = _top(m)
                if t in ORCHESTRATION:
                    bad.append(f"{f.relative_to(SRC)} imports {m}")
                elif t in STEPS and t != step and any(p.startswith("_") for p in m.split(".")[2:]):
                    bad.append(f"{f.relative_to(SRC)} imports another step's private {m}")
    assert not bad, "steps must not import the orchestrator, the CLI or other steps' internals:\n" + "\n".join(bad)


def test_the_orchestrator_names_no_step() -> None:
    text = (SRC / "flow.py").read_text(encoding="utf-8")
    named = [s for s in STEPS if f"crosslayer.{s}" in text]
    assert not named, f"flow.py imports steps {named}; stages are discovered, not named"


def test_hardware_model_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import crosslayer.hw, crosslayer.hw.accelerator, crosslayer.hw.dataflows, crosslayer.hw.network\n"
            "import crosslayer.hw.api\n"
            "a = crosslayer.hw.accelerator.load_accelerator('eyeriss')\n"
            "print(a.name)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "eyeriss" in res.stdout.lower()
