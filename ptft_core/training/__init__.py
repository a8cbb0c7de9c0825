"""The training loops: masked-LM pretraining and sequence-classification fine-tuning.

`run_pretrain` and `run_finetune` take a validated config, a run folder and a `MetricLogger`, and return the
final state ("completed" or "cancelled"); everything else here is what they are built from.
"""

from ptft_core.training.finetune import run_finetune
from ptft_core.training.pretrain import run_pretrain

__all__ = ["run_finetune", "run_pretrain"]
