"""Int8 modes of all-MiniLM-L6-v2 against fp32 on the diverse built-in texts.

Usage (from the repository root)::

    python ops/bench/quantization.py            # a few minutes on 2 shared cores
    python ops/bench/quantization.py --quick    # fewer passes

Modes: fp32; the previous int8 default (SmoothQuant recipe, ranges calibrated on template
English); the current default (``quantize_outlier_int8``: 8 fp32 outlier channels per
Linear, static ranges calibrated on the diverse calibration set, attention on each text's
real tokens for batch invariance); the same with the stock padded attention; and, if
``onnxruntime`` is installed (an optional, benchmark-only dependency: ``pip install
onnxruntime onnx``), ONNX Runtime fp32 and its
dynamic int8 in sentence-transformers' export configuration (per-channel, no reduced
range) and in its default configuration.

Accuracy: the full evaluation set (``worker/models/text_sets.json``, 12 categories, 52 texts
each) in batches of 32 per category, mean and min cosine against torch fp32; retrieval:
the 192 query/passage pairs (top-1 and top-10 agreement and top-10 overlap, see
``worker.models.retrieval``); batch invariance: 48 texts (4 per category) alone against
inside padded batches of 8 and 32 next to the longest paragraph (min cosine).

Speed: the evaluation texts shuffled with a fixed seed (the traffic mix: most batches of 32
hold a 150-256-token paragraph and are padded to it), cut into batches of 1, 8, 32 and 64.
Each batch runs through fp32 and then through each mode, back to back in this process, and
a mode's figure is the median over batches and passes of ``fp32 time / mode time``, so
that load from other processes cancels as far as possible. Absolute times are not reported.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worker.models import minilm, text_sets
from worker.models.calibration import CALIBRATION_SEED, CALIBRATION_SIZE, sentences
from worker.models.outlier_int8 import quantize_outlier_int8
from worker.models.precision import Precision
from worker.models.quantization import agreement, quantize_int8
from worker.models.retrieval import retrieval_agreement
from worker.models.text_embedding import TextEmbeddingModel

THREADS = 2
BATCH_SIZES = (1, 8, 32, 64)
Batch = dict[str, torch.Tensor]
Encoder = Callable[[Batch], torch.Tensor]  # a batch -> last_hidden_state


def torch_encoder(module: nn.Module) -> Encoder:
    def run(batch: Batch) -> torch.Tensor:
        out: torch.Tensor = module(**batch).last_hidden_state
        return out

    return run


def onnx_encoders(fp32: nn.Module, workdir: Path) -> dict[str, Encoder]:
    """ONNX Runtime fp32 and dynamic int8 (two configurations), or {} if not installed."""
    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("onnxruntime not installed: its rows are skipped (pip install onnxruntime onnx)")
        return {}

    class LastHidden(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    exported = workdir / "minilm.onnx"
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "last_hidden_state": {0: "batch", 1: "tokens"}}
    export: Any = torch.onnx.export
    # export a copy: once traced by the TorchScript exporter, the torch fp32 model measured
    # cosine 0.63 between a text alone and batched (padding no longer masked, it seems)
    export(LastHidden(copy.deepcopy(fp32)), example, str(exported),
           input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
           dynamic_axes=axes, opset_version=17, dynamo=False)
    files = {"ONNX Runtime fp32": exported}
    for label, options in (
        ("ONNX Runtime int8 (per-channel, reduce_range=False)", {"per_channel": True,
                                                                  "reduce_range": False}),
        ("ONNX Runtime int8 (default options)", {}),
    ):
        path = workdir / f"int8_{len(files)}.onnx"
        quantize_dynamic(str(exported), str(path), weight_type=QuantType.QInt8, **options)
        files[label] = path
    encoders = {}
    for label, path in files.items():
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = THREADS
        session_options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), session_options,
                                               providers=["CPUExecutionProvider"])

        def run(batch: Batch, session: Any = session) -> torch.Tensor:
            feed = {"input_ids": batch["input_ids"].numpy(),
                    "attention_mask": batch["attention_mask"].numpy()}
            return torch.from_numpy(session.run(None, feed)[0])

        encoders[label] = run
    return encoders


def pooled(batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(summed, dim=-1)


def embed(model: TextEmbeddingModel, encoder: Encoder, texts: list[str], size: int = 32
          ) -> torch.Tensor:
    items = model.prepare(texts)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(items), size):
            batch = model.collate(items[start : start + size])
            rows.append(pooled(batch, encoder(batch).float()))
    return torch.cat(rows)


def accuracy(model: TextEmbeddingModel, encoders: Mapping[str, Encoder]) -> dict[str, Any]:
    sets = text_sets.load()
    categories = {name: list(texts) for name, texts in sets.evaluation.items()}
    queries = [pair.query for pair in sets.retrieval]
    passages = list(dict.fromkeys(pair.passage for pair in sets.retrieval))
    sample = [text for texts in text_sets.stratified(4).values() for text in texts]
    neighbour = max(categories["paragraphs"], key=len)
    results: dict[str, Any] = {}
    reference: dict[str, torch.Tensor] = {}
    for label, encoder in encoders.items():
        by_category = {name: embed(model, encoder, texts) for name, texts in categories.items()}
        q, p = embed(model, encoder, queries), embed(model, encoder, passages)
        if not reference:
            reference = {**by_category, "queries": q, "passages": p}
        figures = {name: agreement(reference[name], rows) for name, rows in by_category.items()}
        retrieval = retrieval_agreement(reference["queries"], reference["passages"], q, p)
        alone = torch.cat([embed(model, encoder, [text], 1) for text in sample])
        worst = 1.0
        order = list(range(len(sample)))
        random.Random(0).shuffle(order)
        for size in (8, 32):
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                together = embed(model, encoder, [neighbour, *(sample[i] for i in rows)], 64)
                worst = min(worst, float((together[1:] * alone[rows]).sum(-1).min()))
        results[label] = (figures, retrieval, worst)
    return results


def speed(model: TextEmbeddingModel, encoders: Mapping[str, Encoder], passes: int
          ) -> dict[str, dict[int, float]]:
    texts = [text for texts in text_sets.load().evaluation.values() for text in texts]
    random.Random(1).shuffle(texts)
    items = model.prepare(texts)
    (_, reference), *others = encoders.items()
    ratios: dict[str, dict[int, list[float]]] = {
        label: {size: [] for size in BATCH_SIZES} for label, _ in others}
    with torch.inference_mode():
        for size in BATCH_SIZES:
            count = {1: 48, 8: 16, 32: 8, 64: 4}[size]
            batches = [model.collate(items[i * size : (i + 1) * size]) for i in range(count)]
            for encoder in encoders.values():  # warm-up
                encoder(batches[0])
            for _ in range(passes):
                for batch in batches:
                    started = time.perf_counter()
                    reference(batch)
                    fp32 = time.perf_counter() - started
                    for label, encoder in others:
                        started = time.perf_counter()
                        encoder(batch)
                        ratios[label][size].append(fp32 / (time.perf_counter() - started))
    return {label: {size: statistics.median(values) for size, values in by_size.items()}
            for label, by_size in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one speed pass instead of three")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model = minilm.create(precision=Precision.NONE, warmup_batch_sizes=())
    fp32 = model.encoder
    diverse = sorted(model.prepare(text_sets.load().calibration_texts()), key=len)
    diverse_batches = [model.collate(diverse[i : i + 32]) for i in range(0, len(diverse), 32)]
    template = model.prepare(sentences(CALIBRATION_SIZE, CALIBRATION_SEED))
    template_batches = [model.collate(template[i : i + 32]) for i in range(0, len(template), 32)]
    encoders: dict[str, Encoder] = {
        "fp32 (torch)": torch_encoder(fp32),
        "int8, previous default (SmoothQuant, template calibration)":
            torch_encoder(quantize_int8(fp32, template_batches)),
        "int8, new default (outliers fp32, diverse calibration)":
            torch_encoder(quantize_outlier_int8(fp32, diverse_batches)),
        "int8, new, stock padded attention (not batch-invariant)":
            torch_encoder(quantize_outlier_int8(fp32, diverse_batches,
                                                invariant_attention=False)),
    }
    with tempfile.TemporaryDirectory() as workdir:
        encoders.update(onnx_encoders(fp32, Path(workdir)))
        print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{THREADS} threads")
        results = accuracy(model, encoders)
        timings = speed(model, encoders, passes=1 if args.quick else 3)
    names = list(text_sets.load().evaluation)
    print("\n| mode | b=1 | b=8 | b=32 | b=64 | worst category mean / min | retrieval top-1 / "
          "top-10 / overlap@10 | alone vs batched, min cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (figures, retrieval, worst) in results.items():
        ratio = timings.get(label, dict.fromkeys(BATCH_SIZES, 1.0))
        speeds = " | ".join(f"{ratio[size]:.2f}x" for size in BATCH_SIZES)
        means = min(f.mean_cosine for f in figures.values())
        mins = min(f.min_cosine for f in figures.values())
        print(f"| {label} | {speeds} | {means:.4f} / {mins:.4f} | {retrieval.top1:.3f} / "
              f"{retrieval.top10:.3f} / {retrieval.overlap10:.3f} | {worst:.6f} |")
    print("\nMean / min cosine against torch fp32, per category:\n")
    print("| mode | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, (figures, _, _) in results.items():
        cells = " | ".join(f"{figures[n].mean_cosine:.4f} / {figures[n].min_cosine:.4f}"
                           for n in names)
        print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main()
