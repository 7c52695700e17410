"""What dali_multimix.sampling says about random state (its module docstring): with a
``torch.Generator`` it draws only from that generator and leaves torch's global RNG state alone;
without one it draws from torch's default generator, so ``torch.manual_seed`` makes the draws
reproducible and the global state advances (torch's own convention)."""
from __future__ import annotations

import pytest
import torch

from dali_multimix import sampling

DRAWS = {
    "sample_lambdas": lambda g: sampling.sample_lambdas(6, 4, 1.0, generator=g),
    "sample_lambdas_stratified": lambda g: sampling.sample_lambdas(
        6, 4, 0.4, lambda_sampling="stratified", generator=g),
    "sample_partners": lambda g: sampling.sample_partners(9, generator=g),
    "sample_centers": lambda g: sampling.sample_centers(6, 7, 13, generator=g),
    "fmix_scores": lambda g: sampling.fmix_scores(3, 8, 12, generator=g),
}


@pytest.fixture
def restore_global_rng():
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_with_a_generator_the_global_state_is_untouched(name, restore_global_rng):
    draw = DRAWS[name]
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    g = torch.Generator().manual_seed(7)
    g_before = g.get_state()
    first = draw(g)
    assert torch.equal(torch.get_rng_state(), before), f"{name} moved the global RNG"
    assert not torch.equal(g.get_state(), g_before), f"{name} did not draw from the generator"
    # the same generator seed gives the same draws, whatever the global seed
    torch.manual_seed(999)
    again = draw(torch.Generator().manual_seed(7))
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_without_a_generator_manual_seed_makes_it_reproducible(name, restore_global_rng):
    draw = DRAWS[name]
    torch.manual_seed(2024)
    start = torch.get_rng_state()
    first = draw(None)
    after_first = torch.get_rng_state()
    assert not torch.equal(after_first, start), f"{name} did not draw from the global generator"
    second = draw(None)                          # the state advanced: new draws
    torch.manual_seed(2024)
    assert torch.equal(draw(None), first)        # reseeded: the same draws again
    assert torch.equal(torch.get_rng_state(), after_first)
    assert torch.equal(draw(None), second)
    if name != "sample_partners":  # a permutation of 9 may repeat by chance; the others do not
        assert not torch.equal(first, second)
