"""Samplers against analytic answers, and their declared NFE costs against real call counts."""

import pytest
import torch

from noisesearch.errors import UserError
from noisesearch.samplers import SAMPLERS, get_sampler, renoise, sample_euler, sample_euler_sde, schedule

DETERMINISTIC = [n for n, s in SAMPLERS.items() if not s.stochastic]
STOCHASTIC = [n for n, s in SAMPLERS.items() if s.stochastic]


def run(name, denoise, x, sigmas, *, seed=0, **kwargs):
    """Run a registered sampler, giving a stochastic one seeded per-step noises."""
    sampler = get_sampler(name)
    if sampler.stochastic:
        gen = torch.Generator().manual_seed(seed)
        kwargs["noises"] = torch.randn((len(sigmas) - 1, *x.shape), generator=gen, dtype=x.dtype)
    return sampler.fn(denoise, x, sigmas, **kwargs)


def gaussian_denoiser(c: float):
    """Exact x0-prediction for data ~ N(0, c^2) under x = (1 - s) x0 + s noise."""

    def denoise(x, s):
        return (1 - s) * c**2 * x / ((1 - s) ** 2 * c**2 + s**2)

    return denoise


def test_schedule_runs_from_one_to_zero():
    s = schedule(4)
    assert s == (1.0, 0.75, 0.5, 0.25, 0.0)
    shifted = schedule(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] > 0.5  # more steps at high noise


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8"])
def test_schedule_rejects_bad_steps(bad):
    with pytest.raises(UserError, match="steps must be a positive integer"):
        schedule(bad)


def test_euler_is_exact_for_a_single_point():
    """With one data point the denoiser is constant and the ODE path is a straight line."""
    point = torch.tensor([[0.3, -0.7]])
    noise = torch.tensor([[1.5, 0.2]])
    out = SAMPLERS["euler"].fn(lambda x, s: point.expand_as(x), noise, schedule(3))
    torch.testing.assert_close(out, point)  # default tolerance: float rounding of an exact one-step result


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_gaussian_flow_maps_noise_to_scaled_noise(name):
    """For N(0, c^2) data the probability-flow ODE is linear: x(0) = c * noise."""
    c = 0.5
    noise = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    out = get_sampler(name).fn(gaussian_denoiser(c), noise, schedule(256))
    torch.testing.assert_close(out, c * noise, atol=1e-2, rtol=0)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_keep_the_data_marginal(name):
    """Under the exact denoiser of N(0, c^2) data, stochastic sampling still ends with std c."""
    c = 0.5
    x = torch.randn(20000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = run(name, gaussian_denoiser(c), x, schedule(512), seed=4)  # first order: error ~ 1/steps
    assert abs(float(out.std()) - c) < 0.015
    assert abs(float(out.mean())) < 0.02


def test_sde_with_eta_zero_is_euler_and_noises_are_arguments():
    c, x = 0.5, torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noises = torch.randn(8, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(  # default tolerance: eta = 0 is Euler up to rounding
        sample_euler_sde(gaussian_denoiser(c), x, schedule(8), noises=noises, eta=0.0),
        sample_euler(gaussian_denoiser(c), x, schedule(8)),
    )
    a = sample_euler_sde(gaussian_denoiser(c), x, schedule(8), noises=noises)
    b = sample_euler_sde(gaussian_denoiser(c), x, schedule(8), noises=noises)
    assert torch.equal(a, b)  # same inputs, same process: bit for bit
    assert not torch.equal(a, sample_euler_sde(gaussian_denoiser(c), x, schedule(8), noises=-noises))
    with pytest.raises(ValueError, match="needs noises for 8 steps"):
        sample_euler_sde(gaussian_denoiser(c), x, schedule(8), noises=noises[:3])
    with pytest.raises(ValueError, match="deterministic and takes no noises"):
        sample_euler(gaussian_denoiser(c), x, schedule(8), noises=noises)


def test_renoise_is_the_forward_process():
    """Re-noising x_a to sigma_b gives exactly the marginal (1 - b) x0 + b noise."""
    x0 = torch.full((40000, 1), 0.8, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x_a = 0.7 * x0 + 0.3 * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x_b = renoise(x_a, 0.3, 0.6, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    assert abs(float(x_b.mean()) - 0.4 * 0.8) < 0.01
    assert abs(float(x_b.std()) - 0.6) < 0.01
    assert torch.equal(renoise(x_a, 0.3, 0.3, torch.ones_like(x_a)), x_a)  # exact: a = 1 and a zero noise scale
    with pytest.raises(ValueError, match="sigma_from <= sigma_to"):
        renoise(x_a, 0.6, 0.3, x_a)


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2)])
def test_convergence_order(name, order):
    """Doubling the steps divides the error by about 2**order."""
    c, noise = 0.5, torch.tensor([[2.0]], dtype=torch.float64)
    errors = [
        float((get_sampler(name).fn(gaussian_denoiser(c), noise, schedule(n)) - c * noise).abs()) for n in (64, 128)
    ]
    assert 2 ** (order - 0.3) < errors[0] / errors[1] < 2 ** (order + 0.3)


def test_heun_is_more_accurate_than_euler_at_equal_steps():
    c, noise = 0.5, torch.tensor([[1.7]], dtype=torch.float64)
    err = {
        n: float((get_sampler(n).fn(gaussian_denoiser(c), noise, schedule(8)) - c * noise).abs()) for n in DETERMINISTIC
    }
    assert err["heun"] < err["euler"] / 4


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("sigmas", [schedule(1), schedule(5), (1.0, 0.6, 0.3), (0.5, 0.25, 0.0)])
def test_declared_nfe_equals_real_calls(name, sigmas):
    calls = []

    def denoise(x, s):
        calls.append(s)
        return torch.zeros_like(x)

    run(name, denoise, torch.ones(2, 1), sigmas)
    assert len(calls) == get_sampler(name).nfe(sigmas)


def test_callback_sees_every_step_and_the_preview():
    seen = []
    SAMPLERS["heun"].fn(
        lambda x, s: x * 0, torch.ones(1, 1), schedule(4), callback=lambda i, s, x, d: seen.append((i, s))
    )
    assert seen == [(0, 1.0), (1, 0.75), (2, 0.5), (3, 0.25)]


def test_unknown_sampler_names_the_accepted_ones():
    with pytest.raises(UserError, match="unknown sampler 'ddim'; accepted: euler, heun, euler-sde"):
        get_sampler("ddim")


def test_samplers_never_draw_noise():
    """The global RNG is untouched by sampling: noise is always an argument."""
    state = torch.random.get_rng_state()
    for name in DETERMINISTIC:
        SAMPLERS[name].fn(gaussian_denoiser(0.5), torch.ones(3, 2), schedule(4))
    for name in STOCHASTIC:
        SAMPLERS[name].fn(gaussian_denoiser(0.5), torch.ones(3, 2), schedule(4), noises=torch.zeros(4, 3, 2))
    assert torch.equal(state, torch.random.get_rng_state())


def test_euler_and_sde_steps_equal_their_formulas_bit_for_bit():
    """The samplers compute each step with in-place operations; the values (and gradients) must be exactly
    those of the textbook expressions, in their order of evaluation (so that records never move)."""
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(64, 1, 8, 8, generator=gen)
    noises = torch.randn(5, 64, 1, 8, 8, generator=gen)
    sigmas = schedule(5, shift=2.0)
    denoise = gaussian_denoiser(0.7)

    def euler_ref(x):
        for s, sn in zip(sigmas, sigmas[1:]):
            x = x + (sn - s) * (x - denoise(x, s)) / s
        return x

    def sde_ref(x, eta=0.5):
        for i, (s, sn) in enumerate(zip(sigmas, sigmas[1:])):
            d = denoise(x, s)
            eps_hat = (x - (1 - s) * d) / s
            a = (1 - s) / (1 - sn)
            c = eta * sn * max(s**2 - (a * sn) ** 2, 0.0) ** 0.5 / s
            x = (1 - sn) * d + (sn**2 - c**2) ** 0.5 * eps_hat + c * noises[i]
        return x

    assert torch.equal(sample_euler(denoise, x0, sigmas), euler_ref(x0))
    assert torch.equal(sample_euler_sde(denoise, x0, sigmas, noises=noises), sde_ref(x0))
    for fn, ref in (
        (lambda x: sample_euler(denoise, x, sigmas), euler_ref),
        (lambda x: sample_euler_sde(denoise, x, sigmas, noises=noises), sde_ref),
    ):
        x = x0.clone().requires_grad_(True)
        (ours,) = torch.autograd.grad((fn(x) ** 2).sum(), x)
        (theirs,) = torch.autograd.grad((ref(x) ** 2).sum(), x)
        assert torch.equal(ours, theirs)
    x = x0.clone()
    sample_euler(denoise, x, sigmas)
    assert torch.equal(x, x0)  # the caller's state is never written
