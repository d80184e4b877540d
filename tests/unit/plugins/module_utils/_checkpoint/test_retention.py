# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which older checkpoints go (keep_last, max_age), and how a max_age is written."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.retention import parse_age, select_pruned


@pytest.mark.parametrize(
    "value, seconds",
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("45", 45), (" 3 d ", 259200),
     (3600, 3600), (1, 1)],
)
def test_parse_age(value, seconds):
    assert parse_age(value) == seconds


@pytest.mark.parametrize("value", ["", "d", "7y", "1.5h", "-5m", "7 days", "h7", None, 1.5])
def test_parse_age_refuses_what_is_not_a_duration(value):
    with pytest.raises(ValueError, match="not a duration"):
        parse_age(value)


@pytest.mark.parametrize("value", [0, "0", "0h", -5])
def test_parse_age_refuses_zero_and_negative(value):
    with pytest.raises(ValueError, match="longer than zero"):
        parse_age(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_age_refuses_booleans(value):
    with pytest.raises(ValueError, match="not a duration"):
        parse_age(value)


def item(name, created, metadata=True):
    managed = {"format": "fleet.checkpoint/checkpoint", "created": created}
    return {"name": name, "created": created, "metadata": managed if metadata else {}, "path": name,
            "size": 0}


CHECKPOINTS = [item("c1", 100), item("c2", 200), item("docker", 250, metadata=False), item("c3", 300),
               item("c4", 400), item("new", 500)]


def test_keep_last_counts_the_new_checkpoint():
    assert select_pruned(CHECKPOINTS, "new", keep_last=2) == ["c1", "c2", "c3"]
    assert select_pruned(CHECKPOINTS, "new", keep_last=3) == ["c1", "c2"]
    assert select_pruned(CHECKPOINTS, "new", keep_last=1) == ["c1", "c2", "c3", "c4"]
    assert select_pruned(CHECKPOINTS, "new", keep_last=5) == []
    assert select_pruned(CHECKPOINTS, "new", keep_last=50) == []


def test_max_age():
    assert select_pruned(CHECKPOINTS, "new", max_age=250, now=600) == ["c1", "c2", "c3"]
    assert select_pruned(CHECKPOINTS, "new", max_age=300, now=600) == ["c1", "c2"]  # exactly max_age stays
    assert select_pruned(CHECKPOINTS, "new", max_age=10000, now=600) == []


def test_checkpoints_without_metadata_are_never_candidates():
    only_docker = [item("docker-a", 1, metadata=False), item("docker-b", 2, metadata=False), item("new", 3)]
    assert select_pruned(only_docker, "new", keep_last=1, max_age=1, now=1000) == []
    assert "docker" not in select_pruned(CHECKPOINTS, "new", keep_last=1, max_age=1, now=1000)


def test_nothing_is_pruned_without_limits():
    assert select_pruned(CHECKPOINTS, "new") == []
    assert select_pruned(CHECKPOINTS, "new", max_age=10) == []  # max_age needs now


def test_max_age_never_prunes_keep_even_when_it_is_old():
    assert select_pruned(CHECKPOINTS, "c1", max_age=1, now=10000) == ["c2", "c3", "c4", "new"]


def test_either_limit_prunes_when_both_are_given():
    assert select_pruned(CHECKPOINTS, "new", keep_last=5, max_age=450, now=600) == ["c1"]  # by age
    assert select_pruned(CHECKPOINTS, "new", keep_last=2, max_age=10000, now=600) == ["c1", "c2", "c3"]  # by count
    assert select_pruned(CHECKPOINTS, "new", keep_last=4, max_age=350, now=600) == ["c1", "c2"]  # age wins
    assert select_pruned(CHECKPOINTS, "new", keep_last=3, max_age=450, now=600) == ["c1", "c2"]  # count wins


def test_keep_is_never_pruned_even_when_it_is_not_the_newest():
    pruned = select_pruned(CHECKPOINTS, "c2", keep_last=1)
    assert "c2" not in pruned
    assert pruned == ["c1", "c3", "c4", "new"]


def test_pruned_names_come_oldest_first_with_name_as_tie_breaker():
    tied = [item("b", 100), item("a", 100), item("new", 200)]
    assert select_pruned(tied, "new", keep_last=1) == ["a", "b"]
    assert select_pruned(tied, "new", keep_last=2) == ["a"]


def test_a_checkpoint_with_metadata_but_not_made_here_is_never_pruned():
    foreign = {"name": "cli", "created": 1, "metadata": {"last_restore": {"at": 5}}, "path": "cli", "size": 0}
    assert select_pruned([foreign, item("new", 400)], "new", keep_last=1, max_age=10, now=1000) == []
