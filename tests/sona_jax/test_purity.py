"""The engine stays pure: nothing under sona_jax/ imports or calls I/O (files, the environment,
sockets, asyncio, clocks, progress bars, plots) or host code. Read from the AST, so comments and
docstrings that mention such things do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "sona_jax"
FORBIDDEN_MODULES = frozenset(
    {
        "aiosqlite", "asyncio", "asyncpg", "csv", "datetime", "glob", "http", "httpx", "io",
        "logging", "matplotlib", "multiprocessing", "os", "pathlib", "pickle", "quart", "redis",
        "requests", "select", "service", "shutil", "signal", "socket", "sona_lab", "sqlite3",
        "subprocess", "sys", "tempfile", "threading", "time", "tqdm", "urllib", "uvicorn",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "__import__"})
# Methods that touch files or streams whatever they are called on.
FORBIDDEN_METHODS = frozenset(
    {"open", "read_text", "write_text", "read_bytes", "write_bytes", "tofile", "print", "getenv"}
)
# Functions of these modules that read or write files.
FILE_FUNCTIONS = {
    "np": {"load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "fromfile"},
    "numpy": {"load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "fromfile"},
    "json": {"load", "dump"},
    "tomllib": {"load"},
}


def violations(source: str, name: str = "<source>") -> list[str]:
    """Each I/O import or call in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if node.level == 0 else []
        else:
            modules = []
        for module in modules:
            if module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{name}:{node.lineno}: imports {module}")
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in FORBIDDEN_CALLS:
                found.append(f"{name}:{node.lineno}: calls {function.id}()")
            if isinstance(function, ast.Attribute):
                owner = function.value.id if isinstance(function.value, ast.Name) else None
                if function.attr in FORBIDDEN_METHODS or function.attr in FILE_FUNCTIONS.get(
                    owner, ()
                ):
                    found.append(f"{name}:{node.lineno}: calls .{function.attr}()")
    return found


def test_the_checker_sees_io():
    sample = (
        "import os\nfrom pathlib import Path\nimport tqdm.auto\nimport numpy as np\n"
        "x = open('f')\nnp.save('f', x)\nPath('f').read_text()\nprint(1)\n"
        "def f():\n    import asyncio\n"
    )
    found = violations(sample)
    assert len(found) == 8, found
    assert violations("import numpy as np\nimport jax\nnp.asarray([1]).sum()\n") == []


def test_nothing_under_sona_jax_does_io():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 20  # the whole engine is read
    found = [v for path in files for v in violations(path.read_text(), str(path.name))]
    assert found == []
