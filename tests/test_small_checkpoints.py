"""Small checkpoints (the default) refer to the frozen backbone's source by path and sha256; loading re-reads it
and refuses, in one line, a source that is missing or changed. checkpoint.full=true keeps self-contained files.
Real formats: a transformers-written GPT-2 (safetensors and pytorch_model.bin) and the shared SmolLM2 GGUF."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gptft.checks import check_resume
from gptft.classify import classify
from gptft.errors import CheckpointError
from gptft.models import reference
from gptft.models.build import build_backbone
from gptft.tasks.factory import load_checkpoint
from gptft.fit import fit_and_test
from helpers import compose_cfg

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["task=spam", "model=gpt2-tiny", "model.pretrained=true", "trainer.max_epochs=1",
         "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "task.final_splits=[test]", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=csv", "optimizer.lr=1e-3"]
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "see you at 5"]


def _hf_gpt2(folder: Path, safe: bool = True, seed: int = 0) -> Path:
    """A random 2-layer GPT-2 written by transformers' own save_pretrained (safetensors), or its state_dict
    saved as pytorch_model.bin, the format of older Hub repositories."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    if safe:
        return folder / "model.safetensors"
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    """The same training twice on a GPT-2 safetensors file: small checkpoints, and checkpoint.full=true."""
    root = tmp_path_factory.mktemp("small")
    weights = _hf_gpt2(root / "gpt2")
    out = {}
    for name, extra in (("small", []), ("full", ["checkpoint.full=true"])):
        fit_and_test(compose_cfg(root / name, *QUICK, f"model.checkpoint={weights}", *extra), root / name)
        out[name] = root / name / "checkpoints"
    return weights, out


def _probs(ckpt: Path) -> list[dict]:
    task, tok, _ = load_checkpoint(ckpt, expect_task="spam")
    return [r["probs"] for r in classify(task, tok, TEXTS)]


def _classify(ckpt: Path):
    env = {**os.environ, "GPTFT_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "gptft.classify", f"ckpt={ckpt}", f"text={TEXTS[0]}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_small_refers_to_the_file_and_full_holds_it(runs):
    weights, ckpts = runs
    small, full = (torch.load(ckpts[k] / "best.ckpt", map_location="cpu", weights_only=True) for k in ("small", "full"))
    ref = small["gptft"]["backbone_ref"]
    assert ref["kind"] == "files" and ref["files"] == [
        {"path": str(weights), "size": weights.stat().st_size, "sha256": reference.file_sha256(weights)}]
    assert small["gptft"]["frozen_included"] is False and full["gptft"]["frozen_included"] is True
    assert set(small["state_dict"]) < set(full["state_dict"])  # the frozen embedding and first block are left out
    assert all(torch.equal(t, full["state_dict"][k]) for k, t in small["state_dict"].items())  # same training
    for name in ("best.ckpt", "last.ckpt"):
        assert (ckpts["small"] / name).stat().st_size * 10 < (ckpts["full"] / name).stat().st_size
    assert _probs(ckpts["small"] / "best.ckpt") == _probs(ckpts["full"] / "best.ckpt")


def test_a_changed_or_missing_backbone_file_is_refused_in_one_line(runs):
    weights, ckpts = runs
    expected = reference.file_sha256(weights)
    before = _probs(ckpts["full"] / "best.ckpt")
    original = weights.read_bytes()
    try:
        changed = bytearray(original)
        changed[-1] ^= 0xFF  # the same size: only the hash tells
        weights.write_bytes(bytes(changed))
        out = _classify(ckpts["small"] / "best.ckpt")
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert lines[0].startswith("error: ") and str(weights) in lines[0] and expected in lines[0]
        assert "changed since training" in lines[0] and reference.file_sha256(weights) in lines[0]

        weights.unlink()
        out = _classify(ckpts["small"] / "best.ckpt")
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "does not exist" in lines[0], out.stderr[-2000:]
        assert str(weights) in lines[0] and expected in lines[0]
        # a full checkpoint needs no backbone file: it round-trips to the same predictions
        assert _probs(ckpts["full"] / "best.ckpt") == before
    finally:
        weights.write_bytes(original)
    assert _probs(ckpts["small"] / "best.ckpt") == before


def test_resume_needs_last_and_the_same_backbone(runs, tmp_path):
    weights, ckpts = runs
    with pytest.raises(CheckpointError, match="resume from the last.ckpt beside it"):
        check_resume(ckpts["small"] / "best.ckpt")
    check_resume(ckpts["small"] / "last.ckpt")
    other = _hf_gpt2(tmp_path / "other", seed=1)  # the same shape, other weights
    cfg = compose_cfg(tmp_path, *QUICK, "trainer.max_epochs=2", f"model.checkpoint={other}",
                      f"ckpt_path={ckpts['small'] / 'last.ckpt'}")
    with pytest.raises(CheckpointError, match="the frozen backbone differs"):
        fit_and_test(cfg, tmp_path / "run")


def _reloaded(cfg_overrides: list[str], tmp_path: Path):
    """A backbone built as training builds it, and the one its reference re-creates."""
    cfg = compose_cfg(tmp_path, *cfg_overrides)
    torch.manual_seed(cfg.seed)  # as training seeds before it builds the backbone
    backbone, _ = build_backbone(cfg.model)
    meta = {"arch": backbone.arch, "backbone_config": asdict(backbone.config),
            "model": dict(cfg.model), "backbone_ref": reference.describe(backbone, cfg.seed, cfg.model.hub_id)}
    return backbone, meta, reference.rebuild(meta, tmp_path / "x.ckpt")


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_pytorch_bin_file_is_referenced_and_reread(tmp_path):
    weights = _hf_gpt2(tmp_path / "gpt2", safe=False)
    backbone, meta, again = _reloaded(["model=gpt2-tiny", "model.pretrained=true", f"model.checkpoint={weights}"],
                                      tmp_path)
    assert meta["backbone_ref"]["files"][0]["path"] == str(weights) and _same(backbone, again)


def test_the_gguf_backbone_is_referenced_by_path_and_sha256(shared_gguf, tmp_path):
    backbone, meta, again = _reloaded(["model=smollm2-135m-instruct", f"model.checkpoint={shared_gguf}"], tmp_path)
    (entry,) = meta["backbone_ref"]["files"]
    assert entry["path"] == str(shared_gguf) and entry["size"] == shared_gguf.stat().st_size
    assert len(entry["sha256"]) == 64 and _same(backbone, again)


def test_a_random_backbone_is_recreated_from_its_seed(tmp_path):
    backbone, meta, again = _reloaded(["model=gpt2-tiny", "seed=7"], tmp_path)
    assert meta["backbone_ref"]["kind"] == "random" and meta["backbone_ref"]["seed"] == 7 and _same(backbone, again)
    meta["backbone_ref"]["seed"] = 8
    with pytest.raises(CheckpointError, match="re-created from seed 8"):
        reference.rebuild(meta, tmp_path / "x.ckpt")
