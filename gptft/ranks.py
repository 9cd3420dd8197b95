"""Several processes, one run: which process this is, one run-folder stamp they all agree on, and values
gathered from every rank.

Ranks are started three ways: by Lightning itself (`strategy=ddp`: the first process re-runs the command
for the others and hands them its `hydra.run.dir`), by torchrun, or by SLURM (srun / submitit, one task
per rank). Before Lightning connects them only the environment tells them apart; each resolves the config
itself, so the `${now:}` of the run folder would differ. `${gptft_stamp:PATTERN}` is the same on every rank:
GPTFT_RUN_STAMP when set (any other launcher), torchrun: rank 0's time shared through torchrun's own store,
SLURM: the job and step id; otherwise (one process) the time.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from omegaconf import OmegaConf

STAMP_ENV = "GPTFT_RUN_STAMP"


def _env_int(name: str, default: int = 0) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default


def slurm_tasks() -> int:
    """Tasks of this SLURM job step that are ranks of one run (1 outside SLURM)."""
    return _env_int("SLURM_NTASKS", 1) if "SLURM_JOB_ID" in os.environ else 1


def is_first_rank() -> bool:
    """Whether this process is rank 0 (or the only one), read from what the launchers set: torchrun RANK, SLURM
    SLURM_PROCID, Lightning's own launcher LOCAL_RANK and NODE_RANK."""
    if "RANK" in os.environ:
        return _env_int("RANK") == 0
    if slurm_tasks() > 1:
        return _env_int("SLURM_PROCID") == 0
    return _env_int("LOCAL_RANK") == 0 and _env_int("NODE_RANK") == 0


def started_by_torchrun() -> bool:
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and _env_int("WORLD_SIZE", 1) > 1


def _torchrun_agreed(stamp: str) -> str:
    """Rank 0's stamp, through the store torchrun's agent keeps for its workers (MASTER_ADDR:MASTER_PORT)."""
    import torch.distributed  # here, not at the top: every command imports this module, most never need torch

    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], _env_int("MASTER_PORT"), is_master=False,
                                       timeout=timedelta(minutes=10))
    key = f"gptft/run_stamp/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if is_first_rank():
        store.set(key, stamp)
    return store.get(key).decode()


def run_stamp(pattern: str) -> str:
    """The run folder's stamp, the same on every rank of one run (see the module docstring)."""
    if os.environ.get(STAMP_ENV):
        return os.environ[STAMP_ENV]
    stamp = datetime.now().strftime(pattern)
    if started_by_torchrun():
        return _torchrun_agreed(stamp)
    if slurm_tasks() > 1:
        step = os.environ.get("SLURM_STEP_ID")
        return f"slurm-{os.environ['SLURM_JOB_ID']}" + (f".{step}" if step else "")
    return stamp


OmegaConf.register_new_resolver("gptft_stamp", run_stamp, use_cache=True, replace=True)


def gathered(trainer, values: list[float]) -> list[list[float]]:
    """`values` from every rank, in rank order (one row when there is one process)."""
    if trainer.world_size == 1:
        return [list(values)]
    import torch.distributed

    rows: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(rows, list(values))
    return rows
