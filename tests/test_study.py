"""Tests of `lstm_jax.study`: the sequence-labelling loss, hand-written BPTT, gradient flow,
the memory task and the two study scripts (quick mode)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import study
from lstm_jax.cli import main


def _numpy_loss(logits_BTC: np.ndarray, labels_BT: np.ndarray, lengths_B) -> np.ndarray:
    out = np.zeros(len(lengths_B))
    for b, length in enumerate(lengths_B):
        for t in range(length):
            z = logits_BTC[b, t].astype(np.float64)
            log_z = np.log(np.sum(np.exp(z - z.max()))) + z.max()
            out[b] += log_z - z[labels_BT[b, t]]
    return out


def test_sequence_labelling_loss_matches_numpy_reference():
    logits_BTC = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
    labels_BT = np.array([[0, 2, 1, 1], [1, 0, -1, -1], [-1, -1, -1, -1]])
    lengths_B = np.array([4, 2, 0], np.int32)
    got = study.sequence_labelling_loss(jnp.asarray(logits_BTC), labels_BT, lengths_B)
    assert got.shape == (3,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _numpy_loss(logits_BTC, labels_BT, lengths_B), rtol=1e-6)
    assert got[2] == 0.0


def test_sequence_labelling_loss_ignores_padding():
    rng = np.random.default_rng(1)
    logits_BTC = rng.normal(size=(2, 5, 4)).astype(np.float32)
    labels_BT = rng.integers(0, 4, size=(2, 5))
    lengths_B = np.array([5, 2], np.int32)
    before = study.sequence_labelling_loss(logits_BTC, labels_BT, lengths_B)
    logits_BTC[1, 2:] = 1e3 * rng.normal(size=(3, 4))
    labels_BT[1, 2:] = 99
    after = study.sequence_labelling_loss(logits_BTC, labels_BT, lengths_B)
    np.testing.assert_array_equal(before, after)


def test_sequence_labelling_loss_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels must be"):
        study.sequence_labelling_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32), [3, 3])


def test_simple_rnn_bptt_equals_jax_grad_with_padding():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = study.init_tagger(keys[0], "simple_rnn", 3, 5, 4)
    # Larger than initial weights, so the recurrent path matters to the gradient.
    params["cell"]["recurrent_kernel"] = 1.5 * params["cell"]["recurrent_kernel"]
    params["cell"]["bias"] = 0.1 * jnp.arange(5, dtype=jnp.float32)
    xs_BTE = jax.random.normal(keys[1], (3, 6, 3))
    labels_BT = jax.random.randint(keys[2], (3, 6), 0, 4)
    lengths_B = jnp.array([6, 3, 0], jnp.int32)

    def loss(cell_params, readout):
        tagger = {"cell": cell_params, "readout": readout}
        return study.tagger_loss("simple_rnn", tagger, xs_BTE, labels_BT, lengths_B)

    expected = jax.jit(jax.grad(loss, argnums=(0, 1)))(params["cell"], params["readout"])
    got = jax.jit(study.simple_rnn_bptt)(
        params["cell"], params["readout"], xs_BTE, labels_BT, lengths_B
    )
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(expected[0]["recurrent_kernel"]).max()) > 1e-2


def test_gradient_flow_is_finite_positive_and_one_per_distance():
    norms = study.gradient_flow("lstm", time=6, hidden=4, seeds=(0, 1), batch=2)
    assert isinstance(norms, np.ndarray) and norms.shape == (6,)
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)


def test_gradient_flow_decays_with_distance_for_small_recurrent_weights():
    params = study.init_tagger(jax.random.PRNGKey(0), "simple_rnn", study.MEMORY_INPUT, 8, 4)
    params["cell"]["recurrent_kernel"] = 0.3 * params["cell"]["recurrent_kernel"]
    norms = study.gradient_flow("simple_rnn", time=7, seeds=(0, 1), params=params, batch=4)
    assert np.all(np.diff(norms) < 0)
    assert norms[-1] < 1e-2 * norms[0]


def test_memory_batch_puts_the_label_first_and_flags_it():
    xs_BTE, labels_B = study.memory_batch(jax.random.PRNGKey(0), 5, 7)
    assert xs_BTE.shape == (5, 7, study.MEMORY_INPUT) and labels_B.shape == (5,)
    np.testing.assert_array_equal(jnp.argmax(xs_BTE[:, 0, :-1], axis=-1), labels_B)
    np.testing.assert_array_equal(xs_BTE[:, :, -1], np.eye(1, 7)[[0] * 5])
    np.testing.assert_array_equal(xs_BTE[:, :, :-1].sum(-1), 1.0)


def test_memory_task_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell"):
        study.memory_task("transformer", 5, quick=True)


@pytest.mark.slow
def test_gradient_flow_script_quick_writes_png_and_json(tmp_path):
    argv = ["--out", str(tmp_path), "--quick", "--cells", "simple_rnn", "lstm"]
    assert main(["gradient-flow", *argv]) == 0
    saved = json.loads((tmp_path / "gradient_flow.json").read_text())
    assert set(saved["cells"]) == {"simple_rnn", "lstm"}
    assert len(saved["cells"]["lstm"]["trained"]) == study.QUICK_TIME
    assert (tmp_path / "gradient_flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_memory_task_script_quick_writes_json_and_prints_table(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--quick", "--cells", "simple_rnn", "gru"]
    assert main(["memory-task", *argv]) == 0
    saved = json.loads((tmp_path / "memory_task.json").read_text())
    assert set(saved["accuracy"]) == {"simple_rnn", "gru"}
    assert all(0.0 <= a <= 1.0 for row in saved["accuracy"].values() for a in row.values())
    assert "| cell |" in capsys.readouterr().out
