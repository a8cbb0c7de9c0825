"""What a user would write instead of ptft, kept honest: same model, data, batch size, steps and optimizer.

- `padded_loop`: the loop of the popular guides: the tokenizer pads every example to `max_length`,
  `BertForSequenceClassification` (via AutoModel), AdamW, a linear schedule.
- `hf_trainer`: `transformers.Trainer`: its defaults (dynamic padding through its default collator), or as its
  docs suggest for speed: `train_sampling_strategy="group_by_length"` and `bf16=True` where the device has it.
- `accelerate_loop`: the Accelerate "no trainer" loop of `transformers/examples/pytorch/text-classification/
  run_glue_no_trainer.py`: `datasets.map(batched=True)`, `DataCollatorWithPadding`, a shuffled `DataLoader`,
  `Accelerator(mixed_precision=...)`, AdamW with weight decay off for biases and LayerNorm, a linear schedule.

Every model is loaded with float32 master weights, as ptft loads it (the checkpoint file may hold fp16).
Each returns the wall time of the training steps alone (model loading and tokenisation excluded, as for ours)
and the trained model, so the caller can check quality on the same validation set.
"""

from __future__ import annotations

import tempfile
import time

import torch


def padded_loop(model_dir: str, texts: list[str], labels: list[int], batch_size: int, steps: int,
                max_length: int, lr: float = 5e-5, seed: int = 0, device: str = "cpu"):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from ptft_core.models import autocast

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, dtype=torch.float32).to(device)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt").to(device)
    y = torch.tensor(labels, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        idx = order[(step * batch_size) % len(texts):][:batch_size].to(device)
        with autocast(torch.device(device)):  # bf16 on CUDA, as in ptft
            out = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=y[idx])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start, model, tokenizer


def _tokenized(tokenizer, texts: list[str], labels: list[int], max_length: int):
    from datasets import Dataset

    return Dataset.from_dict({"text": texts, "label": labels}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length), batched=True,
        remove_columns=["text"])


def _classifier(model_dir: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, dtype=torch.float32), tokenizer


def hf_trainer(model_dir: str, texts: list[str], labels: list[int], batch_size: int, steps: int,
               max_length: int, lr: float = 5e-5, seed: int = 0, device: str = "cpu", group_by_length: bool = False,
               bf16: bool | None = None, warmup_ratio: float = 0.0, weight_decay: float = 0.0):
    """`bf16=None`: on CUDA only (the earlier arms' setting); warm-up and weight decay default to Trainer's own."""
    from transformers import Trainer, TrainingArguments

    model, tokenizer = _classifier(model_dir)
    dataset = _tokenized(tokenizer, texts, labels, max_length)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps,
                                 learning_rate=lr, save_strategy="no", logging_strategy="no", report_to="none",
                                 disable_tqdm=True, seed=seed, use_cpu=device == "cpu",
                                 bf16=device != "cpu" if bf16 is None else bf16, warmup_steps=int(warmup_ratio * steps),
                                 weight_decay=weight_decay,
                                 train_sampling_strategy="group_by_length" if group_by_length else "random")
        trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    return elapsed, model, tokenizer


def accelerate_loop(model_dir: str, texts: list[str], labels: list[int], batch_size: int, steps: int,
                    max_length: int, lr: float = 5e-5, seed: int = 0, bf16: bool = False, warmup_ratio: float = 0.0,
                    weight_decay: float = 0.0):
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=True)
    set_seed(seed)
    model, tokenizer = _classifier(model_dir)
    dataset = _tokenized(tokenizer, texts, labels, max_length).rename_column("label", "labels")
    loader = DataLoader(dataset, shuffle=True, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": weight_decay},
              {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    done, start = 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start, accelerator.unwrap_model(model), tokenizer


@torch.no_grad()
def accuracy(model, tokenizer, texts: list[str], labels: list[int], max_length: int, batch_size: int = 64) -> float:
    """Validation accuracy with the same tokenizer; dynamic padding (evaluation cost is not what we compare)."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        pred = model(**enc).logits.argmax(-1).cpu()
        correct += int((pred == torch.tensor(labels[i:i + batch_size])).sum())
    return correct / len(texts)
