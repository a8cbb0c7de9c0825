"""Which levers get a from-scratch masked LM past word frequencies on this CPU: one lever at a time against the
tiny preset's recipe, the validation MLM loss after the same number of steps set beside the unigram and bigram
lines of the same validation targets (training/reference.py).

    python -m bench.pretrain_levers_bench [--only TAG ...] [--steps 1500] [--out bench/results/pretrain_levers.jsonl]
    python -m bench.pretrain_levers_bench --report docs/studies/pretraining_levers.html   # draw what was measured

Each lever is a variation of BASE (the `configs/pretrain_tiny.yaml` recipe before issue 25: 2 layers, 128 wide,
post-LN BERT, 4k WordPiece, blocks of 64, batches of 32, AdamW lr 2e-3, 5 % warmup, linear decay, dropout 0.1,
15 % masking, wiki + news). Validation is always the same: the first 8,192 tokens' worth of wiki + news
validation blocks, masked once at 15 % (seed 1234), so every arm is scored on the same kind of targets; the
unigram line moves with the vocabulary (compare arms by their distance below it). The model is built here, not
through `families`, so that pre-LN (`roberta-prelayernorm`) can be tried before it is a preset; everything else
(tokenizer cache, packing, masking, masked-positions head, optimizer, schedule, autocast) is the product's.
One process per arm, one after the other, 2 torch threads: a lever's seconds are comparable within one run of
this bench only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BASE = dict(arch="bert", preln=False, lr=2e-3, warmup=0.05, vocab=4000, block=64, batch=32, steps=1500, bf16=False,
            corpus="wiki,news", layers=2, hidden=128, schedule="linear", evals=10, dropout=0.1, wd=0.01, mask=0.15)
LEVERS: dict[str, dict] = {
    "base": {},
    "preln": {"preln": True},
    "post_lr1e-3_w0": {"lr": 1e-3, "warmup": 0.0},
    "preln_lr1e-3_w0": {"preln": True, "lr": 1e-3, "warmup": 0.0},
    "preln_lr5e-3": {"preln": True, "lr": 5e-3},
    "preln_drop0": {"preln": True, "dropout": 0.0},
    "post_lr5e-4": {"lr": 5e-4},
    "preln_plus_sentiment": {"preln": True, "corpus": "wiki,news,movies,amazon,nyt,tweets"},
    "mask0.4": {"mask": 0.4},
    "hidden256": {"hidden": 256},
    "batch16_3000steps": {"batch": 16, "steps": 3000},
    "block128_batch16": {"block": 128, "batch": 16},
    "vocab2000": {"vocab": 2000},
    "vocab8000": {"vocab": 8000},
    "bf16": {"bf16": True},
    "base_6000steps": {"steps": 6000, "evals": 20},
    "roformer": {"arch": "roformer"},
}
VALIDATION_TOKENS = 64 * 128
HERE = Path(__file__).resolve().parent


def arm(settings: dict) -> dict:
    """Train one arm in this process; its curve: (step, seconds, validation loss, mean train loss since the last
    evaluation)."""
    import torch
    from transformers import AutoModel, BertConfig, RobertaPreLayerNormConfig, RoFormerConfig

    from ptft_core.config import OptimConfig
    from ptft_core.data import load_texts
    from ptft_core.families import train_tokenizer
    from ptft_core.models import MaskedLMHead, MLMModel, autocast, compute_precision
    from ptft_core.training.common import build_optimizer, build_scheduler, decay_groups, generator, optimizer_step
    from ptft_core.training.lm_data import eval_loss, fixed_batches, objective_batch, text_blocks
    from ptft_core.training.reference import reference_losses

    a = argparse.Namespace(**{**BASE, **settings})
    torch.manual_seed(0)
    torch.set_num_threads(2)
    texts = load_texts(a.corpus.split(","), "train")
    tokenizer = train_tokenizer("bert", texts, a.vocab)
    train = text_blocks(tokenizer, texts, a.block)
    val = text_blocks(tokenizer, load_texts(["wiki", "news"], "validation"), a.block)[:VALIDATION_TOKENS // a.block]
    val_batches = fixed_batches("mlm", val, 32, tokenizer, 0.15, 1234)
    reference = reference_losses("mlm", train, val_batches, len(tokenizer), tokenizer.all_special_ids)
    shape = dict(num_hidden_layers=a.layers, hidden_size=a.hidden, num_attention_heads=max(2, a.hidden // 64),
                 intermediate_size=4 * a.hidden, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                 hidden_dropout_prob=a.dropout, attention_probs_dropout_prob=a.dropout)
    if a.arch == "roformer":  # BERT with rotary position embeddings in every attention layer (Su et al. 2021)
        config = RoFormerConfig(embedding_size=a.hidden, max_position_embeddings=512, type_vocab_size=1, **shape)
    elif a.preln:
        config = RobertaPreLayerNormConfig(max_position_embeddings=514, type_vocab_size=1, **shape)
    else:
        config = BertConfig(max_position_embeddings=512, **shape)
    encoder = AutoModel.from_config(config)
    model = MLMModel(encoder, MaskedLMHead(encoder.config))
    optim = OptimConfig(lr=a.lr, warmup_ratio=a.warmup, schedule=a.schedule, weight_decay=a.wd)
    optimizer = build_optimizer(decay_groups(list(model.named_parameters()), a.wd, a.lr), optim)
    scheduler = build_scheduler(optimizer, optim, a.steps)
    masking, per_epoch = generator(0), len(train) // a.batch
    evals = {round(a.steps * (i + 1) / a.evals) for i in range(a.evals)}
    device = torch.device("cpu")
    curve, loss_sum, count, order = [], 0.0, 0, None
    start = time.perf_counter()
    with compute_precision(torch.bfloat16 if a.bf16 else torch.float32):
        curve.append((0, 0.0, eval_loss(model, val_batches, device), None))
        model.train()
        for step in range(a.steps):
            epoch, index = divmod(step, per_epoch)
            if index == 0:
                order = torch.randperm(len(train), generator=generator(7919 + epoch))
            inputs, labels = objective_batch("mlm", train[order[index * a.batch:(index + 1) * a.batch]], tokenizer,
                                             a.mask, masking)
            with autocast(device):
                loss = model(inputs, labels)
            loss.backward()
            optimizer_step(optimizer, scheduler, 1.0)
            loss_sum, count = loss_sum + loss.item(), count + 1
            if step + 1 in evals:
                curve.append((step + 1, round(time.perf_counter() - start, 1), eval_loss(model, val_batches, device),
                              loss_sum / count))
                loss_sum, count = 0.0, 0
                model.train()
    return {"settings": vars(a), "reference": reference, "train_tokens": train.numel(), "curve": curve,
            "seconds": time.perf_counter() - start}


def report(results: list[dict], out: Path) -> None:
    """One figure: every arm's validation loss minus its own unigram line, against steps."""
    import plotly.graph_objects as go

    from ptft_core.plots import TEMPLATE, arm_color

    fig = go.Figure()
    for i, r in enumerate(results):
        unigram = r["reference"]["unigram_loss"]
        steps = [c[0] for c in r["curve"]]
        fig.add_trace(go.Scatter(x=steps, y=[c[2] - unigram for c in r["curve"]], mode="lines+markers",
                                 name=f"{r['tag']} ({r['curve'][-1][2] - unigram:+.2f})", marker_color=arm_color(i)))
    bigram_gap = sum(r["reference"]["bigram_loss"] - r["reference"]["unigram_loss"] for r in results) / len(results)
    fig.add_hline(y=0, line_dash="dot", annotation_text="unigram line")
    fig.add_hline(y=bigram_gap, line_dash="dashdot", annotation_text=f"bigram line (mean {bigram_gap:+.2f})")
    fig.update_layout(template=TEMPLATE, height=560, title="Tiny masked LM on this CPU: validation loss minus the "
                      "unigram line of the same targets, per lever", xaxis_title="step",
                      yaxis_title="validation MLM loss − unigram (nats)", yaxis_range=[-2.5, 1.5])
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(LEVERS), help="the arms to run (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pretrain_levers.jsonl")
    parser.add_argument("--report", type=Path, help="draw the arms in --out into this HTML file and stop")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one arm, in a process of its own
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps({"tag": args.arm, **arm(LEVERS[args.arm])}), flush=True)
        return
    if args.report:
        results = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        report(results, args.report)
        for r in results:
            u, b, last = r["reference"]["unigram_loss"], r["reference"]["bigram_loss"], r["curve"][-1][2]
            print(f"{r['tag']:24s} unigram {u:.2f} bigram {b:.2f} final {last:.2f} ({last - u:+.2f} vs unigram) "
                  f"{r['settings']['steps']} steps {r['seconds']:.0f} s")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for tag in args.only or list(LEVERS):
        line = subprocess.run([sys.executable, "-m", "bench.pretrain_levers_bench", "--arm", tag], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with args.out.open("a") as f:
            f.write(line + "\n")
        print(line[:200], flush=True)


if __name__ == "__main__":
    main()
