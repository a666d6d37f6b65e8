"""Alignment functions: interchange algebra, invertibility, orthogonality under training, saving, dtypes, errors."""
import io

import pytest
import torch

from symlib.alignment import ALIGNMENT_NAMES, make_alignment

from helpers import gen

D = 8


def _perturbed(kind: str, block_sizes=(3,), d: int = D, seed: int = 0):
    """An alignment whose parameters are moved away from their (often trivial) initial values."""
    a = make_alignment(kind, d, list(block_sizes), seed=seed)
    g = gen(seed + 50)
    with torch.no_grad():
        for name, p in a.named_parameters():
            if name == "boundary":
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
        with torch.no_grad():
            a.boundary.fill_(float(D))
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


def test_boundless_learns_an_integer_size():
    """Boundless: after training its n_units is an int in [1, d]; eval swaps exactly n_units coords, training a soft mask."""
    a = make_alignment("boundless", D, None, seed=0).train()
    start = float(a.boundary.detach())
    opt = torch.optim.Adam(a.parameters(), lr=0.1)
    h_t, h_s = _states(seed=8)
    for step in range(60):
        a.set_temperature(max(0.05, 0.05 ** (step / 60)))
        # reward copying the source: pushes the boundary up, against the size penalty
        loss = (a.interchange(h_t, h_s, torch.ones(32, 1)) - h_s).pow(2).mean() + a.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(a.boundary.detach()) != start
    n = a.n_units
    assert isinstance(n, int) and 1 <= n <= D
    assert a.describe()["n_units"] == n
    a.set_temperature(1.0)
    soft = a.soft_mask()
    assert ((soft > 0) & (soft < 1)).all() and (soft[1:] < soft[:-1]).all()
    a.eval()
    assert a.soft_mask().tolist() == [1.0] * n + [0.0] * (D - n)
    with torch.no_grad():
        a.boundary.fill_(-4.0)
        assert a.n_units == 1
        a.boundary.fill_(100.0)
        assert a.n_units == D
