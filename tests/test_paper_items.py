"""``noisesearch paper``: the IS ceiling, three seeds, the sources' settings, and Table 2 / Figs. 7-9."""

import json
import math

import pytest
import torch

from noisesearch.metrics import DigitsEvaluator, inception_score, inception_score_ceiling
from noisesearch.paper import FIGURES, FIXED, SWEEPS, configs, run_paper
from noisesearch.paper.items import ALGORITHMS, ENSEMBLE_MEMBERS, TABLE2, gains


def test_is_ceiling_of_a_balanced_set_in_one_split_is_the_number_of_classes():
    labels = [c for c in range(10) for _ in range(20)]
    # exp(entropy of 10 equal shares) = 10; the float log and exp round in the last bits
    assert inception_score_ceiling(labels, 10, splits=1, shuffle=False) == pytest.approx(10.0, rel=1e-12)
    assert inception_score_ceiling([0, 0, 1, 1], 10, splits=1, shuffle=False) == pytest.approx(2.0, rel=1e-12)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert inception_score_ceiling([0, 0, 0, 1], 3, splits=1, shuffle=False) == pytest.approx(math.exp(h), rel=1e-12)
    assert math.isnan(inception_score_ceiling([], 10))


def test_is_ceiling_is_the_score_of_one_hot_confident_logits_under_the_same_splits():
    labels = torch.tensor([c for c in range(10) for _ in range(20)])
    logits = torch.nn.functional.one_hot(labels, 10).double() * 60  # off-label p = e^-60: one-hot to 1e-25
    for options in ({}, {"splits": 1, "shuffle": False}, {"splits": 7, "seed": 3}):
        expected, _ = inception_score(logits, **options)
        # the two compute the same split scores by different float operations: equal to rounding
        assert inception_score_ceiling(labels, 10, **options) == pytest.approx(expected, rel=1e-9)
    assert inception_score_ceiling(labels, 10) == pytest.approx(8.2355, abs=1e-4)  # the cap of 10 splits of 20


def test_the_evaluator_reports_both_ceilings_of_its_own_protocols():
    from noisesearch.digits.train import load_data

    data = load_data()
    labels = data.labels[:200]
    metrics = DigitsEvaluator()((data.images[:200] + 1) / 2, labels.tolist())
    assert metrics["is_ceiling"] == pytest.approx(inception_score_ceiling(labels, 10))
    assert metrics["is_single_split_ceiling"] == pytest.approx(
        inception_score_ceiling(labels, 10, splits=1, shuffle=False)
    )


def test_every_paper_sweep_runs_three_seeds_and_quick_one():
    full, quick = configs(), configs(quick=True)
    for name in SWEEPS:
        if name in FIXED:
            assert full[name].seeds == quick[name].seeds == [0]
            continue
        assert full[name].seeds == [0, 1, 2], name
        assert quick[name].seeds == [0], name


def test_zero_order_and_paths_run_the_sources_defaults():
    full = configs()
    zero = [a.params for a in full["variants"].algorithms if a.name == "zero-order"]
    assert all("restart" not in p and p.get("neighbourhood") in (None, "euclidean") for p in zero)
    assert [p["neighbours"] for p in zero if set(p) == {"neighbours"}] == [1, 2, 4]  # Fig. 6: N = 1, 2, 4
    assert [p["step_size"] for p in zero if "step_size" in p] == [2.0, 4.0, 8.0]  # Fig. 12 left: lambda
    paths = [a.params for a in full["paths"].algorithms]
    assert all("score" not in p for p in paths)  # the default end-state score
    assert [p["initial"] for p in paths if p["path_length"] == 2] == [1, 2, 4]
    assert [p["path_length"] for p in paths if p["initial"] == 4] == [2, 1, 4]


def test_gains_are_relative_to_the_same_seed_and_positive_when_better():
    assert gains({0: 3.0, 1: 2.0}, {0: 2.0, 1: 4.0}, "is_single_split") == {0: 50.0, 1: -50.0}
    assert gains({0: 30.0}, {0: 40.0}, "fid") == {0: 25.0}  # a lower FID is a gain
    assert gains({0: -0.1}, {0: -0.5}, "eval_classifier") == {0: 80.0}  # a log p nearer 0 is a gain
    assert gains({0: 1.0, 2: 1.0}, {0: 0.0, 1: 1.0}, "precision") == {}  # no baseline, or a zero one: no ratio


@pytest.mark.slow
def test_small_run_writes_table2_and_figs_7_8_9_from_one_shared_cache(tmp_path):
    items = ["fig7", "fig8", "fig9", "table2"]
    result = run_paper(tmp_path, figures=items, sizes={"per_class": 1, "seeds": 1, "max_budget": 128}, note=print)
    assert result["drawn"] == [i for i in FIGURES if i in items]
    assert result["tables"] == [tmp_path / "table2.md"]
    assert [p.name for p in result["figures"]] == ["fig7.png", "fig8.png", "fig9.png"]
    records = [json.loads(line) for line in (tmp_path / "table2.jsonl").read_text().splitlines()]
    rows = list(dict.fromkeys(r["row"] for r in records))
    assert len(rows) == 1 + len(TABLE2) * len(ALGORITHMS) and rows[0] == "no search (8 NFEs)"
    assert {(r["verifier"], r["algorithm"]) for r in records[len(records) // len(rows) :]} == {
        (v, a) for v, _ in TABLE2 for a, _ in ALGORITHMS
    }
    for r in records:
        took_part = r["column"] == r["verifier"] or (r["verifier"] == "ensemble" and r["column"] in ENSEMBLE_MEMBERS)
        assert r["held_out"] == (not took_part)  # the diagonal, and the ensemble's members, are not held out
        assert r["budget"] == (8 if r["algorithm"] == "none" else 128)
        if r["column"] in ("classifier", "oracle-is", "fid", "is_single_split"):
            assert r["mean"] is not None, r  # every cell scored by the verifiers that score finished images
    table = (tmp_path / "table2.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == 1 + len(rows)  # header + a line per row
    # one `*` per searched row (its own verifier), plus the ensemble rows' scores by its classifier member
    # (feature-similarity cannot score another search: "-")
    assert sum(line.count(" * |") for line in table) == (len(TABLE2) + 1) * len(ALGORITHMS)
    fig8 = [json.loads(line) for line in (tmp_path / "fig8.jsonl").read_text().splitlines()]
    assert {p["series"] for p in fig8} == {v for v, _ in TABLE2} and all(p["mean"] is not None for p in fig8)
    fig9 = [json.loads(line) for line in (tmp_path / "fig9.jsonl").read_text().splitlines()]
    assert {p["x"] for p in fig9} == {8, 16, 32, 64, 128} and all(p["mean"] == 0 for p in fig9 if p["x"] == 8)
    fig7 = [json.loads(line) for line in (tmp_path / "fig7.jsonl").read_text().splitlines()]
    assert len(fig7) == 4 * 7 and all((tmp_path / p["image"]).is_file() for p in fig7)
    assert [p["x"] for p in fig7[:7]] == [2, 4, 8, 16, 64, 256, 1024]
    # one cache for every sweep: the oracle-is search replays the candidates the classifier's search drew
    replayed = json.loads((tmp_path / "sweeps" / "table2-oracle-is" / "results.jsonl").read_text().splitlines()[0])
    assert replayed["algorithm"] == "random" and replayed["nfe_computed"] == 0 and replayed["replayed"] > 0
    assert not (tmp_path / "sweeps" / "table2-oracle-is" / "cache").exists()


def test_report_draws_each_is_protocols_ceiling_from_the_sets():
    """Every IS axis of ``report.plot`` (report, demo, compare) gets its protocol's ceiling; other metrics none."""
    from noisesearch.sweep.report import METRIC_NAMES, SET_METRICS, protocol_ceiling

    sets = [
        {"is": 8.1, "is_ceiling": 8.2, "is_single_split": 9.6, "is_single_split_ceiling": 10.0, "fid": 20.0},
        {"is": 8.0, "is_ceiling": 8.25, "is_single_split": 9.5, "is_single_split_ceiling": 10.0, "fid": 21.0},
    ]
    assert protocol_ceiling(sets, "is") == 8.25 and protocol_ceiling(sets, "is_single_split") == 10.0
    assert protocol_ceiling(sets, "fid") is None and protocol_ceiling([{"is": 8.0}], "is") is None
    assert "is_single_split" in SET_METRICS and METRIC_NAMES["is_single_split"] == "IS (whole set)"


def test_confidence_intervals_are_students_t_at_95_percent():
    """Three seeds: t(0.975, 2) = 4.3027 standard errors (the normal 1.96 would be a 78% interval); many: about 1.96."""
    import math

    from noisesearch.sweep.report import mean_ci

    mean, half = mean_ci([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3)
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    mean, half = mean_ci([0.0, 1.0] * 500)  # sd 0.50025, se 0.015820
    assert half == pytest.approx(1.962344 * 0.5002501 / math.sqrt(1000), rel=1e-5)
    assert mean_ci([5.0]) == (5.0, 0.0) and all(math.isnan(v) for v in mean_ci([None, float("nan")]))


def test_the_ensembles_members_are_not_held_out_in_table2_and_fig8():
    """Table 2 / Fig. 8 mark a score as held out only if its verifier took no part in the search."""
    from noisesearch.paper import configs
    from noisesearch.paper.items import scores_its_own_search

    assert tuple(configs()["table2-ensemble"].verifier.options["members"]) == ENSEMBLE_MEMBERS
    assert scores_its_own_search("ensemble", "classifier") and scores_its_own_search("classifier", "classifier")
    assert not scores_its_own_search("ensemble", "oracle-is") and not scores_its_own_search("oracle-is", "classifier")
    assert not scores_its_own_search(None, "classifier")  # the no-search row: everything is held out
