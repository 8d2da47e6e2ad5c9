"""``python -m pipeline.cli``: the same as ``whp``."""

from pipeline.cli import app

app(prog_name="whp")
