"""Run DAS on your own PyTorch sequence model.

Wrap any module that maps tokens (batch, length) to logits (batch, length, vocab) and
name the submodule whose output holds the state to intervene on::

    net = MyGRUModel()                                   # your own nn.Module
    model = symlib.wrap_model(net, site="rnn")           # its nn.GRU, batch_first or not
    result = symlib.run_das(model, task, variable="count", n_units=4)

Two kinds of site:

- a recurrent module (``nn.GRU``, ``nn.LSTM``, ``nn.RNN``): the state after each step (for an
  LSTM, ``[h; c]`` of every layer). An intervention runs the module one step at a time,
  replaces the state after the chosen step, and continues the recurrence from it, so the
  change flows through time. The time axis follows the module's ``batch_first``.
- any other module whose output is a tensor with a time axis (say a Transformer block):
  give ``time_dim`` (1 for (batch, length, d), 0 for (length, batch, d)); the output at the
  chosen position is replaced.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from .models import SequenceModel


class HookedModel(SequenceModel):
    """A user's module behind the SequenceModel interface (see the module docstring)."""

    def __init__(self, module: nn.Module, site: str, time_dim: int | None = None):
        super().__init__()
        self.module = module
        named = dict(module.named_modules())
        if site not in named or site == "":
            raise ValueError(f"{type(module).__name__} has no submodule {site!r}; its submodules: {', '.join(n for n in named if n)}")
        self.site_name = site
        self.sub = named[site]
        self.recurrent = isinstance(self.sub, nn.RNNBase)
        if self.recurrent:
            self.time_dim = 1 if self.sub.batch_first else 0
            if time_dim is not None and time_dim != self.time_dim:
                raise ValueError(f"{site!r} is a recurrent module with batch_first={self.sub.batch_first}, so its time axis is {self.time_dim}, not {time_dim}")
        else:
            if time_dim is None:
                raise ValueError(f"{site!r} is not a recurrent module: say where its output's time axis is (time_dim=1 for (batch, length, d))")
            self.time_dim = time_dim
        self.sites = (site,)
        self.default_site = site
        self.config = None  # not a symlib architecture; see ``kind``
        self._d = None

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    # ---- interface ---------------------------------------------------------------
    def forward(self, tokens):
        return self.module(tokens)

    def state_size(self, site=None):
        self.check_site(site)
        if self._d is None:
            probe = torch.zeros(1, 2, dtype=torch.long, device=self.device)
            with torch.no_grad():
                self._d = self.states(probe).shape[-1]
        return self._d

    def states(self, tokens, site=None):
        self.check_site(site)
        captured = []
        with self._patched(capture=captured):
            self.module(tokens)
        return captured[0]

    def _replaced_logits(self, tokens, site, pos, h, prefix: bool = True):
        self.check_site(site)
        with self._patched(replace=(pos, h)):
            return self.module(tokens)

    def forward_stepwise(self, tokens):
        return torch.stack([self.module(tokens[:, : t + 1])[:, -1] for t in range(tokens.shape[1])], 1)

    # ---- machinery -----------------------------------------------------------------
    def _pack(self, hx) -> torch.Tensor:
        if isinstance(hx, tuple):
            h, c = hx
            return torch.cat([h.transpose(0, 1).flatten(1), c.transpose(0, 1).flatten(1)], 1)
        return hx.transpose(0, 1).flatten(1)

    def _unpack(self, s, like):
        if isinstance(like, tuple):
            h, c = s.split(s.shape[1] // 2, 1)
            return tuple(x.reshape(x.shape[0], like[0].shape[0], -1).transpose(0, 1).contiguous() for x in (h, c))
        return s.reshape(s.shape[0], like.shape[0], -1).transpose(0, 1).contiguous()

    @contextlib.contextmanager
    def _patched(self, capture: list | None = None, replace=None):
        if self.recurrent:
            orig = self.sub.forward
            self.sub.forward = lambda x, hx=None: self._stepwise(orig, x, hx, capture, replace)
            try:
                yield
            finally:
                del self.sub.forward  # back to the class's forward
        else:
            def hook(mod, args, out):
                y = out[0] if isinstance(out, tuple) else out
                yt = y.movedim(self.time_dim, 1)
                if capture is not None:
                    capture.append(yt)
                if replace is not None:
                    pos, h = replace
                    onehot = (torch.arange(yt.shape[1], device=yt.device)[None, :] == pos[:, None])[:, :, None]
                    yt = torch.where(onehot, h[:, None, :].to(yt.dtype), yt)
                    y = yt.movedim(1, self.time_dim)
                    return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y
                return None
            handle = self.sub.register_forward_hook(hook)
            try:
                yield
            finally:
                handle.remove()

    def _stepwise(self, orig, x, hx, capture, replace):
        """Run the recurrent module one step at a time, reading or replacing its state."""
        td = self.time_dim
        outs, states = [], []
        for t in range(x.shape[td]):
            o, hx = orig(x.narrow(td, t, 1), hx)
            if replace is not None:
                pos, h = replace
                rows = (pos == t)
                if bool(rows.any()):
                    new = self._unpack(h.to(o.dtype), hx)
                    if isinstance(hx, tuple):
                        hx = tuple(torch.where(rows[None, :, None], n, old) for n, old in zip(new, hx))
                        top = hx[0][-1]
                    else:
                        hx = torch.where(rows[None, :, None], new, hx)
                        top = hx[-1]
                    rmask = rows[:, None, None] if td == 1 else rows[None, :, None]
                    o = torch.where(rmask, top.unsqueeze(td), o)
            outs.append(o)
            if capture is not None:
                states.append(self._pack(hx))
        if capture is not None:
            capture.append(torch.stack(states, 1))
        return torch.cat(outs, td), hx


def wrap_model(module: nn.Module, site: str, time_dim: int | None = None) -> HookedModel:
    """Wrap your own sequence model so DAS can intervene at submodule ``site`` (see ``HookedModel``)."""
    return HookedModel(module, site, time_dim)
