"""GRU, LSTM and Transformer sequence models behind one interface.

Every model maps tokens (batch, length) to next-token logits (batch, length, vocab):
``logits[:, t]`` predicts token ``t + 1``. Beyond ``forward`` each model offers:

- ``sites`` and ``state_size(site)``: where its hidden state can be read and replaced
  (``"state"`` for RNNs: the recurrent state after each step, ``[h; c]`` for the LSTM;
  ``"resid.K"`` for Transformers: the residual stream after layer K; ``"embed"``: the
  input embeddings).
- ``states(tokens, site)`` -> (batch, length, d) and ``state_at(tokens, site, pos)`` -> (batch, d).
- ``run_with_state(tokens, site, pos, h)``: the logits when the state at ``(site, pos[b])``
  of row b is replaced by ``h[b]`` and the network continues from there. Every row may
  have its own position. This is the one place every intervention goes through.
- ``forward_stepwise``: a slow one-token-at-a-time reference path (tests check that
  the fast fused/parallel passes agree with it).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..utils import check_choice

ARCH_NAMES: tuple[str, ...] = ("gru", "lstm", "transformer", "transformer_nope")


@dataclass
class ModelConfig:
    """Size and kind of a network (docs/science.md: the networks).

    d_model: width of the intervened state (GRU hidden; LSTM [h; c], so hidden = d_model/2;
    Transformer residual stream).
    """

    arch: str = "gru"
    vocab_size: int = 9
    d_model: int = 128
    n_layers: Optional[int] = None  # default: 1 for RNNs, 2 for Transformers
    n_heads: int = 1
    d_ff: Optional[int] = None  # default: 4 * d_model
    dropout: float = 0.5
    rope_base: float = 10000.0

    def __post_init__(self):
        check_choice("architecture", self.arch, ARCH_NAMES)
        if self.n_layers is None:
            self.n_layers = 2 if self.arch.startswith("transformer") else 1
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.d_model < 2:
            raise ValueError(f"d_model must be >= 2, got {self.d_model}")
        if self.arch == "lstm" and self.d_model % 2:
            raise ValueError(f"an LSTM's state is [h; c], so d_model must be even; got {self.d_model}")
        if self.arch.startswith("transformer"):
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} does not split into n_heads={self.n_heads} heads")
            if self.arch == "transformer" and (self.d_model // self.n_heads) % 2:
                raise ValueError(f"RoPE needs an even head width; d_model/n_heads = {self.d_model // self.n_heads}")
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3, got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class FastDropout(nn.Module):
    """Dropout whose mask comes from random 64-bit words cut into 16-bit uniforms.

    Same function as ``nn.Dropout`` (keep probability exact to 1/65536), but on a
    2-core CPU torch's per-element Bernoulli draw was ~20% of a training step; this
    draws 4 uniforms per random word and is ~3.5x faster.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        u = words.view(torch.int16)[:n].view(x.shape)
        keep = u >= (-32768 + round(self.p * 65536))
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SequenceModel(nn.Module):
    """Shared interface; see the module docstring."""

    config: ModelConfig
    sites: tuple[str, ...] = ()
    default_site: str = ""
    # the task the network was trained on, set by ``train`` and ``load_checkpoint``; None: unknown
    task_name: str | None = None

    def state_size(self, site: str | None = None) -> int:
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """A short name for messages: the architecture, or the wrapped module's class."""
        return self.config.arch if getattr(self, "config", None) is not None else type(self).__name__

    def check_site(self, site: str | None) -> str:
        site = self.default_site if site is None else site
        return check_choice(f"site of a {self.kind}", site, self.sites)

    def states(self, tokens: torch.Tensor, site: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def state_at(self, tokens: torch.Tensor, site: str | None, pos: torch.Tensor) -> torch.Tensor:
        """Return each row's state at its own position: tokens (batch, length), pos (batch,) -> (batch, d)."""
        S = self.states(tokens[:, : int(pos.max()) + 1], site)
        return S[torch.arange(S.shape[0], device=S.device), pos]

    def run_with_state(self, tokens: torch.Tensor, site: str | None, pos: torch.Tensor, h: torch.Tensor,
                       select: torch.Tensor | None = None, prefix: bool = True) -> torch.Tensor:
        """Run the network with the state at ``(site, pos[b])`` of each row b replaced by ``h[b]``.

        tokens: (batch, length); pos: (batch,), each row its own position; h: (batch, d).
        Returns logits (batch, length, vocab); ``prefix=False`` leaves zeros before ``pos``
        (cheaper). With ``select`` ((batch, length) bool, only positions at or after each row's
        ``pos``) returns just those logits, (n_selected, vocab) in row-major order, computing
        no more of the network than they need.
        """
        if select is None:
            return self._replaced_logits(tokens, site, pos, h, prefix)
        return self._replaced_logits_at(tokens, site, pos, h, select)

    def _replaced_logits(self, tokens, site, pos, h, prefix: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def _replaced_logits_at(self, tokens, site, pos, h, select) -> torch.Tensor:
        return self._replaced_logits(tokens, site, pos, h, prefix=False)[select]

    def forward_stepwise(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return what the read-out head reads: (batch, length, d_features)."""
        raise NotImplementedError

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Map features (..., d_features) to logits (..., vocab)."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))

    def nonpad_logits(self, inputs: torch.Tensor, targets: torch.Tensor, pad: int = 0):
        """Logits for every non-pad target and the targets: (n, vocab), (n,).

        inputs, targets: (batch, length); ``logits[:, t]`` is scored against ``targets[:, t+1]``.
        """
        keep = targets[:, 1:] != pad
        return self.head(self.features(inputs)[:, :-1][keep]), targets[:, 1:][keep]

    @torch.no_grad()
    def free_run_tokens(self, tokens: torch.Tensor, feed: torch.Tensor) -> torch.Tensor:
        """Return the inputs a free run feeds: ``tokens`` with the ``feed`` positions replaced by
        the network's own predictions (see ``free_run``)."""
        return free_run(self, tokens, feed)[1]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def pack_rnn_state(hx) -> torch.Tensor:
    """A torch RNN's ``hx`` ((layers, B, H), or the pair (h, c) of an LSTM) as one flat state
    (B, layers * H), an LSTM's as [h; c]: the book's ``state`` site, for its networks and for
    wrapped ones alike."""
    if isinstance(hx, tuple):
        h, c = hx
        return torch.cat([h.transpose(0, 1).flatten(1), c.transpose(0, 1).flatten(1)], 1)
    return hx.transpose(0, 1).flatten(1)


def unpack_rnn_state(s: torch.Tensor, layers: int, lstm: bool):
    """The inverse of ``pack_rnn_state``: a flat state (B, width) as the torch RNN's ``hx``."""
    parts = s.split(s.shape[1] // 2, 1) if lstm else (s,)
    out = tuple(x.reshape(x.shape[0], layers, -1).transpose(0, 1).contiguous() for x in parts)
    return out if lstm else out[0]


class RecurrentModel(SequenceModel):
    """Embedding -> one-layer GRU or LSTM -> Linear(d, 4d) -> GELU -> Dropout -> Linear(4d, vocab)."""

    sites = ("state", "embed")
    default_site = "state"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.is_lstm = config.arch == "lstm"
        self.hidden = config.d_model // 2 if self.is_lstm else config.d_model
        H = self.hidden
        self.embed = nn.Embedding(config.vocab_size, H)
        rnn = nn.LSTM if self.is_lstm else nn.GRU
        self.rnn = rnn(H, H, num_layers=config.n_layers, batch_first=True)
        self.readout = nn.Sequential(nn.Linear(H, 4 * H), nn.GELU(), FastDropout(config.dropout), nn.Linear(4 * H, config.vocab_size))

    def state_size(self, site=None):
        site = self.check_site(site)
        if site == "embed":
            return self.hidden
        return self.hidden * (2 if self.is_lstm else 1) * self.config.n_layers

    # state <-> the tensors torch's RNNs use: (layers, batch, H) [and c]
    def pack_state(self, hx) -> torch.Tensor:
        """The torch RNN's hidden state ``hx`` ((layers, B, H), or the pair (h, c) for an LSTM) as the book's
        flat state (B, layers * H), an LSTM's as [h; c]: what the site ``state`` holds."""
        return pack_rnn_state(hx)

    def unpack_state(self, s: torch.Tensor):
        """The inverse of ``pack_state``: a flat state (B, width) as the torch RNN's ``hx``."""
        return unpack_rnn_state(s, self.config.n_layers, self.is_lstm)

    def _top_h(self, s: torch.Tensor) -> torch.Tensor:
        """The last layer's h inside a packed state: what the read-out sees."""
        nl, H = self.config.n_layers, self.hidden
        return s[:, (nl - 1) * H: nl * H]

    def features(self, tokens):
        return self.rnn(self.embed(tokens))[0]

    def head(self, feats):
        return self.readout(feats)

    def nonpad_logits(self, inputs, targets, pad: int = 0):
        """As the base class, but packs the rows so the recurrence skips padding (~25% faster)."""
        n = (targets[:, 1:] != pad).sum(1)
        if bool((n == 0).any()) or bool((targets[:, 1:][torch.arange(targets.shape[1] - 1, device=targets.device)[None, :] >= n[:, None]] != pad).any()):
            return super().nonpad_logits(inputs, targets, pad)  # padding not only at the end
        lengths = n.cpu()
        x = pack_padded_sequence(self.embed(inputs[:, :-1]), lengths, batch_first=True, enforce_sorted=False)
        y = pack_padded_sequence(targets[:, 1:], lengths, batch_first=True, enforce_sorted=False)
        return self.readout(self.rnn(x)[0].data), y.data

    def _cell(self):
        """(step function, packed-state helpers) for a one-layer network: cheaper than calling the module per step."""
        r = self.rnn
        w = (r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
        if self.is_lstm:
            return lambda x, hx: torch.lstm_cell(x, hx, *w)
        return lambda x, hx: torch.gru_cell(x, hx, *w)

    @staticmethod
    def feed_span(feed: torch.Tensor):
        """First fed position minus one (where free running starts) and last fed position, per row."""
        L = feed.shape[1]
        idx = torch.arange(L, device=feed.device)[None, :]
        first = torch.where(feed, idx, L).min(1).values.clamp(max=L - 1)
        last = torch.where(feed, idx, -1).max(1).values
        return (first - 1).clamp(min=0), last

    @torch.no_grad()
    def free_run_from(self, tokens, feed, start, s):
        """Step from the packed state ``s`` after token ``start`` (per row), feeding predictions where
        ``feed`` says; the read-out runs without dropout. Returns the inputs fed: (B, L)."""
        L = tokens.shape[1]
        _, last = self.feed_span(feed)
        H = self.hidden
        hx = (s[:, :H].contiguous(), s[:, H:].contiguous()) if self.is_lstm else s
        step = self._cell()
        lin1, lin2 = self.readout[0], self.readout[3]
        head = lambda h: F.linear(F.gelu(F.linear(h, lin1.weight, lin1.bias)), lin2.weight, lin2.bias).argmax(-1)
        pred = head(self._top_h(s))
        out = tokens.clone()
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        emb = self.embed.weight
        for k in range(int((last - start).max())):
            p = (start + 1 + k).clamp(max=L - 1)
            f = feed[rows, p] & ((start + 1 + k) <= L - 1)
            inp = torch.where(f, pred, tokens[rows, p])
            out[rows, p] = torch.where(f, pred, out[rows, p])
            hx = step(emb[inp], hx)
            pred = head(hx[0] if self.is_lstm else hx)
        return out

    @torch.no_grad()
    def free_run_tokens(self, tokens, feed):
        """Step only through the fed stretch: one fused pass up to the first fed token, then
        token by token (exact free running, several times cheaper than repeated full passes)."""
        if not bool(feed.any()):
            return tokens
        if self.config.n_layers != 1:
            return super().free_run_tokens(tokens, feed)
        start, _ = self.feed_span(feed)
        return self.free_run_from(tokens, feed, start, self.state_at(tokens, "state", start))

    def free_running_loss(self, tokens, feed, pad: int = 0):
        """Training loss with the network's own predictions fed at ``feed`` positions.

        Equal to ``cross_entropy(*nonpad_logits(free_run_tokens(tokens, feed), tokens))``, but
        the stretch before the first fed token is run once, with gradients, and both the free
        run and the gradient pass continue from its state.
        """
        B, L = tokens.shape
        n = (tokens[:, 1:] != pad).sum(1)  # targets per row
        start, _ = self.feed_span(feed)
        c = n - start - 1  # inputs after the prefix that still predict a target
        padded_at_end = not bool((tokens[:, 1:][torch.arange(L - 1, device=tokens.device)[None, :] >= n[:, None]] != pad).any())
        if self.config.n_layers != 1 or not bool(feed.any(1).all()) or not bool((c >= 1).all()) or not padded_at_end:
            inp = self.free_run_tokens(tokens, feed)
            return F.cross_entropy(*self.nonpad_logits(inp, tokens, pad))
        lp = (start + 1).cpu()
        x = pack_padded_sequence(self.embed(tokens[:, : int(lp.max())]), lp, batch_first=True, enforce_sorted=False)
        out_pre, hx = self.rnn(x)
        inp = self.free_run_from(tokens, feed, start, self.pack_state(hx).detach())
        k = torch.arange(int(c.max()), device=tokens.device)[None, :]
        cont = inp.gather(1, (k + start[:, None] + 1).clamp(max=L - 1))
        cont_tgt = tokens.gather(1, (k + start[:, None] + 2).clamp(max=L - 1))
        out_c, _ = self.rnn(pack_padded_sequence(self.embed(cont), c.cpu(), batch_first=True, enforce_sorted=False), hx)
        tgt_pre = pack_padded_sequence(tokens[:, 1: int(lp.max()) + 1], lp, batch_first=True, enforce_sorted=False).data
        tgt_c = pack_padded_sequence(cont_tgt, c.cpu(), batch_first=True, enforce_sorted=False).data
        logits = self.readout(torch.cat([out_pre.data, out_c.data]))
        return F.cross_entropy(logits, torch.cat([tgt_pre, tgt_c]))

    def states(self, tokens, site=None):
        site = self.check_site(site)
        x = self.embed(tokens)
        if site == "embed":
            return x
        if not self.is_lstm and self.config.n_layers == 1:
            return self.rnn(x)[0]  # a GRU's outputs are its states
        hx, out = None, []
        for t in range(tokens.shape[1]):  # the LSTM's c is only returned at the end: step
            _, hx = self.rnn(x[:, t:t + 1], hx)
            out.append(self.pack_state(hx))
        return torch.stack(out, 1)

    def state_at(self, tokens, site, pos):
        site = self.check_site(site)
        if site == "embed":
            return self.embed(tokens.gather(1, pos[:, None])[:, 0])
        # one fused pass over each row's own prefix tokens[:pos+1]
        packed = pack_padded_sequence(self.embed(tokens), (pos + 1).cpu(), batch_first=True, enforce_sorted=False)
        _, hx = self.rnn(packed)
        return self.pack_state(hx)

    def _replaced_logits(self, tokens, site, pos, h, prefix: bool = True):
        """Logits with the state at (site, pos) replaced by ``h``: tokens (B, L), pos (B,), h (B, d).

        prefix: also compute the natural logits before ``pos`` (else those are zeros).
        """
        site = self.check_site(site)
        B, L = tokens.shape
        if site == "embed":
            before = torch.zeros(B, self.state_size("state"), device=h.device, dtype=h.dtype)
            has_prev = pos > 0
            if bool(has_prev.any()):
                before = torch.where(has_prev[:, None], self.state_at(tokens, "state", (pos - 1).clamp(min=0)), before)
            hx = None if not bool(has_prev.any()) else self.unpack_state(before)
            _, hx = self.rnn(h[:, None, :], hx)
            return self._replaced_logits(tokens, "state", pos, self.pack_state(hx), prefix)
        # left-align every row's continuation tokens[pos+1:] and run them from h
        Lc = L - int(pos.min())  # logits needed for the earliest row: positions pos..L-1
        idx = torch.arange(Lc, device=tokens.device)[None, :] + pos[:, None] + 1
        cont = tokens.gather(1, idx.clamp(max=L - 1))
        out, _ = self.rnn(self.embed(cont), self.unpack_state(h))
        seq = torch.cat([self._top_h(h)[:, None, :], out[:, :-1]], 1)  # states that predict tokens pos+1, pos+2, ...
        lc = self.readout(seq)  # (B, Lc, V)
        t = torch.arange(L, device=tokens.device)[None, :]
        k = (t - pos[:, None]).clamp(0, lc.shape[1] - 1)
        moved = lc.gather(1, k[:, :, None].expand(B, L, lc.shape[2]))
        base = self.forward(tokens) if prefix else torch.zeros_like(moved)
        return torch.where((t >= pos[:, None])[:, :, None], moved, base)

    def _replaced_logits_at(self, tokens, site, pos, h, select):
        """Packed continuation from ``h``: the recurrence runs only as far as each row needs."""
        site = self.check_site(site)
        if site != "state":
            return super()._replaced_logits_at(tokens, site, pos, h, select)
        B, L = tokens.shape
        t = torch.arange(L, device=tokens.device)[None, :]
        last = torch.where(select, t, -1).max(1).values.clamp(min=pos)
        n = (last - pos)  # tokens to feed after pos
        Lc = int(n.max()) + 1
        k = torch.arange(Lc, device=tokens.device)[None, :]
        cont = tokens.gather(1, (k + pos[:, None] + 1).clamp(max=L - 1))
        packed = pack_padded_sequence(self.embed(cont), n.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out = pad_packed_sequence(self.rnn(packed, self.unpack_state(h))[0], batch_first=True, total_length=Lc)[0]
        seq = torch.cat([self._top_h(h)[:, None, :], out[:, :-1]], 1)  # (B, Lc, H): states predicting pos+1, ...
        # select[b, t] with t >= pos -> seq[b, t - pos]; row-major order is kept
        rows, cols = select.nonzero(as_tuple=True)
        return self.readout(seq[rows, cols - pos[rows]])

    def forward_stepwise(self, tokens):
        x = self.embed(tokens)
        hx, out = None, []
        for t in range(tokens.shape[1]):
            o, hx = self.rnn(x[:, t:t + 1], hx)
            out.append(o)
        return self.readout(torch.cat(out, 1))


def _rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate pairs of features by position (rotary embedding): x (batch, heads, length, dh)."""
    L, dh = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    ang = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: causal self-attention (RoPE or none) and a GELU MLP."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = FastDropout(c.dropout)

    def _attention(self, qkv: torch.Tensor, return_weights: bool = False):
        B, L, D3 = qkv.shape
        D, nh = D3 // 3, self.c.n_heads
        q, k, v = qkv.view(B, L, 3, nh, D // nh).permute(2, 0, 3, 1, 4)
        if self.c.arch == "transformer":
            q, k = _rope(q, self.c.rope_base), _rope(k, self.c.rope_base)
        if return_weights:
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D // nh)
            att = att.masked_fill(torch.ones(L, L, dtype=torch.bool, device=qkv.device).triu(1), float("-inf")).softmax(-1)
            return (att @ v).transpose(1, 2).reshape(B, L, D), att
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, L, D)

    def attend(self, x: torch.Tensor, return_weights: bool = False):
        return self._attention(self.qkv(x), return_weights)

    def forward(self, x, keep: torch.Tensor | None = None):
        """x: (B, L, d). keep: flat indices (into B*L) of the positions to compute, or None for all.

        With ``keep`` the position-wise work (norms, projections, MLP) runs on those positions
        only; the others hold zeros. Callers keep every position up to the last one they need,
        so causal attention sees exactly what it would otherwise.
        """
        if keep is None:
            x = x + self.drop(self.proj(self.attend(self.ln1(x))))
            return x + self.drop(self.ff(self.ln2(x)))
        B, L, D = x.shape
        xs = x.reshape(B * L, D).index_select(0, keep)  # (n, D)
        qkv = x.new_zeros(B * L, 3 * D).index_copy(0, keep, self.qkv(self.ln1(xs))).view(B, L, 3 * D)
        xs = xs + self.drop(self.proj(self._attention(qkv).reshape(B * L, D).index_select(0, keep)))
        xs = xs + self.drop(self.ff(self.ln2(xs)))
        return x.new_zeros(B * L, D).index_copy(0, keep, xs).view(B, L, D)


class TransformerModel(SequenceModel):
    """Embedding -> pre-LN blocks (RoPE on q, k; or NoPE) -> final LayerNorm -> Linear(d, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.unembed = nn.Linear(config.d_model, config.vocab_size)
        self.sites = ("embed",) + tuple(f"resid.{k}" for k in range(config.n_layers))
        # the original intervened between its two layers
        self.default_site = "resid.0"

    def state_size(self, site=None):
        self.check_site(site)
        return self.config.d_model

    def _layer_of(self, site: str) -> int:
        return -1 if site == "embed" else int(site.split(".")[1])

    def _blocks(self, x, keep: torch.Tensor | None = None, lo: int = 0, hi: int | None = None):
        """Run blocks lo..hi-1 on residual x (B, L, d); with ``keep``, only positions up to what the
        caller needs (see ``Block.forward``)."""
        for blk in self.blocks[lo:hi]:
            x = blk(x, keep)
        return x

    @staticmethod
    def _upto(need: torch.Tensor) -> torch.Tensor | None:
        """Flat indices of the positions up to each row's last needed one (causal: later ones
        cannot matter); None when that is every position."""
        t = torch.arange(need.shape[1], device=need.device)[None, :]
        keep = t <= torch.where(need, t, -1).max(1).values[:, None]
        return None if bool(keep.all()) else keep.flatten().nonzero().squeeze(1)

    def features(self, tokens):
        return self.ln_f(self._blocks(self.embed(tokens)))

    def nonpad_logits(self, inputs, targets, pad: int = 0):
        """Only positions that predict a scored target (and those before them) are computed."""
        sel = targets[:, 1:] != pad
        x = self._blocks(self.embed(inputs), self._upto(F.pad(sel, (0, 1))))
        rows = F.pad(sel, (0, 1)).flatten().nonzero().squeeze(1)  # positions whose next token is scored
        B, L, D = x.shape
        return self.unembed(self.ln_f(x.reshape(B * L, D).index_select(0, rows))), targets[:, 1:][sel]

    def head(self, feats):
        return self.unembed(feats)

    def states(self, tokens, site=None):
        site = self.check_site(site)
        return self._blocks(self.embed(tokens), None, 0, self._layer_of(site) + 1)

    def _replaced_logits(self, tokens, site, pos, h, prefix: bool = True):
        """Logits with the residual at (site, pos) replaced by ``h``; one parallel pass (causal masking
        keeps every position before ``pos`` as it was)."""
        site = self.check_site(site)
        layer = self._layer_of(site)
        with torch.no_grad():
            x = self.states(tokens, site)
        onehot = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] == pos[:, None])[:, :, None]
        x = torch.where(onehot, h[:, None, :].to(x.dtype), x)
        return self.unembed(self.ln_f(self._blocks(x, None, layer + 1)))

    def _replaced_logits_at(self, tokens, site, pos, h, select):
        """``_replaced_logits`` computing only positions up to each row's last selected one."""
        site = self.check_site(site)
        layer = self._layer_of(site)
        keep = self._upto(select)
        with torch.no_grad():
            x = self._blocks(self.embed(tokens), keep, 0, layer + 1)
        onehot = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] == pos[:, None])[:, :, None]
        x = torch.where(onehot, h[:, None, :].to(x.dtype), x)
        x = self._blocks(x, keep, layer + 1)
        B, L, D = x.shape
        return self.unembed(self.ln_f(x.reshape(B * L, D).index_select(0, select.flatten().nonzero().squeeze(1))))

    def forward_stepwise(self, tokens):
        return torch.stack([self.forward(tokens[:, : t + 1])[:, -1] for t in range(tokens.shape[1])], 1)

    def attention_weights(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Return each layer's attention weights: a list of (batch, heads, length, length)."""
        x, out = self.embed(tokens), []
        for blk in self.blocks:
            y, att = blk.attend(blk.ln1(x), return_weights=True)
            out.append(att)
            x = x + blk.drop(blk.proj(y))
            x = x + blk.drop(blk.ff(blk.ln2(x)))
        return out


def check_task(model: nn.Module, task) -> None:
    """Raise a ValueError when ``model`` is known not to belong to ``task`` (a ``Task``): it was
    trained on another task (``model.task_name``), or its vocabulary has another size. Models
    that carry neither (a wrapped user model, a network built by hand) pass unchecked."""
    trained_on = getattr(model, "task_name", None)
    if trained_on is not None and trained_on != task.name:
        raise ValueError(f"this network was trained on {trained_on}; the pairs are for {task.name}. "
                         f"Use a network trained on {task.name}, or pairs of {trained_on}")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and vocab != task.vocab_size:
        raise ValueError(f"this network reads {vocab} token ids, but task {task.name} has {task.vocab_size} "
                         f"({', '.join(task.vocab)}); it was not made for this task")


def make_model(arch: str = "gru", vocab_size: int = 9, d_model: int = 128, **kw) -> SequenceModel:
    """Build a network: ``arch`` is one of ``ARCH_NAMES``; other keywords go to ``ModelConfig``."""
    return build_model(ModelConfig(arch=arch, vocab_size=vocab_size, d_model=d_model, **kw))


def build_model(config: ModelConfig) -> SequenceModel:
    """Build the network a ``ModelConfig`` describes."""
    if config.arch in ("gru", "lstm"):
        return RecurrentModel(config)
    return TransformerModel(config)


@torch.no_grad()
def free_run(model: nn.Module, tokens: torch.Tensor, feed: torch.Tensor, logits_fn=None, max_iter: int | None = None):
    """Feed the network its own predictions at the positions ``feed`` marks (free running).

    tokens: (batch, length); feed: (batch, length) bool, True where the input token is
    replaced by the network's prediction of it. Fixed-point iteration of fast teacher-
    forced passes: each pass fixes at least the first wrong fed token, so the result is
    exactly the step-by-step free run. Returns (logits, inputs actually fed).
    logits_fn: tokens -> logits (default ``model``), e.g. a pass with an intervention.
    """
    fn = model if logits_fn is None else logits_fn
    inp = tokens.clone()
    max_iter = int(feed.sum(1).max()) + 1 if max_iter is None else max_iter
    for _ in range(max(max_iter, 1)):
        logits = fn(inp)
        new = inp.clone()
        new[:, 1:] = torch.where(feed[:, 1:], logits[:, :-1].argmax(-1), inp[:, 1:])
        if torch.equal(new, inp):
            break
        inp = new
    return logits, inp


def cut_at_end(tokens: torch.Tensor, start: torch.Tensor, end_id: int = 2, pad: int = 0) -> torch.Tensor:
    """Blank (pad) everything after the first ``E`` past each row's ``start``: tokens (B, L), start (B,)."""
    L = tokens.shape[1]
    t = torch.arange(L, device=tokens.device)[None, :]
    is_end = (tokens == end_id) & (t > start[:, None])
    first = torch.where(is_end, t, L).min(1).values
    return torch.where(t <= first[:, None], tokens, torch.full_like(tokens, pad))


@torch.no_grad()
def greedy_rollout(model: nn.Module, tokens: torch.Tensor, task_mask: torch.Tensor, extra: int = 12, logits_fn=None) -> torch.Tensor:
    """Let the network answer for itself: every graded position, and ``extra`` more after the
    sequence, is filled with its own greedy prediction; the answer is cut at its first ``E``.

    tokens, task_mask: (B, L) as a trial gives them (only the ungraded tokens are used as
    inputs). Returns (B, L + extra).
    """
    tok = F.pad(tokens, (0, extra))
    L = tokens.shape[1]
    t = torch.arange(L + extra, device=tokens.device)[None, :]
    last = torch.where(tokens != 0, torch.arange(L, device=tokens.device)[None, :], -1).max(1).values
    feed = F.pad(task_mask, (0, extra)) | (t > last[:, None])
    _, fed = free_run(model, tok, feed, logits_fn=logits_fn)
    start = torch.where(task_mask, torch.arange(L, device=tokens.device)[None, :], L).min(1).values - 1
    return cut_at_end(fed, start)
