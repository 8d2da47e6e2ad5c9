"""Dataset builder and versioned store for "Who's Harry Potter"-style unlearning.

Layers (docs/architecture.md has the picture; ``tests/test_architecture.py`` enforces it):

- one thin module per DVC stage (``ingest``, ``baseline_model``, ..., ``evaluate``, ``report``):
  params in, datasets in, a call into ``core``, validated datasets out through ``stage``/``store``;
- shared infrastructure: ``params`` (the one reader of params.yaml), ``store`` and ``stage`` (atomic,
  validated, transactional writes), ``models``, ``training``, ``versions``, ``sql`` (DuckDB views);
- ``core/``: the algorithm as pure functions (no files, no params);
- ``review/``: Label Studio (records, export parsing, voting, sync, the server);
- ``cli/``: the ``whp`` command; ``tools/``: profiles, sweeps, the import-closure checker.
"""
