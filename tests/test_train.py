"""Training end to end on tiny inputs: run folder, checkpoints, TensorBoard, model file, resume,
interruption, divergence, experiments, export and 2-process DDP on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastns.errors import ConfigError, FastnsError
from fastns.losses import droplet_loss
from fastns.modelfile import load_model
from fastns.module import run_shifted
from fastns.train import build, train
from fastns.transformer import DEFAULT_BORDER, PaddedNet, norm_inputs

from .conftest import CONFIGS, ROOT, compose, make_photo
from .conftest import run_script as run_any_script

TRAIN = ROOT / "scripts" / "train.py"
EXPORT = ROOT / "scripts" / "export.py"


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(10):
        make_photo(root / f"{i:02d}.jpg", size=(48 + 3 * i, 40), seed=i)
    return root


def tiny(photos: Path, style_file: Path, run_dir: Path, steps: int = 4) -> list[str]:
    """Overrides that make a training run take a few seconds on a CPU: the debug=tiny config."""
    return [
        "debug=tiny",
        f"data.root={photos}",
        f"style.image={style_file}",
        f"trainer.max_steps={steps}",
        f"run_dir={run_dir}",
    ]


#: For tests that compare two forwards of a network in training: each would draw its own input noise.
NO_NOISE = "model.input_noise=0"


def start_training(args: list[str], cwd: Path) -> subprocess.Popen:
    """``scripts/train.py args`` as a separate process (signals reach it as they reach a user's run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(TRAIN), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """Wait until ``ready()`` while ``proc`` runs; fail if it ends or takes longer than ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "training did not get there"
        time.sleep(0.2)


def run_cli(script: Path, args: list[str], monkeypatch) -> int:
    return run_any_script(script, args, monkeypatch)[0]


def events(run_dir: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


@pytest.mark.integration
def test_cli_training_writes_run_folder_and_resumes(tmp_path, photos, style_file, monkeypatch):
    run_dir = tmp_path / "run"
    args = [*tiny(photos, style_file, run_dir)[:-1], f"hydra.run.dir={run_dir}"]
    assert run_cli(TRAIN, args, monkeypatch) == 0

    # The resolved config, checkpoints (periodic and last), events and the model file.
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step_000002.ckpt", "step_000004.ckpt"]
    ea = events(run_dir)
    scalars = set(ea.Tags()["scalars"])
    for tag in [
        "train/loss/total",
        "train/loss/content/relu2_2",
        "train/loss/style/relu3_3",
        "train/loss/tv",
        "val/loss/total",
        "val/grid_pattern",
    ]:
        assert tag in scalars, tag
    assert all(0 < e.value < 255 for e in ea.Scalars("val/grid_pattern"))  # in 1/255 units
    assert {"preview", "style"} <= set(ea.Tags()["images"])
    assert [e.step for e in ea.Images("preview")] == [2, 4]

    net, info = load_model(run_dir / "model.safetensors")
    assert info.training["steps"] == 4 and info.style["name"] == "style"
    assert info.training["border"] == 8  # debug=tiny's training border, recorded in the model file
    assert info.loss["style_layers"] == {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
    assert set(info.training["final_losses"]) >= {"total", "content", "style", "tv"}
    assert net(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("loss_fn.") for k in ckpt["state_dict"])  # no VGG in checkpoints

    # Resume: the step count, optimiser state and curves continue in the same folder.
    steps_before = [e.step for e in ea.Scalars("train/loss/total")]
    args = [a for a in args if not a.startswith("trainer.max_steps")] + [
        "trainer.max_steps=6",
        "ckpt_path=last",
    ]
    assert run_cli(TRAIN, args, monkeypatch) == 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    adam_state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert int(adam_state["step"]) == 6  # Adam's moments carried over, not restarted
    steps_after = [e.step for e in events(run_dir).Scalars("train/loss/total")]
    assert max(steps_after) > max(steps_before) and min(steps_after) == min(steps_before)
    assert load_model(run_dir / "model.safetensors")[1].training["steps"] == 6


@pytest.mark.integration
def test_export_script_turns_a_checkpoint_into_the_model_file(tmp_path, photos, style_file, monkeypatch):
    run_dir = tmp_path / "run"
    summary = train(compose("train", tiny(photos, style_file, run_dir, steps=2)))
    out = tmp_path / "exported.safetensors"
    assert (
        run_cli(EXPORT, [f"model={run_dir / 'checkpoints' / 'last.ckpt'}", f"output={out}"], monkeypatch) == 0
    )
    a, _ = load_model(out)
    b, _ = load_model(summary["model"])
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert run_cli(EXPORT, [f"model={tmp_path / 'nope.ckpt'}"], monkeypatch) == 2


class _SendSignal(Callback):
    def __init__(self, at_step: int, sig: int) -> None:
        self.at_step, self.sig = at_step, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.sig)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_checkpoint_and_stops(tmp_path, photos, style_file, sig):
    run_dir = tmp_path / "run"
    cfg = compose("train", [*tiny(photos, style_file, run_dir, steps=50), "checkpoint_every=100"])
    trainer, module, dm, stopper = build(cfg, run_dir)
    trainer.callbacks.append(_SendSignal(3, sig))
    trainer.fit(module, datamodule=dm)
    assert stopper.requested == signal.Signals(sig).name
    assert trainer.global_step == 4  # the step in progress finished, then it stopped
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


@pytest.mark.integration
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, photos, style_file):
    from fastns.module import TrainingDiverged

    run_dir = tmp_path / "run"
    cfg = compose("train", tiny(photos, style_file, run_dir, steps=10))
    trainer, module, dm, _ = build(cfg, run_dir)
    real = module.loss_fn.forward

    def poisoned(images, content=None):
        terms = real(images, content)
        if module.global_step >= 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    module.loss_fn.forward = poisoned
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 3"):
        trainer.fit(module, datamodule=dm)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()


@pytest.mark.integration
def test_delayed_nan_check_never_writes_diverged_weights(tmp_path, photos, style_file, monkeypatch):
    """On GPUs the finiteness flag is read every few steps; checkpoints must still never hold NaN."""
    from fastns.module import StyleTransferModule, TrainingDiverged

    monkeypatch.setattr(StyleTransferModule, "_nan_check_every", lambda self: 5)
    run_dir = tmp_path / "run"
    cfg = compose("train", tiny(photos, style_file, run_dir, steps=10))  # checkpoint_every=2
    trainer, module, dm, _ = build(cfg, run_dir)
    real = module.loss_fn.forward

    def poisoned(images, content=None):
        terms = real(images, content)
        if module.global_step == 2:
            terms["total"] = terms["total"] * float("inf")
        return terms

    module.loss_fn.forward = poisoned
    with pytest.raises(TrainingDiverged, match="between steps"):
        trainer.fit(module, datamodule=dm)
    for ckpt_file in (run_dir / "checkpoints").iterdir():
        ckpt = torch.load(ckpt_file, weights_only=True)
        assert ckpt["global_step"] <= 2, ckpt_file.name
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.integration
@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_runs_one_step(tmp_path, photos, style_file, experiment):
    overrides = [
        f"experiment={experiment}",
        "trainer.max_steps=1",
        "loss.vgg.weights=random",
        f"style.image={style_file}",
        "data.num_workers=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        f"run_dir={tmp_path / 'run'}",
    ]
    cfg = compose("train", overrides)
    if cfg.data.root != "samples":
        cfg.data.root = str(photos)
    summary = train(cfg)
    assert summary["steps"] == 1 and Path(summary["model"]).is_file()


@pytest.mark.integration
def test_missing_dataset_is_a_one_line_error(tmp_path, style_file, monkeypatch, capsys):
    monkeypatch.delenv("FASTNS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = run_cli(
        TRAIN,
        [f"style.image={style_file}", "loss.vgg.weights=random", f"hydra.run.dir={tmp_path / 'r'}"],
        monkeypatch,
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: data.root is not set") and "experiment=quickstart" in err[0]


@pytest.mark.integration
def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, photos, style_file):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "fresh"), "ckpt_path=last"])
    with pytest.raises(Exception, match="ckpt_path=last: no checkpoint"):
        train(cfg)


@pytest.mark.integration
@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path, photos, style_file):
    run_dir = tmp_path / "ddp"
    args = [
        a for a in tiny(photos, style_file, run_dir, steps=3) if not a.startswith(("trainer=", "run_dir"))
    ]
    cmd = [
        sys.executable,
        str(TRAIN),
        *args,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, info = load_model(run_dir / "model.safetensors")
    assert info.training["steps"] == 3 and info.training["world_size"] == 2
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_auto_precision_is_bf16_mixed_only_where_bfloat16_is_native(monkeypatch):
    import fastns.train as train_mod

    monkeypatch.setattr(train_mod, "native_bf16", lambda device: device.type == "cpu")
    assert train_mod.resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(train_mod, "native_bf16", lambda device: False)
    assert train_mod.resolve_precision("auto", "cpu") == "32-true"
    # An explicit choice is Lightning's business, whatever the hardware.
    assert train_mod.resolve_precision("16-mixed", "gpu") == "16-mixed"
    assert train_mod.resolve_precision("32-true", "cpu") == "32-true"


@pytest.mark.integration
def test_training_runs_in_the_resolved_precision(tmp_path, photos, style_file, monkeypatch):
    import fastns.train as train_mod

    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(train_mod, "native_bf16", lambda device, native=native: native)
        run_dir = tmp_path / expected
        summary = train(compose("train", tiny(photos, style_file, run_dir, steps=2)))
        assert summary["precision"] == expected
        _, info = load_model(run_dir / "model.safetensors")
        assert info.training["precision"] == expected
        assert all(torch.isfinite(torch.tensor(v)) for v in info.training["final_losses"].values())


@pytest.mark.integration
def test_skipped_file_count_is_logged_and_copied_to_the_device_only_when_it_changes(
    tmp_path, photos, style_file
):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    val = tmp_path / "val"
    for i in range(2):
        make_photo(val / f"{i}.jpg", size=(40, 40), seed=50 + i)
    run_dir = tmp_path / "run"
    cfg = compose("train", [*tiny(photos, style_file, run_dir, steps=6), f"data.val_root={val}"])
    summary = train(cfg)
    assert summary["skipped_files"] >= 1  # 12 draws from 11 photos: the broken one comes up
    logged = [e.value for e in events(run_dir).Scalars("train/skipped_files")]
    assert logged[-1] == summary["skipped_files"] and logged == sorted(logged)

    module = build(cfg, tmp_path / "again")[1]
    first = module._skipped_on(torch.device("cpu"))
    assert module._skipped_on(torch.device("cpu")) is first  # unchanged: no new host-to-device copy
    module._skipped = 3
    assert float(module._skipped_on(torch.device("cpu"))) == 3.0


def test_progress_bar_refreshes_every_step_on_a_cpu_and_with_the_logger_on_a_gpu():
    from fastns.train import progress_refresh_rate

    assert progress_refresh_rate({"accelerator": "cpu", "log_every_n_steps": 10}) == 1
    assert progress_refresh_rate({"accelerator": "gpu", "log_every_n_steps": 10}) == 10
    assert progress_refresh_rate({"accelerator": "cuda", "log_every_n_steps": 0}) == 1


@pytest.mark.integration
def test_on_a_gpu_only_the_written_steps_are_logged_and_tensorboard_gets_the_same_scalars(
    tmp_path, photos, style_file, monkeypatch
):
    """Skipping self.log on the steps Lightning does not write must lose nothing in TensorBoard."""
    from fastns.module import StyleTransferModule

    def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
        ea = events(run_dir)
        return {
            t: [(e.step, e.value) for e in ea.Scalars(t)]
            for t in ea.Tags()["scalars"]
            if t.startswith("train/")
        }

    calls = {"cpu": 0, "gpu": 0}
    real_log = StyleTransferModule.log
    runs = {}
    for kind in ("cpu", "gpu"):
        if kind == "gpu":  # the host-side rules of a GPU run, on the CPU
            monkeypatch.setattr(StyleTransferModule, "_queues_steps", lambda self: True)

        def counting_log(self, name, *args, _kind=kind, **kwargs):
            calls[_kind] += name.startswith("train/")
            return real_log(self, name, *args, **kwargs)

        monkeypatch.setattr(StyleTransferModule, "log", counting_log)
        run_dir = tmp_path / kind
        overrides = [*tiny(photos, style_file, run_dir, steps=9), "trainer.log_every_n_steps=3", "seed=3"]
        train(compose("train", overrides))
        runs[kind] = scalars(run_dir)
    assert "train/loss/total" in runs["gpu"] and "train/loss/style/relu2_2" in runs["gpu"]
    assert [s for s, _ in runs["gpu"]["train/loss/total"]] == [2, 5, 8]
    assert runs["gpu"].keys() == runs["cpu"].keys()
    for tag, logged in runs["cpu"].items():
        assert [s for s, _ in runs["gpu"][tag]] == [s for s, _ in logged], tag
        assert [v for _, v in runs["gpu"][tag]] == pytest.approx([v for _, v in logged], rel=1e-5), tag
    assert calls["gpu"] * 3 == calls["cpu"]  # a third of the self.log calls


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.integration
def test_resume_with_another_architecture_names_the_override_and_keeps_the_run(tmp_path, photos, style_file):
    # E.g. a run of the full-width experiment=cpu, resumed after the experiment's width changed.
    run_dir = tmp_path / "run"
    train(compose("train", tiny(photos, style_file, run_dir, steps=2)))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = {p: p.read_bytes() for p in (last, run_dir / "model.safetensors")}
    cfg = compose("train", [*tiny(photos, style_file, run_dir), "ckpt_path=last", "model.width=0.5"])
    width = compose("train", tiny(photos, style_file, run_dir)).model.width
    with pytest.raises(
        ConfigError,
        match=rf"ckpt_path=.*last.ckpt: its network has width={width}, the configured one model.width=0.5; "
        rf"pass model.width={width} to train its architecture",
    ):
        train(cfg)
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing written over


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["malicious", "truncated"])
def test_resume_refuses_bad_checkpoints_and_never_runs_their_code(
    tmp_path, photos, style_file, monkeypatch, kind
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # what an unsafe environment sets
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "bad.ckpt"
    if kind == "malicious":
        torch.save({"fastns": {"model": {}}, "state_dict": {}, "payload": _Payload(marker)}, ckpt)
    else:
        run_dir = tmp_path / "run"
        train(compose("train", tiny(photos, style_file, run_dir, steps=2)))
        data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "resume"), f"ckpt_path={ckpt}"])
    with pytest.raises(FastnsError, match=f"ckpt_path={ckpt}: not a readable checkpoint"):
        train(cfg)
    assert not marker.exists()


@pytest.mark.integration
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_script_exits_130_or_143_with_a_checkpoint(tmp_path, photos, style_file, sig, status):
    """A scheduler tells an interrupted run from a finished one by its exit status (SLURM requeue)."""
    run_dir = tmp_path / "run"
    args = [*tiny(photos, style_file, run_dir, steps=100000)[:-1], f"hydra.run.dir={run_dir}"]
    proc = start_training(args, tmp_path)
    wait_until(proc, lambda: (run_dir / "checkpoints" / "last.ckpt").exists())  # training reached step 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err.decode()[-2000:]
    assert "Resume with: ckpt_path=last" in err.decode()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= 2
    assert not (run_dir / "model.safetensors").exists()  # not a finished run


@pytest.mark.integration
def test_skipped_files_are_counted_once_each_however_often_they_come_up(tmp_path, photos, style_file):
    for name in ("broken_a.jpg", "broken_b.jpg", "broken_c.jpg"):
        (photos / name).write_bytes(b"not a jpeg")
    val = tmp_path / "val"
    make_photo(val / "v.jpg", size=(40, 40), seed=7)
    run_dir = tmp_path / "run"
    # 13 files, 40 draws: about three epochs, each passing over all three broken files.
    summary = train(compose("train", [*tiny(photos, style_file, run_dir, steps=20), f"data.val_root={val}"]))
    assert summary["skipped_files"] == 3


@pytest.mark.integration
def test_killed_run_resumes_from_its_last_checkpoint_and_finishes(tmp_path, photos, style_file):
    """SIGKILL (out of memory, a lost node) leaves no chance to save: the periodic last.ckpt is what remains."""
    run_dir = tmp_path / "run"
    args = [*tiny(photos, style_file, run_dir, steps=100000)[:-1], f"hydra.run.dir={run_dir}"]
    proc = start_training(args, tmp_path)
    wait_until(proc, lambda: any((run_dir / "checkpoints").glob("step_*.ckpt")))  # a periodic checkpoint
    time.sleep(0.5)  # somewhere in the middle of later steps
    proc.kill()
    proc.wait(timeout=60)
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    finish = step + 2
    done = start_training([*args, f"trainer.max_steps={finish}", "ckpt_path=last"], tmp_path)
    _, err = done.communicate(timeout=240)
    assert done.returncode == 0, err.decode()[-2000:]
    _, info = load_model(run_dir / "model.safetensors")
    assert info.training["steps"] == finish


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into a folder of its own, on purpose
@pytest.mark.parametrize(
    ("stop", "options"),
    [
        (3, []),  # mid-epoch (4 steps an epoch here)
        (4, []),  # an epoch's end
        (3, ["loss.temporal_weight=10", "phase_jitter=true"]),  # the step's motions and grid phase
        (3, ["model.input_noise=0.1", "loss.temporal_weight=10"]),  # the step's input noise
    ],
)
def test_a_resumed_run_writes_the_network_the_uninterrupted_run_writes(
    tmp_path, photos, style_file, stop, options
):
    # The photos, crops and draws of every step depend only on the seed and the step, so a run
    # resumed from a checkpoint of step `stop` ends bit for bit where the uninterrupted run ends
    # (on a CPU; loader processes draw nothing of their own).
    def args(name: str) -> list[str]:
        return [
            *tiny(photos, style_file, tmp_path / name, steps=6),
            f"checkpoint_every={stop}",
            "data.num_workers=1",
            "ema=0.2",
            *options,
        ]

    train(compose("train", args("whole")))
    ckpt = tmp_path / "whole" / "checkpoints" / f"step_{stop:06d}.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == stop
    train(compose("train", [*args("resumed"), f"ckpt_path={ckpt}"]))
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for k, v in whole.items():
        assert torch.equal(resumed[k], v), k


def test_init_from_starts_from_a_model_file_and_refuses_another_architecture(tmp_path, photos, style_file):
    from fastns.errors import ModelFileError
    from fastns.modelfile import save_model
    from fastns.transformer import TransformerNet

    cfg = compose("train", tiny(photos, style_file, tmp_path / "run"))
    torch.manual_seed(5)
    start = TransformerNet(**cfg.model)  # debug=tiny's architecture
    save_model(tmp_path / "start.safetensors", start)
    cfg.init_from = str(tmp_path / "start.safetensors")
    _, module, _, _ = build(cfg, tmp_path / "run")
    for name, value in start.state_dict().items():
        assert torch.equal(module.net.state_dict()[name], value), name

    # A network trained without input noise starts a run with it, and the other way round (the
    # grain is the run's setting, not the architecture).
    for theirs, mine in ((0.0, 0.05), (0.05, 0.0)):
        start.set_input_noise(theirs)
        save_model(tmp_path / "start.safetensors", start)
        cfg.model.input_noise = mine
        _, module, _, _ = build(cfg, tmp_path / "run")
        assert module.net.input_noise == mine
        for name, value in start.state_dict().items():
            assert torch.equal(module.net.state_dict()[name], value), name

    # A file of another architecture: the error names the settings that would train it.
    save_model(tmp_path / "wide.safetensors", TransformerNet(width=0.5, num_residual=2))
    cfg.init_from = str(tmp_path / "wide.safetensors")
    with pytest.raises(
        ModelFileError,
        match=r"init_from=.*wide.safetensors: its network has num_residual=2, the configured one "
        r"model.num_residual=1; pass model.num_residual=2 model.width=0.5 to train its architecture",
    ):
        build(cfg, tmp_path / "run")
    cfg.init_from = str(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="init_from=.*missing.safetensors: no such model file"):
        build(cfg, tmp_path / "run")


def test_style_warmup_trains_on_content_first_then_ramps_the_style_in(tmp_path, photos, style_file):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), "style_warmup=4"])
    _, module, _, _ = build(cfg, tmp_path / "run")
    terms = module.compute_loss(torch.rand(2, 3, 32, 32))
    assert terms["style"] > 0
    # Outside a trainer the step is 0: a quarter of the style weight; the terms themselves unchanged.
    expected = terms["total"] - 0.75 * terms["style"]
    assert torch.isclose(module.training_objective(terms), expected, rtol=1e-5)
    module.hparams.style_warmup = 1  # warmed up: the loss's own total
    assert torch.equal(module.training_objective(terms), terms["total"])


def test_droplet_weight_adds_the_droplet_term_of_the_networks_norms(tmp_path, photos, style_file):
    cfg = compose(
        "train", [*tiny(photos, style_file, tmp_path / "run"), "border=8", "droplet_weight=2", NO_NOISE]
    )
    _, module, _, _ = build(cfg, tmp_path / "run")
    content = 0.5 + 0.01 * torch.rand(2, 3, 32, 32)
    content[:, :, 14:17, 14:17] = 1.0  # a bright spot: a spike at the first norm, as a droplet is
    terms = module.compute_loss(content)
    with torch.no_grad(), norm_inputs(module.net) as seen:
        PaddedNet(module.net, 8)(content)
    assert terms["droplet"] > 0
    assert torch.isclose(terms["droplet"], 2 * droplet_loss(seen), rtol=1e-4)
    others = sum(v for k, v in terms.items() if k in ("content", "style", "tv", "grid", "droplet"))
    assert torch.isclose(terms["total"], others, rtol=1e-5)  # part of what training minimises
    terms["total"].backward()
    assert not any(m._forward_pre_hooks for m in module.net.modules())  # none left for export or stylizing
    off = compose("train", [*tiny(photos, style_file, tmp_path / "off"), "border=8", "droplet_weight=0"])
    assert "droplet" not in build(off, tmp_path / "off")[1].compute_loss(content)


def test_droplet_weight_trains_a_compiled_network_without_recompiling(
    tmp_path, photos, style_file, monkeypatch
):
    cfg = compose(
        "train",
        [
            *tiny(photos, style_file, tmp_path / "run"),
            "border=8",
            "droplet_weight=2",
            "compile=true",
            NO_NOISE,
        ],
    )
    _, module, _, _ = build(cfg, tmp_path / "run")
    compile_ = torch.compile  # the same tracing as inductor's, without minutes of C++ code generation
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compile_(m, backend="aot_eager", **kw))
    module.prepare_for_training()
    content = 0.5 + 0.01 * torch.rand(2, 3, 32, 32)
    content[:, :, 14:17, 14:17] = 1.0
    first = module.compute_loss(content)
    with torch._dynamo.config.patch(error_on_recompile=True):
        terms = module.compute_loss(content)  # the hooks stay put: the compiled network is reused
    with torch.no_grad(), norm_inputs(module.net) as seen:
        PaddedNet(module.net, 8)(content)
    assert torch.isclose(terms["droplet"], 2 * droplet_loss(seen), rtol=1e-3)
    assert torch.isclose(first["droplet"], terms["droplet"])
    terms["droplet"].backward()  # through the compiled graph's norm inputs to the weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())
    with torch.no_grad():
        assert "droplet" not in module.compute_loss(content)  # a training term: validation leaves it out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["droplet_weight=-1"], r"^droplet_weight=-1.0 must be 0 \(off\) or positive"),
    ],
)
def test_a_bad_droplet_weight_is_one_line(tmp_path, photos, style_file, option, message):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), *option])
    with pytest.raises(ConfigError, match=message):
        build(cfg, tmp_path / "run")


@pytest.mark.parametrize("margin", [0, 4])
def test_loss_margin_leaves_the_frame_of_the_output_out_of_the_loss(tmp_path, photos, style_file, margin):
    cfg = compose(
        "train", [*tiny(photos, style_file, tmp_path / "run"), f"loss_margin={margin}", "loss_jitter=false"]
    )
    _, module, _, _ = build(cfg, tmp_path / "run")
    content = torch.rand(2, 3, 32, 32)
    output = torch.rand(2, 3, 32, 32, requires_grad=True)
    module.net.forward = lambda x, *_: output  # the network's output as a leaf: its gradient is what trains
    stylised, terms = module.stylise_and_loss(content)
    assert stylised is output  # previews still show the whole image
    terms["total"].backward()
    frame = torch.ones(32, 32, dtype=torch.bool)
    frame[4:-4, 4:-4] = False
    assert output.grad[..., ~frame].abs().sum() > 0
    if margin:
        assert torch.equal(output.grad[..., frame], torch.zeros_like(output.grad[..., frame]))
    else:
        assert output.grad[..., frame].abs().sum() > 0


def test_loss_jitter_moves_each_photos_loss_window_in_training_only(tmp_path, photos, style_file):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), "loss_margin=4", "loss_jitter=true"])
    _, module, _, _ = build(cfg, tmp_path / "run")
    content = torch.rand(3, 3, 32, 32)
    output = torch.rand(3, 3, 32, 32, requires_grad=True)
    module.net.forward = lambda x, *_: output

    def window_of_gradient() -> list[tuple[int, int, int, int]]:
        output.grad = None
        module.stylise_and_loss(content)[1]["total"].backward()
        boxes = []
        for g in output.grad.abs().sum(1):
            rows, cols = g.sum(1).nonzero().flatten(), g.sum(0).nonzero().flatten()
            boxes.append(
                (
                    int(rows[0]),
                    int(cols[0]),
                    int(rows[-1]) + 1 - int(rows[0]),
                    int(cols[-1]) + 1 - int(cols[0]),
                )
            )
        return boxes

    # Training: each photo's 24 x 24 window sits where window_offsets puts it, within [0, 8].
    offsets = module.window_offsets(3)
    assert [b[:2] for b in window_of_gradient()] == offsets
    assert all(b[2:] == (24, 24) for b in window_of_gradient())
    assert module.window_offsets(3, step=5) == module.window_offsets(
        3, step=5
    )  # a resumed run draws the same
    drawn = {o for step in range(20) for o in module.window_offsets(3, step=step)}
    assert len(drawn) > 10 and all(0 <= y <= 8 and 0 <= x <= 8 for y, x in drawn)
    # Validation (eval mode) always scores the centred window, so its numbers stay comparable.
    module.eval()
    assert window_of_gradient() == [(4, 4, 24, 24)] * 3


def test_training_runs_the_network_with_the_stylizers_border(tmp_path, photos, style_file):
    # The network is trained as scripts/stylize.py runs it: the crop reflection-padded by the
    # border, the padding cropped off the output; validation and previews the same.
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), "border=8", NO_NOISE])
    _, module, _, _ = build(cfg, tmp_path / "run")
    content = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        stylised, _ = module.stylise_and_loss(content)
        assert torch.allclose(stylised, PaddedNet(module.net, 8)(content), atol=1e-6)
        assert not torch.allclose(stylised, module.net(content), atol=1e-3)  # the bare crop differs
    # The recipe trains with the border the stylizer and the exports use by default.
    stylize_border = OmegaConf.load(CONFIGS / "tools" / "stylize.yaml").border
    assert compose("train", []).border == stylize_border == DEFAULT_BORDER


def test_phase_jitter_moves_the_networks_grid_in_training_only(tmp_path, photos, style_file):
    cfg = compose(
        "train", [*tiny(photos, style_file, tmp_path / "run"), "border=8", "phase_jitter=true", NO_NOISE]
    )
    _, module, _, _ = build(cfg, tmp_path / "run")
    content = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        as_users_run_it = PaddedNet(module.net, 8)(content)
        assert torch.equal(run_shifted(module.net, content, 8, (0, 0)), module.net(content, 8))
        module.eval()  # validation and previews: phase 0, the stylizer's
        assert torch.allclose(module.stylise_and_loss(content)[0], as_users_run_it, atol=1e-6)
        module.train()  # training: the step's phase
        assert torch.equal(
            module.stylise_and_loss(content)[0], run_shifted(module.net, content, 8, module.phase_shift())
        )
        assert not torch.allclose(run_shifted(module.net, content, 8, (1, 2)), as_users_run_it, atol=1e-4)
    shifts = [module.phase_shift(step) for step in range(40)]
    assert len(set(shifts)) > 8 and all(0 <= dy < 4 and 0 <= dx < 4 for dy, dx in shifts)
    assert [module.phase_shift(step) for step in range(40)] == shifts  # a resumed run draws the same


def test_a_negative_border_is_one_line(tmp_path, photos, style_file):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), "border=-4"])
    with pytest.raises(ConfigError, match=r"^border=-4 must be 0 or more"):
        build(cfg, tmp_path / "run")


def test_a_loss_margin_that_leaves_too_little_of_the_crop_is_one_line(tmp_path, photos, style_file):
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), "loss_margin=9"])
    with pytest.raises(
        ConfigError, match=r"loss_margin=9 must be between 0 and .*data.image_size=32: at most 8"
    ):
        build(cfg, tmp_path / "run")
