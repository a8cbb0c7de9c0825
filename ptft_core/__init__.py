"""ptft: a lab for comparing transformer pretraining and fine-tuning runs.

Importing this package is cheap on purpose: no torch, no transformers. The dashboard imports
`ptft_core` modules on every rerun; only the worker process and the training modules pull in torch.
"""

__version__ = "0.1.0"
