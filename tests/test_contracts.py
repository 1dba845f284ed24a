"""Contract tests run over every registry entry: models, verifiers, search algorithms."""

import math

import pytest
import torch
from _algo import build
from _records import BatchRoundedToy, best_agrees, same_records, with_noises

from noisesearch.algorithms import ALGORITHMS, SearchAlgorithm
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS, digits_models, domain_of
from noisesearch.models.base import Model
from noisesearch.verifiers import VERIFIERS, Verifier


def targets_for(model):
    return [0, 1, 1] if model.domain == "toy" else [0, 7, 3]


def matching_model(verifier_name):
    domain = VERIFIERS[verifier_name].domain
    return {"digits": "digits", "toy": "toy"}[domain]


@pytest.fixture(scope="module", params=[n for n in MODELS if not getattr(MODELS[n], "needs_setup", False)])
def model(request):
    return MODELS[request.param]()


def test_model_contract(model):
    assert isinstance(model, Model)
    cond = model.encode(targets_for(model))
    x = torch.randn(3, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    for sigma in model.schedule(4)[:-1]:
        d = model.denoise(x, sigma, cond, guidance=model.default_guidance)
        assert d.shape == x.shape and torch.isfinite(d).all()
    images = model.decode(d)
    assert images.dim() == 4 and images.shape[0] == 3
    assert images.min() >= 0 and images.max() <= 1
    assert model.nfe_per_call(model.default_guidance) >= 1
    sigmas = model.schedule(5)
    assert len(sigmas) == 6 and sigmas[0] <= 1.0 and sigmas[-1] == 0.0
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))


@pytest.mark.numerics
def test_model_rows_are_independent(model):
    """Row i's denoised output does not depend on the other rows of the batch."""
    cond = model.encode(targets_for(model))
    x = torch.randn(3, *model.noise_shape, generator=torch.Generator().manual_seed(1))
    full = model.denoise(x, 0.5, cond, guidance=model.default_guidance)
    alone = model.denoise(x[1:2], 0.5, cond[1:2], guidance=model.default_guidance)
    torch.testing.assert_close(full[1:2], alone, atol=1e-5, rtol=1e-5)


NEEDS_SETUP = [
    (kind, name)
    for kind, registry in (("model", MODELS), ("verifier", VERIFIERS))
    for name in registry
    if getattr(registry[name], "needs_setup", False)
]


@pytest.mark.parametrize("kind,name", NEEDS_SETUP)
def test_factories_that_need_weights_or_options_refuse_clearly_without_them(kind, name):
    """Entries built from user-supplied weights or options fail with one clear error, offline and fast.

    Their full contract (shapes, batch independence, determinism, pipeline equivalence) runs on tiny
    random-config folders in tests/test_models_diffusers.py and tests/test_verifiers_real.py.
    """
    import inspect

    from noisesearch.errors import UserError

    factory = (MODELS if kind == "model" else VERIFIERS)[name]
    kwargs = {"path": "/nonexistent/weights"} if "path" in inspect.signature(factory).parameters else {}
    with pytest.raises(UserError):
        factory(**kwargs)


@pytest.mark.numerics
@pytest.mark.parametrize("name", [n for n in VERIFIERS if not getattr(VERIFIERS[n], "needs_setup", False)])
def test_verifier_contract(name):
    verifier = VERIFIERS[name]()
    assert isinstance(verifier, Verifier)
    model = MODELS[matching_model(name)]()
    gen = torch.Generator().manual_seed(2)
    targets = targets_for(model)
    images = model.decode(torch.randn(3, *model.noise_shape, generator=gen))
    previews = model.decode(torch.randn(3, *model.noise_shape, generator=gen))
    kwargs = {"previews": previews} if verifier.preview_sigma is not None else {}
    scores = verifier(images, targets, **kwargs)
    assert scores.shape == (3,) and scores.dtype.is_floating_point and torch.isfinite(scores).all()
    again = verifier(images, targets, **kwargs)
    assert torch.equal(scores, again), "a verifier must be deterministic"  # same process: bit for bit
    kwargs1 = {"previews": previews[1:2]} if kwargs else {}
    alone = verifier(images[1:2], targets[1:2], **kwargs1)
    torch.testing.assert_close(alone, scores[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in VERIFIERS if VERIFIERS[n].domain == "digits"])
def test_digits_verifiers_reject_images_out_of_range(name):
    from noisesearch.errors import UserError

    verifier = VERIFIERS[name]()
    bad = torch.full((2, 1, 8, 8), 2.0)
    with pytest.raises(UserError, match=r"values in \[0, 1\]"):
        verifier(bad, [1, 2], previews=bad)
    with pytest.raises(UserError, match=r"\(B, C, H, W\)"):
        verifier(torch.zeros(2, 8, 8), [1, 2], previews=bad)


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("model_name,verifier_name", [("digits", "classifier"), ("toy", "toy-distance")])
def test_algorithm_contract(name, model_name, verifier_name):
    """Every algorithm: ask/tell protocol, within budget, reproducible, seed-sensitive, finishes."""
    model, verifier = MODELS[model_name](), VERIFIERS[verifier_name]()
    algorithm = build(name, model)
    assert isinstance(algorithm, SearchAlgorithm)
    assert isinstance(algorithm.params(), dict)

    def run(seed):
        return run_search(model, verifier, build(name, model), [1, 1], seeds=[seed, seed + 1], budget=64, steps=4)

    first, again, other = run(0), run(0), run(10)
    for a, b in zip(first, again):
        assert a.candidates == b.candidates and a.best_score == b.best_score  # same run, same process: bit for bit

    def identities(result):
        return [(c["noise_seed"], c["noise_sha256"]) for c in result.candidates]

    assert identities(first[0]) != identities(other[0])
    start = model.schedule(4)[0]
    for c in first[0].candidates:  # a candidate from noise is identified by its seed or by a hash of the noise
        if c["sigma_start"] == start:
            assert (c["noise_seed"] is None) != (c["noise_sha256"] is None)
        else:  # an intermediate state: described by the algorithm's notes
            assert c["noise_sha256"] is None and c.get("info")
    full = model.nfe_per_call(model.default_guidance) * 4  # one full candidate: 4 Euler steps
    for r in first:
        # every NFE is on a candidate's record, and the budget is used to within one full candidate
        # (spending more than 64 cannot happen: the accountant raises first)
        assert r.nfe_used == sum(c["nfe"] for c in r.candidates) and 64 - full < r.nfe_used
        assert r.verifier_calls == len(r.candidates)
        assert r.best_image is not None and math.isfinite(r.best_score)
        assert r.best_score == max(c["score"] for c in r.candidates if c["sigma_end"] == 0)


def test_registries_are_plain_dicts_of_factories():
    """Each entry: a keyword-only factory with a one-line summary; what it builds carries the registry's name."""
    import inspect
    import json

    for registry in (MODELS, VERIFIERS, ALGORITHMS):
        assert type(registry) is dict
        for name, factory in registry.items():
            assert callable(factory) and factory.__doc__ and factory.__doc__.strip().splitlines()[0], name
            params = inspect.signature(factory).parameters.values()
            assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), f"{name}: knobs are keyword-only"
    for name, factory in VERIFIERS.items():
        assert factory.domain in (None, "digits", "toy"), name
        assert isinstance(getattr(factory, "needs_setup", False), bool), name
        if not getattr(factory, "needs_setup", False):
            v = factory()
            assert v.name == name and v.preview_sigma in (None, v.preview_sigma) and "Range:" in type(v).__doc__
    for name, factory in MODELS.items():
        if not getattr(factory, "needs_setup", False):
            m = factory()
            assert m.name == name and m.domain in ("digits", "toy") and m.domain == domain_of(name), name
            assert any(VERIFIERS[v].domain == m.domain for v in VERIFIERS), f"no verifier for {name}'s images"
    assert all(hasattr(factory, "domain") for factory in MODELS.values()), "every model entry names its domain"
    assert digits_models() == ["digits", "digits-large"] and domain_of("no-such-model") is None
    for name, factory in ALGORITHMS.items():
        algorithm = factory()
        params = algorithm.params()
        assert algorithm.name == name and json.loads(json.dumps(params)) == params, name
        assert factory(**params).params() == params, f"{name}: params() must rebuild the algorithm"


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_integer_parameters_refuse_booleans(name):
    """`--param candidates=true` parses as JSON True, which Python counts as the integer 1: refused."""
    import inspect

    factory = ALGORITHMS[name]
    defaults = factory().params()
    counts = [
        key
        for key, p in inspect.signature(factory).parameters.items()
        if "int" in str(p.annotation) and "float" not in str(p.annotation) and not isinstance(defaults.get(key), tuple)
    ]
    assert counts or name in {"first-order"}, f"{name}: no integer parameter found to check"
    for key in counts:
        with pytest.raises(UserError, match="True"):
            factory(**{key: True})


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_searches_of_one_run_are_independent_and_numbered_when_asked(name):
    """Vectorised across searches, an algorithm must not couple them: each search of a run of three gets the
    records it gets alone, up to the rounding of another batch size; candidate indices run 0, 1, 2... per search
    in asked order."""
    # the toy rounding by its batch's size (as matrix products do on some CPUs), so the tolerance is used here too
    model, verifier = BatchRoundedToy(), VERIFIERS["toy-distance"]()

    def run(targets, seeds):
        return with_noises(
            lambda: run_search(model, verifier, build(name, model), targets, seeds=seeds, budget=40, steps=4)
        )

    together, noises = run([0, 1, 0], [3, 4, 5])
    for i, (t, s) in enumerate([(0, 3), (1, 4), (0, 5)]):
        (alone,), alone_noises = run([t], [s])
        r = together[i]
        assert [c["index"] for c in r.candidates] == list(range(len(r.candidates)))
        assert r.nfe_used == alone.nfe_used
        # another batch size: floats within float32 rounding, derived noises as tensors, up to the first candidate
        # at the optimum 0 (after it a search's choices are set by rounding; random search makes none, so all of
        # its records are compared): see tests/_records.py
        optimum = None if name == "random" else 0.0
        upto = same_records(r.candidates, alone.candidates, noises, alone_noises, search=(i, 0), optimum=optimum)
        best_agrees(r, alone, upto=upto)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_ask_reads_the_state_and_only_tell_advances_it(name):
    """Asking twice without telling gives the same batches (``tell`` is the only place a state advances)."""
    from noisesearch.algorithms.base import Problems
    from noisesearch.samplers import schedule

    problems = Problems([0, 1], [3, 4], 40, (1,), schedule(4), "euler", 1)
    algorithm = build(name, problems.noise_shape)
    state = algorithm.init(problems)
    for _ in range(3):  # the first rounds
        first, again = algorithm.ask(state), algorithm.ask(state)
        if not first:
            break
        assert len(first) == len(again)
        for a, b in zip(first, again):
            assert a.options() == b.options() and a.noise_seed == b.noise_seed
            assert torch.equal(a.owner, b.owner) and (a.x is None) == (b.x is None)
            assert torch.equal(problems.start_states(a), problems.start_states(b))  # deferred draws: drawn alike
        algorithm.tell(state, [_outcomes(problems, jobs) for jobs in first])


def _outcomes(problems, jobs):
    """Outcomes that score each row by the mean of its state (end state = start state)."""
    from noisesearch.algorithms.base import Outcomes

    x = problems.start_states(jobs)
    score = x.reshape(len(jobs), -1).mean(1).float()
    grad = torch.ones_like(x) if jobs.grad else None
    return Outcomes(jobs, x, x, x, score, 1, torch.arange(len(jobs)), grad)
