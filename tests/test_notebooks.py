"""Every notebook runs top to bottom in quick mode (toy IMDB, tiny settings) without errors
and prints what a reader looks for. The kernel is the `python3` kernel of the running
interpreter (jupyter_client starts it with `sys.executable`), so it sees this venv."""

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# A few lines of each notebook's outputs that show its steps ran.
EXPECTED = {
    "01_imdb_bilstm": [
        "toy IMDB (quick mode)",
        "ids:",
        "bucketed:",
        "random padded_batch(16)",
        "Total params",
        "epoch 2:",
        "evaluate:",
        "no padding",
    ],
    "02_stacked_bilstm": [
        "bidirectional_1",
        "Total params",
        "| stacked |",
        "| bilstm |",
    ],
    "04_time_series_forecasting": [
        "synthetic series (quick mode)",
        "windows:",
        "batch: xs",
        "test MAE",
        "| model | MAE | RMSE |",
        "| persistence |",
        "forecast after the end",
    ],
    "05_text_generation": [
        "a made-up play (quick mode)",
        "vocabulary:",
        "untrained loss",
        "validation loss (best epoch)",
        "--- temperature 0.8",
        "correlation with the position in the line",
    ],
    "03_bptt_vanishing_gradients": [
        "max |hand - grad|",
        "reverse=True",
        "| simple_rnn | init |",
        "chance = 0.25",
    ],
}


def _output_text(nb: nbformat.NotebookNode) -> str:
    """All text a reader sees: streams and the plain/Markdown form of every result."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.extend(output.data.get(k, "") for k in ("text/plain", "text/markdown"))
    return "\n".join(parts)


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_quick_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_JAX_QUICK", "1")
    monkeypatch.delenv("LSTM_JAX_IMDB_ARCHIVE", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run directories
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = _output_text(nb)
    missing = [line for line in EXPECTED[name] if line not in text]
    assert not missing, f"{name} did not print {missing}"
