"""HuggingFace causal language models in symlib (the optional extra: ``pip install "symlib[hf]"``).

A causal LM from ``transformers`` (GPT-2, Llama and their kin) is an ``nn.Module`` whose
forward returns an output object and whose blocks may return tuples; ``wrap_hf`` puts it
behind the same interface as the book's networks, at the residual stream after any block::

    net = symlib.networks.hf.tiny_gpt2(task)                  # built from a config: no weights are downloaded
    model = symlib.networks.hf.wrap_hf(net, layer=1)          # or site="transformer.h.1"
    symlib.train(task="multiobject", arch="transformer", model=model, max_steps=600)
    result = symlib.run_das(model, task, variable="count")

Nothing here downloads anything: a model is built from a config (``tiny_gpt2``,
``tiny_llama`` or your own ``AutoConfig``) or loaded by you from local files.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .hooked import HookedModel

HF_FAMILIES = ("gpt2", "llama")


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("HuggingFace models need the optional extra: pip install \"symlib[hf]\" "
                          "(it installs transformers)") from e
    return transformers


def block_names(module: nn.Module) -> list[str]:
    """Names of a causal LM's decoder blocks, in order (``transformer.h.0``, ``model.layers.0``, ...):
    the children of its longest ``nn.ModuleList``."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ModuleList) and (best is None or len(sub) > len(best[1])):
            best = (name, sub)
    if best is None:
        raise ValueError(f"{type(module).__name__} has no list of blocks (nn.ModuleList); give site= by name")
    return [f"{best[0]}.{i}" for i in range(len(best[1]))]


class HFModel(HookedModel):
    """A HuggingFace causal LM behind symlib's interface; the site is one block's output
    (the residual stream after it), with time on axis 1."""

    def __init__(self, module: nn.Module, site: str):
        super().__init__(module, site, time_dim=1)

    def _run(self, tokens):
        out = self.module(input_ids=tokens, use_cache=False)
        return out.logits if hasattr(out, "logits") else out[0]


def wrap_hf(module: nn.Module, layer: int | None = None, site: str | None = None) -> HFModel:
    """Wrap a HuggingFace causal LM so DAS and MAS can intervene after one of its blocks.

    layer: which block (0 = the first, -1 = the last; default the last); or site: a block's
    name (see ``block_names``), or any submodule whose output is (batch, length, d).
    """
    if site is not None and layer is not None:
        raise ValueError("give layer= or site=, not both")
    if site is None:
        blocks = block_names(module)
        k = len(blocks) - 1 if layer is None else layer
        if not -len(blocks) <= k < len(blocks):
            raise ValueError(f"{type(module).__name__} has {len(blocks)} blocks ({blocks[0]} ... {blocks[-1]}); "
                             f"layer={layer} is not one of them")
        site = blocks[k]
    return HFModel(module, site)


# the task's vocabulary is tiny: GPT-2's default special-token ids (50256) would point outside it
_NO_SPECIAL = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def tiny_gpt2(task, d_model: int = 64, n_layer: int = 2, n_head: int = 4, dropout: float = 0.1,
              n_positions: int = 128, seed: int = 0) -> nn.Module:
    """A small ``GPT2LMHeadModel`` for ``task``'s vocabulary, built from a config (random weights)."""
    T = _transformers()
    cfg = T.GPT2Config(vocab_size=task.vocab_size, n_positions=n_positions, n_embd=d_model, n_layer=n_layer,
                       n_head=n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                       activation_function="gelu", **_NO_SPECIAL)  # torch's GELU: twice as fast on CPU as "gelu_new"
    torch.manual_seed(seed)
    return T.GPT2LMHeadModel(cfg)


def tiny_llama(task, d_model: int = 64, n_layer: int = 2, n_head: int = 4, n_kv_head: int = 2,
               n_positions: int = 128, seed: int = 0) -> nn.Module:
    """A small ``LlamaForCausalLM`` (rotary positions, grouped-query attention) for ``task``, from a config."""
    T = _transformers()
    cfg = T.LlamaConfig(vocab_size=task.vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                        num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv_head,
                        max_position_embeddings=n_positions, **_NO_SPECIAL)
    torch.manual_seed(seed)
    return T.LlamaForCausalLM(cfg)


def tiny_hf(family: str, task, **kw) -> nn.Module:
    """``tiny_gpt2`` or ``tiny_llama`` by name."""
    from ..utils import check_choice
    check_choice("HuggingFace family", family, HF_FAMILIES)
    return (tiny_gpt2 if family == "gpt2" else tiny_llama)(task, **kw)
