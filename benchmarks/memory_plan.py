"""Benchmark: the memory plan against the measured peak of a reinforce-style training loop.

Each configuration runs in a fresh process (the peak RSS is a high-water mark): the model
loaded in float32 on the CPU, AdamW, ``--steps`` optimiser steps of next-token cross-entropy
(:func:`pipeline.training.causal_lm_loss`) on random blocks of ``--seq-len`` tokens, with and
without gradient checkpointing. Printed per configuration: the measured peak (RSS at the peak
less RSS before the model was loaded: the interpreter and libraries are not the plan's), the
plan's figure for one GPU (DDP, ``fp32``: what the CPU computes in) and their ratio.

    python -m benchmarks.memory_plan --model models/baseline --micro-batch 1 2 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

GIB = 1024**3


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(model_dir: str, *, micro_batch: int, seq_len: int, steps: int, checkpointing: bool) -> dict:
    """Train ``steps`` steps in this process; the peak RSS above the pre-load RSS, in bytes."""
    import torch

    from pipeline.models import load_model
    from pipeline.training import causal_lm_loss

    torch.manual_seed(0)
    before = rss_bytes()
    model = load_model(model_dir, dtype="float32", device="cpu")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    for _ in range(steps):
        ids = torch.randint(0, vocab, (micro_batch, seq_len))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        loss_sum, n = causal_lm_loss(model, batch)
        (loss_sum / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_above_start": peak - before, "start_rss": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/baseline")
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="2: the second step holds AdamW's states")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "micro_batch,checkpointing"
    args = parser.parse_args()
    if args.one:
        micro_batch, checkpointing = args.one.split(",")
        print(json.dumps(measure(args.model, micro_batch=int(micro_batch), seq_len=args.seq_len, steps=args.steps,
                                 checkpointing=checkpointing == "1")))
        return

    from pipeline.tools.plan import Setup, footprint, shape_from_config

    shape = shape_from_config(json.loads((Path(args.model) / "config.json").read_text()), name=args.model)
    print(f"model {args.model}: {shape.parameters:,} parameters; seq_len {args.seq_len}; "
          f"{args.steps} AdamW steps, float32 on the CPU")
    print("| micro-batch | checkpointing | planned GiB | measured GiB | measured / planned |")
    print("|---|---|---|---|---|")
    for micro_batch in args.micro_batch:
        for checkpointing in (False, True):
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory_plan", "--model", args.model, "--seq-len", str(args.seq_len),
                 "--steps", str(args.steps), "--one", f"{micro_batch},{int(checkpointing)}"],
                capture_output=True, text=True, check=True,
            )
            measured = json.loads(result.stdout.strip().splitlines()[-1])["peak_above_start"]
            planned = footprint(shape, Setup("reinforce", "ddp", 1, micro_batch, args.seq_len,
                                             checkpointing=checkpointing, precision="fp32")).total
            print(f"| {micro_batch} | {'yes' if checkpointing else 'no'} | {planned / GIB:.2f} | "
                  f"{measured / GIB:.2f} | {measured / planned:.2f} |", flush=True)


if __name__ == "__main__":
    main()
