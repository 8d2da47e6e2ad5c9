"""Dataset builder and versioned store for "Who's Harry Potter"-style unlearning.

One module per DVC stage (``ingest``, ``baseline_model``, ...) plus the shared pieces:
``params`` (the one reader of params.yaml), ``store`` (the one dataset writer/reader),
``models`` (the one model loader), ``text`` (corpus reading and normalisation) and
``sql`` (DuckDB views over every dataset).
"""
