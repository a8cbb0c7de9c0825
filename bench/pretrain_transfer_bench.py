"""Why a tiny model pretrained by this lab fine-tuned *worse* than the same model untrained (how_much_pretraining
quick, issue 25: −10 points, p = 0.034): a grid declared before it ran, on the study's own pretraining recipe.

    python -m bench.pretrain_transfer_bench [--round budget|convergence] [--seeds 3] [--jobs 2] [--work DIR]
                                            [--out bench/results/pretrain_transfer.jsonl]
    python -m bench.pretrain_transfer_bench --summary          # the table of what --out holds

The leads it tests, each a factor of the grid (every cell n = --seeds, the same seeds in every cell):
- what the head reads (`pooling`): cls (RoFormer's [CLS] head, whose input the masked-LM objective never trains)
  against the mean of the last hidden states (what masked LM does train: every position's state);
- the fine-tuning rate: 5e-4 (the study's) against 1e-4 (a pretrained encoder may be disturbed by a large rate);
- the label budget: all of movies (8.5k examples, where a scratch model learns a bag of words on its own) against
  10 % (848 examples, where the literature expects pretraining to matter most);
- the pretraining text: wiki + news (the study's) against wiki + news + movies' own unlabelled training text
  (self-pretraining, Krishna et al. 2023), at the study's rate, both poolings and both label budgets.
Bases: `untrained` (the pretrained run's architecture and tokenizer, re-initialised, as the study's step 0) and
`pretrained` (its final checkpoint, 1,500 steps). Every fine-tune is the study's (how_much_pretraining.build,
quick) with only the grid's fields changed; one epoch, the best validation checkpoint scored on the whole test
split. Runs go --jobs at a time, one torch thread each.

Round `convergence` (declared after round `budget` showed every 10 % arm at the majority class in its 27 steps
and the pretrained arms behind at one epoch): the same bases, both poolings, lr 5e-4, all of movies and 10 %,
but each fine-tune trained towards its plateau under the studies' budget rule: 4 epochs, at least 300 and at most
1,200 steps of 32, early stopping after 3 evaluations without a new best (8 evaluations a run). `--work DIR`
reuses the pretraining checkpoints an earlier round left there.

Round `features` (declared after round `convergence`): no fine-tuning; how linearly separable movies' sentiment is
in each frozen encoder's features (the mean of the last hidden states, the [CLS] state, the mean of the input
word embeddings), by an L2-regularised logistic regression (LBFGS) fit on movies' training split and scored on its
test split; the untrained encoder at 3 initialisation seeds. It asks whether pretraining put sentiment into the
features at all, apart from how fast a fine-tune can use them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPORA = {"wiki+news": ["wiki", "news"], "wiki+news+movies": ["wiki", "news", "movies"]}


CONVERGENCE = dict(epochs=4, min_steps=300, max_steps=1200, patience=3)


def plan(seeds: int, round: str = "budget") -> list[dict]:
    if round == "convergence":
        cells = [dict(corpus="wiki+news", base=b, pooling=p, lr=5e-4, labels=f, budget="convergence")
                 for b, p, f in itertools.product(("untrained", "pretrained"), ("cls", "mean"), (1.0, 0.1))]
        return [{**c, "seed": s} for c in cells for s in range(seeds)]
    cells = [dict(corpus="wiki+news", base=b, pooling=p, lr=lr, labels=f)
             for b, p, lr, f in itertools.product(("untrained", "pretrained"), ("cls", "mean"), (5e-4, 1e-4),
                                                  (1.0, 0.1))]
    cells += [dict(corpus="wiki+news+movies", base=b, pooling=p, lr=5e-4, labels=f)
              for b, p, f in itertools.product(("untrained", "pretrained"), ("cls", "mean"), (1.0, 0.1))]
    return [{**c, "seed": s} for c in cells for s in range(seeds)]


def features(corpus: str, home: Path, seeds: int) -> list[dict]:
    """Round `features`: linear separability of movies sentiment in frozen features (see the module docstring)."""
    import torch

    from ptft_core.data import load_split
    from ptft_core.families import load_classifier

    torch.set_num_threads(1)
    train, test = load_split("movies", "train"), load_split("movies", "test")
    y_train, y_test = torch.tensor(train["label"]), torch.tensor(test["label"])
    path = str(pretrain(corpus, home))

    def encode(model, tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
        model.eval()
        out: dict[str, list[torch.Tensor]] = {"mean": [], "cls": [], "word embeddings": []}
        with torch.no_grad():
            for i in range(0, len(texts), 256):
                batch = tokenizer(texts[i:i + 256], padding=True, truncation=True, max_length=64,
                                  return_tensors="pt")
                mask = batch["attention_mask"].unsqueeze(-1).float()
                hidden = model.base_model(**batch).last_hidden_state
                words = model.base_model.embeddings.word_embeddings(batch["input_ids"])
                out["mean"].append((hidden * mask).sum(1) / mask.sum(1))
                out["cls"].append(hidden[:, 0])
                out["word embeddings"].append((words * mask).sum(1) / mask.sum(1))
        return {k: torch.cat(v) for k, v in out.items()}

    def probe(x_train: torch.Tensor, x_test: torch.Tensor) -> float:
        mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
        w = torch.zeros(x_train.shape[1], 2, requires_grad=True)
        b = torch.zeros(2, requires_grad=True)
        lbfgs = torch.optim.LBFGS([w, b], max_iter=300)

        def closure():
            lbfgs.zero_grad()
            loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + 1e-3 * (w ** 2).sum()
            loss.backward()
            return loss
        lbfgs.step(closure)
        return float(((x_test @ w + b).argmax(1) == y_test).float().mean())

    rows = []
    for base, seed in [("pretrained", 0)] + [("untrained", s) for s in range(seeds)]:
        torch.manual_seed(seed)
        model, tokenizer = load_classifier(path, ["neg", "pos"], scratch=base == "untrained", pooling="cls")
        a, c = encode(model, tokenizer, list(train["text"])), encode(model, tokenizer, list(test["text"]))
        rows += [{"round": "features", "corpus": corpus, "base": base, "seed": seed, "feature": k,
                  "test_accuracy": probe(a[k], c[k])} for k in a]
    return rows


def study_configs():
    from ptft_core.studies.how_much_pretraining import build

    runs = build("quick", False)
    return runs[0].config, next(r.config for r in runs[1:] if r.labels["pretrain_step"] == 1500)


def pretrain(corpus: str, home: Path) -> Path:
    """The study's pretraining run on `corpus`, in this process; its final checkpoint's folder."""
    from ptft_core.journal import MemoryLogger
    from ptft_core.rundir import RunDir
    from ptft_core.training import run_pretrain

    config, _ = study_configs()
    config = dataclasses.replace(config, corpus=CORPORA[corpus], name=f"transfer-{corpus}")
    run_dir = home / f"pretrain-{corpus}"
    if RunDir(run_dir).has_checkpoint("final"):  # an earlier round's
        print(json.dumps({"pretrain": corpus, "reused": str(run_dir)}), flush=True)
        return RunDir(run_dir).checkpoint("final")
    logger = MemoryLogger()
    assert run_pretrain(config, run_dir, logger) == "completed"
    val = logger.values("loss", "validation")
    ref = {e["name"]: e["value"] for e in logger.events if e["type"] == "metric" and e["split"] == "reference"}
    print(json.dumps({"pretrain": corpus, "val_loss": val[-1], **ref}), flush=True)
    return RunDir(run_dir).checkpoint("final")


def finetune(cell: dict, base: str, run_dir: Path) -> dict:
    from ptft_core.config import OptimConfig
    from ptft_core.journal import MemoryLogger
    from ptft_core.training import run_finetune

    _, config = study_configs()
    config = dataclasses.replace(config, base=base, scratch=cell["base"] == "untrained", pooling=cell["pooling"],
                                 label_fraction=cell["labels"], seed=cell["seed"], name="transfer",
                                 optim=OptimConfig(**{**dataclasses.asdict(config.optim), "lr": cell["lr"]}))
    if cell.get("budget") == "convergence":
        from ptft_core.studies.templates import Budget

        fields = Budget(**CONVERGENCE).fields(config.dataset, config.label_fraction, config.batch_size)
        config = dataclasses.replace(config, **fields, eval_every=max(1, fields["max_steps"] // 8))
    logger = MemoryLogger()
    status = run_finetune(config, run_dir, logger)
    return {**cell, "status": status, "test_accuracy": logger.values("accuracy", "test")[-1],
            "best_val_accuracy": max(logger.values("accuracy", "validation"))}


def summary(rows: list[dict]) -> None:
    import pandas as pd
    from scipy import stats

    feats = pd.DataFrame([r for r in rows if r.get("round") == "features"])
    for key, g in (feats.groupby(["corpus", "feature"]) if len(feats) else []):
        pre, unt = g[g["base"] == "pretrained"]["test_accuracy"], g[g["base"] == "untrained"]["test_accuracy"]
        print(f"frozen features {key}: pretrained {pre.mean():.1%} vs untrained {unt.mean():.1%} ± {unt.std():.1%} "
              f"(n = {len(unt)} initialisations)")
    df = pd.DataFrame([r for r in rows if "test_accuracy" in r and r.get("round") != "features"])
    df["budget"] = df["budget"].fillna("1 epoch") if "budget" in df else "1 epoch"
    keys = ["budget", "corpus", "pooling", "lr", "labels"]
    for key, g in df.groupby(keys):
        pre = g[g["base"] == "pretrained"]["test_accuracy"]
        unt = g[g["base"] == "untrained"]["test_accuracy"]
        t = stats.ttest_ind(pre, unt, equal_var=False) if len(pre) > 1 and len(unt) > 1 else None
        print(f"{dict(zip(keys, key, strict=True))}: pretrained {pre.mean():.1%} ± {pre.std():.1%} vs untrained "
              f"{unt.mean():.1%} ± {unt.std():.1%} (n = {len(pre)} vs {len(unt)}): "
              f"{100 * (pre.mean() - unt.mean()):+.1f} points, Welch p = {t.pvalue if t else float('nan'):.3f}")
    for r in rows:
        if "pretrain" in r:
            print(r)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--round", choices=["budget", "convergence", "features"], default="budget")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a new temporary folder); an earlier "
                        "round's pretraining checkpoints there are reused")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pretrain_transfer.jsonl")
    parser.add_argument("--summary", action="store_true", help="print the table of --out and stop")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # one fine-tune, in a process of its own
    parser.add_argument("--pretrain", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        cell, base, run_dir = json.loads(args.cell)
        print(json.dumps(finetune(cell, base, Path(run_dir))), flush=True)
        return
    if args.pretrain:
        corpus, home = json.loads(args.pretrain)
        print(str(pretrain(corpus, Path(home))), flush=True)
        return
    if args.summary:
        summary([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()])
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="ptft-transfer-"))
    if args.round == "features":
        for corpus in CORPORA:
            with args.out.open("a") as f:
                for row in features(corpus, work, args.seeds):
                    f.write(json.dumps(row) + "\n")
        summary([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()])
        return
    cells = plan(args.seeds, args.round)
    corpora = sorted({c["corpus"] for c in cells})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def child(flag: str, payload) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "bench.pretrain_transfer_bench", flag, json.dumps(payload)],
                             check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()
        return out

    with ThreadPoolExecutor(args.jobs) as pool:  # the two pretrainings side by side, one thread each
        bases = dict(zip(corpora, pool.map(lambda c: child("--pretrain", [c, str(work)]), corpora), strict=True))
    with args.out.open("a") as f:
        for lines in bases.values():
            f.write(lines[-2] + "\n")
            print(lines[-2], flush=True)

    def one(i_cell):
        i, cell = i_cell
        run_dir = work / f"ft-{args.round}-{i}"
        line = child("--cell", [cell, bases[cell["corpus"]][-1], str(run_dir)])[-1]
        with args.out.open("a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, enumerate(cells)))
    summary([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()])


if __name__ == "__main__":
    main()
