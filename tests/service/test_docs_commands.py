"""The commands the README and docs/ show run as written: shell blocks marked ``<!-- runnable
-->`` run in an empty folder, and the README's curl asks a demo server (on a free port instead of
its default) for a list."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import ServingSettings
from tests.service.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
DEMO = ("--demo", "--demo-users", "150", "--demo-items", "200")
COMMAND_SECONDS = 120


def runnable_blocks() -> list[tuple[str, str]]:
    return [(page.name, block) for page in PAGES for block in RUNNABLE.findall(page.read_text())]


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``script`` in bash, the project's environment first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )


def test_some_blocks_are_marked_runnable():
    assert len(runnable_blocks()) >= 1


@pytest.mark.parametrize(("page", "block"), runnable_blocks(), ids=lambda v: str(v)[:30])
def test_runnable_blocks_run_as_written(page, block, tmp_path):
    done = shell(block, tmp_path)
    assert done.returncode == 0, f"{page}: {block}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_the_readmes_curl_answers_a_list(tmp_path):
    readme = (ROOT / "README.md").read_text()
    curl = next(b for b in BLOCK.findall(readme) if "/api/v1/recommendations" in b)
    default = f"localhost:{ServingSettings().port}"
    assert default in curl  # the README asks the port the server listens on
    server = ServerProcess(tmp_path, *DEMO).start()
    try:
        done = shell(curl.replace(default, f"127.0.0.1:{server.port}"), tmp_path)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    limit = int(re.search(r'"limit": (\d+)', curl).group(1))
    assert len(answer["recommendations"]) == limit
    assert all(r["content_id"] for r in answer["recommendations"])
