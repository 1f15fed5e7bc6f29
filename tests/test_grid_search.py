"""Bisection over a level grid for many items at once (the search behind --privacy-target)."""
import itertools

import pytest

from pipeline.transforms.grid_search import attempts_needed, smallest_passing

GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_finds_the_smallest_passing_level_of_a_monotone_test_within_the_attempt_budget():
    # Item i passes from its own threshold on (None: never), a stand-in recognizer with a known response.
    thresholds = [0.05, 0.1, 0.15, 0.35, 0.5, 0.85, 0.9, 0.95, None]
    calls = []

    def attempt(items, level):
        calls.append((tuple(items), level))
        return [(i, level) for i in items]

    def judge(items, outputs):
        return [(thresholds[i] is not None and level >= thresholds[i], {"level": level}) for i, level in outputs]

    results = smallest_passing(len(thresholds), GRID, attempt, judge)
    expected = [0.1, 0.1, 0.2, 0.4, 0.5, 0.9, 0.9, None, None]
    assert [r.level for r in results] == expected
    assert all(r.output == (i, r.level) for i, r in enumerate(results) if r.level is not None)
    assert max(len(r.tried) for r in results) <= attempts_needed(len(GRID)) == 4
    # Items at the same level in a round share one batch; no item is tried twice at a level.
    assert all(len({lv for lv, _, _ in r.tried}) == len(r.tried) for r in results)
    assert len(calls) < sum(len(r.tried) for r in results)


@pytest.mark.parametrize("size", range(1, 12))
def test_every_threshold_is_found_for_every_grid_size(size):
    grid = [k / 20 for k in range(1, size + 1)]
    for first_pass in itertools.chain(range(size), [None]):
        result, = smallest_passing(1, grid, lambda items, lv: [lv],
                                   lambda items, outs: [(first_pass is not None and lv >= grid[first_pass], None)
                                                        for lv in outs])
        assert result.level == (None if first_pass is None else grid[first_pass])
        assert len(result.tried) <= attempts_needed(size)


def test_the_grid_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        smallest_passing(1, [0.3, 0.2], lambda i, lv: [None], lambda i, o: [(True, None)])
