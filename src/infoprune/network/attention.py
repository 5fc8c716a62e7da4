"""Attention heads as prunable groups: one small adapter per attention class, behind one registry.

A multi-head attention computes each head from its own rows of the query, key and value
projections and writes it into its own columns of the output projection; the heads meet only
in that projection's sum. Removing a head (those rows and columns together) therefore computes
exactly what zeroing its columns at the output projection's input computes, which is how
:class:`infoprune.network.Network` masks and records a *head group*: its units are heads, read
where the output projection reads them, a head being a feature of ``head_dim`` columns.

With grouped-query attention (``kv_heads`` < ``heads``) the query heads sharing a key/value
head stay together: a unit is one key/value head with its ``heads / kv_heads`` query heads.

An adapter says where a module's projections are (:meth:`AttentionAdapter.layout`) and puts the
module's own attributes right once heads are gone (:meth:`AttentionAdapter.resize`), so the
pruned model runs at any sequence length and reloads into a re-pruned skeleton. Register one
for your own attention class with :func:`register_attention`::

    register_attention(MyAttention, ProjectionAttention(
        query="q", key="k", value="v", out="proj", heads="n_head", sizes=("inner_dim",)))

The adapters of the Hugging Face ``transformers`` families are registered by class path, so
that ``transformers`` is never imported here.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from infoprune.network.groups import Consumer, Group, Member
from infoprune.network.layers import SplitMultiheadAttention, WindowAttention


@dataclass(frozen=True)
class HeadLayout:
    """Where a module's heads are. Names are relative to the attention module.

    ``producers``: each projection producing the heads (query, key, value) with its output
    rows per unit, ``(units, rows)``; ``out``: the output projection with its input columns
    per unit, ``(units, columns)``; ``heads_per_unit``: query heads in a unit (1 without GQA);
    ``embeddings``: ``nn.Embedding`` layers with a column per head (T5's relative position
    bias), with their columns per unit.
    """

    units: int
    heads_per_unit: int
    head_dim: int
    producers: tuple[tuple[str, torch.Tensor], ...]
    out: tuple[str, torch.Tensor]
    embeddings: tuple[tuple[str, torch.Tensor], ...] = ()


class AttentionAdapter(abc.ABC):
    """How to prune the heads of one attention class."""

    @abc.abstractmethod
    def layout(self, module: nn.Module) -> HeadLayout | str:
        """The module's :class:`HeadLayout`, or why its heads cannot be pruned."""

    @abc.abstractmethod
    def resize(self, module: nn.Module, layout: HeadLayout, units: int) -> None:
        """Set the module's attributes for ``units`` kept units of ``layout`` (the unpruned
        module's), once surgery has shrunk its projections."""

    def coupling(self, name: str) -> str:
        """Attention modules (by name) with the same key lose the same heads: one group. Its
        own name by default; adapters of attentions sharing per-head state across layers
        (T5's position bias) override it."""
        return name


def _get(module: nn.Module, path: str) -> object:
    """The attribute at dotted ``path`` inside ``module`` (AttributeError when it lacks it)."""
    owner, _, attribute = path.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attribute)


def _set(module: nn.Module, path: str, value: int) -> None:
    """Set the attribute at dotted ``path`` inside ``module``."""
    owner, _, attribute = path.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, attribute, value)


@dataclass(frozen=True)
class ProjectionAttention(AttentionAdapter):
    """Attention with separate ``nn.Linear`` query, key, value and output projections.

    Fields are attribute paths inside the attention module (dotted for submodules). ``heads``
    / ``kv_heads`` hold the query / key-value head counts and ``head_dim`` the head width; any
    of them may be None when the projections' widths give it (``heads`` = query width /
    ``head_dim``, ``kv_heads`` = key width / ``head_dim``, ``head_dim`` = query width /
    ``heads``), but ``heads`` or ``head_dim`` must be given. ``sizes`` are
    attributes holding heads × head_dim (e.g. ``all_head_size``); they are all updated by
    :meth:`resize`, as are ``heads`` and ``kv_heads``.
    """

    query: str
    key: str
    value: str
    out: str
    heads: str | None = None
    kv_heads: str | None = None
    head_dim: str | None = None
    sizes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.heads is None and self.head_dim is None:
            raise ValueError("ProjectionAttention needs heads= or head_dim= (the attribute holding the number of "
                             "query heads or their width), to tell the heads apart.")

    def _shape(self, module: nn.Module) -> tuple[int, int, int]:
        """(query heads, key-value heads, head_dim) of ``module`` as it is now."""
        q, k = module.get_submodule(self.query), module.get_submodule(self.key)
        dim = int(_get(module, self.head_dim)) if self.head_dim else q.out_features // int(_get(module, self.heads))
        heads = int(_get(module, self.heads)) if self.heads else q.out_features // dim
        kv = int(_get(module, self.kv_heads)) if self.kv_heads else k.out_features // dim
        return heads, kv, dim

    def layout(self, module: nn.Module) -> HeadLayout | str:
        names = (self.query, self.key, self.value, self.out)
        try:
            layers = [module.get_submodule(n) for n in names]
            heads, kv, dim = self._shape(module) if all(type(layer) is nn.Linear for layer in layers) else (1, 1, 1)
        except AttributeError as error:
            return f"its adapter names an attribute the module lacks ({error}): fix the paths given to ProjectionAttention"
        if not all(type(layer) is nn.Linear for layer in layers):
            return f"its projections {names} are not all nn.Linear"
        if min(heads, kv, dim) < 1:
            return f"it states {heads} query heads and {kv} key-value heads of width {dim}"
        q, k, v, o = layers
        widths = (q.out_features, k.out_features, v.out_features, o.in_features)
        if widths != (heads * dim, kv * dim, kv * dim, heads * dim) or heads % kv:
            return (f"its projection widths ({q.out_features}, {k.out_features}, {v.out_features} → {o.in_features}) do "
                    f"not match {heads} query heads and {kv} key-value heads of width {dim}")
        per_unit = heads // kv
        query_rows = torch.arange(heads * dim).reshape(kv, per_unit * dim)
        kv_rows = torch.arange(kv * dim).reshape(kv, dim)
        producers = ((self.query, query_rows), (self.key, kv_rows), (self.value, kv_rows))
        return HeadLayout(kv, per_unit, dim, producers, (self.out, query_rows))

    def resize(self, module: nn.Module, layout: HeadLayout, units: int) -> None:
        heads = units * layout.heads_per_unit
        for path, value in ((self.heads, heads), (self.kv_heads, units)):
            if path:
                _set(module, path, value)
        for path in self.sizes:
            _set(module, path, heads * layout.head_dim)


@dataclass(frozen=True)
class PackedAttention(AttentionAdapter):
    """Attention whose query, key and value come from one ``nn.Linear`` (``qkv``, rows: all
    query rows, then key rows, then value rows) split in three, as GPT-2's ``c_attn`` (a
    transformers ``Conv1D``, analysed as the Linear it computes). ``heads`` and ``head_dim``
    are attribute paths; ``sizes`` hold heads × head_dim (GPT-2's ``split_size``)."""

    qkv: str
    out: str
    heads: str
    head_dim: str
    sizes: tuple[str, ...] = ()

    def layout(self, module: nn.Module) -> HeadLayout | str:
        try:
            qkv, out = module.get_submodule(self.qkv), module.get_submodule(self.out)
            heads, dim = int(_get(module, self.heads)), int(_get(module, self.head_dim))
        except AttributeError as error:
            return f"its adapter names an attribute the module lacks ({error}): fix the paths given to PackedAttention"
        if not (type(qkv) is nn.Linear and type(out) is nn.Linear):
            return f"its projections ({self.qkv}, {self.out}) are not nn.Linear"
        width = heads * dim
        if qkv.out_features != 3 * width or out.in_features != width:
            return (f"its projection widths ({qkv.out_features} → {out.in_features}) do not match {heads} heads "
                    f"of width {dim} packed as query, key, value")
        rows = torch.arange(width).reshape(heads, dim)
        packed = torch.cat([rows, rows + width, rows + 2 * width], dim=1)
        return HeadLayout(heads, 1, dim, ((self.qkv, packed),), (self.out, rows))

    def resize(self, module: nn.Module, layout: HeadLayout, units: int) -> None:
        _set(module, self.heads, units)
        for path in self.sizes:
            _set(module, path, units * layout.head_dim)


def with_bias_columns(layout: HeadLayout | str, module: nn.Module, bias: str) -> HeadLayout | str:
    """``layout`` with ``module``'s per-head bias table (an ``nn.Embedding`` at ``bias``, one
    column per head) among the heads' members; unchanged when the module has none."""
    table = getattr(module, bias, None)
    if isinstance(layout, str) or table is None:
        return layout
    if not isinstance(table, nn.Embedding) or table.embedding_dim != layout.units * layout.heads_per_unit:
        return f"its {bias} is not an nn.Embedding with one column per head"
    columns = torch.arange(table.embedding_dim).reshape(layout.units, layout.heads_per_unit)
    return dataclasses.replace(layout, embeddings=((bias, columns),))


@dataclass(frozen=True)
class SharedBiasAttention(ProjectionAttention):
    """T5's attention: :class:`ProjectionAttention` whose per-head position bias is computed by
    the first layer of a stack (from its ``bias`` embedding, one column per head) and added in
    every later layer of the stack, so a head is removed from every layer of the stack at once:
    one group per stack (``block.N`` in the module's name) and kind of attention (self, cross)."""

    bias: str = "relative_attention_bias"

    def layout(self, module: nn.Module) -> HeadLayout | str:
        return with_bias_columns(super().layout(module), module, self.bias)

    def coupling(self, name: str) -> str:
        return re.sub(r"\.block\.\d+\.", ".block.*.", name)


ADAPTERS: dict[type | str, AttentionAdapter] = {}
"""Attention class (or its ``module.QualName`` path, for classes not imported here) → adapter."""


def register_attention(cls: type | str, adapter: AttentionAdapter) -> None:
    """Prune the heads of ``cls`` (a class, or its ``"module.QualName"``) with ``adapter``."""
    if not isinstance(adapter, AttentionAdapter):
        raise TypeError("register_attention needs an AttentionAdapter (e.g. ProjectionAttention(...)), "
                        f"got {type(adapter).__name__}.")
    ADAPTERS[cls] = adapter


def adapter_for(module: nn.Module) -> AttentionAdapter | None:
    """The adapter registered for ``module``'s class or its nearest registered base class."""
    for cls in type(module).__mro__:
        adapter = ADAPTERS.get(cls) or ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if adapter is not None:
            return adapter
    return None


register_attention(SplitMultiheadAttention, ProjectionAttention(
    "q_proj", "k_proj", "v_proj", "out_proj", heads="num_heads", head_dim="head_dim"))

_HF = "transformers.models"
for _path, _adapter in {
    f"{_HF}.bert.modeling_bert.BertAttention": ProjectionAttention(
        "self.query", "self.key", "self.value", "output.dense", heads="self.num_attention_heads",
        head_dim="self.attention_head_size", sizes=("self.all_head_size",)),
    f"{_HF}.roberta.modeling_roberta.RobertaAttention": ProjectionAttention(
        "self.query", "self.key", "self.value", "output.dense", heads="self.num_attention_heads",
        head_dim="self.attention_head_size", sizes=("self.all_head_size",)),
    f"{_HF}.distilbert.modeling_distilbert.DistilBertSelfAttention": ProjectionAttention(
        "q_lin", "k_lin", "v_lin", "out_lin", heads="n_heads", head_dim="attention_head_size"),
    f"{_HF}.vit.modeling_vit.ViTAttention": ProjectionAttention(
        "q_proj", "k_proj", "v_proj", "o_proj", heads="num_attention_heads", head_dim="head_dim"),
    f"{_HF}.gpt2.modeling_gpt2.GPT2Attention": PackedAttention(
        "c_attn", "c_proj", heads="num_heads", head_dim="head_dim", sizes=("split_size", "embed_dim")),
    f"{_HF}.t5.modeling_t5.T5Attention": SharedBiasAttention(
        "q", "k", "v", "o", heads="n_heads", head_dim="key_value_proj_dim", sizes=("inner_dim",)),
    **{path: ProjectionAttention("q_proj", "k_proj", "v_proj", "o_proj", head_dim="head_dim") for path in (
        f"{_HF}.llama.modeling_llama.LlamaAttention", f"{_HF}.mistral.modeling_mistral.MistralAttention",
        f"{_HF}.qwen2.modeling_qwen2.Qwen2Attention")},  # head counts read from the projections' widths
}.items():
    register_attention(_path, _adapter)


@dataclass(frozen=True)
class Heads:
    """What a head group knows about its attention: the modules' names (one, or a coupled set,
    :meth:`AttentionAdapter.coupling`), their adapter and the layout of the unpruned modules
    (units are ``layout.units`` key-value groups of heads)."""

    modules: tuple[str, ...]
    adapter: AttentionAdapter
    layout: HeadLayout

    @property
    def width(self) -> int:
        """Output-projection columns per unit: its query heads × head_dim."""
        return self.layout.heads_per_unit * self.layout.head_dim


def head_group(name: str, module: nn.Module, adapter: AttentionAdapter, layout: HeadLayout) -> Group:
    """The group of the heads of one attention module: its projections' rows (producers),
    its output projection's columns (consumer) and its per-head embedding columns."""
    function = tp.pruner.function

    def full(relative: str) -> str:
        return f"{name}.{relative}" if name else relative

    producers = tuple(
        Member(full(r), layer, function.prune_linear_out_channels, rows, layer.out_features)
        for r, rows in layout.producers for layer in [module.get_submodule(r)]
    )
    embeddings = tuple(
        Member(full(r), layer, function.prune_embedding_out_channels, columns, layer.embedding_dim)
        for r, columns in layout.embeddings for layer in [module.get_submodule(r)]
    )
    out_name, columns = layout.out
    out = module.get_submodule(out_name)
    reader = Member(full(out_name), out, function.prune_linear_in_channels, columns, out.in_features)
    consumer = Consumer(full(out_name), out, columns, out.in_features)
    first = producers[0]
    return Group(first.name, first.module, layout.units, producers, (consumer,), (*producers, reader, *embeddings),
                 Heads((name,), adapter, layout))


def coupled_group(parts: list[Group]) -> Group | str:
    """One group removing the same heads from every attention of ``parts``, or why it cannot."""
    first = parts[0]
    if any((p.units, p.heads.width) != (first.units, first.heads.width) for p in parts):
        return "the attentions it shares per-head state with have other head counts or widths"
    return Group(first.name, first.module, first.units, tuple(m for p in parts for m in p.producers),
                 tuple(c for p in parts for c in p.consumers), tuple(m for p in parts for m in p.members),
                 Heads(tuple(n for p in parts for n in p.heads.modules), first.heads.adapter, first.heads.layout))


def find_head_groups(
    model: nn.Module, order: list[str], ignored: set[str]
) -> tuple[list[Group], dict[str, str], frozenset[str]]:
    """A head group per attention module with a registered adapter (per coupled set of them),
    why the others' heads stay whole, and the projections that produce heads (they root no
    channel group)."""
    parts: dict[str, list[Group]] = {}
    whole: dict[str, str] = {}
    blocked: dict[str, str] = {}  # coupling key → why its heads stay whole
    claimed: set[str] = set()
    for name, module in model.named_modules():
        adapter = adapter_for(module)
        if adapter is None:
            continue
        layout = adapter.layout(module)
        if isinstance(layout, str):
            whole[name] = f"its attention heads stay whole: {layout}"
            blocked[adapter.coupling(name)] = f"{name}'s heads stay whole"
            continue
        full = [f"{name}.{relative}" if name else relative for relative, _ in (*layout.producers, layout.out)]
        claimed.update(full[:-1])
        named = ignored & {name, *full}  # the module (ignore=[its type]) or its projections
        reason = (f"ignore= names {sorted(named)}" if named else
                  None if all(n in order for n in full) else "its projections are not all called in the forward pass")
        if reason is not None:
            whole[name] = reason
            blocked[adapter.coupling(name)] = f"{name}'s heads stay whole"
            continue
        parts.setdefault(adapter.coupling(name), []).append(head_group(name, module, adapter, layout))
    groups: list[Group] = []
    for key, coupled in parts.items():
        group = coupled_group(coupled) if key not in blocked else f"its heads are coupled with the others' and {blocked[key]}"
        if isinstance(group, str):
            whole.update({name: f"its attention heads stay whole: {group}" for p in coupled for name in p.heads.modules})
        else:
            groups.append(group)
    return groups, whole, frozenset(claimed)


@dataclass(frozen=True)
class WindowAttentionHeads(PackedAttention):
    """:class:`PackedAttention` whose heads also own a column of a relative position bias
    table (an ``nn.Embedding`` at ``table``), as :class:`~infoprune.network.layers.WindowAttention`
    (torchvision's Swin) holds it."""

    table: str = "relative_position_bias_table"

    def layout(self, module: nn.Module) -> HeadLayout | str:
        return with_bias_columns(super().layout(module), module, self.table)


register_attention(WindowAttention, WindowAttentionHeads("qkv", "proj", heads="num_heads", head_dim="head_dim"))
