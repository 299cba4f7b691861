"""Built-in recipes: one module per task holding one Recipe class, with its task helpers in subpackages.

Their presets live in the repository's top-level ``recipes/`` folder (one YAML per recipe, with a
``bundled_model`` section for the offline default model); the package reaches it through the
``accel_tasks/presets`` link, and the wheel ships it as ``accel_tasks/presets/``.
"""

from pathlib import Path

PRESETS_DIR = (Path(__file__).resolve().parent.parent / "presets").resolve()
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
