"""Alignment functions: interchange algebra, invertibility, orthogonality under training, saving, dtypes, errors,
the linear map's conditioning, rebuilding from a description, seeding, and the boundless search's size."""
import io
import json
import math

import pytest
import torch

from symlib.intervene.alignment import ALIGNMENT_NAMES, AlignmentFunction, alignment_from_description, make_alignment

from helpers import gen

D = 8


def _perturbed(kind: str, block_sizes=(3,), d: int = D, seed: int = 0):
    """An alignment whose parameters are moved away from their (often trivial) initial values."""
    a = make_alignment(kind, d, list(block_sizes), seed=seed)
    g = gen(seed + 50)
    with torch.no_grad():
        for name, p in a.named_parameters():
            if name == "log_boundary":
                continue
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return a


def _states(n=32, d=D, seed=1, dtype=torch.float32):
    g = gen(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(n, d, generator=g).to(dtype)


@pytest.mark.parametrize("kind", ALIGNMENT_NAMES)
@pytest.mark.parametrize("training", [True, False])
def test_no_swap_returns_target(kind, training):
    """Interchange with swap all zeros returns h_t (atol 1e-5), in training and eval mode."""
    a = _perturbed(kind).train(training)
    h_t, h_s = _states()
    out = a.interchange(h_t, h_s, torch.zeros(32, a.n_blocks, dtype=torch.bool))
    assert torch.allclose(out, h_t, atol=1e-5)
    # while a swap does change it
    assert not torch.allclose(a.interchange(h_t, h_s, torch.ones(32, a.n_blocks, dtype=torch.bool)), h_t, atol=1e-3)


@pytest.mark.parametrize("kind", ["linear", "revnet"])
def test_exactly_invertible(kind):
    """linear and revnet: inverse(forward(h)) == h (atol 1e-4), also after their parameters move."""
    for seed in range(3):
        a = _perturbed(kind, seed=seed)
        h, _ = _states(seed=seed + 10)
        z = a(h)
        assert not torch.allclose(z, h, atol=1e-2)
        assert torch.allclose(a.inverse(z), h, atol=1e-4)


@pytest.mark.parametrize("kind", ALIGNMENT_NAMES)
def test_swapping_everything_returns_source(kind):
    """A block as wide as the state, swapped in every row, returns h_s (orthogonal: exactly the rotate-swap-rotate-back)."""
    a = _perturbed(kind, block_sizes=(D,))
    if kind == "boundless":
        a.set_size(float(D))
        a.eval()
    h_t, h_s = _states(seed=2)
    out = a.interchange(h_t, h_s, torch.ones(32, 1, dtype=torch.bool))
    assert torch.allclose(out, h_s, atol=1e-4)


def test_orthogonal_blocks_swap_independently():
    """With blocks [2, 3], swapping only block 0 moves exactly that block's coordinates to the source's."""
    a = _perturbed("orthogonal", block_sizes=(2, 3))
    h_t, h_s = _states(seed=3)
    swap = torch.zeros(32, 2, dtype=torch.bool)
    swap[:, 0] = True
    out = a.interchange(h_t, h_s, swap)
    Q = a.Q.detach()
    assert torch.allclose(out @ Q[:, :2], h_s @ Q[:, :2], atol=1e-5)
    assert torch.allclose(out @ Q[:, 2:], h_t @ Q[:, 2:], atol=1e-5)
    # the orthogonal complement of the aligned subspace is the target's
    P = torch.eye(D) - Q @ Q.T
    assert torch.allclose(out @ P, h_t @ P, atol=1e-5)
    assert a.coord_mask(torch.tensor([[True, False]])).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]


def test_orthogonal_stays_orthonormal_under_training_and_saving():
    """Q^T Q stays I after 50 Adam steps, and a state_dict round trip (weights_only) gives the identical Q."""
    a = make_alignment("orthogonal", D, [3], seed=0)
    Q0 = a.Q.detach().clone()
    target = torch.randn(D, 3, generator=gen(4))
    opt = torch.optim.Adam(a.parameters(), lr=0.05)
    h_t, h_s = _states(seed=5)
    for _ in range(50):
        loss = ((a.Q - target) ** 2).sum() + a.interchange(h_t, h_s, torch.ones(32, 1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    Q = a.Q.detach()
    assert (Q - Q0).abs().max() > 0.1, "the search moved Q"
    assert torch.allclose(Q.T @ Q, torch.eye(3), atol=1e-5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_alignment("orthogonal", D, [3], seed=123)
    assert not torch.allclose(b.Q, Q)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(b.Q, a.Q)
    assert torch.equal(b.interchange(h_t, h_s, torch.ones(32, 1)), a.interchange(h_t, h_s, torch.ones(32, 1)))


@pytest.mark.parametrize("kind", ["revnet", "boundless"])
def test_rotations_stay_orthogonal(kind):
    """The rotations inside revnet and boundless stay orthogonal while they train."""
    a = make_alignment(kind, D, [3], seed=0).train()
    opt = torch.optim.Adam(a.parameters(), lr=0.05)
    h_t, h_s = _states(seed=6)
    for _ in range(20):
        loss = (a.interchange(h_t, h_s, torch.ones(32, 1)) - 1.0).pow(2).mean() + a.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    R = a.rot.weight.detach()
    assert torch.allclose(R.T @ R, torch.eye(D), atol=1e-5)


@pytest.mark.parametrize("kind", ALIGNMENT_NAMES)
def test_float64_states(kind):
    """A float64 h_t/h_s gives a float64 result equal to the float32 computation."""
    a = _perturbed(kind).eval()
    h_t, h_s = _states(seed=7, dtype=torch.float64)
    swap = torch.ones(32, 1, dtype=torch.bool)
    out = a.interchange(h_t, h_s, swap)
    assert out.dtype == torch.float64
    assert torch.isfinite(out).all()
    assert torch.allclose(out, a.interchange(h_t.float(), h_s.float(), swap).double(), atol=1e-5)
    # a float64 target with a float32 source works too
    assert a.interchange(h_t, h_s.float(), swap).dtype == torch.float64


@pytest.mark.parametrize("kind", ["orthogonal", "linear", "revnet"])
def test_subspace_wider_than_state_raises(kind):
    """Blocks wider than the state raise a ValueError naming both widths."""
    with pytest.raises(ValueError) as e:
        make_alignment(kind, 8, [5, 5])
    assert "10" in str(e.value) and "8" in str(e.value)


def test_boundless_block_wider_than_state_raises():
    """Boundless too rejects a (single) block wider than the state, naming both widths."""
    with pytest.raises(ValueError) as e:
        make_alignment("boundless", 8, [20])
    assert "20" in str(e.value) and "8" in str(e.value)


def test_unknown_alignment_lists_names():
    """An unknown alignment kind raises a ValueError listing the valid ones."""
    with pytest.raises(ValueError) as e:
        make_alignment("spline", 8, [2])
    assert all(k in str(e.value) for k in ALIGNMENT_NAMES)


def test_boundless_rejects_two_blocks():
    """A boundless alignment learns one block's size; two blocks raise a ValueError."""
    with pytest.raises(ValueError, match="one block"):
        make_alignment("boundless", 8, [2, 2])


# ---- linear: bounded conditioning, no bias, exact zero swap -------------------------------

def _at_the_bound(a, scale: float = 1e4):
    """Push a linear alignment's raw parameters to extremes: singular values at both ends of their range."""
    g = gen(11)
    with torch.no_grad():
        a.p.copy_(scale * torch.sign(torch.randn(a.d, generator=g)))
        a.p[0], a.p[1] = scale, -scale  # make sure both ends are reached
        for name, p in a.named_parameters():
            if name != "p":
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return a


@pytest.mark.parametrize("max_cond", [100.0, 1e4])
def test_linear_condition_number_is_bounded(max_cond):
    """cond(W) <= max_cond even with the raw parameters pushed to extremes (there it is max_cond)."""
    a = make_alignment("linear", D, [3], seed=0, max_cond=max_cond)
    assert torch.allclose(a.W.T @ a.W, torch.eye(D), atol=1e-5), "starts as a rotation"
    _at_the_bound(a)
    sv = a.singular_values.detach().double()
    assert float(sv.max() / sv.min()) == pytest.approx(max_cond, rel=1e-5)
    assert float(sv.max() / sv.min()) <= max_cond * (1 + 1e-5)
    # W itself, up to the float32 rounding of its rotations (relative error ~1e-6 x cond)
    cond = float(torch.linalg.cond(a.W.detach().double()))
    assert cond <= max_cond * (1 + 1e-6 * max_cond)
    # and after Adam drives it toward a singular map
    b = make_alignment("linear", D, [3], seed=1, max_cond=max_cond)
    opt = torch.optim.Adam(b.parameters(), lr=0.5)
    for _ in range(100):
        loss = b.W[:, 0].pow(2).sum() - b.W[:, 1].pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sv = b.singular_values.detach().double()
    assert float(sv.max() / sv.min()) <= max_cond * (1 + 1e-5)
    assert float(torch.linalg.cond(b.W.detach().double())) <= max_cond * (1 + 1e-6 * max_cond)


def test_linear_zero_swap_is_exact_at_the_bound():
    """At cond(W) = max_cond a zero swap returns h_t bit for bit (in float32 and float64), even at max_cond = 1e6."""
    a = _at_the_bound(make_alignment("linear", D, [2, 3], seed=0, max_cond=1e6))
    h_t, h_s = _states(seed=12)
    assert torch.equal(a.interchange(h_t, h_s, torch.zeros(32, 2, dtype=torch.bool)), h_t)
    h64 = h_t.double()
    assert torch.equal(a.interchange(h64, h_s, torch.zeros(32, 2, dtype=torch.bool)), h64)
    swap = torch.zeros(32, 2, dtype=torch.bool)
    swap[::2, 0] = True
    out = a.interchange(h_t, h_s, swap)
    assert torch.equal(out[~swap.any(1)], h_t[~swap.any(1)])
    assert not torch.allclose(out[swap.any(1)], h_t[swap.any(1)])


def test_linear_interchange_matches_the_definition():
    """At the default bound, a swap equals A^-1((1 - m) A h_t + m A h_s) computed in float64 (blocks swapped independently)."""
    a = _at_the_bound(make_alignment("linear", D, [2, 3], seed=0))
    h_t, h_s = _states(seed=12)
    swap = torch.zeros(32, 2, dtype=torch.bool)
    swap[::2, 0] = True
    swap[1::3, 1] = True
    W = a.W.detach().double()
    zt, zs = h_t.double() @ W.T, h_s.double() @ W.T
    m = torch.zeros(32, D, dtype=torch.float64)
    m[:, :5] = a.coord_mask(swap).double()
    ref = torch.linalg.solve(W, ((1 - m) * zt + m * zs).T).T
    assert torch.allclose(a.interchange(h_t, h_s, swap).double(), ref, atol=1e-4)


def test_linear_inverse_at_the_bound_and_no_bias():
    """inverse(forward(h)) == h even at cond(W) = max_cond; the map has no (dead) bias parameter."""
    a = _at_the_bound(make_alignment("linear", D, [3], seed=2))
    h, _ = _states(seed=13)
    # float32 rounding is amplified by up to cond(W) = 100
    assert torch.allclose(a.inverse(a(h)), h, atol=1e-4)
    assert torch.allclose(a(h), h @ a.W.T, atol=1e-4)
    assert "b" not in dict(a.named_parameters())
    assert sum(p.numel() for n, p in a.named_parameters() if n == "p") == D


# ---- rebuilding from a description, seeding --------------------------------------------------

DESCRIBED = [
    ("orthogonal", [2, 3], {}),
    ("linear", [3], {"max_cond": 50.0}),
    ("revnet", [3], {}),
    ("revnet", [3], {"n_layers": 3, "hidden": 7}),
    ("boundless", None, {"init_units": 5.0, "size_weight": 0.03, "tau_start": 2.0, "tau_end": 0.5, "anneal_steps": 30,
                         "converge_steps": 40, "converge_tol": 0.25}),
]


@pytest.mark.parametrize("kind,blocks,kw", DESCRIBED)
def test_rebuild_from_description(kind, blocks, kw):
    """describe -> JSON -> alignment_from_description -> load_state_dict gives the identical alignment."""
    a = make_alignment(kind, D, blocks, seed=3, **kw)
    with torch.no_grad():
        for name, p in a.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(14)))
    if kind == "boundless":
        a.set_temperature(0.7)
    desc = json.loads(json.dumps(a.describe()))
    if kind == "revnet":
        assert desc["n_layers"] == kw.get("n_layers", 2) and desc["hidden"] == kw.get("hidden", D)
    b = alignment_from_description(desc)
    assert type(b) is type(a)
    b.load_state_dict(a.state_dict())  # strict: the same parameter shapes and names
    assert b.describe() == a.describe()
    h_t, h_s = _states(seed=15)
    swap = torch.ones(32, a.n_blocks, dtype=torch.bool)
    for training in (True, False):
        a.train(training), b.train(training)
        if kind == "boundless" and training:
            # training swaps part of each batch at random cuts: compare the deterministic parts
            assert torch.equal(b.soft_mask(), a.soft_mask()) and torch.equal(b.penalty(), a.penalty())
            continue
        assert torch.equal(b.interchange(h_t, h_s, swap), a.interchange(h_t, h_s, swap))
    if kind == "boundless":
        assert (b.init_units, b.size_weight, b.tau_start, b.tau_end, b.anneal_steps, b.converge_steps, b.converge_tol) == \
            (5.0, 0.03, 2.0, 0.5, 30, 40, 0.25)


def test_rebuild_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="orthogonal"):
        alignment_from_description({"kind": "spline", "d": 8, "block_sizes": [2]})


@pytest.mark.parametrize("kind", ALIGNMENT_NAMES)
def test_seed_leaves_the_global_rng_alone(kind):
    """make_alignment(seed=...) builds deterministically and leaves torch's global random state as it was."""
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = make_alignment(kind, D, None if kind == "boundless" else [3], seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = make_alignment(kind, D, None if kind == "boundless" else [3], seed=7)
    c = make_alignment(kind, D, None if kind == "boundless" else [3], seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


# ---- the search hooks, and the boundless search's size ---------------------------------------

def test_base_hooks_are_no_ops():
    """The search hooks do nothing for a fixed-size alignment."""
    a = make_alignment("orthogonal", D, [3], seed=0)
    assert isinstance(a, AlignmentFunction) and a.stops_on_own_rule is False
    assert a.on_step(5) is None and a.progress() == {}
    assert a.stop_reason([{"step": 50, "val_iia": 1.0, "val_loss": 0.0}]) is None
    assert float(a.penalty()) == 0.0


def test_boundless_size_bookkeeping():
    """n_units is round(b) in [0, d], 0 when b < 0.5 (then nothing is swapped); eval swaps exactly n_units coords."""
    a = make_alignment("boundless", D, None, seed=0, init_units=3.0)
    assert a.stops_on_own_rule is True
    assert a.boundary_value == pytest.approx(3.0) and a.n_units == 3
    assert a.progress() == {"boundary": pytest.approx(3.0), "n_units": 3}
    a.set_temperature(1.0)
    soft = a.train().soft_mask()
    assert ((soft > 0) & (soft < 1)).all() and (soft[1:] < soft[:-1]).all()
    assert float(a.penalty().detach()) == pytest.approx(a.size_weight * float(soft.detach().sum()))
    a.eval()
    assert a.soft_mask().tolist() == [1.0] * 3 + [0.0] * (D - 3)
    h_t, h_s = _states(seed=16)
    for b, n in ((0.3, 0), (0.0, 0), (2.6, 3), (100.0, D)):
        a.set_size(b)
        assert a.n_units == n and isinstance(a.n_units, int)
    a.set_size(0.2)
    assert a.n_units == 0
    assert torch.equal(a.interchange(h_t, h_s, torch.ones(32, 1, dtype=torch.bool)), h_t)
    with pytest.raises(ValueError, match="init_units"):
        make_alignment("boundless", D, None, init_units=0.0)
    with pytest.raises(ValueError, match="init_units"):
        make_alignment("boundless", D, None, init_units=D + 1)


def test_boundless_schedule_and_stop_rule():
    """on_step anneals the temperature then holds it; stop_reason waits for the anneal and a settled boundary."""
    a = make_alignment("boundless", D, None, seed=0, tau_start=1.0, tau_end=0.25, anneal_steps=100,
                       converge_steps=100, converge_tol=0.5)
    taus = []
    for step in (0, 50, 99, 100, 500):
        a.on_step(step)
        taus.append(float(a.temperature))
    assert taus[0] == 1.0 and taus[1] == pytest.approx(0.5) and taus[3] == taus[4] == 0.25
    assert taus[0] > taus[1] > taus[2] > taus[3]

    def hist(bs, every=50):
        return [{"step": every * (i + 1), "val_iia": 0.5, "val_loss": 1.0, "boundary": b, "n_units": round(b)} for i, b in enumerate(bs)]

    assert a.stop_reason([]) is None
    assert a.stop_reason(hist([6.0, 6.0, 6.0])) is None  # settled, but during the anneal
    assert a.stop_reason(hist([6.0, 6.0, 5.0, 4.0, 3.0, 2.5])) is None  # still moving
    assert a.stop_reason(hist([6.0, 6.0, 5.0, 4.0, 3.2])) is None  # only 50 settled steps after the anneal
    reason = a.stop_reason(hist([6.0, 6.0, 5.0, 4.0, 3.2, 3.1, 3.3]))
    assert reason is not None and "3.30" in reason
    a.set_size(0.1)
    assert "nothing swapped" in a.stop_reason(hist([3.0, 2.0, 1.0, 0.2, 0.1, 0.1]))


def _train_boundless(init: float, n_axes: int, steps: int = 400, seed: int = 0):
    """Train a boundless alignment to move the first ``n_axes`` coordinates of h_s into h_t (MSE), as the search loop would."""
    g = gen(100 + seed)
    a = make_alignment("boundless", D, None, seed=seed, init_units=init, anneal_steps=100, hold_steps=100,
                       converge_steps=100).train()
    opt = torch.optim.Adam(a.param_groups(0.02))
    history = []
    for step in range(steps):
        a.on_step(step)
        h_t, h_s = torch.randn(64, D, generator=g), torch.randn(64, D, generator=g)
        target = torch.cat([h_s[:, :n_axes], h_t[:, n_axes:]], 1)
        loss = (a.interchange(h_t, h_s, torch.ones(64, 1)) - target).pow(2).sum(1).mean() + a.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 25 == 0:
            history.append({"step": step + 1, "val_iia": 0.0, "val_loss": float(loss.detach()), **a.progress()})
            reason = a.stop_reason(history)
            if reason:
                break
    return a, history, reason


@pytest.mark.parametrize("n_axes", [1, 3])
def test_boundless_converges_to_the_planted_size_from_both_sides(n_axes):
    """The size is learned, not drifted: from a start below and above, b settles at the planted size and the search stops."""
    for init in (1.0 if n_axes == 3 else 0.6, 7.0):
        a, history, reason = _train_boundless(init, n_axes)
        assert reason is not None, history
        assert a.n_units == n_axes, (init, history)
        assert abs(a.boundary_value - n_axes) < 0.5


def test_boundless_holds_then_passes_dl_db():
    """While held (first hold_steps) b gets no gradient; after, log b's gradient is dL/db itself (straight through)."""
    a = make_alignment("boundless", D, None, seed=0, init_units=3.0, hold_steps=5, nested=0.0).train()
    a.on_step(0)
    assert not a.penalty().requires_grad
    a.on_step(5)
    a.penalty().backward()
    b = torch.tensor(3.0, requires_grad=True)
    j = torch.arange(D, dtype=torch.float32)
    (a.size_weight * torch.sigmoid((b - j - 0.5) / a.temperature).sum()).backward()
    assert float(a.log_boundary.grad) == pytest.approx(float(b.grad), rel=1e-5)
    groups = a.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, a.boundary_lr] and groups[1]["params"] == [a.log_boundary]
    assert sum(len(g["params"]) for g in groups) == len(list(a.parameters()))


def test_boundless_nested_cuts():
    """In training, a fraction `nested` of the rows is swapped at a random cut in [0, 2b + 2]; only the rows at b pass gradient to b."""
    a = make_alignment("boundless", 32, None, seed=0, init_units=4.0, nested=0.5).train()
    a.set_temperature(0.05)
    n = 4000
    m = a.coord_mask(torch.ones(n, 1))
    size = m.detach().sum(1)
    at_b = (size - a.soft_mask().detach().sum()).abs() < 1e-4
    assert 0.45 < float(at_b.float().mean()) < 0.55
    cuts = size[~at_b]
    assert float(cuts.max()) <= 2 * 4.0 + 2 + 0.1 and float(cuts.min()) < 0.5
    assert (m.detach()[:, 1:] <= m.detach()[:, :-1] + 1e-6).all(), "each row swaps a leading block"
    (m[~at_b].sum()).backward()
    assert float(a.log_boundary.grad) == 0.0
    # rows that do not swap are untouched whatever the cut
    assert torch.equal(a.coord_mask(torch.zeros(8, 1)), torch.zeros(8, 32))
    # the cuts come from the alignment's own generator: the same seed gives the same masks
    b = make_alignment("boundless", 32, None, seed=0, init_units=4.0, nested=0.5).train()
    c = make_alignment("boundless", 32, None, seed=0, init_units=4.0, nested=0.5).train()
    assert torch.equal(b.coord_mask(torch.ones(64, 1)), c.coord_mask(torch.ones(64, 1)))


def test_boundless_polish_fixes_the_size():
    """With polish_patience, convergence fixes the size (kept through a state_dict) and the search stops once the val loss stalls."""
    a = make_alignment("boundless", D, None, seed=0, init_units=3.2, anneal_steps=0, converge_steps=100, polish_patience=2).train()
    hist = [{"step": s, "val_iia": 0.9, "val_loss": 0.5, "boundary": 3.2, "n_units": 3} for s in (50, 100, 150)]
    assert a.stop_reason(hist) is None and a.is_fixed and a.n_units == 3
    a.on_step(500)
    assert a.soft_mask().tolist() == [1.0] * 3 + [0.0] * (D - 3), "trains with the hard mask"
    assert not a.penalty().requires_grad
    with torch.no_grad():
        a.log_boundary.fill_(math.log(6.0))  # b moving no longer changes the fixed size ...
    assert a.n_units == 3
    hist += [{"step": 200, "val_iia": 0.9, "val_loss": 0.4, "boundary": 6.0, "n_units": 3},
             {"step": 250, "val_iia": 0.9, "val_loss": 0.4, "boundary": 6.0, "n_units": 3}]
    assert a.stop_reason(hist) is None  # improved at 200, one evaluation without
    hist.append({"step": 300, "val_iia": 0.9, "val_loss": 0.3995, "boundary": 6.0, "n_units": 3})
    reason = a.stop_reason(hist)
    assert reason and "trained at 3 dims" in reason
    b = alignment_from_description(json.loads(json.dumps(a.describe())))
    b.load_state_dict(a.state_dict())
    assert b.is_fixed and b.n_units == 3 and b.polish_patience == 2
    b.set_size(5.0)  # ... until the size is set again
    assert not b.is_fixed and b.n_units == 5


def test_affine_offset_cancels_within_a_network_and_counts_between_two():
    a = make_alignment("affine", 6, [2], seed=0)
    with torch.no_grad():
        a.b.copy_(torch.arange(6.0))
    lin = make_alignment("linear", 6, [2], seed=0)
    h_t, h_s, swap = torch.randn(4, 6), torch.randn(4, 6), torch.ones(4, 1, dtype=torch.bool)
    assert torch.allclose(a.interchange(h_t, h_s, swap), lin.interchange(h_t, h_s, swap), atol=1e-6)
    src = make_alignment("affine", 6, [2], seed=0)  # same map, no offset: the target receives b_s - b_t = -b
    out = a.interchange(h_t, h_s, swap, source=src)
    assert torch.allclose(a.aligned(out), src.aligned(h_s), atol=1e-4)
    assert not torch.allclose(out, lin.interchange(h_t, h_s, swap), atol=1e-3)


def test_normalised_alignment_round_trips_and_keeps_its_statistics():
    from symlib.intervene.alignment import NormalisedAlignment
    mean, std = torch.linspace(-3, 3, 8), torch.linspace(0.5, 20, 8)
    n = NormalisedAlignment(make_alignment("orthogonal", 8, [2], seed=1), mean, std)
    h = torch.randn(5, 8) * std + mean
    assert torch.allclose(n.interchange(h, h.flip(0), torch.zeros(5, 1, dtype=torch.bool)), h, atol=1e-4)
    # swapping in a state's own coordinates changes nothing; the aligned coordinates are the z-scored state's
    assert torch.allclose(n.aligned(h), ((h - mean) / std) @ n.Q, atol=1e-5)
    back = alignment_from_description(n.describe())
    back.load_state_dict(n.state_dict())
    assert torch.equal(back.mean, mean) and torch.equal(back.std, std) and torch.equal(back.Q, n.Q)
    with pytest.raises(ValueError, match="width"):
        NormalisedAlignment(make_alignment("orthogonal", 8, [2], seed=1), torch.zeros(7), torch.ones(7))
