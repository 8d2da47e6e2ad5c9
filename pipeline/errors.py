"""Error types the CLI and the stages report to the user without a traceback.

Every error says *where* (file, record, key) and *what* is wrong, so a user can fix the
input without reading code.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ParamsError(PipelineError):
    """params.yaml is missing, malformed, or violates its typed model."""


class CorpusError(PipelineError):
    """A corpus file cannot be read as text (missing, binary, empty, bad encoding)."""


class DatasetValidationError(PipelineError):
    """A frame violates its pandera contract; the message lists every failure."""


class DatasetNotFoundError(PipelineError):
    """A dataset (or its manifest) is not where the store expects it."""


class ModelSourceError(PipelineError):
    """The configured model cannot be located or loaded."""
