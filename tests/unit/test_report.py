"""The run report (issue 15, points 1-3 and 5): ``accel-tasks report`` on a real training run, its figures checked
against the logged values, the page opened in headless Chromium, and the per-example scores of each recipe."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from helpers import check, cli_env, one_error_line, read_json, read_jsonl, run_cli

CONSOLE = Path(sys.executable).parent / "accel-tasks"
TRAIN = [
    "recipe=summarization",
    "data.max_train_samples=64",
    "data.max_eval_samples=12",
    "generation.max_new_tokens=8",
    "train.batch_size=8",
    "train.max_steps=30",
    "train.log_every=5",
    "train.eval_every=10",
    "output_dir=run",
]


def report(*dirs: str, cwd: Path) -> subprocess.CompletedProcess:
    """``accel-tasks report DIR ...`` through the installed console script, as a user types it."""
    return subprocess.run(
        [str(CONSOLE), "report", *dirs], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One short training run (periodic evals at 10 and 20, the final one at 30), an eval-only run of its export,
    and two reports: the training run alone, and both runs together (in evalrun/report.html)."""
    work = tmp_path_factory.mktemp("report")
    # One torch thread: these 2 cores are shared (with 2 threads a loaded machine made the 30 steps 20x slower).
    env = {"HF_DATASETS_CACHE": str(work / "ds_cache"), "ACCEL_TASKS_NUM_THREADS": "1"}
    check(run_cli(TRAIN, work, env=env))
    check(
        run_cli(
            ["recipe=summarization", "mode=eval", "model.name_or_path=run/model", "output_dir=evalrun"],
            work,
            env=env,
        )
    )
    assert check(report("run", cwd=work)).stdout.strip() == "wrote run/report.html"
    assert check(report("evalrun", "run", cwd=work)).stdout.strip() == "wrote evalrun/report.html"
    return work


def images(page: str) -> list[str]:
    """The SVG text of every figure of a page (they are base64 data URIs)."""
    return [
        base64.b64decode(data).decode()
        for data in re.findall(r'<img class="plot" [^>]*src="data:image/svg\+xml;base64,([^"]+)"', page)
    ]


def load(work: Path, *names: str):
    from accel_tasks.reporting.report_data import load_run

    return [load_run(work / name, name) for name in names]


def legend_texts(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def same_points(line, expected: list[tuple[int, float]]) -> bool:
    """A drawn line's (step, value) points are ``expected``: the steps exactly, the values to float32 precision."""
    steps, values = list(line.get_xdata()), list(line.get_ydata())
    return steps == [s for s, _ in expected] and values == pytest.approx([v for _, v in expected], rel=1e-6)


# -- the page ---------------------------------------------------------------------------------------------


def test_the_report_is_one_self_contained_page(work: Path):
    page = (work / "run" / "report.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing to fetch: no scripts, no stylesheets or fonts from elsewhere, every image inline.
    assert "<script" not in page and "<link" not in page and "@import" not in page and "@font-face" not in page
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?(data:|#))""", page), "every src/href is a data URI or a fragment"
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page)
    figures = images(page)
    assert len(figures) == 4, "loss, learning rate, throughput, eval metrics"
    for svg in figures:
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<path" in svg
        # Text is drawn as paths: the page needs no font, and the SVG links nothing outside itself.
        assert not re.search(r"""(xlink:)?href=["'](?!#)""", svg)
    config_text = (work / "run" / "config.yaml").read_text()
    import html

    assert html.escape(config_text) in page, "the resolved config, verbatim"


def test_final_metrics_table_holds_metrics_json(work: Path):
    page = (work / "run" / "report.html").read_text()
    metrics = read_json(work / "run" / "metrics.json")
    section = page[page.index("Final metrics (metrics.json)") : page.index("<h2>Predictions")]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert re.search(rf"<td>{name}</td><td class=\"num\">{re.escape(f'{metrics[name]:.4g}')}</td>", section), name
    for fact in ("train_steps", "best_step", "eval_samples"):
        assert f'<td>{fact}</td><td class="num">{metrics[fact]}</td>' in section


def test_bad_input_is_one_line_and_exit_2(work: Path, tmp_path: Path):
    assert "report: 'missing' does not exist; pass the output_dir of a run" in one_error_line(
        report("missing", cwd=tmp_path)
    )
    (tmp_path / "empty").mkdir()
    line = one_error_line(report("empty", cwd=tmp_path))
    assert "report: 'empty' holds no run (no config.yaml); pass the output_dir a run wrote" in line
    # One bad directory among good ones fails the same way, and writes nothing.
    assert "'nope' does not exist" in one_error_line(report(str(work / "run"), "nope", cwd=tmp_path))
    assert "Missing argument" in one_error_line(report(cwd=tmp_path))
    assert not (tmp_path / "empty" / "report.html").exists()


def test_report_command_is_the_line_to_type(work: Path, tmp_path: Path):
    from accel_tasks.reporting.report import report_command

    assert report_command(Path("outputs/summarization")) == "accel-tasks report outputs/summarization"
    assert report_command(Path("outputs/my run")) == "accel-tasks report 'outputs/my run'"
    shutil.copytree(work / "run", tmp_path / "my run", ignore=shutil.ignore_patterns("report.html"))
    argv = shlex.split(report_command(tmp_path / "my run"))
    assert argv[0] == "accel-tasks"
    from accel_tasks.run import main

    assert main(argv[1:]) == 0  # what the console script runs
    assert (tmp_path / "my run" / "report.html").is_file()


def test_the_report_module_loads_no_loop_machinery():
    code = (
        "import sys, accel_tasks.reporting.report; "
        "heavy = [m for m in ('torch', 'accelerate', 'deepspeed', 'transformers', 'datasets', "
        "'accel_tasks.training.loop', 'accel_tasks.evaluation.eval_pass', 'accel_tasks.runs.export', 'matplotlib') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- the figures hold the logged values ---------------------------------------------------------------------


def test_loss_lr_and_throughput_curves_are_the_tensorboard_values(work: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from accel_tasks.reporting.report_plots import loss_figure, lr_figure, throughput_figure

    events = EventAccumulator(str(work / "run" / "logs" / "train"), size_guidance={"scalars": 0})
    events.Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert [step for step, _ in logged["train/loss"]] == [5, 10, 15, 20, 25, 30]
    (run,) = load(work, "run")

    (ax,) = loss_figure([run]).axes
    raw, smoothed = ax.get_lines()
    assert same_points(raw, logged["train/loss"])
    # TensorBoard's smoothing by hand: EMA with weight 0.6, debiased by 1 - 0.6^n.
    values, expected, ema = [v for _, v in logged["train/loss"]], [], 0.0
    for n, value in enumerate(values, start=1):
        ema = 0.6 * ema + 0.4 * value
        expected.append(ema / (1 - 0.6**n))
    assert list(smoothed.get_ydata()) == pytest.approx(expected)
    assert expected[0] == pytest.approx(values[0])
    assert legend_texts(ax) == ["run raw", "run smoothed (EMA 0.6)"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("optimizer step", "train loss (mean per log interval)")

    (ax,) = lr_figure([run]).axes
    assert same_points(ax.get_lines()[0], logged["train/lr"])
    assert ax.get_ylabel() == "learning rate (AdamW step size)" and legend_texts(ax) == ["run"]

    samples_ax, tokens_ax = throughput_figure([run]).axes
    assert list(samples_ax.get_lines()[0].get_ydata()) == pytest.approx([v for _, v in logged["train/samples_per_s"]])
    assert list(tokens_ax.get_lines()[0].get_ydata()) == pytest.approx([v for _, v in logged["train/tokens_per_s"]])
    assert samples_ax.get_ylabel() == "samples / s" and tokens_ax.get_ylabel().startswith("tokens / s")


def test_every_eval_metric_against_step_with_its_best_point_marked(work: Path):
    from accel_tasks.reporting.report_plots import metrics_figure

    (run,) = load(work, "run")
    history = read_jsonl(work / "run" / "eval_history.jsonl")
    final = read_json(work / "run" / "metrics.json")
    figure = metrics_figure([run])
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert sorted(panels) == ["eval rouge1", "eval rouge2", "eval rougeL", "eval rougeLsum"]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        ax = panels[f"eval {name}"]
        line, star = ax.get_lines()
        expected = [(row["step"], row[name]) for row in history] + [
            (30, final[name])
        ]  # periodic evals, then the final one
        assert same_points(line, expected)
        best = max(expected, key=lambda point: point[1])  # ROUGE: higher is better; the earliest on a tie
        assert star.get_marker() == "*" and same_points(star, [best])
        assert legend_texts(ax) == ["run", f"run best (max): {best[1]:.4g} at step {best[0]}"]
        assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == f"{name} (as the metric reports it)"


def test_lower_is_better_metrics_mark_their_minimum():
    from accel_tasks.reporting.report_data import RunData, Series, best_point, higher_is_better

    run = RunData(Path("x"), "x", {"recipe": "speech_recognition", "eval": {"best_metric": None}}, "", {}, [], {}, [])
    assert not higher_is_better(run, "wer") and not higher_is_better(run, "cer") and higher_is_better(run, "rougeL")
    assert best_point(Series([10, 20, 30], [0.5, 0.2, 0.3]), higher=False) == (20, 0.2)
    # eval.greater_is_better turns the tracked metric only.
    run.config["eval"] = {"best_metric": "rougeL", "greater_is_better": False}
    assert not higher_is_better(run, "rougeL") and higher_is_better(run, "rouge1")


def test_several_runs_overlay_their_curves_and_diff_their_configs(work: Path):
    from accel_tasks.reporting.report_plots import colour, loss_figure, metrics_figure

    evalrun, run = load(work, "evalrun", "run")
    panels = {ax.get_title(): ax for ax in metrics_figure([evalrun, run]).axes}
    ax = panels["eval rougeL"]
    labels = legend_texts(ax)
    assert labels[0] == "evalrun" and labels[2] == "run" and labels[1].startswith("evalrun best (max): ")
    lines = [line for line in ax.get_lines() if line.get_marker() != "*"]
    assert [line.get_color() for line in lines] == [colour(0), colour(1)]
    assert list(lines[0].get_xdata()) == [0]  # the eval-only run scored once, at step 0
    # The eval-only run trained nothing: the loss figure has the training run alone, in its own colour.
    (loss_ax,) = loss_figure([evalrun, run]).axes
    assert legend_texts(loss_ax) == ["run raw", "run smoothed (EMA 0.6)"] and loss_ax.get_lines()[
        0
    ].get_color() == colour(1)

    page = (work / "evalrun" / "report.html").read_text()
    assert len(images(page)) == 4
    diff = page[page.index("Settings that differ") : page.index("<details>")]
    assert "<th>setting</th><th>evalrun</th><th>run</th>" in diff
    assert "<td>mode</td><td>eval</td><td>train</td>" in diff
    assert "<td>model.name_or_path</td><td>run/model</td><td>None</td>" in diff
    assert "<td>seed</td>" not in diff and "<td>recipe</td>" not in diff, "only the settings that differ"
    assert page.count("<details><summary>") == 2, "each full config, folded"


def test_an_eval_only_run_reports_its_scores_and_says_why_there_are_no_curves(work: Path, tmp_path: Path):
    from accel_tasks.reporting.report import write_report

    shutil.copytree(work / "evalrun", tmp_path / "evalrun", ignore=shutil.ignore_patterns("report.html"))
    page = write_report([tmp_path / "evalrun"]).read_text()
    assert "No training logs: an eval-only run, a run whose train.report_to leaves out tensorboard" in page
    assert len(images(page)) == 1, "the eval metrics, scored once at step 0"
    assert "<h4>5 best</h4>" in page and "<h2>Config</h2><p>The resolved config (config.yaml):</p>" in page


def test_config_diff_lists_only_what_differs():
    from accel_tasks.reporting.report_data import config_diff

    a = {"train": {"lr": 1e-3, "batch_size": 8}, "seed": 1, "eval": {"metrics": ["rouge"]}}
    b = {"train": {"lr": 2e-3, "batch_size": 8}, "seed": 1, "eval": {"metrics": ["rouge", "x"]}, "extra": True}
    assert config_diff([a, b]) == [
        ("eval.metrics", [["rouge"], ["rouge", "x"]]),
        ("extra", [None, True]),
        ("train.lr", [1e-3, 2e-3]),
    ]


# -- best and worst predictions ---------------------------------------------------------------------------


def test_best_and_worst_predictions_by_per_example_rouge_l(work: Path):
    from rouge_score import rouge_scorer

    from accel_tasks.reporting.report_data import rank_examples

    (run,) = load(work, "run")
    records = read_jsonl(work / "run" / "predictions.jsonl")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    by_hand = [scorer.score(r["reference"], r["prediction"])["rougeL"].fmeasure for r in records]
    # The run's ROUGE-L is the mean of the per-example scores (the shipped rouge module averages exactly).
    assert sum(by_hand) / len(by_hand) == pytest.approx(read_json(work / "run" / "metrics.json")["rougeL"])
    ranking = rank_examples(run)
    assert (ranking.score_name, ranking.higher_is_better, ranking.scored, ranking.note) == ("ROUGE-L", True, 12, None)
    best_first = sorted(range(len(records)), key=lambda i: -by_hand[i])  # ties: in file order
    worst_first = sorted(range(len(records)), key=lambda i: by_hand[i])
    assert [record["id"] for _, record in ranking.best] == [records[i]["id"] for i in best_first[:5]]
    assert [record["id"] for _, record in ranking.worst] == [records[i]["id"] for i in worst_first[:5]]
    assert [score for score, _ in ranking.best] == pytest.approx([by_hand[i] for i in best_first[:5]])

    import html

    page = (work / "run" / "report.html").read_text()
    section = page[page.index("<h2>Predictions") : page.index("<h2>Config")]
    assert "Ranked by per-example ROUGE-L (higher is better) over 12 predictions." in section
    assert "<h4>5 best</h4>" in section and "<h4>5 worst</h4>" in section
    assert "<th>#</th><th>ROUGE-L</th><th>id</th><th>input</th><th>prediction</th><th>reference</th>" in section
    for _, record in ranking.best + ranking.worst:
        row = (
            f'<td class="text">{html.escape(record["prediction"])}</td>'
            f'<td class="text">{html.escape(record["reference"])}</td>'
        )
        assert row in section, "each prediction beside its reference"


def test_predictions_without_references_are_not_ranked_and_the_page_says_why(work: Path, tmp_path: Path):
    """A mode=predict run's records have no reference: nothing to rank, and the report says so."""
    run_dir = tmp_path / "predicted"
    shutil.copytree(work / "run", run_dir, ignore=shutil.ignore_patterns("report.html"))
    records = [{k: v for k, v in r.items() if k != "reference"} for r in read_jsonl(run_dir / "predictions.jsonl")]
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from accel_tasks.reporting.report import write_report

    page = write_report([run_dir]).read_text()
    assert "no per-example scores: the predictions have no references (a mode=predict run scores nothing)" in page
    assert "<h4>5 best</h4>" not in page


def test_recipes_without_a_per_example_score_or_not_installed_still_report(work: Path):
    from accel_tasks.recipe import Recipe
    from accel_tasks.reporting.report import render
    from accel_tasks.reporting.report_data import rank_examples

    class NoScores(Recipe):
        name = "plain"

        def preprocess(self, batch, split):
            return batch

        def predict(self, model, batch, *, synced_gpus=False):
            return {}

        def postprocess(self, outputs, examples, features):
            raise NotImplementedError

    (run,) = load(work, "run")
    run.recipe_cls = NoScores
    assert rank_examples(run).note == "no per-example scores: the recipe 'plain' does not define example_scores()"
    run.recipe_cls, run.recipe_problem = None, "unknown recipe 'mine'; available: ..."
    run.config["recipe"] = "mine"
    note = (
        "no per-example scores: the recipe &#x27;mine&#x27; cannot be loaded here "
        "(unknown recipe &#x27;mine&#x27;; available: ...)"
    )
    assert note in render([run])


# -- each recipe's per-example score ----------------------------------------------------------------------


def test_translation_scores_sentence_chrf_against_all_references():
    from sacrebleu import sentence_chrf

    from accel_tasks.recipes.translation import TranslationRecipe

    records = [
        {"id": 0, "prediction": "das ist ein Haus", "references": ["das ist ein Haus"]},
        {"id": 1, "prediction": "ein Haus", "references": ["das Haus", "ein kleines Haus"]},
        {"id": 2, "prediction": "nichts"},
    ]
    scores = TranslationRecipe.example_scores(records)
    assert scores[0] == pytest.approx(100.0)
    assert scores[1] == pytest.approx(sentence_chrf("ein Haus", ["das Haus", "ein kleines Haus"]).score)
    assert scores[2] is None and TranslationRecipe.example_score_name == "chrF"


def test_extractive_qa_scores_squad_f1_per_answer():
    from accel_tasks.metrics import load_metric
    from accel_tasks.recipes.extractive_qa import ExtractiveQARecipe

    records = [
        {"id": "a", "prediction_text": "Eiffel tower!", "answers": ["the Eiffel Tower", "Tower"]},  # normalised: equal
        {"id": "b", "prediction_text": "tower in Paris", "answers": ["Eiffel Tower"]},  # 1 common token: P 1/3, R 1/2
        {"id": "c", "prediction_text": "nothing", "answers": ["Louvre", "the Louvre museum"]},
    ]
    scores = ExtractiveQARecipe.example_scores(records)
    assert scores == pytest.approx([100.0, 100 * 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 0.0])
    squad = load_metric("squad").compute(
        predictions=[{"id": r["id"], "prediction_text": r["prediction_text"]} for r in records],
        references=[
            {"id": r["id"], "answers": {"text": r["answers"], "answer_start": [0] * len(r["answers"])}} for r in records
        ],
    )
    assert sum(scores) / len(scores) == pytest.approx(squad["f1"]), "the mean is the run's SQuAD F1"
    # SQuAD v2: no gold answer is right only when the prediction is empty; a record without answers is not scored.
    assert ExtractiveQARecipe.example_scores(
        [{"prediction_text": "", "answers": []}, {"prediction_text": "x", "answers": []}, {"prediction_text": "x"}]
    ) == [100.0, 0.0, None]


def test_speech_recognition_scores_wer_per_utterance_lower_is_better():
    import jiwer

    from accel_tasks.recipes.speech_recognition import SpeechRecognitionRecipe

    records = [
        {"prediction_normalized": "six four two", "reference_normalized": "six four"},
        {"prediction_normalized": "one", "reference_normalized": "one"},
        {"prediction_normalized": "nine"},
    ]
    assert SpeechRecognitionRecipe.example_scores(records) == [jiwer.wer("six four", "six four two"), 0.0, None]
    assert (
        SpeechRecognitionRecipe.example_score_name == "WER"
        and not SpeechRecognitionRecipe.example_score_higher_is_better
    )


def test_summarization_scores_nothing_without_a_reference():
    from accel_tasks.recipes.summarization import SummarizationRecipe

    assert SummarizationRecipe.example_scores([{"prediction": "a b", "reference": "a b"}, {"prediction": "a"}]) == [
        1.0,
        None,
    ]


def test_lower_is_better_scores_rank_the_smallest_first():
    from accel_tasks.recipes.speech_recognition import SpeechRecognitionRecipe
    from accel_tasks.reporting.report_data import RunData, rank_examples

    records = [
        {"id": i, "prediction_normalized": p, "reference_normalized": "a b c d"}
        for i, p in enumerate(["a b c d", "a b", "x y z w", "a b c", "a", "a x c d", "q"])
    ]
    run = RunData(Path("x"), "x", {"recipe": "speech_recognition"}, "", {}, [], {}, records, SpeechRecognitionRecipe)
    ranking = rank_examples(run)
    assert [r["id"] for _, r in ranking.best] == [0, 3, 5, 1, 4] and [s for s, _ in ranking.best][0] == 0.0
    assert [r["id"] for _, r in ranking.worst] == [2, 6, 4, 1, 3], "worst first; equal scores in file order"


# -- in a real browser ------------------------------------------------------------------------------------


def chromium_binary() -> Optional[str]:
    return next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None)


class Browser:
    """Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``): no driver, no extra package.

    Every request a page makes is recorded (Network.requestWillBeSent); a proxy on a dead local port and a
    resolver that finds no host make sure that nothing would leave this machine even if one were made.
    """

    def __init__(self, binary: str, width: int = 1280, height: int = 900) -> None:
        ours_read, chrome_write = os.pipe()
        chrome_read, ours_write = os.pipe()

        def give_fds() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            read_end, write_end = os.dup(chrome_read), os.dup(chrome_write)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--window-size={width},{height}",
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-default-apps",
            "--hide-scrollbars",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            [binary, *flags], preexec_fn=give_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(chrome_read)
        os.close(chrome_write)
        self.reader, self.writer = ours_read, ours_write
        self.buffer, self.next_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=True)
        self.send("Page.enable", session=True)

    def send(self, method: str, params: Optional[dict] = None, session: bool = False, timeout: float = 30) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self.writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buffer:
                ready, _, _ = select.select([self.reader], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
                chunk = os.read(self.reader, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe during {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
            self.evaluate("1")

    def evaluate(self, expression: str) -> Any:
        return self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=True
        )["result"].get("value")

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self):
        """The whole page (not only the window) as a PIL image."""
        from PIL import Image

        size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}, session=True
        )
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.reader)
        os.close(self.writer)


FIGURES_JS = """JSON.stringify([...document.querySelectorAll('img.plot')].map(img => {
  const r = img.getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height,
          decoded: img.complete && img.naturalWidth > 0, alt: img.alt};
}))"""


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed here (Debian: apt-get install chromium; .ci/run installs it)")
    chrome = Browser(binary)
    yield chrome
    chrome.close()


def test_the_report_renders_in_headless_chromium_and_requests_nothing(work: Path, browser: Browser, tmp_path: Path):
    import numpy as np

    page = work / "run" / "report.html"
    browser.open(page.resolve().as_uri())
    figures = json.loads(browser.evaluate(FIGURES_JS))
    assert [f["alt"] for f in figures] == [
        "training loss against step",
        "learning rate against step",
        "throughput against step",
        "eval metrics against step",
    ]
    assert all(f["decoded"] for f in figures), "every figure decoded"
    shot = np.asarray(browser.screenshot(), dtype=np.int16)
    for figure in figures:
        x, y, w, h = (int(round(figure[k])) for k in ("x", "y", "width", "height"))
        assert w > 400 and h > 150, figure
        region = shot[y : y + h, x : x + w]
        drawn = (region < 235).any(axis=2).mean()  # axes, ticks, text, lines
        colourful = ((region.max(axis=2) - region.min(axis=2)) > 80).sum()  # the plotted lines, in the runs' colours
        assert drawn > 0.02 and colourful > 200, (figure["alt"], drawn, colourful)
    # The text around the figures rendered too (headline, tables) and the page is not one blank sheet.
    assert (shot < 235).any(axis=2).mean() > 0.02
    assert browser.evaluate("document.title") == "Run report: run"
    assert browser.evaluate("document.querySelectorAll('table').length") >= 4
    requested = browser.requested()
    assert requested == [page.resolve().as_uri()] or all(url.startswith(("file:", "data:")) for url in requested), (
        requested
    )

    # The same harness sees a request when a page makes one (here to a host that does not exist).
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><html><body><img src="http://report-test.invalid/pixel.png"></body></html>')
    browser.open(control.resolve().as_uri())
    assert "http://report-test.invalid/pixel.png" in browser.requested()


def test_the_several_runs_report_renders_too(work: Path, browser: Browser):
    import numpy as np

    browser.open((work / "evalrun" / "report.html").resolve().as_uri())
    figures = json.loads(browser.evaluate(FIGURES_JS))
    assert len(figures) == 4 and all(f["decoded"] for f in figures)
    shot = np.asarray(browser.screenshot(), dtype=np.int16)
    for figure in figures:
        x, y, w, h = (int(round(figure[k])) for k in ("x", "y", "width", "height"))
        region = shot[y : y + h, x : x + w]
        assert ((region.max(axis=2) - region.min(axis=2)) > 80).sum() > 200, figure["alt"]
    assert all(url.startswith(("file:", "data:")) for url in browser.requested())


def test_make_run_writes_the_report_of_the_default_run():
    """`make run` trains recipe=summarization into its default output_dir, then reports on that directory."""
    from accel_tasks.preflight import default_output_dir, resolve_config
    from accel_tasks.reporting.report import report_command

    from helpers import REPO

    cfg, recipe_cls = resolve_config(["recipe=summarization"], None)
    default = default_output_dir(cfg, recipe_cls.name)
    makefile = (REPO / "Makefile").read_text()
    run_target = makefile[makefile.index("\nrun:") :].split("\n\n")[0]
    assert "accelerate launch -m accel_tasks.run recipe=summarization\n" in run_target
    assert f"$(VENV)/bin/{report_command(Path(default))}" in run_target.splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert report_command(Path(default)) in readme and "accel-tasks report outputs/run-a outputs/run-b" in readme
