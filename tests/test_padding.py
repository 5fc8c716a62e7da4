"""Padded calibration sequences: the model gets the attention mask, statistics skip the padding.

Known answers: a padded batch records, per sequence, what the sequence alone records; every
data-driven method decides the same masks whatever the padded positions hold (without the mask
the attention would read them). Hugging Face models (tiny configs) take ``attention_mask``;
skipped without ``transformers``.
"""

from __future__ import annotations

import pytest
import torch

import infoprune
from families import assert_physical_model_is_the_masked_one
from infoprune.data.base import calibration_tensors
from infoprune.models.families import QUICK_SETTINGS
from infoprune.models.transformer_families import transformer_data
from infoprune.network import Network
from infoprune.padding import PAD, mark_padding, passing_attention_mask

SAMPLES, TOKENS = 128, 8
LENGTHS = torch.arange(SAMPLES) % (TOKENS - 1) + 2  # 2 … 8 real tokens, right-padded
MASK = (torch.arange(TOKENS)[None] < LENGTHS[:, None]).long()
LABELS = torch.arange(SAMPLES) % 5


def hf(family: str):
    pytest.importorskip("transformers")
    from infoprune.models.hf_families import hf_model

    return hf_model(family)


def other_padding(ids: torch.Tensor) -> torch.Tensor:
    """``ids`` with other token ids at the padded positions."""
    return torch.where(MASK.bool(), ids, (ids * 7 + 3) % 40 + 3)


def longer_padding(ids: torch.Tensor, extra: int = 4) -> dict[str, torch.Tensor]:
    """A dict batch of ``ids`` (right-padded as ``MASK`` says) with ``extra`` more padded positions."""
    mask = torch.nn.functional.pad(MASK, (0, extra))
    return {"input_ids": torch.nn.functional.pad(ids, (0, extra), value=1), "attention_mask": mask, "labels": LABELS}


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("reduction", ["l1", "mean", "std"])
def test_a_padded_batch_records_what_each_sequence_records_alone(family, reduction):
    model, ids = hf(family)
    marked = mark_padding(ids[:6], MASK[:6])
    with passing_attention_mask(model):
        network = Network(model, marked[:2])
        together = network.record(marked, reduction)
        for i in range(6):
            alone = network.record(ids[i : i + 1, : LENGTHS[i]], reduction)
            for name in network.names:
                torch.testing.assert_close(together[name][i], alone[name][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", sorted(set(QUICK_SETTINGS) - {"tp-bn-scale"}))
def test_no_method_reads_the_padded_positions(method):
    """Masks, and the physical model against the masked one, on BERT with right-padded batches."""
    model, ids = hf("bert")
    settings = dict(QUICK_SETTINGS[method], **({"samples": SAMPLES} if method == "itpruner" else {}))
    batches = ({"input_ids": ids, "attention_mask": MASK, "labels": LABELS}, longer_padding(other_padding(ids)))
    results = [infoprune.prune(model, batch, method=method, device="cpu", progress=None, **settings) for batch in batches]
    assert results[0].flops_after < results[0].flops_before
    for name, mask in results[0].masks.items():
        assert torch.equal(mask, results[1].masks[name]), name
    assert not results[0].model._forward_pre_hooks  # the mask is passed while pruning only
    with passing_attention_mask(model), passing_attention_mask(results[0].model):
        assert_physical_model_is_the_masked_one(model, mark_padding(ids[:8], MASK[:8]), results[0])


def test_padding_changes_what_a_model_without_the_mask_would_read():
    """The invariance above is not vacuous: fed the padded ids alone, BERT's outputs depend on them."""
    model, ids = hf("bert")
    with torch.no_grad():
        assert not torch.allclose(model(ids[:8]).logits, model(other_padding(ids)[:8]).logits)


def test_token_batches_of_other_lengths_are_padded_to_the_longest():
    _, ids = transformer_data("bert-like", samples=8)
    batches = [{"input_ids": ids[:4, :5], "labels": LABELS[:4]}, {"input_ids": ids[4:], "labels": LABELS[4:8]}]
    inputs, labels = calibration_tensors(batches)
    assert inputs.shape == (8, ids.shape[1]) and torch.equal(labels, LABELS[:8])
    assert torch.equal(inputs[:4, :5], ids[:4, :5]) and bool((inputs[:4, 5:] == PAD).all())
    assert torch.equal(inputs[4:], ids[4:])


def test_padded_sequences_for_a_model_without_an_attention_mask_are_refused_with_the_fix():
    model, ids = transformer_data("bert-like", samples=16)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids).index_fill(1, torch.tensor([7]), 0)}
    with pytest.raises(ValueError) as error:
        infoprune.prune(model, batch, method="l1", ratio=0.5, device="cpu", progress=None)
    assert str(error.value) == (
        "The calibration sequences are padded, but TokenClassifier.forward takes no attention_mask, so padding would "
        "be read as tokens. Pass sequences of one length without padding, or a model whose forward takes "
        "attention_mask= (as Hugging Face models do)."
    )
