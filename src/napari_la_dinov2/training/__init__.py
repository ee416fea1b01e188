"""Training engine: annotated cases, fine-tuning, few-shot. Headless (no napari, no Qt)."""

from .cases import Case, cases_from_arrays, find_case_pairs, load_case_folder, split_cases
from .finetune import RunResult, finetune, validate
from .train_config import TrainConfig

__all__ = [
    "Case",
    "RunResult",
    "TrainConfig",
    "cases_from_arrays",
    "find_case_pairs",
    "finetune",
    "load_case_folder",
    "split_cases",
    "validate",
]
