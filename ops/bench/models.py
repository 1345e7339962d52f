"""MiniLM speed on this machine: sentences/s for fp32 and int8 at several batch sizes.

Each configuration is measured interleaved with the other in the same process (fp32, int8,
fp32, int8, ...), and each figure is the median of the passes; the int8 speedup is the
median of the per-pass ratios. Tokenization is excluded (it is done once, in the worker's
preparation thread); padding to the longest sentence of each batch is included.

    python ops/bench/models.py [--threads 2] [--passes 7] [--batches 1 8 32 64 128]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from inferpool.logs import configure_logging
from worker.models import minilm
from worker.models.calibration import sentences
from worker.models.precision import Precision
from worker.models.quantization import agreement


def sentences_per_second(run: object, batches: list[dict[str, torch.Tensor]], count: int) -> float:
    started = time.perf_counter()
    for batch in batches:
        run(batch)  # type: ignore[operator]
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    args = parser.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(args.threads)
    model = minilm.create(precision=Precision.NONE, warmup_batch_sizes=())
    fp32 = model.build_encoder(Precision.NONE)
    int8 = model.build_encoder(Precision.INT8)
    texts = sentences(args.sentences, seed=2024)
    items = model.prepare(texts)
    encoders = {"fp32": fp32, "int8": int8}
    reference = torch.cat([model.encode(fp32, model.collate(items[i:i + 64]))
                           for i in range(0, len(items), 64)])
    candidate = torch.cat([model.encode(int8, model.collate(items[i:i + 64]))
                           for i in range(0, len(items), 64)])
    print(f"MiniLM-L6-v2, {args.sentences} sentences of 11-19 words, {args.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"median of {args.passes} interleaved passes")
    print(f"int8 vs fp32 on these sentences: {agreement(reference, candidate)}\n")
    print("| batch | fp32 sentences/s | int8 sentences/s | int8 / fp32 |")
    print("|---|---|---|---|")
    for size in args.batches:
        batches = [model.collate(items[i:i + size]) for i in range(0, len(items), size)]
        for encoder in encoders.values():  # warm this shape up
            model.encode(encoder, batches[0])
        rates: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.passes):
            for name, encoder in encoders.items():
                rates[name].append(sentences_per_second(
                    lambda batch, e=encoder: model.encode(e, batch), batches, len(items)))
        ratio = statistics.median(i / f for i, f in zip(rates["int8"], rates["fp32"], strict=True))
        print(f"| {size} | {statistics.median(rates['fp32']):.0f} | "
              f"{statistics.median(rates['int8']):.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
