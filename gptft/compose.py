"""`conf/train.yaml` composed with overrides, as `python -m gptft.train` composes it, for the Python API and the
commands that take train's `model=` / `model.*` keys (generate, evaluate). A bad override is one ConfigError."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import ranks  # noqa: F401  (registers ${gptft_stamp:}, which hydra.run.dir uses)
from .errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def model_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def split_model_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(model=... / model.*=... arguments, the rest): the model keys go to Hydra, as in train."""
    model = [a for a in argv if a.split("=", 1)[0] == "model" or a.startswith("model.")]
    return model, [a for a in argv if a not in model]


def compose_train(overrides: list[str] | tuple[str, ...], hydra_node: bool = False) -> DictConfig:
    """The config `python -m gptft.train <overrides>` runs with; `hydra_node`: with its `hydra` node (job name
    `train`, as the command's)."""
    overrides = list(overrides)
    names = [a.split("=", 1)[1] for a in overrides if a.startswith("model=")]
    # checked here: Hydra's own answer to an unknown name spans many lines
    if names and names[-1] not in model_names():
        raise ConfigError(f"unknown model={names[-1]!r}; valid (conf/model): {', '.join(model_names())}")
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
            return compose("train", overrides=overrides, return_hydra_config=hydra_node)
    except (HydraException, OmegaConfBaseException) as err:
        reason = " ".join(str(err).split())  # Hydra's message spans lines
        named = [a for a in overrides if f"'{a.split('=', 1)[0].lstrip('+~')}'" in reason]
        hint = ""
        if any(a.startswith("model.") for a in overrides):
            keys = OmegaConf.load(CONF / "model" / f"{(names or ['gpt2'])[-1]}.yaml")
            hint = f"; the model keys (as in train): {', '.join('model.' + k for k in keys)}"
        raise ConfigError(f"{' '.join(named or overrides)}: {reason}{hint}") from None
