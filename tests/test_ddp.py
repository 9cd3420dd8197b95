"""Several processes give the numbers of one: DDP on the CPU (gloo, 2 processes, gpt2-tiny), launched by
Lightning itself and by torchrun. Every split is scored once (no padded duplicates), metrics.json and the
summary come from rank 0 alone, all ranks share one run folder, and the scores equal a one-process
rescoring of the same best.ckpt bit for bit. Multi-process settings that cannot work are refused in one line.

Each rank runs one thread (OMP_NUM_THREADS=1): two ranks on two cores must not fight over them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from gptft.data.collate import EpochShuffle, EvalBatches
from gptft.tasks.factory import datamodule_from_meta, load_checkpoint
from helpers import subset_csv, torch_threads

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["model=gpt2-tiny", "precision=32", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# 60 SMS messages (train 42 / val 6 / test 12): in batches of 4, every split has at least 2 batches per process
SPAM = ["task=spam", "data.batch_size=4", "trainer.max_epochs=2", "trainer.limit_train_batches=3", *QUIET]
# the first 80 instructions (train 68 / test 8 / val 4), batches of 2
INSTRUCT = ["task=instruct", "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "task.sample_prompts=0", *QUIET]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def run(cwd: Path, *args: str, launcher: tuple[str, ...] = ("-m",)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("GPTFT_RUN_STAMP", None)
    return subprocess.run([sys.executable, *launcher, "gptft.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def only_run_folder(outputs: Path) -> Path:
    runs = [p for p in outputs.iterdir()]
    assert len(runs) == 1, runs  # every rank wrote into the one folder
    return runs[0]


def rescored(ckpt: Path, splits: list[str]) -> dict:
    """The checkpoint's scores on `splits` in this one process (one thread, fp32, no prefix cache)."""
    task, tokenizer, meta = load_checkpoint(ckpt)
    dm = datamodule_from_meta(meta, tokenizer, task.backbone.context_length, ckpt)
    dm.setup()
    task.test_splits = tuple(splits)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision="32-true")
    with torch_threads(1):
        trainer.test(task, dataloaders=[dm.eval_dataloader(s) for s in splits], verbose=False)
    return task.final


def check_one_run(proc: subprocess.CompletedProcess, outputs: Path, task: str, sizes: dict) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"gptft {task} with gpt2-tiny: done in") == 1  # one summary, from rank 0
    assert "on 2 processes" in proc.stdout
    folder = only_run_folder(outputs)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["peak_rss_mib_per_process"]) == 2
    counted = {s: d.get("n", d.get("tokens")) for s, d in metrics["splits"].items()}
    assert {s: counted[s] for s in sizes} == sizes  # each example once: no padding duplicates
    splits = list(metrics["splits"])
    assert rescored(Path(metrics["best_ckpt"]), splits) == metrics["splits"]  # every number, bit for bit
    return metrics


@pytest.fixture(scope="module")
def spam_csv(shared_data, tmp_path_factory):
    return subset_csv(shared_data, tmp_path_factory.mktemp("data") / "sms60.csv", per_class=30)


@pytest.fixture(scope="module")
def instruct_json(shared_data, tmp_path_factory):
    entries = json.loads((shared_data / "instruction-data.json").read_text(encoding="utf-8"))[:80]
    path = tmp_path_factory.mktemp("data") / "instructions80.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_spam_ddp_with_bucketing_scores_like_one_process(tmp_path, spam_csv):
    # Lightning's own launcher (device=cpu-ddp: 2 processes, gloo) re-runs the command for rank 1
    proc = run(tmp_path, *SPAM, f"data.path={spam_csv}", "device=cpu-ddp", "data.bucket=true")
    metrics = check_one_run(proc, tmp_path / "outputs" / "spam", "spam", {"val": 6, "test": 12, "train": 42})
    assert metrics["prefix_cache"]["processes"] == 2 and metrics["prefix_cache"]["examples"] >= 42


def test_torchrun_instruct_run_writes_one_folder_and_scores_like_one_process(tmp_path, instruct_json):
    # torchrun starts both ranks; each resolves the config itself, and they agree on one run folder
    proc = run(tmp_path, *INSTRUCT, f"data.path={instruct_json}", *DDP,
               launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"))
    metrics = check_one_run(proc, tmp_path / "outputs" / "instruct", "instruct", {})  # tokens: as rescored
    assert set(metrics["splits"]) == {"val", "test"} and all(d["tokens"] > 0 for d in metrics["splits"].values())


def test_slurm_style_ranks_share_the_job_folder(tmp_path, spam_csv):
    # the environment srun gives 2 tasks of one job step; each task is a rank that composes the config itself
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
             "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "gptft", "SLURM_NODELIST": "localhost"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **slurm}
    procs = [subprocess.Popen([sys.executable, "-m", "gptft.train", *SPAM, "trainer.max_epochs=1",
                               f"data.path={spam_csv}", *DDP], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)})
             for r in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert [out.count("gptft spam with gpt2-tiny: done in") for out, _ in outs] == [1, 0]
    folder = only_run_folder(tmp_path / "outputs" / "spam")
    assert folder.name == "slurm-4242.0" and (folder / "metrics.json").is_file()


def test_ddp_spawn_is_refused_in_one_line(tmp_path, spam_csv):
    proc = run(tmp_path, *SPAM, f"data.path={spam_csv}", "trainer.strategy=ddp_spawn", "trainer.devices=2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer.strategy=ddp_spawn trains in worker "
                                                           "processes")
    assert "use trainer.strategy=ddp" in proc.stderr and not (tmp_path / "outputs" / "spam").exists()


def test_a_sweep_with_self_launched_ranks_is_refused_in_one_line(tmp_path, spam_csv):
    proc = run(tmp_path, "-m", *SPAM, f"data.path={spam_csv}", "device=cpu-ddp", "seed=1,2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: -m with trainer.strategy=DDPStrategy on 2 processes") and "submitit" in last
    sweeps = list((tmp_path / "outputs" / "spam" / "multirun").iterdir())
    assert len(sweeps) == 1 and not list(sweeps[0].glob("*/metrics.json"))  # no second sweep, no job results


# ---- the samplers, without training

def test_ranks_share_each_epoch_without_overlap():
    data = list(range(21))
    ranks = [EpochShuffle(data, seed=5, rank=r, world_size=2) for r in range(2)]
    one = EpochShuffle(data, seed=5)
    for epoch in (0, 1):
        for s in (*ranks, one):
            s.set_epoch(epoch)
        parts = [list(s) for s in ranks]
        assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == 10
        assert sorted(parts[0] + parts[1]) == sorted(list(one)[:20])  # one process's order, the remainder dropped


@pytest.mark.parametrize("n, batch, world", [(13, 4, 2), (13, 4, 3), (5, 8, 2), (4, 8, 3), (8, 4, 1)])
def test_eval_batches_score_every_example_once(n, batch, world):
    shares = [list(EvalBatches(n, batch, r, world)) for r in range(world)]
    assert all(shares)  # every rank has work: none waits alone at the end
    examples = sorted(i for share in shares for b in share for i in b)
    assert examples == list(range(n))
    if -(-n // batch) >= world:  # the batches of one process, dealt out
        assert sorted(b for share in shares for b in share) == list(EvalBatches(n, batch))
    lengths = [(7 * i) % 5 for i in range(n)]  # with lengths: the same, longest first
    shares = [list(EvalBatches(n, batch, r, world, lengths)) for r in range(world)]
    assert sorted(i for share in shares for b in share for i in b) == list(range(n)) and all(shares)
    one = [i for b in EvalBatches(n, batch, lengths=lengths) for i in b]
    assert one == sorted(range(n), key=lambda i: -lengths[i])
    shares = [list(EvalBatches(n, batch, r, world, lengths, max_tokens=12)) for r in range(world)]
    assert sorted(i for share in shares for b in share for i in b) == list(range(n)) and all(shares)
    budget = [list(b) for b in EvalBatches(n, batch, lengths=lengths, max_tokens=12)]
    assert [i for b in budget for i in b] == one  # the same order, cut into batches of up to 12 tokens
    assert all(len(b) >= min(batch, n) or b is budget[-1] for b in budget)
    assert all(len(b) == batch or len(b) * max(lengths[i] for i in b) <= 12 for b in budget[:-1])
    many = list(EvalBatches(100, 4, lengths=[1] * 100, max_tokens=1000))  # the budget would allow one batch
    assert len(many) == 8 and max(map(len, many)) == 13  # at least 8 batches: 8 processes share them
