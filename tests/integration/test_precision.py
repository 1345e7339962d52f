"""int8 MiniLM against fp32 on the diverse built-in texts, and the guard that refuses a
quantized model below the floor in any category."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from inferpool.errors import ConfigurationError
from worker.models import minilm, text_sets
from worker.models.calibration import CALIBRATION_SEED, CALIBRATION_SIZE, sentences
from worker.models.precision import AccuracyFloor, Precision, choose
from worker.models.quantization import agreement, quantize_int8
from worker.models.text_embedding import (
    CHECK_PER_CATEGORY,
    USER_CATEGORY,
    TextEmbeddingModel,
    calibration_texts,
)

pytestmark = pytest.mark.slow

EVALUATION_SEED = 2025  # template sentences: not the calibration (7) or check (8) sets
HELD_OUT = 8  # per category, after the guard's own sample


@pytest.fixture(scope="module")
def model() -> TextEmbeddingModel:
    torch.set_num_threads(2)
    return minilm.create(warmup_batch_sizes=())


def embed(model: TextEmbeddingModel, module: nn.Module, texts: list[str]) -> torch.Tensor:
    items = model.prepare(texts)
    return torch.cat([model.encode(module, model.collate(items[i : i + 32]))
                      for i in range(0, len(items), 32)])


def held_out_sample() -> dict[str, list[str]]:
    """Per category, texts the guard did not look at."""
    return {name: list(texts[CHECK_PER_CATEGORY : CHECK_PER_CATEGORY + HELD_OUT])
            for name, texts in text_sets.load().evaluation.items()}


def test_int8_is_the_cpu_default_and_meets_the_floor_in_every_category(
    model: TextEmbeddingModel,
) -> None:
    assert model.precision is Precision.INT8 and model.choice.refused == ()  # auto on CPU
    assert set(model.choice.by_category) == set(text_sets.load().evaluation)
    assert model.choice.retrieval is not None and model.choice.retrieval.top10 >= 0.99
    fp32 = model.build_encoder(Precision.NONE)
    for name, texts in held_out_sample().items():
        measured = agreement(embed(model, fp32, texts), embed(model, model.encoder, texts))
        assert measured.mean_cosine >= 0.995, (name, measured)
        assert measured.min_cosine >= 0.98, (name, measured)


def test_a_quantization_that_passes_on_templates_but_not_short_texts_is_refused(
    model: TextEmbeddingModel,
) -> None:
    # The previous default (SmoothQuant, ranges calibrated on template English) passed the
    # previous guard: template sentences, mean >= 0.99 and min >= 0.97 overall.
    template = model.prepare(sentences(CALIBRATION_SIZE, CALIBRATION_SEED))
    damaged = quantize_int8(model.build_encoder(Precision.NONE),
                            [model.collate(template[i : i + 32]) for i in range(0, 128, 32)])
    templates = sentences(64, seed=EVALUATION_SEED)
    fp32 = model.build_encoder(Precision.NONE)
    on_templates = agreement(embed(model, fp32, templates), embed(model, damaged, templates))
    assert AccuracyFloor(mean_cosine=0.99, min_cosine=0.97).admits(on_templates)

    def load(mode: Precision) -> nn.Module:
        return fp32 if mode is Precision.NONE else damaged

    choice, chosen = choose([Precision.INT8, Precision.NONE], load, model._embed_check_set,
                            AccuracyFloor())
    assert choice.precision is Precision.NONE and chosen is fp32
    assert [mode for mode, _ in choice.refused] == [Precision.INT8]
    reason = choice.refused[0][1]
    assert "below the floor" in reason and "short: min cosine" in reason
    refused = dict(choice.refused_measured)[Precision.INT8]
    assert refused.by_category["short"].min_cosine < 0.98  # the figures behind the reason


def test_a_text_embeds_the_same_alone_and_inside_any_padded_batch(
    model: TextEmbeddingModel,
) -> None:
    sample = [text for texts in text_sets.stratified(4).values() for text in texts]
    alone = torch.cat([model.encode(model.encoder, model.collate(model.prepare([text])))
                       for text in sample])
    long_neighbour = max(text_sets.load().evaluation["paragraphs"], key=len)
    order = list(range(len(sample)))
    random.Random(0).shuffle(order)
    for size in (8, 32):
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            batch = model.prepare([long_neighbour, *(sample[i] for i in rows)])
            batched = model.encode(model.encoder, model.collate(batch))[1:]
            cosine = (batched * alone[rows]).sum(dim=-1)
            worst = int(cosine.argmin())
            assert float(cosine.min()) >= 0.9999, (sample[rows[worst]], float(cosine.min()))


def test_stock_dynamic_quantization_is_refused_and_fp32_served() -> None:
    stock = {"recipe": "smoothquant", "smooth_layers": (), "activation_bits": 7}
    model = minilm.create(precision=Precision.INT8, int8_options=stock, warmup_batch_sizes=())
    assert model.precision is Precision.NONE
    assert model.choice.refused[0][0] is Precision.INT8
    assert "below the floor" in model.choice.refused[0][1]


def test_an_unknown_int8_recipe_is_refused_clearly() -> None:
    model = minilm.create(precision=Precision.INT8, int8_options={"recipe": "magic"},
                          warmup_batch_sizes=())
    assert model.precision is Precision.NONE
    assert "recipe must be one of ['outlier', 'smoothquant']" in model.choice.refused[0][1]


def test_an_unavailable_mode_is_refused_not_fatal() -> None:
    model = minilm.create(precision=Precision.FP16, warmup_batch_sizes=())
    # fp16 on this CPU is slow but available; int8-weight-only needs CUDA and is refused
    assert model.precision in (Precision.FP16, Precision.BF16, Precision.NONE)
    weight_only = minilm.create(precision=Precision.INT8_WEIGHT_ONLY, warmup_batch_sizes=())
    assert weight_only.choice.refused[0][0] is Precision.INT8_WEIGHT_ONLY
    assert "unavailable here" in weight_only.choice.refused[0][1]


def test_int8_can_be_calibrated_and_checked_on_texts_like_the_traffic(tmp_path: Path) -> None:
    code_lines = [f"def handler_{i}(request): return json.dumps({{'id': {i}, 'ok': True}})"
                  for i in range(24)]
    prose = sentences(24, seed=99)
    path = tmp_path / "calibration.txt"
    path.write_text("\n".join(line for pair in zip(code_lines, prose, strict=True)
                              for line in pair))
    calibration, check = calibration_texts(path)
    assert code_lines[0] in calibration and len(calibration) == 36 + len(
        text_sets.load().calibration_texts())
    assert prose[1] in check[USER_CATEGORY] and prose[1] not in calibration  # 4th held out
    model = minilm.create(precision=Precision.INT8, calibration_file=path, warmup_batch_sizes=())
    # the guard judged the model on the held-out traffic-like texts as their own category
    assert model.precision is Precision.INT8, model.choice.refused
    assert model.choice.by_category[USER_CATEGORY].min_cosine >= 0.98
    with pytest.raises(ConfigurationError, match="at least 16"):
        (tmp_path / "short.txt").write_text("one\ntwo\n")
        minilm.create(calibration_file=tmp_path / "short.txt", warmup_batch_sizes=())
