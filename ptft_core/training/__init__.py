"""The run kinds' loops: masked-LM pretraining, sequence-classification fine-tuning, cross-domain evaluation and
supervised image pretraining and image fine-tuning.

`run_pretrain`, `run_finetune`, `run_evaluate`, `run_image_pretrain` and `run_image_finetune` take a validated
config, a run folder and a `MetricLogger`, and return the final state ("completed" or "cancelled"); everything else
here is what they are built from.
"""

from ptft_core.training.cross_domain import run_evaluate
from ptft_core.training.finetune import run_finetune
from ptft_core.training.images import run_image_finetune, run_image_pretrain
from ptft_core.training.pretrain import run_pretrain

__all__ = ["run_evaluate", "run_finetune", "run_image_finetune", "run_image_pretrain", "run_pretrain"]
