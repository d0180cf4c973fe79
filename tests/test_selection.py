"""Paper 002's selection of synthetic images by realism and diversity."""

from __future__ import annotations

import numpy as np

from dermflow.gan.selection import candidate_counts, select_diverse


def test_without_diversity_the_most_realistic_are_kept():
    realism = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    features = np.eye(5)
    assert list(select_diverse(realism, features, 3, diversity=0.0)) == [1, 3, 2]


def test_diversity_skips_near_copies_of_kept_images():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    copies = base + rng.normal(scale=1e-3, size=(5, 16))  # five near-identical, most realistic
    others = rng.normal(size=(5, 16))
    features = np.vstack([copies, others])
    realism = np.r_[np.full(5, 1.0) + np.arange(5) * 1e-3, np.full(5, 0.8)]
    realistic = select_diverse(realism, features, 5, diversity=0.0)
    diverse = select_diverse(realism, features, 5, diversity=2.0)
    assert set(realistic) == set(range(5))  # all the copies
    assert diverse[0] == 4  # the most realistic comes first either way
    assert sum(i < 5 for i in diverse) == 1  # then one of each distinct candidate
    assert len(set(diverse)) == 5


def test_asking_for_all_candidates_keeps_them_all():
    realism = np.array([0.2, 0.1])
    assert sorted(select_diverse(realism, np.ones((2, 3)), 5, 1.0)) == [0, 1]


def test_candidates_round_up():
    assert candidate_counts({"mel": 3, "nv": 0}, 1.5) == {"mel": 5, "nv": 0}
