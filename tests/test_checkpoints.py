"""last.ckpt is the final state even when the last validation does not improve, and best.ckpt survives it."""
import lightning as L
import torch

from gptft.fit import fit_and_test
from helpers import compose_cfg

QUICK = ["task=spam", "model=gpt2-tiny", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


class FinalWeights(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.step = trainer.global_step


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _differing(state, final):
    return {k: v for k, v in state.items() if not torch.equal(v, final[k])}


def test_last_is_written_when_validation_does_not_improve(tmp_path):
    # lr=0: the second validation ties the first, so best.ckpt stays at step 5 while training reaches step 10
    final = FinalWeights()
    cfg = compose_cfg(tmp_path, *QUICK, "trainer.max_epochs=2", "trainer.limit_train_batches=5", "optimizer.lr=0",
                      "task.test_ckpt=last")
    metrics = fit_and_test(cfg, tmp_path, callbacks=(final,))
    ckpts = tmp_path / "checkpoints"
    assert not (ckpts / "last.ckpt").is_symlink()
    assert _load(ckpts / "best.ckpt")["global_step"] == 5
    assert _load(ckpts / "last.ckpt")["global_step"] == final.step == 10
    assert metrics["scored_ckpt"].endswith("last.ckpt")


def test_last_holds_the_steps_after_the_last_validation(tmp_path):
    # the book's schedule: validate every 5 steps, stop at step 7; last.ckpt must be the step-7 model
    final = FinalWeights()
    cfg = compose_cfg(tmp_path, *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=7",
                      "trainer.val_check_interval=5", "optimizer.lr=1e-3")
    fit_and_test(cfg, tmp_path, callbacks=(final,))
    best, last = _load(tmp_path / "checkpoints" / "best.ckpt"), _load(tmp_path / "checkpoints" / "last.ckpt")
    assert best["global_step"] == 5 and last["global_step"] == final.step == 7
    assert not _differing(last["state_dict"], final.state)  # every tensor equals the final model's
    assert _differing(best["state_dict"], final.state)      # best.ckpt still holds the older step-5 weights


def test_best_is_for_use_and_last_for_resuming_when_both_hold_the_newest_state(tmp_path):
    # best.ckpt: the trained tensors and metadata only; last.ckpt: the same tensors plus the optimizer, loop and
    # random generator states (it used to be a link to best.ckpt, when best.ckpt held the resume state too)
    final = FinalWeights()
    cfg = compose_cfg(tmp_path, *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=5")
    fit_and_test(cfg, tmp_path, callbacks=(final,))
    best, last = tmp_path / "checkpoints" / "best.ckpt", tmp_path / "checkpoints" / "last.ckpt"
    assert not last.is_symlink() and not best.is_symlink()
    best, last = _load(best), _load(last)
    assert "optimizer_states" not in best and "callbacks" not in best
    assert last["optimizer_states"] and last["callbacks"] and last["global_step"] == best["global_step"] == 5
    assert best["state_dict"].keys() == last["state_dict"].keys()
    assert not _differing(best["state_dict"], final.state) and not _differing(last["state_dict"], final.state)
    # small checkpoints: the frozen embedding and blocks stay in the backbone's source (here: the init seed)
    assert "backbone.transformer.wte.weight" in final.state and "backbone.transformer.wte.weight" not in best["state_dict"]
    assert best["gptft"]["backbone_ref"]["kind"] == "random" and best["gptft"]["frozen_included"] is False


class LastAtEpochStart(L.Callback):
    """The global step last.ckpt holds when each epoch starts, i.e. after the previous validation."""

    def __init__(self, path):
        self.path, self.steps = path, {}

    def on_train_epoch_start(self, trainer, pl_module):
        trainer.strategy.checkpoint_io.teardown()  # waits for the background writes (the next write restarts it)
        if self.path.exists():
            self.steps[trainer.current_epoch] = _load(self.path)["global_step"]


def test_resume_into_a_new_folder_keeps_best_and_refreshes_last(tmp_path):
    # lr=0 everywhere (the optimizer state, lr included, is resumed): every validation ties the first
    first = tmp_path / "first"
    fit_and_test(compose_cfg(first, *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=5", "optimizer.lr=0"),
                 first)
    older = _load(first / "checkpoints" / "last.ckpt")  # as written before task.head_bias existed: resumes as true
    del older["gptft"]["task_args"]["head_bias"]
    torch.save(older, first / "checkpoints" / "last.ckpt")
    second = tmp_path / "second"
    probe = LastAtEpochStart(second / "checkpoints" / "last.ckpt")
    cfg = compose_cfg(second, *QUICK, "trainer.max_epochs=3", "trainer.limit_train_batches=5", "optimizer.lr=0",
                      f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    metrics = fit_and_test(cfg, second, callbacks=(probe,))
    # a tie is no improvement: the first run's best.ckpt stays the best, nothing worse replaces it
    assert metrics["best_ckpt"] == str(first / "checkpoints" / "best.ckpt") and (first / "checkpoints" / "best.ckpt").is_file()
    assert not (second / "checkpoints" / "best.ckpt").exists()
    assert probe.steps == {2: 10}  # refreshed after the non-improving validation at step 10, not only at the end
    assert _load(second / "checkpoints" / "last.ckpt")["global_step"] == 15
    assert metrics["checkpoint_write_s"] > 0


def test_background_writes_hold_the_state_at_save_time_and_report_failures(tmp_path):
    # pins Lightning's (experimental) AsyncCheckpointIO as gptft uses it: the tensors are copied on the
    # calling thread, so training may change them while the file is written; a failed write is raised later
    import pytest

    from gptft.checkpoint_io import background_atomic_io

    io = background_atomic_io()
    weights = torch.arange(1_000_000, dtype=torch.float32)
    io.save_checkpoint({"state_dict": {"w": weights}}, tmp_path / "last.ckpt")
    weights.add_(1)  # the next training step, while the write may still run
    io.teardown()
    assert torch.equal(_load(tmp_path / "last.ckpt")["state_dict"]["w"], torch.arange(1_000_000, dtype=torch.float32))

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(FileExistsError):  # raised by the next write, or when training ends
        io.save_checkpoint({"w": weights}, blocked / "last.ckpt")
        io.teardown()
