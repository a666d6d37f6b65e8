"""Tasks: vocabulary, trial layout, task mask, count sets, void tokens, variants, seeding."""
import pytest
import torch

import symlib
from symlib.game.tasks import resolve_counts

from helpers import gen


def _expected_responses(task, n: int) -> int:
    """How many responses a count asks for, written out independently of the library."""
    if task.transform == "mod4":
        return n % 4
    if task.transform == "round3":
        return min(range(0, 3 * n + 4, 3), key=lambda m: abs(m - n))  # nearest multiple of 3
    return n


def test_multiobject_token_ids_match_original():
    """MultiObject ids are P=0 B=1 E=2 D0=3 D1=4 D2=5 R=6 T=7 U=8, as in the original code."""
    t = symlib.make_task("multiobject")
    assert t.vocab == ("P", "B", "E", "D0", "D1", "D2", "R", "T", "U")
    assert (t.P, t.B, t.E, t.R, t.T, t.U) == (0, 1, 2, 6, 7, 8)
    assert t.demo_ids == (3, 4, 5)
    assert [t.id(w) for w in ("D0", "D1", "D2")] == [3, 4, 5]
    assert t.vocab_size == 9


def test_single_and_same_object_ids_are_sorted_after_p_b_e():
    """SingleObject/SameObject: P, B, E, then the other words sorted (D, R, T, U)."""
    s = symlib.make_task("singleobject")
    assert s.vocab == ("P", "B", "E", "D", "R", "T", "U")
    assert s.demo_ids == (3,) and s.R == 4 and s.T == 5
    same = symlib.make_task("sameobject")
    assert same.R == same.id("D") == 3, "SameObject answers with the demo word D"
    assert same.T == same.id("T")


@pytest.mark.parametrize("name", symlib.TASK_NAMES)
def test_trial_layout_without_voids(name):
    """A trial is B, N demo tokens, T, the responses, E, then padding (2N+3 long for identity tasks)."""
    task = symlib.make_task(name)
    tr = task.sample(300, "all", gen(1))
    for row, n, tpos, length, mask in zip(tr.tokens, tr.counts.tolist(), tr.trigger_pos.tolist(), tr.lengths.tolist(), tr.task_mask):
        r = _expected_responses(task, n)
        if task.transform == "identity":
            assert length == 2 * n + 3
        assert length == n + r + 3
        assert tpos == n + 1
        assert row[0] == task.B
        assert all(int(t) in task.demo_ids for t in row[1:n + 1])
        assert row[n + 1] == task.T
        assert (row[n + 2:n + 2 + r] == task.R).all()
        assert row[n + 2 + r] == task.E
        assert (row[length:] == task.P).all()
        # graded: exactly the r responses and the final E
        want = torch.zeros_like(mask)
        want[n + 2:n + 3 + r] = True
        assert torch.equal(mask, want)


def test_multiobject_uses_every_demo_word():
    """MultiObject demo tokens are drawn among D0, D1, D2, and all three occur."""
    task = symlib.make_task("multiobject")
    tr = task.sample(200, "all", gen(2))
    demo = tr.tokens[(torch.arange(tr.tokens.shape[1])[None, :] >= 1) & (torch.arange(tr.tokens.shape[1])[None, :] < tr.trigger_pos[:, None])]
    assert set(demo.tolist()) == {3, 4, 5}


def test_train_counts_exclude_heldout():
    """Sampling 'train' never yields 4, 9, 14 or 17, and yields every other count in 1..20."""
    c = symlib.make_task("multiobject").sample(4000, "train", gen(3)).counts
    seen = set(c.tolist())
    assert seen.isdisjoint({4, 9, 14, 17})
    assert seen == set(range(1, 21)) - {4, 9, 14, 17}


def test_heldout_and_out_of_range_sets():
    """'heldout' yields only 4, 9, 14, 17; 'out_of_range' is 21..30."""
    task = symlib.make_task("multiobject")
    assert set(task.sample(500, "heldout", gen(4)).counts.tolist()) == {4, 9, 14, 17}
    assert set(symlib.OUT_OF_RANGE_COUNTS) == set(range(21, 31))
    assert set(task.sample(1000, "out_of_range", gen(5)).counts.tolist()) == set(range(21, 31))


@pytest.mark.parametrize("name", ["multiobject", "singleobject", "sameobject", "multiobject_round3"])
def test_void_tokens_do_not_count(name):
    """With unk_p > 0 the number of real (non-U) demo tokens is still N, and grading is unchanged."""
    task = symlib.make_task(name, unk_p=0.3)
    tr = task.sample(400, "all", gen(6))
    n_void = 0
    for row, n, tpos, length, mask in zip(tr.tokens, tr.counts.tolist(), tr.trigger_pos.tolist(), tr.lengths.tolist(), tr.task_mask):
        demo = row[1:tpos]
        assert all(int(t) in task.demo_ids + (task.U,) for t in demo)
        assert int((demo != task.U).sum()) == n
        n_void += int((demo == task.U).sum())
        r = _expected_responses(task, n)
        assert length == tpos + r + 2
        assert int(mask.sum()) == r + 1 and bool(mask[tpos + r + 1]) and row[tpos + r + 1] == task.E
    # about 0.3 / 0.7 voids per real token
    n_real = int(tr.counts.sum())
    assert 0.3 < n_void / n_real < 0.56


def test_no_void_tokens_by_default():
    """unk_p = 0 (the default) never emits U."""
    task = symlib.make_task("multiobject")
    assert not (task.sample(300, "all", gen(7)).tokens == task.U).any()


def test_mod4_and_round3_response_counts():
    """Mod-4 and Round-3 trials answer with the transformed count (round3: 1->0, 2->3, 4->3, 5->6; mod4: 4->0, 7->3)."""
    n = torch.tensor([1, 2, 3, 4, 5, 7, 8, 11, 20])
    mod4 = symlib.make_task("multiobject_mod4")
    round3 = symlib.make_task("multiobject_round3")
    assert mod4.response_count(n).tolist() == [1, 2, 3, 0, 1, 3, 0, 3, 0]
    assert round3.response_count(n).tolist() == [0, 3, 3, 3, 6, 6, 9, 12, 21]
    for task in (mod4, round3):
        tr = task.trials_for_counts(n, gen(8))
        n_resp = (tr.tokens == task.R).sum(1)
        assert n_resp.tolist() == task.response_count(n).tolist()
        assert (tr.task_mask.sum(1) == n_resp + 1).all()


def test_sameobject_responds_with_d():
    """SameObject's response token is D: after T every response is D, only T separates the phases."""
    task = symlib.make_task("sameobject")
    tr = task.trials_for_counts(torch.tensor([3]), gen(9))
    assert task.decode(tr.tokens[0]) == "B D D D T D D D E"


def test_same_seed_same_trials():
    """The same generator seed gives identical tensors; another seed gives different ones."""
    task = symlib.make_task("multiobject", unk_p=0.2)
    a, b, c = (task.sample(64, "train", gen(s)) for s in (10, 10, 11))
    for f in ("tokens", "task_mask", "counts", "trigger_pos", "lengths"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not (a.tokens.shape == c.tokens.shape and torch.equal(a.tokens, c.tokens))


def test_unknown_task_lists_valid_names():
    """make_task('nope') raises a ValueError whose message lists every valid task name."""
    with pytest.raises(ValueError) as e:
        symlib.make_task("nope")
    for name in symlib.TASK_NAMES:
        assert name in str(e.value)


def test_empty_or_bad_counts_raise_clearly():
    """resolve_counts([]) (and sampling with it) raises a ValueError saying the range is empty; counts < 1 and unknown set names are rejected."""
    with pytest.raises(ValueError, match="empty"):
        resolve_counts([])
    with pytest.raises(ValueError, match="empty"):
        symlib.make_task("multiobject").sample(4, [], gen(0))
    with pytest.raises(ValueError, match=">= 1"):
        resolve_counts([0, 3])
    with pytest.raises(ValueError) as e:
        resolve_counts("everything")
    assert all(k in str(e.value) for k in symlib.COUNT_SETS)
    assert resolve_counts([3, 5]) == (3, 5)


def test_decode_round_trip():
    """decode writes a trial as its words with padding dropped."""
    task = symlib.make_task("singleobject")
    tr = task.trials_for_counts(torch.tensor([2, 1]), gen(0))
    assert task.decode(tr.tokens[0]) == "B D D T R R E"
    assert task.decode(tr.tokens[1]) == "B D T R E"


def test_demo_response_mask_and_used_length():
    """The positions where a count is built or read are the demo and response tokens, nothing else; a batch
    needs the columns up to its longest row's last token."""
    import torch
    from symlib.game.tasks import make_task, used_length
    task = make_task("multiobject")
    trials = task.sample(32, "train", torch.Generator().manual_seed(0))
    mask = trials.demo_response_mask()
    for row, m in zip(trials.tokens, mask):
        words = [task.vocab[t] for t in row.tolist()]
        kept = [w for w, k in zip(words, m.tolist()) if k]
        dropped = [w for w, k in zip(words, m.tolist()) if not k]
        assert sorted(set(dropped)) == sorted({"B", "T", "E", "P"} & set(dropped)) and "B" in dropped and "E" in dropped
        assert kept and not {"B", "T", "E", "P"} & set(kept)
    assert used_length(trials.tokens) == int(trials.lengths.max())
    assert used_length(torch.zeros(0, 5, dtype=torch.long)) == 0
