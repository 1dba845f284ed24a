"""Verifier-hacking diagnostics of ``report``: where each held-out metric peaks, on hand-built rows."""

import json
import math

from noisesearch.sweep.report import best_index, build_report, onset_table, onsets


def row(budget, seed, value, target=0, **extra):
    return {
        "cell": json.dumps({"algorithm": "random", "budget": budget, "seed": seed}),
        "target_index": target,
        "algorithm": "random",
        "params": {},
        "verifier": "classifier",
        "budget": budget,
        "seed": seed,
        "nfe_used": budget,
        "best_score": -1.0 / budget,  # the search verifier's own score: always better with budget
        "category": "0",
        "eval_oracle-is": value,
        **extra,
    }


# eval_oracle-is per budget, two seeds: means 1, 3, 2, 0 -> peaks at 16, before the end: hacking from there
ROWS = [row(b, s, v + d) for b, v in ((8, 1.0), (16, 3.0), (32, 2.0), (64, 0.0)) for s, d in ((0, -0.5), (1, 0.5))]


def test_best_index_respects_direction_ties_and_nan():
    assert best_index([3.0, 1.0, 2.0], "fid") == 1  # lower FID is better
    assert best_index([3.0, 1.0, 2.0], "is") == 0
    assert best_index([1.0, 2.0, 2.0], "precision") == 1  # the first of equal bests
    assert best_index([float("nan"), 5.0], "fid") == 1
    assert best_index([float("nan")], "fid") is None


def test_onset_is_the_budget_of_the_best_mean_over_seeds():
    found = onsets(ROWS, ["best_score", "eval_oracle-is"])
    assert list(found) == ["random, classifier"]
    assert found["random, classifier"] == {"eval_oracle-is": {"budget": 16, "value": 3.0, "at_end": False}}


def test_lower_fid_is_better_and_a_last_budget_peak_is_still_improving():
    sets = [
        {"algorithm": "random", "params": {}, "verifier": "classifier", "budget": b, "fid": f, "recall": r}
        for b, f, r in ((8, 50.0, 0.1), (16, 30.0, 0.2), (32, 40.0, 0.3))
    ]
    found = onsets(sets, ["fid", "recall"])["random, classifier"]
    assert found["fid"] == {"budget": 16, "value": 30.0, "at_end": False}
    assert found["recall"] == {"budget": 32, "value": 0.3, "at_end": True}
    assert onset_table(sets, ["fid", "recall"]) == [
        ["configuration", "fid: peak budget (value)", "recall: peak budget (value)"],
        ["random, classifier", "16 (30)", "32 (0.3, still improving at the largest budget)"],
    ]


def test_report_lists_the_onsets(tmp_path):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    build_report(tmp_path)
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "## Verifier hacking: budget where each held-out per-target metric peaks" in tables
    assert "| random, classifier | 16 (3) |" in tables
    assert "Verifier hacking" in (tmp_path / "report" / "index.html").read_text()


def test_the_search_verifier_itself_is_not_held_out():
    assert onsets(ROWS, ["best_score"]) == {}


def test_table_cells_state_an_interval_only_where_there_is_one():
    """One seed has no spread: the cell is the mean alone, never a misleading "± 0"."""
    from noisesearch.sweep.report import cell

    assert cell([]) == "-" and cell([None, math.nan]) == "-"
    assert cell([2.5]) == "2.5" and cell([2.5, None]) == "2.5"
    # two values 1 and 3: mean 2, stdev sqrt(2), half-width t(0.975, 1) * sqrt(2) / sqrt(2) = 12.71 (Student's t)
    assert cell([1.0, 3.0]) == "2 ± 13"
    assert cell([1.0, 3.0, None]) == "2 ± 13"
