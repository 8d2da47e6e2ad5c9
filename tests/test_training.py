"""The training loop on the tiny random Llama, on CPU: loss, accumulation, schedule, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline import checkpoints
from pipeline.batches import BlockBatches, step_indices
from pipeline.models import load_model
from pipeline.training import LOG_FIELDS, LinearWarmupDecay, TrainSettings, causal_lm_loss, train
from pipeline.training_log import TrainingLog, read_training_log


def _blocks(n: int, *, seed: int = 0, vocab: int = 250) -> list[list[int]]:
    """``n`` blocks of 16 tokens; every third one shorter (a document's last block)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(1, vocab, (16 if i % 3 else 11,), generator=generator).tolist() for i in range(n)
    ]


def _settings(**changes) -> TrainSettings:
    values = dict(learning_rate=1e-2, epochs=1.0, batch_size=2, micro_batch_size=1, warmup_ratio=0.0,
                  checkpoint_every=2, seed=0)
    return TrainSettings(**(values | changes))


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _log(folder: Path) -> list[dict[str, float]]:
    return read_training_log(folder)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def tiny(tiny_model_dir: Path):
    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def test_block_batches_pad_and_mask():
    batches = BlockBatches([[5, 6, 7], [8, 9]], loss_mask=[[1, 0, 1], [1, 1]],
                           per_position={"topk_ids": [[[1, 2]] * 3, [[3, 4]] * 2]}, pad_id=99)
    batch = batches([1, 0])
    assert batch["input_ids"].tolist() == [[8, 9, 99], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["loss_mask"].tolist() == [[1, 1, 0], [1, 0, 1]]
    assert batch["topk_ids"].shape == (2, 3, 2) and batch["topk_ids"][0, 2].tolist() == [0, 0]
    assert len(batches) == 2
    assert batches.fingerprint != BlockBatches([[5, 6, 7], [8, 10]]).fingerprint
    with pytest.raises(ValueError, match="one entry per position"):
        BlockBatches([[5, 6, 7]], loss_mask=[[1, 1]])


def test_causal_lm_loss_matches_hand_computation(tiny):
    long, short = list(range(3, 19)), list(range(40, 49))  # 16 and 9 tokens
    mask_long, mask_short = [1] * 16, [1, 0, 1, 1, 0, 1, 1, 1, 1]
    batch = BlockBatches([long, short], loss_mask=[mask_long, mask_short], pad_id=7)([0, 1])
    with torch.no_grad():
        loss_sum, n_tokens = causal_lm_loss(tiny, batch)

    expected, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in ((long, mask_long), (short, mask_short)):
            logits = tiny(torch.tensor([ids])).logits[0]  # unpadded, alone: [n, vocab]
            keep = torch.tensor(mask[:-1], dtype=torch.bool)  # position i predicts token i + 1
            expected += F.cross_entropy(logits[:-1][keep], torch.tensor(ids[1:])[keep], reduction="sum").item()
            count += int(keep.sum())
    assert n_tokens == count == 15 + 6 == causal_lm_loss.positions(batch)
    assert loss_sum.item() == pytest.approx(expected, rel=1e-5)

    # Without a loss mask every real position counts, padding never does.
    plain = BlockBatches([long, short], pad_id=7)([0, 1])
    with torch.no_grad():
        assert causal_lm_loss(tiny, plain)[1] == 15 + 8


def test_loss_goes_down_on_a_repeated_block(tiny, tmp_path: Path):
    block = _blocks(1)[0]
    result = train(tiny, BlockBatches([block] * 4), settings=_settings(epochs=10.0, batch_size=2),
                   checkpoint_dir=tmp_path / "ckpt", log_dir=tmp_path / "loss-log",
                   device="cpu")
    losses = [float(row["loss"]) for row in _log(tmp_path / "loss-log")]
    assert result.completed and result.steps == len(losses) == 20
    assert losses[-1] < 0.5 * losses[0]
    assert result.precision == "fp32" and result.device == "cpu" and result.tokens == 20 * 2 * len(block)


def test_gradient_accumulation_matches_one_micro_batch(tiny_model_dir: Path, tmp_path: Path):
    # Lengths 16, 5, 16, 16: any two micro-batches of 2 hold different token counts, so averaging
    # per micro-batch instead of over the whole batch would change the gradient's direction.
    generator = torch.Generator().manual_seed(3)
    blocks = BlockBatches([torch.randint(1, 250, (n,), generator=generator).tolist() for n in (16, 5, 16, 16)])
    grads, weights, losses = [], [], []
    for micro in (4, 2, 1):
        model = load_model(tiny_model_dir, dtype="float32", device="cpu")
        result = train(model, blocks, settings=_settings(learning_rate=1e-3, batch_size=4, micro_batch_size=micro),
                       checkpoint_dir=tmp_path / f"ckpt{micro}", device="cpu")
        assert result.steps == 1
        # After the last step .grad still holds its (scaled, clipped) gradient.
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        weights.append(_weights(model))
        losses.append(result.final_loss)
    for other in (1, 2):
        assert _max_gap(grads[other], grads[0]) < 1e-6
        # Adam's first step is about lr * sign(gradient): a tolerance of 1% of lr.
        assert _max_gap(weights[other], weights[0]) < 1e-5
        assert losses[other] == pytest.approx(losses[0], rel=1e-5)


def test_gradient_checkpointing_gives_the_same_training(tiny_model_dir: Path, tmp_path: Path):
    blocks = BlockBatches(_blocks(6))
    runs = {}
    for checkpointing in (False, True):
        model = load_model(tiny_model_dir, dtype="float32", device="cpu")
        result = train(model, blocks, settings=_settings(epochs=2.0, gradient_checkpointing=checkpointing),
                       checkpoint_dir=tmp_path / f"ckpt-{checkpointing}", log_dir=tmp_path / f"log-{checkpointing}",
                       device="cpu")
        assert model.is_activation_checkpointing is checkpointing and result.gradient_checkpointing is checkpointing
        runs[checkpointing] = (_weights(model), [row["loss"] for row in _log(tmp_path / f"log-{checkpointing}")])
    (plain, plain_losses), (recomputed, recomputed_losses) = runs[False], runs[True]
    assert len(plain_losses) == 6 and recomputed_losses == pytest.approx(plain_losses, rel=1e-6)
    assert _max_gap(plain, recomputed) < 1e-6
    # Execution only: a checkpoint written without it resumes with it.
    ckpt = tmp_path / "switched"
    train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=_settings(epochs=2.0),
          checkpoint_dir=ckpt, device="cpu", max_steps_this_run=2)
    resumed = train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, checkpoint_dir=ckpt,
                    settings=_settings(epochs=2.0, gradient_checkpointing=True), device="cpu")
    assert resumed.resumed_from == 2


def test_resume_after_interruption_is_identical(tiny_model_dir: Path, tmp_path: Path):
    blocks = BlockBatches(_blocks(5))
    settings = _settings(epochs=2.0, batch_size=2, warmup_ratio=0.2, weight_decay=0.01)  # ceil(10/2) = 5 steps

    straight = load_model(tiny_model_dir, dtype="float32", device="cpu")
    full = train(straight, blocks, settings=settings, checkpoint_dir=tmp_path / "ckpt-straight", log_dir=tmp_path / "straight-log", device="cpu")
    assert full.completed and full.steps == 5

    ckpt, log = tmp_path / "ckpt", tmp_path / "resumed-log"

    # A planned stop after 1 step (checkpointed there), then a crash at step 3, after the
    # checkpoint of step 2: the resumed run must redo step 3 without logging it twice.
    first = train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=settings,
                  checkpoint_dir=ckpt, log_dir=log, device="cpu",
                  max_steps_this_run=1)
    assert (first.completed, first.steps, first.resumed_from) == (False, 1, 0)
    assert [p.name for p in ckpt.iterdir()] == ["step-00000001.pt"]

    def crash(record):
        if record["step"] == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=settings,
              checkpoint_dir=ckpt, log_dir=log, device="cpu", on_step=crash)
    assert [row["step"] for row in _log(log)] == [1, 2, 3]
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000001.pt", "step-00000002.pt"]  # the two latest

    resumed_model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    resumed = train(resumed_model, blocks, settings=dataclasses.replace(settings, checkpoint_every=3),
                    checkpoint_dir=ckpt, log_dir=log, device="cpu")
    assert (resumed.completed, resumed.steps, resumed.resumed_from) == (True, 5, 2)
    assert _max_gap(_weights(straight), _weights(resumed_model)) <= 1e-6
    assert resumed.final_loss == pytest.approx(full.final_loss, abs=1e-6)

    def comparable(rows):
        return [{k: row[k] for k in LOG_FIELDS if k != "tokens_per_s"} for row in rows]

    straight_log, resumed_log = _log(tmp_path / "straight-log"), _log(log)
    assert [int(row["step"]) for row in resumed_log] == [1, 2, 3, 4, 5]
    assert comparable(resumed_log) == comparable(straight_log)

    # A finished run's last checkpoint resumes to "nothing left to do", with the trained weights.
    again_model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    again = train(again_model, blocks, settings=settings, checkpoint_dir=ckpt, log_dir=log, device="cpu")
    assert (again.resumed_from, again.steps, again.tokens, again.completed) == (5, 5, 0, True)
    assert len(_log(log)) == 5 and _max_gap(_weights(straight), _weights(again_model)) <= 1e-6


def test_checkpoint_of_another_run_is_discarded(tiny_model_dir: Path, tmp_path: Path):
    blocks = BlockBatches(_blocks(4))
    ckpt = tmp_path / "ckpt"
    train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=_settings(),
          checkpoint_dir=ckpt, device="cpu", max_steps_this_run=1)
    other = train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks,
                  settings=_settings(learning_rate=1e-3), checkpoint_dir=ckpt, device="cpu")
    assert other.resumed_from == 0 and other.completed
    other_data = train(load_model(tiny_model_dir, dtype="float32", device="cpu"), BlockBatches(_blocks(4, seed=1)),
                       settings=_settings(learning_rate=1e-3), checkpoint_dir=ckpt, device="cpu")
    assert other_data.resumed_from == 0


def test_named_loss_terms_are_logged_per_step_with_dvclive(tiny, tmp_path: Path):
    def with_terms(model, batch):
        loss_sum, n_tokens = causal_lm_loss(model, batch)
        return loss_sum, n_tokens, {"quarter": loss_sum.item() / 4, "tokens_seen": float(n_tokens)}

    log = tmp_path / "log"
    # Micro-batches of 1 with blocks of 16 and 11 tokens: the terms must be summed over the
    # micro-batches and divided by the step's token count, like the loss.
    result = train(tiny, BlockBatches(_blocks(4)), loss_fn=with_terms, settings=_settings(batch_size=2),
                   checkpoint_dir=tmp_path / "ckpt", log_dir=log, device="cpu")
    rows = _log(log)
    assert [r["step"] for r in rows] == [1, 2] and result.steps == 2
    for row in rows:
        assert row["quarter"] == pytest.approx(row["loss"] / 4) and row["tokens_seen"] == 1.0
        assert set(row) == set(LOG_FIELDS) | {"quarter", "tokens_seen"}
    assert sorted(p.name for p in (log / "plots" / "metrics").iterdir()) == sorted(
        f"{name}.tsv" for name in set(LOG_FIELDS) - {"step"} | {"quarter", "tokens_seen"})
    summary = json.loads((log / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["loss"] == pytest.approx(rows[-1]["loss"])


def test_the_training_log_is_rewritten_from_the_checkpoint_rows(tmp_path: Path, monkeypatch):
    # In a git + DVC repository without commits (`dvc repro` works there; DVCLive's own
    # repository probe fails with "Empty git repo").
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True)
    rows = [{"step": step, "loss": 3.0 - step, "learning_rate": 1e-3} for step in (1, 2, 3)]
    log = TrainingLog(Path("log"), [])
    for row in rows:
        log.append(row)
    log.close()
    assert read_training_log(Path("log")) == [{k: float(v) for k, v in row.items()} for row in rows]
    # A resumed run whose checkpoint holds steps 1-2: step 3 (to be redone) is gone, not doubled.
    TrainingLog(Path("log"), rows[:2]).close()
    assert [r["step"] for r in read_training_log(Path("log"))] == [1.0, 2.0]
    assert json.loads(Path("log/metrics.json").read_text())["step"] == 2
    assert not Path("dvc.yaml").exists() and not Path("log/dvc.yaml").exists()  # the stage's dvc.yaml is the project's


def test_schedule_data_order_and_settings(tiny_model_dir: Path, tmp_path: Path):
    factor = LinearWarmupDecay(total_steps=10, warmup_steps=2)
    assert [round(factor(s), 4) for s in range(10)] == [0.3333, 0.6667, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]

    # Fractional epochs: ceil(1.5 * 5 / 2) = 4 steps; every block once per epoch, seeded.
    settings = _settings(epochs=1.5, batch_size=2, warmup_ratio=0.25)
    assert settings.total_steps(5) == 4 and settings.warmup_steps(5) == 1
    assert TrainSettings(learning_rate=1, epochs=0.3, batch_size=1, micro_batch_size=1).total_steps(10) == 3
    stream = [i for s in range(5) for i in step_indices(s, n_examples=5, batch_size=2, seed=0)]
    assert sorted(stream[:5]) == sorted(stream[5:10]) == [0, 1, 2, 3, 4]
    assert stream[:5] != [i for s in range(3) for i in step_indices(s, n_examples=5, batch_size=2, seed=1)][:5]
    assert step_indices(3, n_examples=5, batch_size=2, seed=0) == stream[6:8]

    log = tmp_path / "loss-log"
    train(load_model(tiny_model_dir, dtype="float32", device="cpu"), BlockBatches(_blocks(5)), settings=settings,
          checkpoint_dir=tmp_path / "ckpt", log_dir=log, device="cpu")
    rows = _log(log)
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([5e-3, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3])
    assert [float(r["epoch"]) for r in rows] == [0.4, 0.8, 1.2, 1.6]
    assert [int(r["tokens"]) for r in rows] == [
        sum(len(_blocks(5)[i]) for i in step_indices(s, n_examples=5, batch_size=2, seed=0)) for s in range(4)]

    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        _settings(batch_size=3, micro_batch_size=2)
    with pytest.raises(ValueError, match="float32 weights"):
        train(load_model(tiny_model_dir, dtype="bfloat16", device="cpu"), BlockBatches(_blocks(2)),
              settings=_settings(), checkpoint_dir=tmp_path / "c", device="cpu")



# --- checkpoints that survive kills and bad disks ----------------------------------------------

_KILLED_DURING_SAVE = """
import os, signal, sys, torch
from pipeline import checkpoints
from pipeline.models import load_model
from pipeline.training_log import TrainingLog, read_training_log
from pipeline.batches import BlockBatches
from pipeline.training import TrainSettings, train
from tests.test_training import _blocks

real_save = torch.save
def save_then_die(state, handle):
    if state["step"] == 2:  # half of step 2's checkpoint is on disk when the kill comes
        real_save(state, handle)
        handle.truncate(handle.tell() // 2)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(state, handle)
checkpoints.torch.save = save_then_die
settings = TrainSettings(learning_rate=1e-2, epochs=2.0, batch_size=2, micro_batch_size=1, checkpoint_every=1)
train(load_model(sys.argv[1], dtype="float32", device="cpu"), BlockBatches(_blocks(5)), settings=settings,
      checkpoint_dir=sys.argv[2], device="cpu", progress=False)
"""


def test_a_kill_during_a_checkpoint_write_leaves_no_temporary_and_resumes(tiny_model_dir: Path, tmp_path: Path,
                                                                        capfd):
    settings = _settings(epochs=2.0, batch_size=2, checkpoint_every=1)
    blocks = BlockBatches(_blocks(5))
    straight = load_model(tiny_model_dir, dtype="float32", device="cpu")
    train(straight, blocks, settings=settings, checkpoint_dir=tmp_path / "straight", device="cpu")

    ckpt = tmp_path / "ckpt"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_DURING_SAVE, str(tiny_model_dir), str(ckpt)],
                            capture_output=True, text=True, env=env)
    assert killed.returncode == -9, killed.stderr
    stale = list(ckpt.glob(".step-00000002.pt.tmp-*"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # half a checkpoint, never renamed
    assert [p.name for p in ckpt.glob("step-*")] == ["step-00000001.pt"]

    resumed = load_model(tiny_model_dir, dtype="float32", device="cpu")
    result = train(resumed, blocks, settings=settings, checkpoint_dir=ckpt, device="cpu")
    assert f"removed {stale[0]}" in capfd.readouterr().err
    assert (result.resumed_from, result.steps) == (1, 5)
    assert not list(ckpt.glob(".*")) and sorted(p.name for p in ckpt.iterdir()) == ["step-00000004.pt", "step-00000005.pt"]
    assert _max_gap(_weights(straight), _weights(resumed)) <= 1e-6


def test_an_unreadable_latest_checkpoint_is_skipped_for_the_one_before(tiny_model_dir: Path, tmp_path: Path, capfd):
    settings = _settings(epochs=2.0, batch_size=2, checkpoint_every=1)
    blocks = BlockBatches(_blocks(5))
    straight = load_model(tiny_model_dir, dtype="float32", device="cpu")
    full = train(straight, blocks, settings=settings, checkpoint_dir=tmp_path / "straight", device="cpu",
                 log_dir=tmp_path / "straight-log")

    ckpt, log = tmp_path / "ckpt", tmp_path / "loss-log"
    train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=settings, checkpoint_dir=ckpt,
          device="cpu", log_dir=log, max_steps_this_run=3)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000002.pt", "step-00000003.pt"]
    latest = ckpt / "step-00000003.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])  # a truncated copy, a bad sector

    resumed = load_model(tiny_model_dir, dtype="float32", device="cpu")
    result = train(resumed, blocks, settings=settings, checkpoint_dir=ckpt, device="cpu", log_dir=log)
    assert f"skipping unreadable checkpoint {latest}" in capfd.readouterr().err
    assert (result.resumed_from, result.steps, result.completed) == (2, 5, True)
    assert _max_gap(_weights(straight), _weights(resumed)) <= 1e-6 and result.final_loss == pytest.approx(full.final_loss)
    assert [int(r["step"]) for r in _log(log)] == [1, 2, 3, 4, 5]

    # Nothing readable at all: a fresh start, not a crash.
    for path in ckpt.iterdir():
        path.write_bytes(b"not a checkpoint")
    fresh = train(load_model(tiny_model_dir, dtype="float32", device="cpu"), blocks, settings=settings,
                  checkpoint_dir=ckpt, device="cpu", max_steps_this_run=1)
    assert fresh.resumed_from == 0 and "skipping unreadable checkpoint" in capfd.readouterr().err
    assert checkpoints.load_latest(tmp_path / "nowhere") is None


def test_a_sharded_checkpoint_is_a_folder_written_by_every_process_and_renamed_when_whole(tmp_path: Path):
    calls = []

    def save_state(folder: Path) -> None:  # what accelerate's save_state writes, one file per process
        calls.append(folder.name)
        for rank in range(2):
            (folder / f"shard_{rank}.bin").write_bytes(b"x" * 10)

    fields = {"identity": {"run": 1}, "step": 0, "examples_seen": 0, "last_loss": 1.0, "log": []}
    for step in (1, 2, 3):
        final = checkpoints.write_sharded_checkpoint(tmp_path, step, fields | {"step": step}, save_state=save_state,
                                                     is_main=True, barrier=lambda: None)
    assert calls == [".step-00000001.tmp-sharded", ".step-00000002.tmp-sharded", ".step-00000003.tmp-sharded"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]  # the two latest
    assert sorted(p.name for p in final.iterdir()) == ["shard_0.bin", "shard_1.bin", "whp_state.pt"]
    state, path = checkpoints.load_latest(tmp_path)
    assert path == final and state["step"] == 3 and state["layout"] == "sharded"

    # A write killed midway leaves a temporary folder; a folder without the run's fields is unreadable.
    (tmp_path / ".step-00000004.tmp-sharded").mkdir()
    (tmp_path / "step-00000005").mkdir()
    assert [p.name for p in checkpoints.remove_stale_temporaries(tmp_path)] == [".step-00000004.tmp-sharded"]
    warnings = []
    state, path = checkpoints.load_latest(tmp_path, warn=warnings.append)
    assert path == final and "step-00000005" in warnings[0] and not (tmp_path / "step-00000005").exists()
    checkpoints.remove_checkpoints(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_is_on_disk_before_it_is_renamed_into_place(tmp_path: Path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoints.os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size > 0)),
                                                             real_fsync(fd)))
    monkeypatch.setattr(checkpoints.os, "replace", lambda a, b: (events.append(("replace", Path(b).name)),
                                                                 real_replace(a, b)))
    checkpoints.write_checkpoint(tmp_path, 7, {"weights": torch.ones(3)})
    # The file's bytes, then the rename, then the folder entry (a folder's st_size is not 0 either).
    assert events == [("fsync", True), ("replace", "step-00000007.pt"), ("fsync", True)]
    for step in (8, 9):
        checkpoints.write_checkpoint(tmp_path, step, {"weights": torch.ones(3)})
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [8, 9]
