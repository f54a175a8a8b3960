"""The research notebooks run top to bottom in a fresh kernel (small synthetic data) and draw
their figures: no error outputs, every expected figure a real PNG."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# notebook -> (figures it draws, a line its printed output must contain)
EXPECTED = {
    "tuning_fusion_weights.ipynb": (3, "tuned: NDCG@10"),
    "mmr_lambda_tradeoff.ipynb": (2, "configured diversity.mmr_lambda"),
    "cold_start.ipynb": (2, "first all events: NDCG@10 hybrid"),
}


def _outputs(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_draws_its_figures(name, monkeypatch):
    monkeypatch.setenv("SONA_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    # "python" in the kernel spec runs this interpreter (jupyter_client swaps in sys.executable).
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=180,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()

    outputs = list(_outputs(notebook))
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    figures = [
        base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})
    ]
    n_figures, printed = EXPECTED[name]
    assert len(figures) == n_figures
    for png in figures:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed in text
