"""The memory plan (``whp plan``): bytes per GPU of each training stage under DDP, FSDP and ZeRO-3.

Pure arithmetic on a model's shape (read from its ``config.json``, never its weights): what each
GPU holds while ``reinforce`` (model + optimiser) or ``finetune`` (model + optimiser + the
frozen baseline of the retain KL) trains, for each way of spreading the work, with and without
gradient checkpointing and LoRA, and the cheapest configuration that fits.

Bytes per parameter (``P`` parameters, ``N`` GPUs; AdamW; ``bf16`` mixed precision on GPUs,
``fp32`` on CPUs, where every tensor below is float32 and there is no bf16 copy):

============  =====================  =============  ===========================  ================
strategy      parameters             gradients      optimiser                    transient
============  =====================  =============  ===========================  ================
ddp           4P fp32 + 2P bf16      4P fp32        8P (m, v fp32; the fp32      --
              autocast copies                       weights are the master)
fsdp          4P/N fp32 shard        4P/N fp32      8P/N                         bf16 root + 2
              (the master)                                                       gathered layers,
                                                                                 1 layer's grads
zero3         2P/N bf16              2P/N bf16      12P/N (fp32 master, m, v)    2 x live params
zero3-offload 2P/N bf16              2P/N bf16      0 on the GPU (12P/N in CPU   2 x live params
                                                    RAM)
============  =====================  =============  ===========================  ================

DDP is assumed with ``gradient_as_bucket_view`` (no second gradient copy in the buckets).
LoRA: the base weights are frozen in bf16 (``2P``, sharded by FSDP/ZeRO-3), the adapters
(``r * (d_in + d_out)`` per target matrix) carry fp32 weights, gradients and AdamW states
(16 bytes each), and the finetune's frozen baseline costs nothing (the same weights with the
adapters switched off). Without LoRA the frozen baseline is a bf16 copy: ``2P`` under DDP,
``2P/N`` sharded under FSDP and ZeRO-3.

Activations at a micro-batch of ``b`` blocks of ``s`` tokens (``a`` bytes per activation: 2 for
bf16, 4 for fp32), counting the tensors autograd saves for the backward pass, after
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
rewritten for a Llama-style decoder layer (RMSNorm, grouped-query attention through SDPA, which
keeps no ``s x s`` matrix, gated MLP, no dropout):

* per layer, per token: ``7h + 2h_kv + 4i`` values (two norms' inputs and outputs ``4h``, rotated
  queries ``h``, keys and values ``2h_kv``, attention output and its contiguous copy ``2h``, the
  MLP's gate, up, activation and product ``4i``); times ``L`` layers;
* with gradient checkpointing (per decoder layer): ``h`` per layer (its input) plus one layer
  recomputed in full during the backward pass;
* the output head, per token and vocabulary entry: the logits (``a``), their fp32 copy for the
  loss (4, none when ``a`` is 4) and the fp32 log-softmax with its gradient (8). ``reinforce``
  has ``b`` such rows; ``finetune`` with the retain KL ``3b`` (``b`` forget and ``b`` retain rows
  in one forward, and the baseline's ``b`` retain rows), and ``2b`` layer activations.

Usable memory per GPU: ``0.9 x gpu_memory - 1 GiB`` (CUDA context, allocator fragmentation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pipeline.params import LORA_TARGETS

GIB = 1024**3
Stage = Literal["reinforce", "finetune"]
Strategy = Literal["ddp", "fsdp", "zero3", "zero3-offload"]
Precision = Literal["bf16", "fp32"]
STAGES: tuple[Stage, ...] = ("reinforce", "finetune")
STRATEGIES: tuple[Strategy, ...] = ("ddp", "fsdp", "zero3", "zero3-offload")
ZERO3_MAX_LIVE_PARAMETERS = 100_000_000
"""``stage3_max_live_parameters`` of configs/deepspeed/zero3.json: gathered parameters held at once."""
# Architectures whose MLP is one up and one down projection (4h by default), not a gated pair.
UNGATED_MLP = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode"})


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about a decoder-only transformer (sizes in values, not bytes)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    gated_mlp: bool = True
    parameters: int = 0
    """Total parameters; 0: computed from the shape (:func:`count_parameters`)."""

    def __post_init__(self) -> None:
        if not self.parameters:
            object.__setattr__(self, "parameters", count_parameters(self))

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    def matrices(self) -> dict[str, tuple[int, int]]:
        """``(d_in, d_out)`` of each weight matrix of one decoder layer, by its usual module name."""
        mlp = {"up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        if self.gated_mlp:
            mlp["gate_proj"] = (self.hidden, self.intermediate)
        return {
            "q_proj": (self.hidden, self.q_dim), "k_proj": (self.hidden, self.kv_dim),
            "v_proj": (self.hidden, self.kv_dim), "o_proj": (self.q_dim, self.hidden), **mlp,
        }

    @property
    def layer_parameters(self) -> int:
        """Parameters of one decoder layer (its matrices and two norm weights)."""
        return sum(a * b for a, b in self.matrices().values()) + 2 * self.hidden

    @property
    def root_parameters(self) -> int:
        """Parameters outside the decoder layers: embeddings, final norm, output head."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden


def count_parameters(shape: ModelShape) -> int:
    """Parameters of a decoder-only transformer of this shape (biases ignored: well under 0.1%)."""
    return shape.layers * shape.layer_parameters + shape.root_parameters


def shape_from_config(config: Mapping[str, Any], *, name: str = "model") -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face ``config.json`` (Llama, Mistral, Qwen, GPT-2
    names). Raises ``ValueError`` naming the missing key."""

    def pick(*keys: str, default: Any = None) -> Any:
        for key in keys:
            if config.get(key) is not None:
                return config[key]
        if default is None:
            raise ValueError(f"{name}: config.json has none of {', '.join(keys)}")
        return default

    hidden = int(pick("hidden_size", "n_embd", "d_model"))
    heads = int(pick("num_attention_heads", "n_head"))
    model_type = str(config.get("model_type", ""))
    return ModelShape(
        name=name, hidden=hidden, layers=int(pick("num_hidden_layers", "n_layer")), heads=heads,
        kv_heads=int(pick("num_key_value_heads", default=heads)),
        head_dim=int(pick("head_dim", default=hidden // heads)),
        intermediate=int(pick("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        vocab=int(pick("vocab_size")), tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        gated_mlp=model_type not in UNGATED_MLP,
    )


@dataclass(frozen=True)
class Lora:
    """LoRA adapters of rank ``r`` on the ``targets`` matrices of every decoder layer."""

    r: int = 16
    targets: tuple[str, ...] = tuple(LORA_TARGETS)

    def parameters(self, shape: ModelShape) -> int:
        matrices = shape.matrices()
        return shape.layers * sum(self.r * (d_in + d_out) for name, (d_in, d_out) in matrices.items()
                                  if name in self.targets)


@dataclass(frozen=True)
class Setup:
    """One way to run one stage: ``micro_batch`` blocks of ``seq_len`` tokens per forward on each GPU."""

    stage: Stage
    strategy: Strategy
    gpus: int
    micro_batch: int
    seq_len: int
    checkpointing: bool = False
    lora: Lora | None = None
    precision: Precision = "bf16"

    def describe(self) -> str:
        """In words: ``fsdp + LoRA r=16 + gradient checkpointing``."""
        parts = [self.strategy if self.gpus > 1 or self.strategy != "ddp" else "single GPU"]
        if self.lora:
            parts.append(f"LoRA r={self.lora.r}")
        if self.checkpointing:
            parts.append("gradient checkpointing")
        return " + ".join(parts)

    def label(self) -> str:
        """Short, for a table column: ``LoRA16 FSDP+ckpt``."""
        names = {"ddp": "DDP" if self.gpus > 1 else "1 GPU", "fsdp": "FSDP", "zero3": "ZeRO-3",
                 "zero3-offload": "ZeRO-3+off"}
        return (f"LoRA{self.lora.r} " if self.lora else "") + names[self.strategy] + ("+ckpt" if self.checkpointing else "")


@dataclass(frozen=True)
class Footprint:
    """Bytes one GPU holds at the peak of a training step of ``setup``."""

    setup: Setup
    parameters: int
    gradients: int
    optimizer: int
    baseline: int
    activations: int
    transient: int
    cpu_optimizer: int = 0
    """Bytes of optimiser state offloaded to each rank's CPU RAM (``zero3-offload``), not on the GPU."""

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.baseline + self.activations + self.transient

    def fits(self, gpu_memory_gib: float) -> bool:
        return self.total <= usable_bytes(gpu_memory_gib)


def usable_bytes(gpu_memory_gib: float) -> int:
    """What training may use of a GPU of ``gpu_memory_gib``: 90%, less 1 GiB for the CUDA context."""
    return int(0.9 * gpu_memory_gib * GIB - GIB)


def activation_bytes(shape: ModelShape, setup: Setup) -> int:
    """Saved activations of one micro-batch at the start of the backward pass (module docstring)."""
    a = 2 if setup.precision == "bf16" else 4
    # Rows of s tokens through the trained model (finetune: forget + retain in one forward)
    # and through the frozen baseline (its retain logits, no graph).
    trained, reference = (setup.micro_batch, 0) if setup.stage == "reinforce" else (
        2 * setup.micro_batch, setup.micro_batch)
    layer = (7 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate) * a  # per token
    per_token = shape.layers * shape.hidden * a + layer if setup.checkpointing else shape.layers * layer
    per_logit = a + (0 if a == 4 else 4) + 8
    return trained * setup.seq_len * per_token + (trained + reference) * setup.seq_len * shape.vocab * per_logit


def footprint(shape: ModelShape, setup: Setup) -> Footprint:
    """The bytes per GPU of ``setup`` on a model of ``shape`` (module docstring for the terms)."""
    p, n = shape.parameters, setup.gpus
    shard = (lambda x: math.ceil(x / n)) if setup.strategy != "ddp" else (lambda x: x)
    bf16 = setup.precision == "bf16"
    trainable = setup.lora.parameters(shape) if setup.lora else p
    activations = activation_bytes(shape, setup)
    cpu_optimizer = 0
    if setup.lora:
        # Frozen bf16 base (fp32 on a CPU), adapters at 16 bytes each (too small to shard).
        parameters = shard((2 if bf16 else 4) * p) + 4 * trainable
        gradients, optimizer = 4 * trainable, 8 * trainable
    elif setup.strategy == "ddp":
        parameters = 4 * p + (2 * p if bf16 else 0)
        gradients, optimizer = 4 * p, 8 * p
    elif setup.strategy == "fsdp":
        parameters, gradients, optimizer = shard(4 * p), shard(4 * p), shard(8 * p)
    else:  # zero3, zero3-offload
        width = 2 if bf16 else 4
        parameters, gradients = shard(width * p), shard(width * p)
        optimizer = shard((12 if bf16 else 8) * p)
        if setup.strategy == "zero3-offload":
            optimizer, cpu_optimizer = 0, optimizer
    baseline = 0
    if setup.stage == "finetune" and not setup.lora:
        baseline = shard((2 if bf16 else 4) * p)
    transient = _gathered_bytes(shape, setup)
    return Footprint(setup, parameters, gradients, optimizer, baseline, activations, transient, cpu_optimizer)


def _gathered_bytes(shape: ModelShape, setup: Setup) -> int:
    """Parameters a sharded strategy gathers at once (and, for FSDP, one layer's full gradients)."""
    width = 2 if setup.precision == "bf16" else 4
    if setup.strategy == "ddp" or setup.gpus == 1:
        return 0
    if setup.strategy == "fsdp":
        return width * (shape.root_parameters + 2 * shape.layer_parameters) + width * shape.layer_parameters
    return width * min(ZERO3_MAX_LIVE_PARAMETERS, shape.parameters)


@dataclass(frozen=True)
class Plan:
    """Every configuration of one stage and the one recommended."""

    stage: Stage
    footprints: list[Footprint]
    recommended: Footprint | None
    """The first that fits in :func:`candidates` order (cheapest first); None: nothing fits."""
    lora_option: Footprint | None
    """The cheapest LoRA configuration that fits (the recommendation when no full fine-tune does)."""


def candidates(stage: Stage, *, gpus: int, micro_batch: int, seq_len: int, lora: Lora,
               precision: Precision = "bf16") -> Iterator[Setup]:
    """Configurations from cheapest to dearest: full fine-tunes first (DDP, then FSDP, then
    ZeRO-3 and its CPU offload; each without, then with gradient checkpointing), then LoRA.
    FSDP only with checkpointing: configs/accelerate/fsdp.yaml checkpoints activations itself
    (``fsdp_activation_checkpointing``), whatever the stage's ``gradient_checkpointing``."""
    base = Setup(stage, "ddp", gpus, micro_batch, seq_len, precision=precision)
    for adapters in (None, lora):
        for strategy in (("ddp", "fsdp") if adapters else STRATEGIES):
            if gpus == 1 and strategy in ("fsdp", "zero3"):
                continue  # nothing to shard over: the same bytes as DDP on one GPU, or more
            for checkpointing in ((True,) if strategy == "fsdp" else (False, True)):
                yield replace(base, strategy=strategy, checkpointing=checkpointing, lora=adapters)


def plan(shape: ModelShape, stage: Stage, *, gpus: int, gpu_memory_gib: float, micro_batch: int, seq_len: int,
         lora: Lora = Lora(), precision: Precision = "bf16") -> Plan:
    """Footprints of every candidate configuration of ``stage`` and the cheapest one that fits."""
    if gpus < 1 or micro_batch < 1 or seq_len < 1 or gpu_memory_gib <= 0:
        raise ValueError("gpus, micro_batch and seq_len must be >= 1 and gpu_memory > 0")
    footprints = [footprint(shape, setup) for setup in candidates(
        stage, gpus=gpus, micro_batch=micro_batch, seq_len=seq_len, lora=lora, precision=precision)]
    fitting = [f for f in footprints if f.fits(gpu_memory_gib)]
    full = [f for f in fitting if f.setup.lora is None]
    adapters = [f for f in fitting if f.setup.lora is not None]
    return Plan(stage, footprints, (full or adapters or [None])[0], (adapters or [None])[0])


def training_flops_per_token(shape: ModelShape, *, seq_len: int) -> float:
    """FLOPs of one trained token (forward and backward): ``6 P + 12 L h s`` (Chowdhery et al.
    2022, appendix B; the second term is attention's, which the parameters do not count)."""
    return 6 * shape.parameters + 12 * shape.layers * shape.q_dim * seq_len


def forward_flops_per_token(shape: ModelShape, *, seq_len: int) -> float:
    """FLOPs of one token through a forward pass only: a third of :func:`training_flops_per_token`."""
    return training_flops_per_token(shape, seq_len=seq_len) / 3
