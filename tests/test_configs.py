"""Every config composes; unknown group names fail with Hydra's list of valid options."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException

from gptft.runtime import resolve_trainer_kwargs

CONF = str(Path(__file__).resolve().parents[1] / "conf")
GROUPS = {g: sorted(p.stem for p in (Path(CONF) / g).glob("*.yaml"))
          for g in ("task", "model", "device", "experiment")}


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["run_dir=/tmp/x", *overrides])


def test_groups_hold_the_contract_names():
    assert GROUPS["task"] == ["instruct", "spam"]
    assert {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt2-tiny"} <= set(GROUPS["model"])
    assert GROUPS["device"] == ["auto", "cpu", "gpu", "mps"]
    assert {"book-ch06", "book-ch07"} <= set(GROUPS["experiment"])


@pytest.mark.parametrize("task", GROUPS["task"])
@pytest.mark.parametrize("model", GROUPS["model"])
def test_task_model_compose(task, model):
    cfg = _compose(f"task={task}", f"model={model}")
    assert cfg.task.name == task and cfg.model.name == model
    assert cfg.data._target_.endswith({"spam": "SpamDataModule", "instruct": "InstructDataModule"}[task])
    assert cfg.model.arch in ("gpt2", "llama")


@pytest.mark.parametrize("device", GROUPS["device"])
@pytest.mark.parametrize("precision", ["32", "bf16", "16", "auto"])
def test_device_precision_compose(device, precision):
    cfg = _compose(f"device={device}", f"precision={precision}")
    assert cfg.trainer.accelerator == {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "mps": "mps"}[device]
    if precision == "16":
        with pytest.raises(ValueError, match="needs a GPU"):
            resolve_trainer_kwargs({**cfg.trainer, "accelerator": "cpu"})
    else:
        want = {"32": "32-true", "bf16": "bf16-mixed", "auto": "bf16-mixed"}[precision]
        assert resolve_trainer_kwargs({**cfg.trainer, "accelerator": "cpu"})["precision"] == want


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_experiments_compose(experiment):
    cfg = _compose(f"experiment={experiment}")
    if experiment == "book-ch06":
        assert cfg.pooling == "last" and cfg.data.pad_to == "longest_train"
        assert cfg.finetune.cache_prefix is False and str(cfg.trainer.precision) == "32"
        assert cfg.trainer.val_check_interval == 50 and cfg.trainer.limit_val_batches == 5
    if experiment == "book-ch07":
        assert cfg.task.name == "instruct" and cfg.model.name == "gpt2-medium"
        assert cfg.finetune.mode == "full" and cfg.data.mask_prompt is False and cfg.trainer.max_epochs == 2


def test_task_defaults_follow_the_book():
    spam, instruct = _compose("task=spam"), _compose("task=instruct")
    assert (spam.trainer.max_epochs, instruct.trainer.max_epochs) == (5, 2)
    for cfg in (spam, instruct):
        assert cfg.optimizer.lr == 5e-5 and cfg.optimizer.weight_decay == 0.1 and cfg.data.batch_size == 8
        assert cfg.finetune.mode == "last_blocks" and cfg.finetune.trainable_blocks == 1


@pytest.mark.parametrize("group,bad", [("task", "spma"), ("model", "gpt3"), ("device", "tpu")])
def test_unknown_names_list_the_valid_ones(group, bad):
    with pytest.raises((MissingConfigException, HydraException)) as err:
        _compose(f"{group}={bad}")
    msg = str(err.value)
    assert bad in msg and "Available options" in msg
    for valid in GROUPS[group]:
        assert valid in msg
