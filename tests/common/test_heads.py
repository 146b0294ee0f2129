"""Tests for the task interface (common.tasks) and the heads' building blocks."""

import pytest
import torch

from common.config import load_config
from common.heads import SequenceClassifier, masked_mean
from common.registry import RegistryError
from common.tasks import TASKS, Task, get_task


def test_registry_builds_ar_and_rejects_unknown_names():
    assert "ar" in TASKS and "attacker" not in TASKS  # attackers are the evaluation's own
    config = load_config(None, ["heads.num_actions=5"])
    head = get_task("ar").build_head(16, config)
    assert head(torch.randn(3, 4, 16)).shape == (3, 5)
    with pytest.raises(RegistryError, match=r"unknown task 'pose'.*ar, tad"):
        get_task("pose")

    class Another(type(get_task("ar"))):
        pass

    with pytest.raises(RegistryError, match="already registered"):
        TASKS.register("ar")(Another())
    TASKS.register("ar")(type(get_task("ar"))())  # the same definition again: a reload
    assert type(get_task("ar")).__name__ == "ActionRecognition"


def test_every_registered_task_implements_the_interface_and_names_its_metrics():
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.test_key == f"{name}_{task.metric}"
        assert task.val_key == f"{name}_val_{task.metric}"


def test_masked_mean_averages_valid_positions_only():
    features = torch.randn(2, 5, 8)
    mask = torch.tensor([[False, False, True, True, True], [False] * 5])
    pooled = masked_mean(features, mask)
    torch.testing.assert_close(pooled[0], features[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], features[1].mean(0))
    head = SequenceClassifier(8, 3)
    torch.testing.assert_close(head(features, mask)[0], head(features[:1, :2])[0])


def test_the_ar_loss_is_cross_entropy_and_its_budget_groups_are_the_actions():
    task = get_task("ar")
    head = SequenceClassifier(8, 3)
    features, actions = torch.randn(4, 2, 8), torch.tensor([0, 2, 1, 2])
    loss = task.loss(head, features, {"action": actions})
    expected = torch.nn.functional.cross_entropy(head(features), actions)
    torch.testing.assert_close(loss, expected)
    assert task.budget_groups({"action": actions}) is actions
    assert task.labels({"labels": {"action": 2, "action_name": "wave"}}) == {"action": 2}


def test_unknown_tasks_in_the_config_are_refused_with_the_registered_ones():
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=r"tasks.seen.*unknown task 'tadd'.*ar"):
        load_config(None, ["tasks.seen.tadd=1"])
    with pytest.raises(ConfigError, match="moved to tasks.seen"):
        load_config(None, ["heads.tasks=ar"])
    assert load_config(None, ["tasks.seen.ar=0.5"]).tasks.seen == {"ar": 0.5}
