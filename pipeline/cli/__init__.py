"""The ``whp`` command line: query and inspect datasets, check the machine, run the review.

Stages run through DVC (``dvc repro``); this CLI is for looking at what they built and for the
human review. One convention for every entry point: ``whp ...`` or ``python -m pipeline.cli ...``.
Each command group lives in its own module; this one only assembles them.
"""

from __future__ import annotations

import typer

from pipeline.cli import data, doctor, plan, review, studio

app = typer.Typer(
    help="Datasets for Who's-Harry-Potter-style unlearning: query, inspect, check.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(data.query)
app.command()(data.datasets)
app.command()(doctor.doctor)
app.command()(plan.plan)
app.add_typer(studio.studio_app, name="studio")
app.add_typer(review.review_app, name="review")
app.add_typer(data.show_app, name="show")
app.add_typer(data.dataset_app, name="dataset")
