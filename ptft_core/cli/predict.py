"""`python -m ptft_core predict RUN_ID [RUN_ID ...]`: fine-tuned classifiers side by side on texts, through the lab
service's predictor (started with the service if none runs): typed texts (`--text`, repeatable), a file of texts
(`--file`, one a line), or a dataset's split (`--split movies:test`, its true labels alongside). Prints each
text's label and probability per run and whether the runs agree; `--out` writes every probability (.csv or
.parquet)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ptft_core import arena
from ptft_core.client import connect
from ptft_core.config import ConfigError
from ptft_core.lab import MAX_DATASET_ROWS, MAX_TEXT_CHARS

SHOWN = 20  # texts printed; --out has them all


def add_predict_commands(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser("predict", help="classify texts with fine-tuned runs, side by side",
                                    description=__doc__.split("\n\n")[0])
    predict.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to classify (repeatable)")
    source.add_argument("--file", type=Path, help="a text file, one text a line")
    source.add_argument("--split", help=f"DATASET:SPLIT, its first {MAX_DATASET_ROWS:,} rows with their labels")
    predict.add_argument("--max-length", type=int, default=0, help="tokens read (0: each run's own)")
    predict.add_argument("--out", type=Path, help="write every probability here (.csv or .parquet)")
    predict.set_defaults(handler=cmd_predict)


def texts_of(args: argparse.Namespace, lab) -> tuple[list[str], list[str] | None]:
    """(the texts, their true labels when they come from a dataset)."""
    if args.text:
        return list(args.text), None
    if args.file:
        try:
            lines = args.file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--file: {args.file}: {exc}") from None
        texts = [line for line in lines if line.strip()]
        too_long = next((i for i, t in enumerate(texts, 1) if len(t) > MAX_TEXT_CHARS), None)
        if too_long:
            raise ConfigError(f"--file: text {too_long} has more than {MAX_TEXT_CHARS:,} characters")
        return texts, None
    name, _, split = args.split.rpartition(":")
    if not name:
        raise ConfigError(f"--split: DATASET:SPLIT, e.g. movies:test (got {args.split!r})")
    return arena.labelled_split(lab, name, split)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out: {args.out}: the format follows the suffix, .csv or .parquet")
    with connect(start=True) as lab:
        texts, truth = texts_of(args, lab)
        if not texts:
            raise ConfigError("no text to classify")
        answers = arena.predict_all(lab, args.run_ids, texts, args.max_length)
        runs = list(dict.fromkeys(answers["run_id"]))
        names = {r: (lab.get_run(r).get("name") or r) for r in runs}
    top = arena.answers(answers)
    table = top.pivot(index="row", columns="run_id", values="label")[runs]
    confidence = top.pivot(index="row", columns="run_id", values="confidence")[runs]
    for i in table.index[:SHOWN]:
        cells = "  ".join(f"{names[r]}: {table.at[i, r]} ({confidence.at[i, r]:.0%})" for r in runs)
        known = f"  [true: {truth[i]}]" if truth else ""
        agree = "" if len(runs) == 1 else ("  agree" if table.loc[i].nunique() == 1 else "  DISAGREE")
        print(f"{texts[i][:60]!r:64} {cells}{agree}{known}")
    if len(texts) > SHOWN:
        print(f"... {len(texts) - SHOWN:,} more texts" + (" (all in --out)" if args.out else ""))
    if len(runs) > 1:
        print(f"the runs agree on {arena.agreement(answers):.1%} of {len(texts):,} texts")
    if truth:
        for r in runs:
            print(f"{names[r]} ({r}): accuracy {(table[r] == pd.Series(truth)).mean():.1%} on {len(texts):,} texts")
    if args.out:
        frame = answers.assign(text=[texts[i] for i in answers["row"]])
        if truth:
            frame["true_label"] = [truth[i] for i in frame["row"]]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False) if args.out.suffix == ".csv" else frame.to_parquet(args.out, index=False)
        print(f"wrote {args.out}")
    return 0 if not answers.empty else 1

