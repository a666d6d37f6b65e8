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

from .models import SequenceModel, pack_rnn_state, unpack_rnn_state


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
            if self.sub.bidirectional:
                raise ValueError(f"{site!r} is a bidirectional {type(self.sub).__name__}: its state at a step depends on later "
                                 "tokens, so there is no state to swap that the network's later steps then read; "
                                 "intervene on a one-directional module")
            if getattr(self.sub, "proj_size", 0):
                raise ValueError(f"{site!r} is an LSTM with proj_size={self.sub.proj_size}: its h and c differ in width; "
                                 "symlib intervenes on [h; c] of equal widths, so use proj_size=0 or a site after it")
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
        return self._run(tokens)

    def nonpad_logits(self, inputs, targets, pad: int = 0):
        keep = targets[:, 1:] != pad
        return self._run(inputs)[:, :-1][keep], targets[:, 1:][keep]

    def _run(self, tokens):
        """One pass of the wrapped module: tokens (batch, length) -> logits (batch, length, vocab)."""
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
        with self.patched(capture=captured, length=tokens.shape[1]):
            self._run(tokens)
        if not captured:
            raise ValueError(f"{self.site_name!r} did not run when {self.kind} was called on tokens: choose a submodule on the path to the output")
        return captured[0]

    def _replaced_logits(self, tokens, site, pos, h, prefix: bool = True):
        self.check_site(site)
        with self.patched(replace=(pos, h), length=tokens.shape[1], prefix=prefix):
            return self._run(tokens)

    def forward_stepwise(self, tokens):
        return torch.stack([self._run(tokens[:, : t + 1])[:, -1] for t in range(tokens.shape[1])], 1)

    # ---- machinery -----------------------------------------------------------------
    @contextlib.contextmanager
    def patched(self, capture: list | None = None, replace=None, length: int | None = None, prefix: bool = True):
        """While the block runs, the wrapped module's site records its states into ``capture`` (a list) and,
        with ``replace`` = (positions (B,), states (B, width)), has its state at those positions replaced
        (``length``: the tokens' length, to check the site's output; ``prefix`` as in ``run_with_state``).
        The hook ``run_with_state`` and the book's hand-made interventions are built on."""
        if self.recurrent:
            orig = self.sub.forward
            self.sub.forward = lambda x, hx=None: self._stepwise(orig, x, hx, capture, replace, prefix)
            try:
                yield
            finally:
                del self.sub.forward  # back to the class's forward
        else:
            def hook(mod, args, out):
                y = out[0] if isinstance(out, tuple) else out
                self._check_output(y, length)
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

    def _check_output(self, y, length) -> None:
        """A clear message when the site's output is not (batch, length, d) along ``time_dim``."""
        where = f"the output of {self.site_name!r}"
        if not torch.is_tensor(y):
            raise ValueError(f"{where} is a {type(y).__name__}, not a tensor: choose a submodule that returns the state "
                             "(a tensor, or a tuple whose first item is it)")
        if y.dim() != 3:
            raise ValueError(f"{where} has shape {tuple(y.shape)}: symlib needs a state per position, 3 axes "
                             f"(batch, length, d) with time on axis {self.time_dim}; a site that pools over time "
                             "(or a read-out after it) has no position to intervene on")
        if length is not None and y.shape[self.time_dim] != length:
            raise ValueError(f"{where} has shape {tuple(y.shape)}, but the tokens are {length} long: its axis "
                             f"{self.time_dim} is not time; is time_dim={self.time_dim} right?")

    def _single_state(self) -> bool:
        """A one-layer GRU or RNN: its output at each step is its whole state."""
        return not isinstance(self.sub, nn.LSTM) and self.sub.num_layers == 1

    def _scan(self, orig, x, hx, capture, replace, prefix: bool = True):
        """Read or replace the state of a one-layer GRU/RNN with whole-sequence calls, no step loop.

        Its output at step t is its state, so reading is one call. Replacing the state after
        step ``pos[b]`` in row b: one call for the run as it was (outputs before ``pos``), and
        one call on each row's inputs after its own ``pos``, shifted to the front and started
        from the new state; outputs are shifted back (captured, they are that run's states). The
        module is causal, so what the shift appends after a row's last input never reaches an
        output that is kept. ``prefix=False`` (a search's step, which scores only what follows
        ``pos``) skips the first call and leaves zeros before ``pos``.
        """
        td = self.time_dim
        if replace is not None and not prefix and capture is None:
            full, h_n = x.new_zeros(*x.shape[:2], replace[1].shape[-1]), None
        else:
            full, h_n = orig(x, hx)
        if replace is None:
            if capture is not None:
                capture.append(full if td == 1 else full.transpose(0, 1))
            return full, h_n
        pos, h = replace
        xb, fb = (x, full) if td == 1 else (x.transpose(0, 1), full.transpose(0, 1))
        B, L = xb.shape[:2]
        t = torch.arange(L, device=xb.device)[None, :]
        src = (pos[:, None] + 1 + t).clamp(max=L - 1)
        shifted = xb.gather(1, src[:, :, None].expand(-1, -1, xb.shape[2]))
        h0 = h.to(fb.dtype)[None]
        sb, _ = orig(shifted if td == 1 else shifted.transpose(0, 1), h0)
        sb = sb if td == 1 else sb.transpose(0, 1)
        back = (t - pos[:, None] - 1).clamp(min=0)
        after = sb.gather(1, back[:, :, None].expand(-1, -1, sb.shape[2]))
        tt = t[:, :, None]
        out = torch.where(tt < pos[:, None, None], fb, torch.where(tt == pos[:, None, None], h0.transpose(0, 1), after))
        last = torch.where((pos == L - 1)[:, None], h0[0], sb[torch.arange(B, device=sb.device), (L - 2 - pos).clamp(min=0)])
        if capture is not None:  # the states of the run with the replacement
            capture.append(out)
        return (out if td == 1 else out.transpose(0, 1)), last[None]

    def _stepwise(self, orig, x, hx, capture, replace, prefix: bool = True):
        """Run the recurrent module one step at a time, reading or replacing its state
        (a one-layer GRU or RNN takes the faster ``_scan``)."""
        td = self.time_dim
        if self._single_state() and torch.is_tensor(x):
            return self._scan(orig, x, hx, capture, replace, prefix)
        outs, states = [], []
        for t in range(x.shape[td]):
            o, hx = orig(x.narrow(td, t, 1), hx)
            if replace is not None:
                pos, h = replace
                rows = (pos == t)
                if bool(rows.any()):
                    lstm = isinstance(hx, tuple)
                    new = unpack_rnn_state(h.to(o.dtype), (hx[0] if lstm else hx).shape[0], lstm)
                    if lstm:
                        hx = tuple(torch.where(rows[None, :, None], n, old) for n, old in zip(new, hx))
                        top = hx[0][-1]
                    else:
                        hx = torch.where(rows[None, :, None], new, hx)
                        top = hx[-1]
                    rmask = rows[:, None, None] if td == 1 else rows[None, :, None]
                    o = torch.where(rmask, top.unsqueeze(td), o)
            outs.append(o)
            if capture is not None:
                states.append(pack_rnn_state(hx))
        if capture is not None:
            capture.append(torch.stack(states, 1))
        return torch.cat(outs, td), hx


def wrap_model(module: nn.Module, site: str, time_dim: int | None = None) -> HookedModel:
    """Wrap your own sequence model so DAS can intervene at submodule ``site`` (see ``HookedModel``)."""
    return HookedModel(module, site, time_dim)
