"""Profiles: overrides merged onto params.yaml, validated, turned into dvc exp run -S args."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.tools.profiles import apply_profile, dvc_set_args, flatten, merge

ROOT = Path(__file__).resolve().parents[2]


def test_merge_sets_nested_leaves_and_keeps_the_rest():
    base = {"blocks": {"block_size": 512, "max_blocks": 16}, "dataset": {"alpha": 5.0}}
    merged = merge(base, {"blocks": {"max_blocks": None}})
    assert merged == {"blocks": {"block_size": 512, "max_blocks": None}, "dataset": {"alpha": 5.0}}
    assert base["blocks"]["max_blocks"] == 16  # the input is not modified


def test_flatten_and_dvc_args_round_trip_through_a_shell():
    leaves = flatten({"blocks": {"max_blocks": None}, "generic_labels": {"alphas": [2.5, 5.0]}, "finetune": {"dataset": "v1"}})
    assert leaves == [("blocks.max_blocks", None), ("generic_labels.alphas", [2.5, 5.0]), ("finetune.dataset", "v1")]
    args = dvc_set_args(leaves)
    assert " ".join(args).split() == args  # survives $(...) word splitting unchanged
    assert args == ["-S", "blocks.max_blocks=null", "-S", "generic_labels.alphas=[2.5,5.0]", "-S", 'finetune.dataset="v1"']
    with pytest.raises(ParamsError, match="whitespace"):
        dvc_set_args([("finetune.dataset", "two words")])


def test_the_shipped_full_profile_is_valid_and_covers_the_whole_canon():
    params, leaves = apply_profile("full", root=ROOT)
    assert params.blocks.max_blocks is None
    assert dict(leaves)["blocks.max_blocks"] is None


def _project(tmp_path: Path, profile: str) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "gpu.yaml").write_text(profile)
    return tmp_path


def test_an_unknown_key_in_a_profile_names_the_key_and_the_profile(tmp_path: Path):
    root = _project(tmp_path, "blocks:\n  max_blokcs: 3\n")
    with pytest.raises(ParamsError, match=r"profiles/gpu.yaml.*\n.*blocks.max_blokcs: unknown key"):
        apply_profile("gpu", root=root)


def test_a_missing_profile_lists_the_known_ones(tmp_path: Path):
    root = _project(tmp_path, "blocks:\n  max_blocks: 3\n")
    with pytest.raises(ParamsError, match=r"profiles/cloud.yaml: no such profile \(known: gpu\)"):
        apply_profile("cloud", root=root)


def test_a_profile_that_is_not_a_mapping_is_refused(tmp_path: Path):
    root = _project(tmp_path, "- blocks\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        apply_profile("gpu", root=root)
    assert yaml.safe_load((root / "params.yaml").read_text())["blocks"]["max_blocks"] == 16
