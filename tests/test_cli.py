"""``adc`` on the command line: a search end to end on digits, rerun, resume, export, profile, bad inputs.

Successful commands run in-process with typer's CliRunner; bad inputs go
through :func:`adc.cli.main` (the console entry point that maps AdcError to
one line and exit code 2), in-process for speed and once as a real subprocess.
The embedded default model is trained once per session (``conftest.py``) in
the cache ``$ADC_CACHE_DIR`` points to, where the CLI finds it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import adc.engine.space
import adc.run.pipeline
from adc.analysis.cost import count
from adc.cli import app, main
from adc.engine.loop import Search
from adc.inputs.models import build_model
from adc.pruning.serialization import load
from adc.run.folder import RunFolder
from helpers import assert_refused, run_main

OUTPUTS = ("model.pt", "policy.json", "history.csv", "report.md", "policy.png", "reward.png", "config.toml")
ADC = Path(sys.executable).with_name("adc")
runner = CliRunner(env={"COLUMNS": "160"})


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


@pytest.fixture
def no_speedup(monkeypatch):
    """Skip the measured-latency line of report.md (seconds of timing per run) in the secondary runs;
    the end-to-end run (``finished_run``) measures it for real."""
    monkeypatch.setattr(adc.run.pipeline, "measure_speedups", lambda *a, **k: [{"error": "not measured in this test"}])


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, trained_checkpoint) -> Path:
    """``adc search --data digits --budget flops=0.5 --episodes 6 --warmup 2 --agent-option hidden=32,32 --out DIR``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("search", "--data", "digits", "--budget", "flops=0.5", "--episodes", "6", "--warmup", "2",
                    "--agent-option", "hidden=32,32", "--bn-calibration", "256", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Chosen policy" in result.output
    return out


def test_search_writes_every_output(finished_run):
    for name in OUTPUTS:
        assert (finished_run / name).is_file(), name
        assert (finished_run / name).stat().st_size > 0, name
    rows = history_rows(finished_run)
    assert len(rows) == 6
    assert [int(r["episode"]) for r in rows] == list(range(6))
    assert all(float(r["budget_use_flops"]) <= 1.0 + 1e-9 for r in rows)
    policy = json.loads((finished_run / "policy.json").read_text())
    assert set(policy) >= {"policy", "kept", "reward", "metrics"}
    assert policy["metrics"]["flops_ratio"] <= 0.5 + 1e-9
    assert (finished_run / "policy.png").read_bytes()[:4] == b"\x89PNG"
    report = (finished_run / "report.md").read_text()
    assert "flops" in report.lower()
    assert "## Measured speed" in report
    for runtime in ("torch", "onnxruntime"):  # both runtimes, batch 1 and a throughput batch, side by side
        assert f"- {runtime}, batch 1 (" in report and f"- {runtime}, batch 32 (a throughput batch)" in report
    assert "## Channel alignment" in report and "`round_to auto` chose" in report
    assert policy["round_to"] == policy["alignment"]["choice"]
    config = tomllib.loads((finished_run / "config.toml").read_text())
    assert config["round_to"] == "auto"
    assert config["budget"] == ["flops=0.5"] and config["episodes"] == 6 and "out" not in config
    assert config["agent_options"] == ["hidden=32,32", "warmup=2"] and config["reconstruct"] is True
    assert [r["phase"] for r in rows[:3]] == ["uniform", "warmup", "explore"]
    # no stray temporary files from the atomic writes
    assert not [p for p in finished_run.rglob("*.tmp")]


def test_saved_model_loads_and_meets_the_budget_counted_independently(finished_run, trained):
    small = load(finished_run / "model.pt")
    x = torch.zeros(1, 1, 8, 8)
    assert count(small, x).flops <= 0.5 * count(trained, x).flops
    assert count(small, x).params < count(trained, x).params
    with torch.no_grad():
        assert small(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_config_reruns_the_search_with_other_flags_and_tensorboard(finished_run, tmp_path, no_speedup):
    out = tmp_path / "rerun"
    result = invoke("search", "--config", str(finished_run / "config.toml"), "--out", str(out), "--episodes", "4",
                    "--agent-option", "start_uniform=false", "--tensorboard")
    assert result.exit_code == 0, result.output
    assert [r["phase"] for r in history_rows(out)] == ["warmup", "warmup", "exploit", "refine"]
    old = tomllib.loads((finished_run / "config.toml").read_text())
    new = tomllib.loads((out / "config.toml").read_text())
    assert new["episodes"] == 4 and new["agent_options"] == ["hidden=32,32", "warmup=2", "start_uniform=false"]
    changed = ("episodes", "agent_options", "tensorboard")
    assert {k: v for k, v in new.items() if k not in changed} == {k: v for k, v in old.items() if k not in changed}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb")).Reload()
    rewards = [e.value for e in events.Scalars("reward/episode")]
    assert len(rewards) == 4 and [e.step for e in events.Scalars("reward/best")] == [0, 1, 2, 3]
    assert rewards == pytest.approx([float(r["reward"]) for r in history_rows(out)], abs=1e-6)
    assert {"metrics/top1", "metrics/flops_ratio"} <= set(events.Tags()["scalars"])


def interrupt_after(monkeypatch, episodes: int) -> None:
    """Press Ctrl-C (a real SIGINT to this process) once the search has played ``episodes`` episodes."""
    real = Search._on_episode

    def on_episode(self, info):
        keep_going = real(self, info)
        if len(self.history) == episodes:
            os.kill(os.getpid(), signal.SIGINT)
        return keep_going

    monkeypatch.setattr(Search, "_on_episode", on_episode)


def test_ctrl_c_stops_the_search_and_resume_gives_the_uninterrupted_search(tmp_path, monkeypatch, trained_checkpoint,
                                                                          no_speedup):
    flags = ["--agent", "ddpg", "--episodes", "7", "--warmup", "2", "--agent-option", "hidden=16,16",
             "--bn-calibration", "128", "--select-top", "0"]
    straight = tmp_path / "straight"
    assert invoke("search", *flags, "--out", str(straight)).exit_code == 0
    out = tmp_path / "interrupted"
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        result = invoke("search", *flags, "--out", str(out))
    assert result.exit_code == 130, result.output
    assert "--resume" in result.output and "stopping after the current round" in result.output
    assert len(RunFolder(out).checkpoint.history()) == 3
    assert len(history_rows(out)) == 3 and (out / "model.pt").is_file()  # best so far written on Ctrl-C
    config_before = (out / "config.toml").read_text()

    result = invoke("search", "--resume", str(out))
    assert result.exit_code == 0, result.output
    assert [int(r["episode"]) for r in history_rows(out)] == list(range(7))
    assert [r["policy"] for r in history_rows(out)] == [r["policy"] for r in history_rows(straight)]
    assert [r["reward"] for r in history_rows(out)] == [r["reward"] for r in history_rows(straight)]
    assert (out / "config.toml").read_text() == config_before


def test_resume_refuses_a_changed_setting_in_one_line(tmp_path, monkeypatch, capsys, trained_checkpoint, no_speedup):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        assert invoke("search", "--agent", "random", "--episodes", "4", "--bn-calibration", "128", "--select-top", "0",
                      "--out", str(out)).exit_code == 130
    before = snapshot(out)
    code, _, err = run_main(monkeypatch, capsys, "search", "--resume", str(out), "--seed", "5")
    assert_refused(code, err, "--seed", "keeps its settings")
    assert snapshot(out) == before


def test_export_onnx(finished_run):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    result = invoke("export", str(finished_run), "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert (finished_run / "model.onnx").stat().st_size > 0
    assert "max |output - torch output|" in result.output
    assert "dynamo exporter" in result.output and "onnxruntime at batch 1 and 3" in result.output


def test_export_quantized_reports_what_onnxruntime_measured_of_the_file(finished_run, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from adc.inputs.data import load_data
    from adc.pruning.quantize import onnx_accuracy

    result = invoke("export", str(finished_run), "--quantize", "auto")
    assert result.exit_code == 0, result.output
    written = finished_run / "model.int8.onnx"
    summary = json.loads((finished_run / "model.int8.json").read_text())
    assert summary["output"] == str(written) and written.stat().st_size == summary["size_bytes_int8"]
    assert summary["size_bytes_int8"] < summary["size_bytes_fp32"]
    assert onnx_accuracy(written, load_data("digits").test)["top1"] == summary["test_top1_int8"]  # of the file
    assert summary["latency_s_int8"] <= summary["latency_s_fp32"]  # auto is never slower than fp32, as measured
    assert f"{100 * summary['test_top1_int8']:.2f}%" in result.output and "side by side" in result.output
    for flags, fragment in ((["--quantize", "int4"], "valid: int8, auto"),
                            (["--quantize", "int8", "--format", "torchscript"], "--quantize writes ONNX")):
        code, _, err = run_main(monkeypatch, capsys, "export", str(finished_run), *flags)
        assert_refused(code, err, fragment)


def test_export_quantized_of_a_bare_model_file_asks_for_its_data(finished_run, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "export", str(finished_run / "model.pt"), "--quantize", "int8")
    assert_refused(code, err, "needs its data", "--data")


def test_profile_precision_times_every_layer_in_both_precisions():
    pytest.importorskip("onnxruntime")
    result = invoke("profile", "--model", "zoo:plain20", "--input-shape", "1,8,8", "--precision")
    assert result.exit_code == 0, result.output
    assert "precision per layer" in result.output and "features.0.0" in result.output and " fc " in result.output
    assert "every layer int8" in result.output and "the faster per layer" in result.output


def test_profile_prints_a_table():
    result = invoke("profile", "--model", "zoo:resnet20")
    assert result.exit_code == 0, result.output
    assert "zoo:resnet20: 12 prunable units" in result.output
    assert "MACs" in result.output and "total:" in result.output


# -- bad inputs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrong_checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    torch.manual_seed(0)
    paths["shape"] = folder / "plain20_rgb.pt"
    torch.save(build_model("zoo:plain20", num_classes=10, in_channels=3).state_dict(), paths["shape"])
    paths["arch"] = folder / "vgg_small.pt"
    torch.save(build_model("zoo:vgg_small", num_classes=10, in_channels=1).state_dict(), paths["arch"])
    return paths


BAD_INPUTS = {
    "agent": (["--agent", "nope"], ["unknown agent 'nope'", "ddpg"]),
    "criterion": (["--criterion", "nope"], ["unknown criterion 'nope'", "l1"]),
    "reward": (["--reward", "nope"], ["unknown reward 'nope'", "acc_flops"]),
    "data": (["--data", "nope"], ["unknown data source 'nope'", "digits"]),
    "model": (["--model", "nope"], ["unknown model spec 'nope'", "plain20"]),
    "budget": (["--budget", "flops=2x"], ["'flops=2x'", "flops", "params"]),
    "budget-key": (["--budget", "speed=0.5"], ["'speed'", "flops"]),
    "episodes": (["--episodes", "0"], ["--episodes 0"]),
    "agent-option": (["--agent-option", "noise=0.3"], ["unknown option 'noise' for agent 'ddpg'", "noise_sigma"]),
    "agent-option-form": (["--agent-option", "noise_sigma"], ["--agent-option 'noise_sigma'", "KEY=VALUE"]),
    "select-top": (["--select-top", "-1"], ["--select-top -1", ">= 0"]),
    "agent-option-type": (["--agent-option", "hidden=wide"], ["hidden='wide'", "comma-separated ints"]),
    "checkpoint-missing": (["--checkpoint", "/no/such/file.pt"], ["/no/such/file.pt", "does not exist"]),
    "config-missing": (["--config", "/no/such/config.toml"], ["/no/such/config.toml"]),
    "iterations": (["--iterations", "0"], ["--iterations 0", "positive integer"]),
    "iteration-finetune": (["--iteration-finetune", "2"], ["--iteration-finetune 2", "--iterations 2 or more"]),
    "iteration-finetune-negative": (["--iterations", "2", "--iteration-finetune", "-1"], ["--iteration-finetune -1"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(case, monkeypatch, capsys, tmp_path):
    flags, fragments = BAD_INPUTS[case]
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "search", *flags, "--out", str(out))
    assert_refused(code, err, *fragments)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a missing GPU")
def test_cuda_on_a_cpu_machine_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "search", "--device", "cuda", "--out", str(tmp_path / "out"))
    assert_refused(code, err, "cuda", "not available")


def test_checkpoint_of_another_shape_names_the_key_and_shapes(wrong_checkpoints, monkeypatch, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "search", "--checkpoint", str(wrong_checkpoints["shape"]), "--out", str(out))
    assert_refused(code, err, "features.0.0.weight", "(16, 3, 3, 3)", "(16, 1, 3, 3)")
    assert not out.exists()


def test_checkpoint_of_another_architecture_is_refused(wrong_checkpoints, monkeypatch, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "search", "--checkpoint", str(wrong_checkpoints["arch"]), "--out", str(out))
    assert_refused(code, err, str(wrong_checkpoints["arch"]), "features.")
    assert not out.exists()


def test_unreachable_budget_is_refused_with_the_smallest_reachable_value(monkeypatch, capsys, tmp_path, trained_checkpoint):
    code, _, err = run_main(monkeypatch, capsys, "search", "--budget", "flops=0.01", "--episodes", "2",
                            "--out", str(tmp_path / "out"))
    assert_refused(code, err, "flops=0.01", "smallest reachable budget is flops=0.")
    assert not (tmp_path / "out").exists()  # nothing was computed: no half-made run folder either


REWARD_PLUGINS = """
def nan(m):
    return float("nan")


def text(m):
    return "high"


def raises(m):
    raise ValueError("no such metric")
"""

REFUSED_ON_THE_MODEL = {
    "budget-above-1": (["--budget", "flops=1.5"], ["flops=1.5", "unreachable", "a fraction of the original is written below 1"]),
    "budget-too-small": (["--budget", "flops=0.0001"], ["flops=0.0001", "smallest reachable budget is flops=0."]),
    "budget-above-the-model": (["--budget", "params=5T"], ["params=5e+12", "nothing to prune"]),
    "range-point-too-small": (["--budget", "flops=0.0001:0.5", "--episodes", "5"], ["flops=0.0001", "unreachable"]),
    "reward-nan": (["--reward", "{plugins}:nan"], ["returned nan on the unpruned model's metrics"]),
    "reward-string": (["--reward", "{plugins}:text"], ["returned str 'high'"]),
    "reward-raises": (["--reward", "{plugins}:raises"], ["failed on the unpruned model's metrics", "ValueError"]),
}
"""Inputs only the model can refuse: refused after a trace and one evaluation, before anything else."""


@pytest.mark.parametrize("case", list(REFUSED_ON_THE_MODEL))
def test_inputs_refused_on_the_model_print_nothing_before_the_error(case, monkeypatch, capsys, tmp_path,
                                                                    trained_checkpoint):
    """No round_to probe, no latency table, no progress bar or note: one line on stderr, nothing on stdout."""
    plugins = tmp_path / "rewards.py"
    plugins.write_text(REWARD_PLUGINS)
    flags, fragments = REFUSED_ON_THE_MODEL[case]

    def no_probe(*args, **kwargs):
        raise AssertionError("the round_to probe ran before the input was refused")

    monkeypatch.setattr(adc.engine.space, "probe_alignment", no_probe)
    monkeypatch.setattr(adc.engine.space, "build_latency_table", no_probe)
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "search", *[f.format(plugins=plugins) for f in flags],
                                 "--out", str(out))
    assert_refused(code, err, *fragments)
    assert stdout == ""
    assert not out.exists()


def test_inputs_are_refused_before_the_default_model_is_trained(monkeypatch, capsys, tmp_path):
    """On first use the budget is checked on the untrained architecture: no minutes of training first."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADC_CACHE_DIR", str(cache))
    code, stdout, err = run_main(monkeypatch, capsys, "search", "--budget", "params=5T", "--out", str(tmp_path / "o"))
    assert_refused(code, err, "params=5e+12", "nothing to prune")
    assert stdout == "" and not list(cache.rglob("*.pt"))


def test_a_default_first_search_prints_no_note(monkeypatch, capsys, tmp_path, trained_checkpoint, no_speedup):
    """The embedded default at default settings: its small validation split and the probe are not news."""
    code, stdout, err = run_main(monkeypatch, capsys, "search", "--agent", "random", "--episodes", "3",
                                 "--bn-calibration", "64", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "note:" not in stdout and "Chosen policy" in stdout
    notes = json.loads((tmp_path / "run" / "policy.json").read_text())["notes"]
    assert any(n.startswith("round_to auto chose") for n in notes)  # still in the run's record


def test_out_of_a_finished_run_is_refused_and_left_untouched(finished_run, monkeypatch, capsys):
    before = snapshot(finished_run)
    for extra in ([], ["--agent", "random", "--episodes", "2"], ["--budget", "flops=0.01"]):
        code, _, err = run_main(monkeypatch, capsys, "search", *extra, "--out", str(finished_run))
        assert_refused(code, err, "already holds a finished search")
    assert snapshot(finished_run) == before


def test_resume_with_refused_settings_leaves_the_run_untouched(finished_run, monkeypatch, capsys):
    before = snapshot(finished_run)
    code, _, err = run_main(monkeypatch, capsys, "search", "--resume", str(finished_run), "--budget", "flops=0.01")
    assert_refused(code, err, "--budget", "keeps its settings")
    assert snapshot(finished_run) == before


def test_out_of_an_unfinished_run_is_refused_without_resume(tmp_path, monkeypatch, capsys):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "config.toml").write_text("episodes = 3\n")
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "search", "--out", str(tmp_path))
    assert_refused(code, err, "unfinished search", "--resume")
    assert snapshot(tmp_path) == before


def test_the_installed_entry_point_exits_2_with_one_line_and_debug_shows_the_traceback(tmp_path):
    if not ADC.exists():
        pytest.skip(f"{ADC} is not installed")
    env = dict(os.environ, COLUMNS="40")  # a narrow terminal must not wrap the message
    plain = subprocess.run([str(ADC), "search", "--agent", "nope", "--out", str(tmp_path / "o")], capture_output=True,
                           text=True, env=env, timeout=300)
    assert_refused(plain.returncode, plain.stderr, "unknown agent 'nope'")
    debug = subprocess.run([str(ADC), "--debug", "search", "--agent", "nope"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "AdcError" in debug.stderr
    assert not (tmp_path / "o").exists()
