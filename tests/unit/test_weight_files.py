"""Weights files are checked before anything loads: a truncated file, or a corrupted header of the same size, is one
line naming the file, in training and in eval, with a manifest (an export of ours) or without (a copied model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from accel_tasks.errors import ConfigError
from accel_tasks.manifest import manifest_problem, safetensors_problem, write_manifest


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a": torch.zeros(4, 3), "b": torch.ones(2)}, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def test_a_whole_file_passes_and_each_kind_of_damage_is_named(weights: Path):
    assert safetensors_problem(weights) is None
    data = weights.read_bytes()
    weights.write_bytes(data[:-5])
    assert "is truncated or corrupted (its header describes" in safetensors_problem(weights)
    weights.write_bytes(data[:8] + b"}" + data[9:])  # the same size, the header's JSON broken
    assert safetensors_problem(weights) == "model.safetensors is corrupted (its header is not a safetensors header)"
    weights.write_bytes(b"\xff" * 8 + data[8:])
    assert "its header length" in safetensors_problem(weights)
    weights.write_bytes(b"abc")
    assert "too few for a safetensors file" in safetensors_problem(weights)


def test_an_export_with_a_corrupted_header_of_the_same_size_is_refused(weights: Path):
    """Its manifest's sizes still match: preflight reads the header of every weights file too."""
    from accel_tasks.preflight import check_weight_files

    write_manifest(weights.parent, kind="export")
    data = bytearray(weights.read_bytes())
    data[8] = ord("[")
    weights.write_bytes(bytes(data))
    assert manifest_problem(weights.parent) is None  # the size check alone passes it
    with pytest.raises(ConfigError, match="model.safetensors is corrupted"):
        check_weight_files(str(weights.parent))


def test_preflight_checks_the_model_directory_in_training_too(tmp_path: Path, weights: Path):
    from accel_tasks.preflight import make_plan, resolve_config

    base = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "summarization" / "model"
    for item in base.iterdir():
        if item.is_file():
            shutil.copy(item, weights.parent / item.name)
    weights.write_bytes(weights.read_bytes()[:-1])
    args = ["recipe=summarization", f"model.name_or_path={weights.parent}", f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(ConfigError, match=r"model.name_or_path '.*model': model.safetensors is truncated or corrupted"):
        make_plan(*resolve_config(args, None))
    assert not (tmp_path / "out").exists()
