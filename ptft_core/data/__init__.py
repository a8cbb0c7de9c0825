"""The data room: built-in datasets and checkpoint, user files, hub datasets.

Exports are resolved lazily, so importing this package loads neither torch nor `datasets` (the Streamlit app
imports it on every page); pandas is imported only when a function that needs it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptft_core.data.errors import DataError
from ptft_core.lazy import lazy_exports

if TYPE_CHECKING:
    from ptft_core.data.images import class_strips, class_subset
    from ptft_core.data.info import BUILTIN_NAMES, DatasetInfo
    from ptft_core.data.prepare import prepare_all
    from ptft_core.data.registry import (
        dataset_info,
        label_names,
        list_datasets,
        load_split,
        load_texts,
        num_labels,
        register_user_dataset,
    )
    from ptft_core.data.user import SUPPORTED_SUFFIXES, UPLOAD_SUFFIXES, load_hub_dataset, peek, read_user_file

_EXPORTS = {
    "prepare_all": "prepare",
    "class_strips": "images",
    "class_subset": "images",
    "BUILTIN_NAMES": "info",
    "DatasetInfo": "info",
    "dataset_info": "registry",
    "label_names": "registry",
    "list_datasets": "registry",
    "load_split": "registry",
    "load_texts": "registry",
    "num_labels": "registry",
    "load_hub_dataset": "user",
    "read_user_file": "user",
    "peek": "user",
    "SUPPORTED_SUFFIXES": "user",
    "UPLOAD_SUFFIXES": "user",
    "register_user_dataset": "registry",
}

__all__ = [
    "SUPPORTED_SUFFIXES",
    "UPLOAD_SUFFIXES",
    "BUILTIN_NAMES",
    "DataError",
    "DatasetInfo",
    "class_strips",
    "class_subset",
    "dataset_info",
    "label_names",
    "list_datasets",
    "load_hub_dataset",
    "load_split",
    "load_texts",
    "num_labels",
    "peek",
    "prepare_all",
    "read_user_file",
    "register_user_dataset",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
