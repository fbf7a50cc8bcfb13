"""The decode loop's categorical draws: right distribution, right nucleus, batch independence."""
import torch

from treesearch import sampler
from treesearch.sampler import draw, draw_uniform, row_uniform, uniforms


def frequencies(logits, temperature, top_p, n=20000):
    seeds = torch.arange(n, dtype=torch.int64)
    tok = draw(logits.expand(n, -1), seeds, t=3, temperature=temperature, top_p=top_p)
    return torch.bincount(tok, minlength=logits.shape[-1]).double() / n


def test_draws_follow_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    freq = frequencies(logits, temperature=0.7, top_p=1.0)
    expected = (logits[0] / 0.7).softmax(-1).double()
    assert (freq - expected).abs().max() < 0.015  # 20k draws: standard error <= 0.0036
    assert freq[4] == 0


def test_top_p_keeps_the_smallest_head_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    freq = frequencies(probs.log()[None], temperature=1.0, top_p=0.7)  # head {0.5, 0.3} reaches 0.7
    assert freq[2] == freq[3] == 0
    assert abs(freq[0] - 0.5 / 0.8) < 0.015


def test_a_nucleus_wider_than_the_top_k_is_exact(monkeypatch):
    monkeypatch.setattr(sampler, "NUCLEUS_K", 4)
    logits = torch.zeros(1, 10)  # uniform: the 0.95 nucleus needs all ten tokens
    freq = frequencies(logits, temperature=1.0, top_p=0.95)
    assert (freq > 0.08).all() and (freq < 0.12).all()


def test_a_row_draw_does_not_depend_on_the_other_rows():
    torch.manual_seed(0)
    logits = torch.randn(6, 300)
    seeds = torch.arange(100, 106)
    together = draw(logits, seeds, t=5, temperature=1.0, top_p=0.9)
    alone = torch.stack([draw(logits[i:i + 1], seeds[i:i + 1], t=5, temperature=1.0, top_p=0.9)[0] for i in range(6)])
    assert torch.equal(together, alone)
    assert not torch.equal(together, draw(logits, seeds, t=6, temperature=1.0, top_p=0.9))  # positions differ


def test_zero_temperature_is_argmax():
    logits = torch.randn(4, 50)
    assert torch.equal(draw(logits, torch.arange(4), 0, temperature=0.0), logits.argmax(-1))


def test_a_step_of_uniforms_at_once_is_each_positions_draw():
    torch.manual_seed(0)
    logits, seeds = torch.randn(5, 80), torch.randint(0, 2**32, (5,))
    u = uniforms(seeds, 12)
    for t in range(12):
        assert torch.equal(u[:, t], row_uniform(seeds, t))
        assert torch.equal(draw_uniform(logits, u[:, t], 0.8, 0.9), draw(logits, seeds, t, 0.8, 0.9))
