"""Every config composes and instantiates; struct mode refuses a misspelt key; unknown group names fail
with Hydra's list of valid options."""
import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from gptft.models.build import ARCHS
from gptft.runtime import cpu_bf16_is_fast, resolve_trainer_kwargs

CONF = str(Path(__file__).resolve().parents[1] / "conf")
GROUPS = {g: sorted(p.stem for p in (Path(CONF) / g).glob("*.yaml"))
          for g in ("task", "model", "device", "experiment", "optimizer", "scheduler", "callbacks", "logger")}


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["run_dir=/tmp/x", *overrides])


def test_groups_hold_the_contract_names():
    assert GROUPS["task"] == ["instruct", "spam"]
    assert {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt2-tiny"} <= set(GROUPS["model"])
    assert {"auto", "cpu", "gpu", "mps", "cpu-ddp", "gpu-ddp", "gpu-fsdp"} == set(GROUPS["device"])
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
    assert cfg.trainer.accelerator == device.split("-")[0]
    assert cfg.trainer.strategy == {"ddp": "ddp", "fsdp": "fsdp"}.get(device.partition("-")[2], "auto")
    if precision == "16":
        with pytest.raises(ValueError, match="needs a GPU"):
            resolve_trainer_kwargs({**cfg.trainer, "accelerator": "cpu"})
    else:
        auto = "bf16-mixed" if cpu_bf16_is_fast() else "32-true"  # this CPU's own answer, probed
        want = {"32": "32-true", "bf16": "bf16-mixed", "auto": auto}[precision]
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


def test_recipe_groups():
    assert {"adamw", "sgd"} <= set(GROUPS["optimizer"])
    assert {"constant", "cosine", "linear"} <= set(GROUPS["scheduler"])
    assert {"tensorboard", "csv", "mlflow", "many"} <= set(GROUPS["logger"])
    cfg = _compose()
    assert OmegaConf.to_container(cfg.optimizer) == {"_target_": "torch.optim.AdamW", "_partial_": True,
                                                     "lr": "${model.lr}", "weight_decay": 0.1, "fused": True}
    assert cfg.scheduler.shape == "constant" and list(cfg.logger) == ["tensorboard"]
    assert list(cfg.callbacks) == ["model_checkpoint", "early_stopping", "lr_monitor"]


def _combinations():
    """task x model x optimizer x scheduler in full (the groups that interpolate into each other: the rate
    comes from the model, the monitor from the task), each device and logger cycled through them so every
    device and logger meets every task and model. The full six-way product (1,536 compositions at 0.1-0.3 s
    each on the build machine) would cost CI minutes and test nothing more: device and logger read only
    run_dir, task.name and model.name."""
    recipes = list(itertools.product(GROUPS["optimizer"], GROUPS["scheduler"]))
    for j, (task, model) in enumerate(itertools.product(GROUPS["task"], GROUPS["model"])):
        for i, (optimizer, scheduler) in enumerate(recipes):
            device, logger = GROUPS["device"][i % 4], GROUPS["logger"][(i + j) % len(GROUPS["logger"])]
            yield task, model, device, optimizer, scheduler, logger


def test_every_recipe_composes_and_instantiates(tmp_path):
    from gptft.fit import instantiate_all

    combos = list(_combinations())
    seen = {g: set() for g in ("device", "logger")}
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for task, model, device, optimizer, scheduler, logger in combos:
            cfg = compose("train", overrides=[f"run_dir={tmp_path}", f"task={task}", f"model={model}",
                                              f"device={device}", f"optimizer={optimizer}", f"scheduler={scheduler}",
                                              f"logger={logger}"])
            seen["device"].add((task, model, device))
            seen["logger"].add((task, model, logger))
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # every interpolation resolves
            assert cfg.model.arch in ARCHS and get_class(cfg.task.module._target_) and get_class(cfg.data._target_)
            params = [torch.nn.Parameter(torch.ones(3))]
            opt = instantiate(cfg.optimizer)(params)
            assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1] and opt.defaults["lr"] == cfg.model.lr
            scheduler = instantiate(cfg.scheduler)(opt, total_steps=10)
            opt.step()
            scheduler.step()
            callbacks = instantiate_all(cfg.callbacks, "callbacks")
            assert [type(c).__name__ for c in callbacks] == ["BestAndLastCheckpoint", "EarlyStopping",
                                                              "LearningRateMonitor"]
            for name, node in cfg.logger.items():  # MLflow's client would create its database: resolve the class
                get_class(node._target_) if name == "mlflow" else instantiate(node)
            if device in ("cpu", "auto"):
                assert resolve_trainer_kwargs({**cfg.trainer, "accelerator": device})["precision"] == (
                    "bf16-mixed" if cpu_bf16_is_fast() else "32-true")
    pairs = len(GROUPS["task"]) * len(GROUPS["model"]) * 4
    assert len(combos) == 96 and len(seen["device"]) == len(seen["logger"]) == pairs


@pytest.mark.parametrize("task", GROUPS["task"])
def test_task_module_builds_on_a_tiny_backbone(task, tmp_path, shared_data, tokenizer):
    from gptft.models.build import build_backbone
    from gptft.tasks.factory import make_task
    from gptft.fit import build_datamodule

    cfg = _compose(f"task={task}", "model=gpt2-tiny", "task.sample_prompts=1")
    backbone, tok = build_backbone(cfg.model)
    dm = build_datamodule(cfg.data, tok, backbone.context_length)
    module = make_task(cfg, backbone, tok, dm)
    assert type(module).__name__ == cfg.task.module._target_.rsplit(".", 1)[1]
    assert module.meta["task_class"] == type(module).__name__ and module.test_splits == tuple(cfg.task.final_splits)
    if task == "spam":
        assert module.label_names == ["ham", "spam"] and module.meta["task_args"] == {
            "pooling": "last_token", "head_bias": True, "temperature": True, "threshold_precision": None}
    else:
        assert len(module.sample_prompts) == 1 and module.sample_tokens == cfg.task.sample_tokens == 64


@pytest.mark.parametrize("override", ["optimizer.fused=false", "data.positive_label=ham", "data.sep=';'",
                                      "data.split=[0.6,0.2,0.2]", "scheduler.warmup_ratio=0.1",
                                      "callbacks.early_stopping.patience=2", "callbacks.early_stopping=null",
                                      "logger=[tensorboard,csv,mlflow]"])
def test_keys_the_code_reads_are_settable_without_plus(override):
    _compose(override)


def test_instruct_keys_are_settable_without_plus():
    cfg = _compose("task=instruct", "task.sample_tokens=8", "task.targets_only=false")
    assert cfg.task.module.sample_tokens == 8 and cfg.task.module.targets_only is False


@pytest.mark.parametrize("typo", ["optimizer.lrr=1", "data.batchsize=4", "scheduler.warmup=3", "task.monitr=x"])
def test_struct_mode_refuses_a_misspelt_key(typo):
    with pytest.raises(ConfigCompositionException, match=typo.split("=")[0].rsplit(".", 1)[1]):
        _compose(typo)


def test_code_never_lifts_struct_mode():
    package = Path(__file__).resolve().parents[1] / "gptft"
    offenders = [str(p) for p in package.rglob("*.py") if "open_dict" in p.read_text() or "set_struct" in p.read_text()]
    assert not offenders


def test_a_logger_that_cannot_be_imported_is_one_config_error(tmp_path):
    from gptft.errors import ConfigError
    from gptft.fit import instantiate_all

    cfg = _compose("+logger.mine._target_=no_such_package.Logger")
    with pytest.raises(ConfigError, match=r"logger.mine: cannot import no_such_package.Logger .*install what it needs") as err:
        instantiate_all(cfg.logger, "logger")
    assert "\n" not in str(err.value)
