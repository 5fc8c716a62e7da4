"""Tiny Hugging Face ``transformers`` models (random init from small configs, no download)."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN, HEADS, LAYERS, TOKENS, VOCAB, CLASSES = 32, 4, 2, 8, 50, 5


def hf_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A seeded tiny model of family ``name`` (eager attention) and 128 calibration inputs for it."""
    import transformers as hf

    torch.manual_seed(0)
    common = dict(num_labels=CLASSES, attn_implementation="eager")
    text = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                intermediate_size=2 * HIDDEN, max_position_embeddings=4 * TOKENS, **common)
    if name == "bert":
        model = hf.BertForSequenceClassification(hf.BertConfig(**text))
    elif name == "roberta":
        model = hf.RobertaForSequenceClassification(hf.RobertaConfig(**text))
    elif name in ("mistral", "qwen2"):
        config, cls = {"mistral": (hf.MistralConfig, hf.MistralForSequenceClassification),
                       "qwen2": (hf.Qwen2Config, hf.Qwen2ForSequenceClassification)}[name]
        model = cls(config(num_key_value_heads=2, pad_token_id=0, use_cache=False, **text))
    elif name == "distilbert":
        model = hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=2 * HIDDEN,
            max_position_embeddings=4 * TOKENS, **common))
    elif name == "llama":
        model = hf.LlamaForSequenceClassification(hf.LlamaConfig(num_key_value_heads=2, pad_token_id=0, use_cache=False, **text))
    elif name == "gpt2":
        model = hf.GPT2ForSequenceClassification(hf.GPT2Config(
            vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=4 * TOKENS, n_inner=2 * HIDDEN, pad_token_id=0, use_cache=False, **common))
    elif name == "t5":  # encoder-decoder; the classifier reads the last <eos> (id 1) of each input
        model = hf.T5ForSequenceClassification(hf.T5Config(
            vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=2 * HIDDEN, num_layers=LAYERS, num_heads=HEADS,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
            use_cache=False, **common))
    elif name == "vit":
        model = hf.ViTForImageClassification(hf.ViTConfig(
            image_size=16, patch_size=4, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=2 * HIDDEN, **common))
        return model.eval(), torch.randn(128, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    else:
        raise KeyError(name)
    ids = torch.randint(3, VOCAB, (128, TOKENS), generator=torch.Generator().manual_seed(1))
    if name == "t5":
        ids[:, -1] = 1
    return model.eval(), ids


HF_FAMILIES = ("bert", "roberta", "distilbert", "vit", "gpt2", "llama", "mistral", "qwen2", "t5")
