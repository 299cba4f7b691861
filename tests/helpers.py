"""Shared helpers for end-to-end tests: run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from forked_run import Refused, forkable, run_forked, run_forked_ranks

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = REPO / "accelerate_configs"


def cli_env(extra: Optional[dict] = None) -> dict:
    """Offline and unbuffered; one torch thread per process: tests run side by side (pytest-xdist), where
    oversubscribed cores were up to 20x slower, and the same count in every mode (forked, ``python -m``,
    ``accelerate launch``) keeps runs comparable bit for bit (accelerate overwrites OMP_NUM_THREADS, hence our own
    variable)."""
    env = dict(os.environ)
    env.setdefault("ACCEL_TASKS_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def launch_flags(config_file: Optional[Path], num_processes: int, mixed_precision: str) -> list[str]:
    """``accelerate launch``'s flags for run_cli's arguments, one list for the real launcher and the forked one, so
    that both start the same run. With a config file, the file decides what run_cli's defaults leave open (its
    process count for ``num_processes=1``, its precision for ``mixed_precision="no"``)."""
    if config_file is not None:
        flags = ["--config_file", str(config_file)]
        if num_processes != 1:
            flags += ["--num_processes", str(num_processes)]
        if mixed_precision != "no":
            flags += ["--mixed_precision", mixed_precision]
        return flags
    flags = ["--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", mixed_precision]
    flags += ["--dynamo_backend", "no"]
    return flags + (["--multi_gpu"] if num_processes > 1 else [])


def run_cli(
    args: Sequence[str],
    cwd: Path,
    launcher: Optional[str] = None,
    config_file: Optional[Path] = None,
    num_processes: int = 1,
    env: Optional[dict] = None,
    timeout: int = 600,
    mixed_precision: str = "no",
) -> subprocess.CompletedProcess:
    """Run ``accel_tasks.run`` as ``accelerate launch FLAGS -m accel_tasks.run ARGS`` would (FLAGS:
    :func:`launch_flags`), in its own processes.

    ``launcher``: ``"accelerate"`` (the launcher for real), ``"python"`` (``python -m accel_tasks.run``),
    ``"forked"`` (any process count and config file: one fork of the warm server per worker, each with the
    environment ``accelerate launch`` and torchrun give it, without 10-15 s of start-up per run; see
    tests/forked_run.py), or None: one process with no config file runs as a fork (tests/forked_run.py: the same
    code path and environment without 7-11 s of imports), and several processes or a config file run as
    ``"forked"`` unless the launch is one it does not reproduce (DeepSpeed, several machines: ``accelerate launch``).
    Name ``"accelerate"`` where the launcher, start-up or the interpreter's exit is what the test is about.
    """
    if launcher not in (None, "accelerate", "python", "forked"):
        raise ValueError(f"launcher={launcher!r}: use None, 'accelerate', 'python' or 'forked'")
    flags = launch_flags(config_file, num_processes, mixed_precision)
    if launcher is None:
        if num_processes == 1 and config_file is None and forkable(env or {}):
            return run_forked(args, cwd, cli_env(env), mixed_precision, timeout)
        if forkable(env or {}):
            # Several processes, or a config file, on one machine without DeepSpeed: the forked workers get what
            # the launcher gives them (tests/forked_run.py), without 10-15 s of start-up per run.
            try:
                return run_forked_ranks(flags, args, cwd, cli_env(env), timeout)
            except Refused:
                pass  # DeepSpeed, several machines: the launcher for real
        launcher = "accelerate"
    if launcher == "forked":
        if not forkable(env or {}):
            unread = sorted(key for key in env or {} if not forkable({key: ""}))
            raise ValueError(f"launcher='forked': {unread} are read at import, which a fork skips; name 'accelerate'")
        return run_forked_ranks(flags, args, cwd, cli_env(env), timeout)
    if launcher == "python":
        command = [sys.executable, "-m", "accel_tasks.run", *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "accel_tasks.run", *args]
    return subprocess.run(command, cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with the run's own output, which is what one needs to see."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-6000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    )
    return result


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with the sha256 of its bytes: a folder left untouched keeps its digest."""
    import hashlib

    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def save_untrained_default(dest: Path, recipe: str) -> Path:
    """The recipe's offline default model as an export of step 0 (the weights a default run starts from),
    with its processor and the run config.

    An eval-only run refuses to score the bundled model unnamed (random weights); a learning test that
    wants the untrained score names this copy, which carries the same settings an export would.
    """
    from accelerate.utils import set_seed

    from accel_tasks.config import to_yaml
    from accel_tasks.models.loading import RUN_CONFIG_FILE
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config([f"recipe={recipe}"], None)
    set_seed(cfg.seed)  # as the loop seeds before it builds the model: the same weights a default run starts from
    model, processor = recipe_cls(cfg).load_model()
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    (Path(dest) / RUN_CONFIG_FILE).write_text(to_yaml(cfg))
    return Path(dest)


def one_error_line(result: subprocess.CompletedProcess, alone: bool = True) -> str:
    """The one ``accel-tasks: error:`` line of a failed run (exit 2, no traceback).

    ``alone``: nothing else on stderr, as for every error found before a model or data set is loaded; errors
    found later may follow library progress output (datasets' "Generating ... split"), never a traceback.
    """
    assert result.returncode == 2, f"exit {result.returncode}\nSTDERR:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("accel-tasks: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    if alone:
        assert [line for line in result.stderr.splitlines() if line.strip()] == errors, result.stderr[-3000:]
    return errors[0]


def scalars(output_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a TensorBoard scalar, from every event file of a run."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values: dict[int, float] = {}
    for path in sorted((Path(output_dir) / "logs").rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = (
                        value.simple_value if value.HasField("simple_value") else float(value.tensor.float_val[0])
                    )
    return values


def logged_losses(text: str, total: int) -> dict[int, str]:
    """step -> the loss as printed by the run's ``step N/M loss X`` lines (compared as text: bit-equal runs)."""
    import re

    return {int(m.group(1)): m.group(2) for m in re.finditer(rf"step (\d+)/{total} loss (\S+)", text)}


# A real recipe plugin: a built-in recipe whose ``collate`` appends the ids of each train batch it builds to
# ``$RECORD_DIR/rank<R>.jsonl`` before padding, so a test sees which rows each process trained on.
RECORDING_RECIPE = '''
import json
import os
from pathlib import Path

from accel_tasks.recipes import PRESETS_DIR
from accel_tasks.recipes.{module} import {base}


class Recording({base}):
    """The built-in recipe, recording the ids of the train rows in each batch it collates."""

    name = "recording"
    preset_file = PRESETS_DIR / "{module}.yaml"

    def preprocess(self, batch, split):
        features = super().preprocess(batch, split)
        if split == "train":
            features["row"] = list(batch["id"])
        return features

    def collate(self, features):
        rows = [feature.pop("row") for feature in features if "row" in feature]
        if rows:
            path = Path(os.environ["RECORD_DIR"]) / f"rank{{os.environ.get('RANK', '0')}}.jsonl"
            with path.open("a") as handle:
                handle.write(json.dumps(rows) + "\\n")
        return super().collate(features)
'''


def recording_recipe(
    tmp_path: Path, module: str = "summarization", base: str = "SummarizationRecipe"
) -> tuple[str, dict]:
    """The recording plugin's ``recipe=`` argument and the env pointing it at a fresh, empty record folder."""
    import shutil

    (tmp_path / "probe.py").write_text(RECORDING_RECIPE.format(module=module, base=base))
    record = tmp_path / "record"
    shutil.rmtree(record, ignore_errors=True)
    record.mkdir()
    return f"recipe={tmp_path / 'probe.py'}:Recording", {"RECORD_DIR": str(record)}
