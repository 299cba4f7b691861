"""The only loop: training (with periodic eval, checkpoints and exact resume) and eval-only runs.

It knows nothing about tasks; everything task-specific goes through the Recipe hooks. A run reads top to bottom:

1. the Accelerator, the seed and the console (here);
2. the model and the data, checked and preprocessed, gathered into a RunSession (prepare.py);
3. output_dir and the trackers, once every check has passed (prepare.py);
4. training: one setup for map-style and streamed data into a TrainSession (session.py), the optimizer steps
   (steps.py), then the export, the final eval and the model card (finish.py); or, eval-only, the final eval
   alone (evals.py);
5. the distributed teardown, then the run summary.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from accel_tasks import log
from accel_tasks.engines.accelerator import (
    build_accelerator,
    configure_threads,
    engine_name,
    is_deepspeed,
    prepare_eval_model,
)
from accel_tasks.engines.fsdp import fsdp_requested
from accel_tasks.engines.precision import precision_notice
from accel_tasks.engines.teardown import finish_processes, track
from accel_tasks.errors import Preempted
from accel_tasks.preflight import Plan
from accel_tasks.reporting.summary import print_run_summary
from accel_tasks.runs.output_dir import discard_replaced, restore_replaced
from accel_tasks.training.evals import final_eval
from accel_tasks.training.finish import finish_training
from accel_tasks.training.guards import StopRequest, die_with_launcher
from accel_tasks.training.prepare import prepare_run, setup_logging, start_outputs
from accel_tasks.training.session import RunSession, start_training
from accel_tasks.training.steps import run_steps


def run(plan: Plan) -> dict[str, Any]:
    """Train or evaluate as the plan says; returns the final metrics on the main process."""
    cfg = plan.cfg
    die_with_launcher()
    threads = configure_threads(cfg.train.threads)
    accelerator = build_accelerator(cfg, plan.output_dir)
    track(accelerator)
    setup_logging(accelerator)
    log.info(
        f"{plan.recipe.name}: mode={cfg.mode} processes={accelerator.num_processes} "
        f"distributed={engine_name(accelerator)} mixed_precision={accelerator.mixed_precision} "
        f"threads/process={threads} output_dir={plan.output_dir}"
    )
    notice = precision_notice(cfg, accelerator.mixed_precision, is_deepspeed(accelerator), fsdp_requested())
    if notice:
        log.info(notice)
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    session = prepare_run(accelerator, plan)
    # Every check has passed (model loaded, data read and preprocessed): only now is output_dir written to.
    start_outputs(session)
    main_process = accelerator.is_main_process
    try:
        if cfg.mode == "train":
            metrics = train(session)
        else:
            model = prepare_eval_model(accelerator, session.model, session.cfg.eval.precision, cfg.model.name_or_path)
            metrics = final_eval(replace(session, model=model))
    except Preempted:
        raise  # resumable: the run it replaced stays set aside until the resumed run ends
    except BaseException:
        if main_process:  # an overwritten run comes back when the run replacing it fails (output_dir.py)
            restore_replaced(plan.output_dir)
        raise
    if main_process:
        discard_replaced(plan.output_dir)
    # Trackers, the DeepSpeed engine, a barrier, the process group: nothing distributed is left to the
    # interpreter's exit, where a finished process was seen to abort (see teardown.py).
    finish_processes(accelerator)
    if main_process:
        print_run_summary(plan)
    return metrics


def train(run: RunSession) -> dict[str, Any]:
    """Set up training, run the optimizer steps, then export and score; a stop signal (SIGTERM, SIGUSR1) is
    recorded rather than fatal from the first step to the end of the final eval (guards.py)."""
    session = start_training(run)
    with StopRequest() as stop:
        return finish_training(session, run_steps(session, stop))
