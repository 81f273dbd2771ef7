"""lmms-eval's own `tasks/mme/utils.py`, executed afresh from the installed package.

lmms-eval loads a task's `utils.py` as a new module for every `!function utils.X` tag of its YAML; this
file does the same with the installed module, so the local task behaves exactly like the installed one
(including module state such as MMMU's `interleaved_format` switch, which is per tag).
"""

import importlib.util
from pathlib import Path

import lmms_eval.tasks

_path = Path(lmms_eval.tasks.__file__).parent / "mme" / "utils.py"
_spec = importlib.util.spec_from_file_location("utils", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
