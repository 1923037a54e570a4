"""Can structured pruning buy MiniLM speed at cosine >= 0.98? Prune, distil briefly, measure, in one run.

all-MiniLM-L6-v2 is already a distilled model: every FFN neuron and attention head carries weight.
This script removes whole FFN neurons (kept by mean |activation| x outgoing weight norm) and whole
attention heads (kept by how much the embedding moves when the head is switched off), then distils
the pruned model against the fp32 one (1 - cosine of the embeddings + hidden-state MSE) for
``--steps`` AdamW steps. It prints, per setting, the cosine fidelity on the recipe's evaluation data
(``minilm-cpu.yaml``: passages filling 128 tokens; and the padded sentences of
``minilm-cpu-sentences.yaml``) right after pruning and after distillation, and the pruned model's
torch eager throughput at batch 32, seq 128, as a ratio to the unpruned model (interleaved rounds).

Distillation text: sentences from docstrings of standard-library and numpy modules that the evaluation
corpus does not use (no overlap with the scored sentences).

    .venv/bin/python benchmarks/minilm_pruning_fidelity.py                   # FFN 1152 and 768, 12 heads
    .venv/bin/python benchmarks/minilm_pruning_fidelity.py --setting 768:8 --steps 200
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.examples.minilm import MiniLMEmbedder, load_tokenizer, pretrained_minilm  # noqa: E402
from workbench.examples.sentences import CORPUS_MODULES, sentence_corpus, sentences_from  # noqa: E402

DISTILL_MODULES = (
    "email.message", "http.client", "http.server", "socket", "ssl", "sqlite3", "xml.etree.ElementTree",
    "unittest", "typing", "enum", "dataclasses", "fractions", "heapq", "bisect", "copy", "pprint", "string",
    "struct", "codecs", "io", "glob", "fnmatch", "configparser", "hashlib", "hmac", "secrets", "uuid",
    "urllib.request", "smtplib", "ftplib", "imaplib", "mailbox", "queue", "sched", "selectors", "signal",
    "zlib", "bz2", "lzma", "shelve", "plistlib", "operator", "numbers", "array", "weakref", "types", "abc",
    "traceback", "warnings", "ast", "dis", "tokenize", "pdb", "timeit", "trace", "doctest", "optparse",
    "getopt", "locale", "gettext", "platform", "sysconfig", "pkgutil", "zipimport", "runpy",
    "multiprocessing", "concurrent.futures", "socketserver", "xmlrpc.client", "html.parser", "mimetypes",
    "binascii", "wave", "colorsys", "filecmp", "netrc", "shlex", "cmd", "code", "pydoc", "numpy",
    "numpy.linalg", "numpy.random",
)  # fmt: skip
HEADS, FFN, SEQ, BATCH = 12, 1536, 128, 32
Batch = tuple[torch.Tensor, torch.Tensor]


def main() -> int:
    args = _arguments()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer()
    evaluation = set(sentence_corpus())
    train = [
        s for s in sentences_from(tuple(m for m in DISTILL_MODULES if m not in CORPUS_MODULES)) if s not in evaluation
    ]
    print(f"distillation sentences: {len(train)} (none of them scored); evaluation: recipe data, 128 rows each")
    teacher = pretrained_minilm()
    passages, sentences = _evaluation_data()
    calibration = _encode(tokenizer, train[:128])
    for setting in args.setting:
        ffn, heads = (int(part) for part in setting.split(":"))
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        student = _pruned(teacher, calibration, ffn=ffn, heads=heads)
        print(f"\nFFN {FFN} -> {ffn} neurons, {HEADS} -> {heads} heads per layer")
        print(f"  after pruning:        cosine {_fidelity(student, teacher, passages, sentences)}")
        started = time.perf_counter()
        _distil(student, teacher, tokenizer, train, steps=args.steps, learning_rate=args.lr)
        elapsed = time.perf_counter() - started
        print(
            f"  after {args.steps} steps ({elapsed:.0f} s): cosine {_fidelity(student, teacher, passages, sentences)}"
        )
        print(f"  torch eager batch {BATCH}, seq {SEQ}: {_speed_ratio(student, teacher, passages, args.rounds)}")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", help="FFN:HEADS kept per layer (default: 1152:12 and 768:12)")
    parser.add_argument("--steps", type=int, default=100, help="distillation steps per setting (default 100)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.setting = args.setting or ["1152:12", "768:12"]
    return args


def _encode(tokenizer: object, texts: list[str], max_length: int = SEQ) -> Batch:
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    return encoded["input_ids"], encoded["attention_mask"]


def _evaluation_data() -> tuple[Batch, Batch]:
    """The two MiniLM recipes' evaluation rows: filled 128-token passages, and padded sentences."""
    from workbench.data import load_dataset
    from workbench.recipe.spec import DataSpec, ModelSpec

    minilm = ModelSpec(source="example", name="minilm")
    found = []
    for fill in (True, False):
        data = load_dataset(DataSpec(limit=128, options={"seq_len": SEQ, "fill": fill}), minilm)
        found.append((torch.from_numpy(data.inputs["input_ids"]), torch.from_numpy(data.inputs["attention_mask"])))
    return found[0], found[1]


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9), dim=1)


def _pruned(teacher: MiniLMEmbedder, calibration: Batch, *, ffn: int, heads: int) -> MiniLMEmbedder:
    student = copy.deepcopy(teacher).eval()
    bert = student.bert
    ids, mask = calibration
    with torch.no_grad():
        reference = teacher(ids, mask)
        if heads < HEADS:
            bert.prune_heads(_least_useful_heads(student, reference, calibration, HEADS - heads))
        if ffn < FFN:
            for layer, keep in enumerate(_ffn_keep(student, calibration, ffn)):
                _slice_ffn(bert.encoder.layer[layer], keep)
    return student


def _least_useful_heads(
    student: MiniLMEmbedder, reference: torch.Tensor, batch: Batch, drop: int
) -> dict[int, list[int]]:
    """Per layer, the ``drop`` heads whose removal moves the embedding least (one ablation each)."""
    layers = len(student.bert.encoder.layer)
    harm = np.zeros((layers, HEADS))
    for layer in range(layers):
        for head in range(HEADS):
            head_mask = torch.ones(layers, HEADS)
            head_mask[layer, head] = 0.0
            hidden = student.bert(input_ids=batch[0], attention_mask=batch[1], head_mask=head_mask).last_hidden_state
            harm[layer, head] = 1.0 - float((_pool(hidden, batch[1]) * reference).sum(1).mean())
    return {layer: [int(h) for h in np.argsort(harm[layer])[:drop]] for layer in range(layers)}


def _ffn_keep(student: MiniLMEmbedder, batch: Batch, keep: int) -> Iterator[torch.Tensor]:
    """Per layer, the ``keep`` FFN neurons with the largest mean |activation| x outgoing weight norm."""
    layers = student.bert.encoder.layer
    totals = [torch.zeros(FFN) for _ in layers]
    token_mask = batch[1].unsqueeze(-1)

    def hook(index: int) -> object:
        def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            totals[index].add_((output.abs() * token_mask).sum((0, 1)))

        return record

    handles = [layer.intermediate.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    student(*batch)
    for handle in handles:
        handle.remove()
    for index, layer in enumerate(layers):
        score = totals[index] * layer.output.dense.weight.norm(dim=0)
        yield torch.sort(torch.argsort(score, descending=True)[:keep]).values


def _slice_ffn(layer: nn.Module, keep: torch.Tensor) -> None:
    up, down = layer.intermediate.dense, layer.output.dense
    new_up, new_down = nn.Linear(up.in_features, len(keep)), nn.Linear(len(keep), down.out_features)
    new_up.weight.data, new_up.bias.data = up.weight.data[keep].clone(), up.bias.data[keep].clone()
    new_down.weight.data, new_down.bias.data = down.weight.data[:, keep].clone(), down.bias.data.clone()
    layer.intermediate.dense, layer.output.dense = new_up, new_down


def _distil(
    student: MiniLMEmbedder,
    teacher: MiniLMEmbedder,
    tokenizer: object,
    train: list[str],
    *,
    steps: int,
    learning_rate: float,
) -> None:
    """Half the steps on single sentences, half on packed passages (the evaluation has both)."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    student.train()
    for step in range(steps):
        if step % 2 == 0:
            texts = random.sample(train, BATCH)
        else:
            texts = [" ".join(random.sample(train, random.randint(3, 10))) for _ in range(BATCH // 2)]
        ids, mask = _encode(tokenizer, texts)
        with torch.no_grad():
            target = teacher.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = student.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        cosine = (_pool(hidden, mask) * _pool(target, mask)).sum(1).mean()
        mse = (((hidden - target) ** 2) * weights).sum() / weights.sum() / hidden.shape[-1]
        loss = 10.0 * (1.0 - cosine) + mse
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    student.eval()


def _fidelity(student: MiniLMEmbedder, teacher: MiniLMEmbedder, passages: Batch, sentences: Batch) -> str:
    with torch.inference_mode():
        found = [float((student(*batch) * teacher(*batch)).sum(1).mean()) for batch in (passages, sentences)]
    return f"{found[0]:.4f} on 128-token passages, {found[1]:.4f} on padded sentences"


def _speed_ratio(student: MiniLMEmbedder, teacher: MiniLMEmbedder, passages: Batch, rounds: int) -> str:
    batch = (passages[0][:BATCH], passages[1][:BATCH])
    ratios = []
    with torch.inference_mode():
        for model in (student, teacher):
            model(*batch)  # warm
        for _ in range(rounds):
            pruned, full = (_seconds(model, batch) for model in (student, teacher))
            ratios.append(full / pruned)
    return f"{statistics.median(ratios):.2f}x the unpruned model (median of {rounds} interleaved rounds)"


def _seconds(model: nn.Module, batch: Batch, calls: int = 3) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        model(*batch)
    return (time.perf_counter() - started) / calls


if __name__ == "__main__":
    sys.exit(main())
