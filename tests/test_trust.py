"""Figures and messages a user acts on: config files, output folders, flags, notes, piped output, file modes,
latency tables, run folders that work from anywhere (the "Trust" issue, items 6 and 8-10)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import adc
from adc.analysis.latency import build_latency_table
from adc.analysis.space import PolicySpace
from adc.inputs.models import build_model
from adc.pruning.pruner import ChannelPruner
from adc.run.config import RunConfig
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write_text
from adc.utils.formatting import energy, seconds, speedup
from adc.cli import main
from helpers import FakeTimer, assert_refused, run_main

ADC = Path(sys.executable).with_name("adc")


def one_line_exit_2(code: int, err: str, *fragments: str) -> None:
    assert_refused(code, err, *fragments)


# -- config files (item 8) --------------------------------------------------------------


@pytest.mark.parametrize("line, fragment", [
    ('episodes = "ten"', "--episodes 'ten': must be an integer"),
    ("min_keep = true", "--min-keep True: must be a number"),
    ("budget = 0.5", "--budget"),
    ("agent = 3", "--agent 3: must be a string"),
    ("reconstruct = 1", "--reconstruct 1: must be true or false"),
    ('agent_options = ["noise_sigma=lots"]', "noise_sigma='lots'"),
    ("bogus = 1", "unknown setting 'bogus'; valid:"),
    ("episodes = ", "not valid TOML"),
])
def test_a_wrong_value_in_a_config_file_is_one_line_naming_the_file_and_setting(line, fragment, tmp_path, monkeypatch,
                                                                                capsys):
    config = tmp_path / "config.toml"
    config.write_text(line + "\n")
    code, _, err = run_main(monkeypatch, capsys, "search", "--config", str(config), "--out", str(tmp_path / "o"))
    one_line_exit_2(code, err, fragment, str(config))
    assert not (tmp_path / "o").exists()


def test_config_flags_and_api_give_the_same_error():
    with pytest.raises(AdcError) as api:
        adc.SearchOptions(episodes=0)
    with pytest.raises(AdcError) as from_values:
        RunConfig.from_values({"episodes": 0})
    assert str(api.value) == str(from_values.value) == "--episodes 0: must be a positive integer"


# -- output folders (item 8) ------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run_main(monkeypatch, capsys, "search", "--out", str(ro / "run"))
    one_line_exit_2(code, err, "cannot write", "permission denied")


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_main(monkeypatch, capsys, "search", "--out", str(afile))
    one_line_exit_2(code, err, "is a file, not a folder")
    code, _, err = run_main(monkeypatch, capsys, "search", "--out", str(afile / "run"))
    one_line_exit_2(code, err, "cannot write", "a path component is a file")


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(AdcError, match="no space left on the device") as err:
        atomic_write_text(tmp_path / "report.md", "text")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # no half-written file, no temporary left behind


# -- files respect the umask (item 6) -----------------------------------------------------


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- flags (item 8) ------------------------------------------------------------------


def test_debug_is_accepted_after_the_subcommand_too(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["adc", "search", "--agent", "nope", "--debug", "--out", str(tmp_path / "o")])
    with pytest.raises(AdcError, match="unknown agent 'nope'"):  # --debug: the exception itself, not one line
        main()


# -- what is printed (item 9) -----------------------------------------------------------


def test_speedups_energies_and_times_are_written_for_people():
    assert speedup(1.42) == "1.42x faster"
    assert speedup(0.95) == "0.95x, 5% slower"  # never "0.95x faster"
    assert energy(123890.9e-6) == "123.9 mJ" and energy(4.56e-6) == "4.56 uJ"
    assert seconds(0.0123) == "12.3 ms" and seconds(4.5e-4) == "450 us"


def test_notes_say_when_a_setting_has_no_effect_or_images_are_missing(trained, digits, digits_input):
    result = adc.search(trained, digits_input, data=digits, agent="uniform", episodes=30, val_size=1000,
                        bn_calibration=64)
    notes = " | ".join(result.notes)
    assert "agent 'uniform' plays one policy: --episodes 30" in notes
    assert f"the reward is computed on {len(digits.val)} validation images, not the 1000 asked for" in notes
    assert "final selection skipped" in notes
    warm = adc.search(trained, digits_input, data=digits, agent="ddpg", episodes=5, bn_calibration=64,
                      agent_options={"warmup": 8, "hidden": (8, 8)}, select_top=0)
    assert any("warm-up of 8 episodes" in n for n in warm.notes)


def test_the_first_use_message_is_printed_only_when_training(tmp_path, trained_checkpoint, monkeypatch):
    from adc.inputs.pretrained import is_trained

    assert is_trained("zoo:plain20", "digits", epochs=30)  # the session's cache (conftest)
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run([str(ADC), "search", "--agent", "uniform", "--bn-calibration", "64", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "training zoo:plain20" not in result.stdout


def test_piped_tables_are_whole(tmp_path):
    """``adc profile > file``: no column cut to 80 characters."""
    result = subprocess.run([str(ADC), "profile", "--model", "torchvision:mobilenet_v2", "--input-shape", "3,64,64"],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, COLUMNS="80"))
    assert result.returncode == 0, result.stderr
    assert "features.18.0.0" in result.stdout or "features.17.conv.0.0" in result.stdout
    assert "…" not in result.stdout


# -- latency tables (item 10) -------------------------------------------------------------


class BusyTimer(FakeTimer):
    """A timer whose layer timings are disturbed: every layer alone takes 10 ms, the whole model 1 ms."""

    def seconds(self, module: nn.Module) -> float:
        whole = any(isinstance(m, nn.Linear) for m in module.modules()) and len(list(module.modules())) > 4
        return 1e-3 if whole else 1e-2


def test_an_implausible_latency_table_is_measured_again_then_refused(tmp_path):
    model = build_model("zoo:vgg_small", num_classes=10, in_channels=3).eval()
    x = torch.zeros(1, 3, 16, 16)
    pruner = ChannelPruner(model, x)
    timer = BusyTimer()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(AdcError) as err:
        warnings.simplefilter("always")
        build_latency_table(model, x, PolicySpace(pruner.graph), prune_to=pruner.prune_kept, timer=timer,
                            cache_dir=tmp_path, points=2)
    assert any("measuring it again" in str(w.message) for w in caught)
    assert "implausible" in str(err.value) and "outside the table's layers" in str(err.value)
    assert "\n" not in str(err.value)


def test_latency_table_and_search_use_the_same_thread_default():
    import inspect

    from adc.cli.latency import latency_table_command

    default = inspect.signature(latency_table_command).parameters["threads"].default
    assert default == adc.SearchOptions().threads == 1


# -- run folders that work from anywhere (item 6) ------------------------------------------


@pytest.mark.parametrize("spec, stored", [
    ("imagefolder:imgs@32", "imagefolder:{cwd}/imgs@32"),
    ("imagefolder:imgs", "imagefolder:{cwd}/imgs"),
    ("imagefolder:my@photos", "imagefolder:{cwd}/my@photos"),  # an @ that is not a size belongs to the folder
    ("cifar10:c10", "cifar10:{cwd}/c10"),
    ("fashion-mnist:fm", "fashion-mnist:{cwd}/fm"),
    ("fashion-mnist", "fashion-mnist"),
    ("digits", "digits"),
    ("fake:64", "fake:64"),
    ("data.py:splits", "{cwd}/data.py:splits"),
])
def test_a_data_folder_is_stored_absolute_so_finetune_and_export_work_from_elsewhere(spec, stored, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RunConfig(data=spec).data == stored.format(cwd=tmp_path.resolve())


def test_a_run_with_relative_plugin_paths_works_from_another_folder(tmp_path, trained_checkpoint):
    """Search from one folder with relative plug-in paths; finetune, export, rerun and load from another."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "rewards.py").write_text("def reward(m):\n    return m['top1'] - 0.1 * m['params_ratio']\n")
    env = dict(os.environ, COLUMNS="200")

    def adc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(ADC), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)

    first = adc_cli("search", "--agent", "random", "--episodes", "2", "--bn-calibration", "64", "--reward",
                    "rewards.py:reward", "--out", "runs/one", cwd=work)
    assert first.returncode == 0, first.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = work / "runs" / "one"
    assert adc_cli("finetune", str(run), "--epochs", "1", cwd=elsewhere).returncode == 0
    exported = adc_cli("export", str(run), "--format", "torchscript", cwd=elsewhere)
    assert exported.returncode == 0 and "model_finetuned.pt" in exported.stdout  # the fine-tuned model by default
    rerun = adc_cli("search", "--config", str(run / "config.toml"), "--seed", "1", "--out", "again", cwd=elsewhere)
    assert rerun.returncode == 0, rerun.stderr
    code = f"import adc, torch; m = adc.load({str(run)!r}); print(m(torch.zeros(2, 1, 8, 8)).shape)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert loaded.returncode == 0 and "torch.Size([2, 10])" in loaded.stdout, loaded.stderr
