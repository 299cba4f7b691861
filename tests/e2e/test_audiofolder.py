"""Audio data sets through ``data.name`` without torchcodec: a local folder in datasets' audiofolder layout
(``<split>/metadata.csv`` with a ``file_name`` column beside the clips) and a hub-style data set whose parquet files
hold an ``Audio`` column, streamed; a clip soundfile cannot read is one line naming what to install.

datasets 5.x encodes and decodes ``Audio`` through torchcodec (not installed here: its wheels fail with the CPU build
of torch); every run below goes through the CLI and reads the clips with soundfile, as the bundled sample does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import check, one_error_line, read_json, read_jsonl, run_cli

SAMPLE = Path(__file__).resolve().parents[2] / "accel_tasks" / "samples" / "speech_recognition"
SIZES = {"train": 8, "validation": 4}
RUN = ["recipe=speech_recognition", "train.max_steps=2", "train.batch_size=4", "eval.batch_size=4", "train.threads=1"]


def audiofolder(root: Path) -> Path:
    """The bundled sample's first clips in the audiofolder layout; the transcripts under ``transcription``."""
    for split, size in SIZES.items():
        folder = root / split
        folder.mkdir(parents=True)
        rows = [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text().splitlines()[:size]]
        lines = ["file_name,transcription"]
        for row in rows:
            name = Path(row["audio"]).name
            shutil.copy(SAMPLE / row["audio"], folder / name)
            lines.append(f"{name},{row['text']}")
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def hub_parquet(root: Path) -> Path:
    """A data set as the hub serves one: ``data/<split>-00000-of-00001.parquet`` with the clips' bytes in an Audio
    column (cast from the plain ``{bytes, path}`` struct: encoding through Audio() itself would need torchcodec)."""
    from datasets import Audio, Dataset

    (root / "data").mkdir(parents=True)
    for split, size in SIZES.items():
        rows = [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text().splitlines()[:size]]
        clips = [{"bytes": (SAMPLE / row["audio"]).read_bytes(), "path": Path(row["audio"]).name} for row in rows]
        dataset = Dataset.from_dict({"audio": clips, "sentence": [row["text"] for row in rows]})
        dataset.cast_column("audio", Audio()).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def test_an_audiofolder_directory_trains_and_scores(tmp_path: Path):
    folder = audiofolder(tmp_path / "clips")
    env = {"HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = check(run_cli([*RUN, f"data.name={folder}", "output_dir=run"], tmp_path, env=env))
    assert "train: duration filter [0, 20] s removed 0 of 8 clips" in result.stdout
    assert "step 2/2 loss" in result.stdout
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["train_steps"] == 2 and metrics["eval_samples"] == 4 and metrics["wer"] >= 0
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert [r["input"] for r in records] == [str(folder / "validation" / f"validation-000{i}.flac") for i in range(4)]
    assert records[0]["reference"] == "six six four"


def test_a_streamed_hub_audio_data_set_trains_and_scores(tmp_path: Path):
    """A stream encodes every row it reads, decodes it unless told not to, and an eval stream's first rows are stored
    again: all without torchcodec (the audiofolder builder's stores are the map-style test's)."""
    folder = hub_parquet(tmp_path / "data_set")
    args = [*RUN, f"data.name={folder}", "data.streaming=true", "data.shuffle_buffer=0", "data.max_eval_samples=4"]
    result = check(run_cli([*args, "output_dir=run"], tmp_path, env={"HF_DATASETS_CACHE": str(tmp_path / "cache")}))
    assert "step 2/2 loss" in result.stdout
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["eval_samples"] == 4 and metrics["wer"] >= 0
    assert read_jsonl(tmp_path / "run" / "predictions.jsonl")[0]["reference"] == "six six four"


def test_a_clip_soundfile_cannot_read_is_one_line(tmp_path: Path):
    folder = audiofolder(tmp_path / "clips")
    # The start of an MP4 container (an .m4a clip): a format libsndfile does not read.
    (folder / "train" / "late.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom")
    with (folder / "train" / "metadata.csv").open("a") as handle:
        handle.write("late.m4a,one two\n")
    result = run_cli([*RUN, f"data.name={folder}", "output_dir=run"], tmp_path)
    line = one_error_line(result, alone=False)
    assert f"cannot decode audio {folder / 'train' / 'late.m4a'}" in line
    assert "install ffmpeg, then e.g. `ffmpeg -i in.m4a out.flac`" in line
    assert "torchcodec" not in result.stderr
