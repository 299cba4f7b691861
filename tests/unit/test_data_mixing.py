"""data.mix: how it is written (YAML, the command line), its one-line refusals, and the draws themselves.

The draws are datasets' real ``interleave_datasets`` over real (in-memory or jsonl) datasets; the loader handed to
``mix_train`` is the package's own (``raw.load_raw_datasets``) where files are involved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from accel_tasks.config import DataConfig, build_config, load_yaml_layer, parse_overrides, to_yaml
from accel_tasks.config.groups import MixSource
from accel_tasks.data.mixing import describe_mix, mix_train
from accel_tasks.data.raw import check_data_files, load_raw_datasets
from accel_tasks.errors import ConfigError
from accel_tasks.recipes.summarization import SummarizationOptions

YAML = """
data:
  mix:
    - {train_file: news.jsonl, weight: 0.7}
    - {name: path/to/local_ds, config: null, split: train, weight: 0.3, columns: {article: document}}
  validation_file: dev.jsonl
"""
COMMAND_LINE = (
    "data.mix=[{train_file: news.jsonl, weight: 0.7}, "
    "{name: path/to/local_ds, split: train, weight: 0.3, columns: {article: document}}]"
)


def build(*overrides: str, file: Path | None = None):
    layers = [("--config", load_yaml_layer(file, "--config"))] if file is not None else []
    layers.append(("overrides", parse_overrides(overrides, SummarizationOptions)))
    return build_config(SummarizationOptions, layers)


def test_the_yaml_form_and_the_command_line_form_give_the_same_typed_sources(tmp_path: Path):
    (tmp_path / "run.yaml").write_text(YAML)
    from_file = build(file=tmp_path / "run.yaml")
    typed = build(COMMAND_LINE, "data.validation_file=dev.jsonl")
    assert from_file.data == typed.data
    first, second = typed.data.mix
    assert (first.train_file, first.name, first.split, first.weight, dict(first.columns)) == (
        "news.jsonl",
        None,
        "train",
        0.7,
        {},
    )
    assert (second.name, second.weight, dict(second.columns)) == ("path/to/local_ds", 0.3, {"article": "document"})
    assert typed.data.mix_stopping == "first_exhausted" and typed.data.mix_seed == 42
    # The saved config.yaml of a run reads back as the same mix (--config output_dir/config.yaml repeats the run).
    (tmp_path / "saved.yaml").write_text(to_yaml(typed))
    assert build(file=tmp_path / "saved.yaml").data == typed.data


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["data.mix=[{train_file: a.jsonl, weight: 0}]"],
            "data.mix[0].weight=0.0 must be a positive number (weights are relative",
        ),
        (["data.mix=[{train_file: a.jsonl, weight: -1}]"], "data.mix[0].weight=-1.0 must be a positive number"),
        (["data.mix=[{train_file: a.jsonl, weight: .nan}]"], "data.mix[0].weight=nan must be a positive number"),
        (["data.mix=[{train_file: a.jsonl}, {weight: 1}]"], "data.mix[1] names no source; give it one"),
        (["data.mix=[{train_file: a.jsonl, name: ds}]"], "data.mix[0] names both train_file and name"),
        (
            ["data.mix=[{train_file: a.jsonl}]", "data.train_file=b.jsonl"],
            "data.mix and data.train_file both give the train split",
        ),
        (["data.mix=[{train_file: a.jsonl}]", "data.mix_stopping=oversample"], "data.mix_stopping='oversample'"),
        (
            ["data.mix=[{train_file: a.jsonl, columns: {x: text, y: text}}]"],
            "data.mix[0].columns renames two columns to 'text'",
        ),
        (["data.mix=[{trainfile: a.jsonl}]"], "Did you mean: 'train_file'"),
        (["data.mix=[{train_file: a.jsonl, weight: lots}]"], "wrong type for"),
    ],
)
def test_bad_mixes_are_one_line_naming_the_source_and_the_fix(overrides: list[str], expected: str):
    with pytest.raises(ConfigError) as error:
        build(*overrides, "data.validation_file=dev.jsonl")
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_training_mix_needs_a_named_eval_split_and_an_eval_run_ignores_the_mix():
    with pytest.raises(ConfigError, match=r"data.mix gives the train split only; name the validation split"):
        build("data.mix=[{train_file: a.jsonl}]")
    build("data.mix=[{train_file: a.jsonl}]", "data.name=some/dataset")  # its validation split
    build("data.mix=[{train_file: a.jsonl}]", "mode=eval", "model.name_or_path=m")


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def in_memory_loader(sources: dict[str, list[dict]]):
    """A loader as raw.py hands it: a source's DataConfig -> its train split (here in-memory datasets)."""
    import datasets

    def load(source: DataConfig):
        return datasets.Dataset.from_list(sources[source.train_file])

    return load


def mix_config(weights: list[float], stopping: str = "first_exhausted", seed: int = 42, **data) -> DataConfig:
    sources = [MixSource(train_file=f"s{index}", weight=weight) for index, weight in enumerate(weights)]
    return DataConfig(mix=sources, mix_stopping=stopping, mix_seed=seed, **data)


def texts(dataset) -> list[str]:
    """The text column at once (indexing a column reads it row by row)."""
    return dataset.with_format("arrow")[:]["text"].to_pylist()


def test_the_counts_follow_the_weights_within_sampling_error(capsys):
    """3000 rows each at 0.7 / 0.3, first_exhausted: the mix ends when s0 runs out (~4300 draws); s0's share is
    a binomial proportion, within 4 standard errors of 0.7. The line gives the same counts."""
    rows = {f"s{i}": [{"text": f"{i}-{n}"} for n in range(3000)] for i in range(2)}
    mixed = mix_train(mix_config([0.7, 0.3]), in_memory_loader(rows), streaming=False)
    sources = [row.split("-")[0] for row in texts(mixed)]
    drawn, first = len(sources), sources.count("0")
    assert first == 3000 and mixed.column_names == ["text"]
    share, error = first / drawn, math.sqrt(0.7 * 0.3 / drawn)
    assert abs(share - 0.7) < 4 * error, (share, drawn)
    line = capsys.readouterr().out
    assert f"train: data.mix gave {drawn} rows per epoch (first_exhausted, data.mix_seed 42): " in line
    assert f"s0 {first} ({100 * share:.1f}%, weight 70.0%), s1 {drawn - first}" in line
    # Seeded: the same seed draws the same rows in the same order, another seed others.
    assert texts(mix_train(mix_config([0.7, 0.3]), in_memory_loader(rows), streaming=False)) == texts(mixed)
    assert texts(mix_train(mix_config([0.7, 0.3], seed=7), in_memory_loader(rows), streaming=False)) != texts(mixed)


def test_all_exhausted_gives_every_row_and_repeats_the_smaller_source():
    rows = {"s0": [{"text": f"0-{n}"} for n in range(50)], "s1": [{"text": f"1-{n}"} for n in range(500)]}
    mixed = mix_train(mix_config([1, 1], stopping="all_exhausted"), in_memory_loader(rows), streaming=False)
    drawn = texts(mixed)
    assert {t for t in drawn if t.startswith("1-")} == {f"1-{n}" for n in range(500)}
    assert sum(t.startswith("0-") for t in drawn) > 50  # the small source starts again
    assert len(mix_train(mix_config([1, 1], max_train_samples=40), in_memory_loader(rows), streaming=False)) == 40


def test_a_stream_counts_each_pass_and_every_pass_draws_the_same_rows(tmp_path: Path, capsys):
    """Files streamed through the package's loader: each pass ends with its line; a replay reads the same rows."""
    for index in range(2):
        write_rows(tmp_path / f"s{index}.jsonl", [{"text": f"{index}-{n}", "n": n} for n in range(200)])
    cfg = DataConfig(
        mix=[MixSource(train_file=str(tmp_path / f"s{i}.jsonl"), weight=w) for i, w in enumerate([3, 1])],
        streaming=True,
    )
    raw = load_raw_datasets(cfg, ("train",))
    capsys.readouterr()
    first, second = [row["text"] for row in raw["train"]], [row["text"] for row in raw["train"]]
    assert first == second and list(raw["train"].column_names) == ["text", "n"]
    drawn, zeros = len(first), sum(t.startswith("0-") for t in first)
    assert zeros == 200 and abs(zeros / drawn - 0.75) < 4 * math.sqrt(0.75 * 0.25 / drawn)
    lines = [line for line in capsys.readouterr().out.splitlines() if "data.mix gave" in line]
    assert [line.split(" (")[0] for line in lines] == [
        f"[accel_tasks] train: data.mix gave {drawn} rows in pass 1",
        f"[accel_tasks] train: data.mix gave {drawn} rows in pass 2",
    ]
    assert f"{tmp_path / 's0.jsonl'} 200 (" in lines[0]


def test_a_source_lacking_the_recipes_columns_is_named(tmp_path: Path):
    """The recipe's own required_columns, checked on each source after its renames: the recipe's own refusal (it
    cannot pick the columns) or the missing column, each naming the source."""
    from accel_tasks.recipes.summarization import SummarizationRecipe

    write_rows(tmp_path / "news.jsonl", [{"document": "d", "summary": "s"}] * 4)
    write_rows(tmp_path / "cnn.jsonl", [{"article": "d", "highlights": "s"}] * 4)
    cnn = tmp_path / "cnn.jsonl"
    sources = [
        MixSource(train_file=str(tmp_path / "news.jsonl")),
        MixSource(train_file=str(cnn), columns={"article": "document"}),
    ]

    def load(*overrides: str):
        recipe = SummarizationRecipe(build("data.validation_file=dev.jsonl", *overrides))
        return load_raw_datasets(
            DataConfig(mix=sources), ("train",), required_columns=lambda cols: recipe.required_columns("train", cols)
        )

    with pytest.raises(ConfigError) as error:
        load()
    assert str(error.value).startswith(f"data.mix[1] ({cnn}): cannot tell the text and summary columns apart among")
    with pytest.raises(ConfigError) as error:
        load("task.text_column=document", "task.summary_column=summary")
    assert str(error.value) == (
        f"data.mix[1] ({cnn}) has no column 'summary', which the recipe reads (its columns: document, highlights); "
        "rename one: data.mix[1].columns={<its column>: summary}, or set task.summary_column=<column>"
    )
    sources[1].columns["highlights"] = "summary"
    assert load()["train"].column_names == ["document", "summary"]


def test_source_errors_name_the_source_and_its_key(tmp_path: Path, capsys):
    write_rows(tmp_path / "a.jsonl", [{"text": "x", "id": 1}] * 3)
    missing = DataConfig(mix=[MixSource(train_file=str(tmp_path / "a.jsonl")), MixSource(train_file="gone.jsonl")])
    with pytest.raises(ConfigError, match=r"^data.mix\[1\].train_file 'gone.jsonl' does not exist"):
        check_data_files(missing, ("train", "validation"))
    gone = DataConfig(mix=[MixSource(name=str(tmp_path / "no_such_dataset"))])
    with pytest.raises(ConfigError, match=r"^data.mix\[0\].name '.*no_such_dataset' does not exist; point it at"):
        check_data_files(gone, ("train",))
    renamed = DataConfig(mix=[MixSource(train_file=str(tmp_path / "a.jsonl"), columns={"article": "text"})])
    with pytest.raises(ConfigError, match=r"data.mix\[0\].columns renames 'article', which .* does not have"):
        load_raw_datasets(renamed, ("train",))
    write_rows(tmp_path / "b.jsonl", [{"text": "y"}] * 3)
    both = DataConfig(mix=[MixSource(train_file=str(tmp_path / n)) for n in ("a.jsonl", "b.jsonl")])
    assert load_raw_datasets(both, ("train",))["train"].column_names == ["text"]
    assert f"left out: id: not in {tmp_path / 'b.jsonl'}" in capsys.readouterr().out


def test_a_local_dataset_directory_with_its_own_split_and_columns_mixes_with_a_file(tmp_path: Path, capsys):
    """data.mix's name form: a dataset directory in a hub data set's layout, its "extra" split, a column renamed."""
    import datasets

    folder = tmp_path / "local_ds" / "data"
    folder.mkdir(parents=True)
    datasets.Dataset.from_list([{"article": f"d{n}", "summary": "s"} for n in range(20)]).to_parquet(
        str(folder / "extra-00000-of-00001.parquet")
    )
    write_rows(tmp_path / "news.jsonl", [{"document": f"n{n}", "summary": "s"} for n in range(20)])
    cfg = DataConfig(
        mix=[
            MixSource(train_file=str(tmp_path / "news.jsonl")),
            MixSource(name=str(tmp_path / "local_ds"), split="extra", columns={"article": "document"}),
        ]
    )
    mixed = load_raw_datasets(cfg, ("train",))["train"]
    drawn = mixed.with_format("arrow")[:]["document"].to_pylist()
    assert any(d.startswith("d") for d in drawn) and any(d.startswith("n") for d in drawn)
    assert f"{tmp_path / 'local_ds'} split extra " in capsys.readouterr().out


def test_sources_whose_columns_cannot_share_one_type_are_one_line():
    rows = {"s0": [{"text": "x"}] * 3, "s1": [{"text": {"k": "v"}}] * 3}
    with pytest.raises(ConfigError, match=r"^data.mix\[1\] \(s1\) has columns of other types than data.mix\[0\]"):
        mix_train(mix_config([1, 1]), in_memory_loader(rows), streaming=False)


def test_the_stream_layout_names_the_mix():
    """A resume compares it: other weights, stopping rule or seed are another mix."""
    base = mix_config([0.7, 0.3])
    assert describe_mix(base) == describe_mix(mix_config([0.7, 0.3]))
    for other in (mix_config([0.6, 0.4]), mix_config([0.7, 0.3], seed=1), mix_config([0.7, 0.3], "all_exhausted")):
        assert describe_mix(other) != describe_mix(base)
