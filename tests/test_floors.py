"""The code's floors, read from the AST: every import goes down (or stays on its floor), no
module imports itself back round a circle, and modules and functions stay small enough to read.

Engine stages: data -> features -> model -> serve -> eval -> search, over the engine's own
top-level modules (config, buckets). Service floors, top to bottom: app and cli; routes;
console; answers; state; http; learning; experiments; serving; then the app-level modules and
storage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE_STAGES = ("", "data", "features", "model", "serve", "eval", "search")
SERVICE_FLOORS = (
    ("", "settings", "metrics", "errors", "schemas", "startup", "storage"),
    ("serving",),
    ("experiments",),
    ("learning",),
    ("http",),
    ("state",),
    ("answers",),
    ("console",),
    ("routes",),
    ("app", "cli"),
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
KEPT_SHORT = ("sona_jax/serve", "service")  # where functions and modules are held to the limits


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports (absolute and relative), at any depth."""
    found = set()
    here = module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in found if m == package or m.startswith(package + ".")}


def sources(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def level(module: str, floors: tuple[tuple[str, ...], ...]) -> int:
    """The floor of ``module``; a name no floor lists (an engine top-level module such as
    ``sona_jax.config``) is on the lowest."""
    first = (module.split(".") + [""])[1]
    return next((i for i, names in enumerate(floors) if first in names), 0)


def real_modules(found: set[str], known: dict[str, Path]) -> set[str]:
    """``found`` narrowed to modules that exist (``from a import b``: b may be a name)."""
    return {m for m in found if m in known}


def upward(package: str, floors: tuple[tuple[str, ...], ...]) -> list[str]:
    known = sources(package)
    wrong = []
    for module, path in known.items():
        for target in real_modules(imports(path, package), known):
            if level(target, floors) > level(module, floors):
                wrong.append(f"{module} imports {target}")
    return wrong


def circles(package: str) -> list[list[str]]:
    known = sources(package)
    graph = {m: real_modules(imports(p, package), known) - {m} for m, p in known.items()}
    # A package's __init__ importing its own modules is how a package exports: not a circle.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_checker_sees_an_upward_import(tmp_path):
    path = ROOT / "service" / "serving" / "runtime.py"
    assert "service.settings" in imports(path, "service")
    assert level("service.routes.health", SERVICE_FLOORS) > level("service.state", SERVICE_FLOORS)
    assert level("service.storage.sqlite", SERVICE_FLOORS) == 0


@pytest.mark.parametrize(
    ("package", "floors"),
    [("sona_jax", tuple((s,) for s in ENGINE_STAGES)), ("service", SERVICE_FLOORS)],
)
def test_imports_go_down_and_round_no_circle(package, floors):
    assert upward(package, floors) == []
    assert circles(package) == []


def test_every_service_module_sits_on_a_named_floor():
    named = {name for floor in SERVICE_FLOORS for name in floor}
    loose = [m for m in sources("service") if (m.split(".") + [""])[1] not in named]
    assert loose == []


def test_modules_and_functions_stay_short():
    long = []
    for folder in KEPT_SHORT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            name = str(path.relative_to(ROOT))
            if text.count("\n") > MAX_MODULE_LINES:
                long.append(f"{name}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert long == []
