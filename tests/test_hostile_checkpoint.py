"""A checkpoint is data: metadata naming code (a Hydra `_target_`, a class outside gptft's allow-lists,
keys a class does not take) is refused with one line and exit 2, and nothing it names ever runs.
The checkpoints are real gptft checkpoints (gpt2-tiny, the real SMS file) with their metadata edited."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from gptft.evaluate import main as evaluate
from gptft.tasks.factory import load_checkpoint
from gptft.train import train
from helpers import compose_cfg

QUICK = ["task=spam", "model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
         "task.final_splits=[test]", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "logger=csv"]


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("run")
    train(compose_cfg(run, *QUICK))
    return torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)


def _hostile(real_ckpt, folder, edit):
    ckpt = {**real_ckpt, "gptft": copy.deepcopy(real_ckpt["gptft"])}
    edit(ckpt["gptft"])
    path = folder / "hostile.ckpt"
    torch.save(ckpt, path)
    return path


def _run(module, *args):
    env = {**os.environ, "GPTFT_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, env=env)


def test_a_target_in_the_metadata_writes_nothing(real_ckpt, tmp_path):
    target = tmp_path / "pwned.pth"
    payload = {"_target_": "pathlib.Path.write_text", "self": str(target), "data": "import os"}

    def edit(meta):
        meta["data_args"]["path"] = payload
        meta["data_cfg"] = {"_target_": "gptft.data.spam.SpamDataModule", "path": payload}  # the old key, too

    ckpt = _hostile(real_ckpt, tmp_path, edit)
    for module, args in (("gptft.evaluate", [f"ckpt={ckpt}"]), ("gptft.classify", [f"ckpt={ckpt}", "text=hi"])):
        out = _run(module, *args)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "_target_ is not allowed" in lines[0], lines
        assert str(ckpt) in lines[0] and "Traceback" not in out.stderr
        assert not target.exists()
    assert not any(tmp_path.glob("eval*"))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(task_class="os.system"), "names the task class 'os.system', which is not one of gptft's"),
    (lambda m: m.update(data_class="pathlib.Path"), "names the data module 'pathlib.Path', which is not one of"),
    (lambda m: m["data_args"].update(exec="print(1)"), "data_args has keys ['exec'] that SpamDataModule does not take"),
    (lambda m: m["task_args"].update(pooling=["last"], hook="x"), "task_args has keys ['hook'] that ClassifierTask"),
    (lambda m: m.update(arch="subprocess"), "unknown backbone architecture 'subprocess'"),
    (lambda m: m.pop("task_class"), "lacks ['task_class'] in its gptft metadata"),
])
def test_names_outside_the_allow_lists_are_refused(real_ckpt, tmp_path, edit, message):
    ckpt = _hostile(real_ckpt, tmp_path, edit)
    with pytest.raises(SystemExit) as err:
        evaluate([f"ckpt={ckpt}", f"out={tmp_path / 'eval'}"])
    assert err.value.code == 2 and message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "eval").exists()


def test_the_real_checkpoint_still_loads(real_ckpt, tmp_path):
    ckpt = _hostile(real_ckpt, tmp_path, lambda m: None)
    task, _, meta = load_checkpoint(ckpt, expect_task="spam")
    assert type(task).__name__ == meta["task_class"] == "ClassifierTask" and task.pooling == "last_token"
