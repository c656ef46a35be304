"""The speed benchmark of lstm_jax against other LSTM implementations (`harness`), run as
`python -m benchmarks` from the repository's root; `benchmarks/README.md` explains it."""
