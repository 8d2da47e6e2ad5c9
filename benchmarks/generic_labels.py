"""Benchmark: generic-label throughput (original tokens/s) and peak memory.

Times, on the first ``--blocks`` blocks of the ``blocks`` dataset: (1) translation + alignment
(``pipeline.blocks.build_block``, what the blocks stage does per block) and (2) both forwards
plus the generic-logit computation for every alpha (``pipeline.generic_labels.label_batch``).
Prints one line per figure. Uses ``models/reinforced`` if present, else the baseline twice
(same cost). Run after ``dvc repro blocks``:

    python -m benchmarks.generic_labels --blocks 16 --batch-size 8 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from pathlib import Path

import torch

from pipeline.blocks import build_block
from pipeline.core.padding import right_pad
from pipeline.generic_labels import label_batch
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.models import load_model, load_tokenizer, pick_device
from pipeline.store import read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--alphas", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights dtype for the forwards (bfloat16 halves CPU time on recent CPUs)")
    args = parser.parse_args()
    root = args.root
    blocks = read_dataset("blocks", root).head(args.blocks)
    tokens = int(blocks["input_ids"].map(len).sum())
    device = pick_device()
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"threads: {torch.get_num_threads()}, blocks: {len(blocks)}, tokens: {tokens}")

    documents = read_dataset("documents", root).set_index("doc_id")["text"]
    dictionary = read_dataset("dictionary", root, columns=["anchor", "translations"])
    translations = dict(zip(dictionary["anchor"], dictionary["translations"]))
    matcher = AnchorMatcher(translations)
    tokenizer = load_tokenizer(root / "models" / "baseline")
    started = time.perf_counter()
    for doc_id, group in blocks.groupby("doc_id"):
        text = documents[doc_id]
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = matcher.find(text)
        for row in group.itertuples():
            end = row.token_start + len(row.input_ids)
            build_block(block_id=row.block_id, doc_id=doc_id, index=row.index, text=text, token_start=row.token_start,
                        ids=encoded["input_ids"][row.token_start:end], offsets=encoded["offset_mapping"][row.token_start:end],
                        spans=spans, translations=translations, worlds=3, seed=0, tokenizer=tokenizer)
    align_s = time.perf_counter() - started
    print(f"translation+alignment: {tokens / align_s:,.0f} tokens/s (includes tokenizing whole documents)")

    reinforced_dir = root / "models" / "reinforced"
    baseline = load_model(root / "models" / "baseline", dtype=args.dtype, device=device)
    reinforced = load_model(reinforced_dir if reinforced_dir.exists() else root / "models" / "baseline",
                            dtype=args.dtype, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    label_batch(blocks.head(1), baseline, reinforced, alphas=args.alphas, top_k=args.top_k)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(blocks), args.batch_size):
        label_batch(blocks.iloc[start:start + args.batch_size], baseline, reinforced, alphas=args.alphas, top_k=args.top_k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    label_s = time.perf_counter() - started
    print(f"generic labels ({len(args.alphas)} alphas, both forwards): {tokens / label_s:,.0f} tokens/s")
    started = time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), autocast:  # the ceiling on this machine: the same two forwards, no labels
        for start in range(0, len(blocks), args.batch_size):
            part = blocks.iloc[start:start + args.batch_size]
            for model, column in ((reinforced, "input_ids"), (baseline, "translated_ids")):
                ids, mask = right_pad(part[column].tolist(), 0)
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    bare_s = time.perf_counter() - started
    print(f"bare forwards of both models (the ceiling): {tokens / bare_s:,.0f} tokens/s; "
          f"labels reach {bare_s / label_s:.0%} of it")
    print(f"end to end (alignment + labels): {tokens / (align_s + label_s):,.0f} tokens/s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
