"""After the training steps: the export, then the final eval, then the model card, each its own step.

The export comes first so that the model exists even if scoring fails; the card comes last because it holds the
final metrics. With train.export_best the best checkpoint's weights are loaded back before the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accel_tasks import log
from accel_tasks.config import to_yaml
from accel_tasks.errors import NonFiniteLoss
from accel_tasks.reporting.model_card import write_model_card
from accel_tasks.runs.export import export_model, resave_settings
from accel_tasks.settings import with_settings
from accel_tasks.training.evals import final_eval
from accel_tasks.training.guards import weights_finite
from accel_tasks.training.steps import DIVERGENCE_FIXES

if TYPE_CHECKING:
    from accel_tasks.training.session import TrainSession
    from accel_tasks.training.steps import StepsOutcome


def finish_training(session: TrainSession, outcome: StepsOutcome) -> dict[str, Any]:
    """Export, score and describe the trained model; the final metrics (on the main process)."""
    export_dir, exported_step = export(session, outcome)
    best, state, stats = outcome.best, session.state, dict(outcome.stats)
    if exported_step is not None:
        stats["exported_step"] = exported_step
    # The final eval scores the last step's weights, which no periodic eval has seen: it counts towards the best
    # (as Trainer's last evaluation does), unless those weights were evaluated already or replaced by the best.
    fold_final = best is not None and not (session.cfg.train.export_best or outcome.stopped_early)
    if best is not None and not fold_final:
        stats.update(best.summary(state))
    if outcome.stopped_early:
        stats["stopped_early_at_step"] = state.global_step
    log.info(f"model exported to {export_dir}")
    metrics = final_eval(
        session, step=state.global_step, extra=stats, best_of_run=(best, state) if fold_final else None
    )
    # What the recipe decided while scoring the exported weights (SQuAD v2's tuned threshold) joins the export's
    # settings; the recipe postprocesses on the main process, which alone writes.
    settings = with_settings(session.cfg, session.recipe.decisions)
    if session.accelerator.is_main_process and to_yaml(settings) != to_yaml(session.cfg):
        resave_settings(export_dir, to_yaml(settings))
    # The card holds the final metrics: after the final eval.
    write_model_card(session.accelerator, export_dir, settings, session.recipe, metrics)
    return metrics


def export(session: TrainSession, outcome: StepsOutcome) -> tuple[Path, Optional[int]]:
    """Write output_dir/model from the last weights, or from the best checkpoint's (train.export_best); the
    export's directory, and the step exported when it is the best checkpoint's instead of the last one.

    Nothing is exported from weights that are not finite.
    """
    accelerator, state, tcfg = session.accelerator, session.state, session.cfg.train
    if not weights_finite(accelerator, session.model):
        kept = f", the last checkpoint {outcome.last_checkpoint} stays" if outcome.last_checkpoint else ""
        raise NonFiniteLoss(
            f"after step {state.global_step} the weights are not finite (the last update overflowed); "
            f"nothing is exported{kept}. {DIVERGENCE_FIXES.format(lr=tcfg.lr)}"
        )
    best = outcome.best
    if best is not None and tcfg.export_best and state.best_step not in (-1, state.global_step):
        best_dir = session.checkpoints_root / f"step_{state.best_step}"
        accelerator.load_state(str(best_dir))
        log.info(
            f"exporting the best checkpoint {best_dir} ({best.name}={state.best_value:.4g}) "
            f"instead of step {state.global_step}"
        )
        exported_step = state.best_step
    else:
        exported_step = None
    export_dir = session.output_dir / "model"
    export_model(accelerator, session.model, session.processor, export_dir, to_yaml(session.cfg))
    return export_dir, exported_step
