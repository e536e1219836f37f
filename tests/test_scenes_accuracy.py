"""The scenes accuracy comparison's bookkeeping (exfuse_keras/bench/scenes_accuracy.py); its runs
train for minutes and are benchmarks, not tests."""

import math

import numpy as np
import pytest
from scipy import stats

from exfuse_keras.bench import scenes_accuracy as sa


def test_interval_is_the_t_interval_and_one_seed_has_none():
    values = [24.3, 26.1, 22.0]
    mean, half = sa.interval(values)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3))
    assert sa.interval([30.8]) == (pytest.approx(30.8), None)


def test_table_says_one_seed_instead_of_a_nan_spread():
    runs = [{"model": "quickstart", "val_miou": 0.243, "params": 1014772, "train_seconds": 428.0},
            {"model": "segformer_b0_lr0.0005", "val_miou": 0.2, "params": 3720000, "train_seconds": 600.0},
            {"model": "segformer_b0_lr0.0005", "val_miou": 0.3, "params": 3720000, "train_seconds": 700.0}]
    lines = sa.table(runs, ["quickstart", "segformer_b0_lr0.0005"]).splitlines()
    assert "| quickstart | 1.01 M | 1 | 24.3 (1 seed) | 24.3 | 428 |" in lines
    half = stats.t.ppf(0.975, 1) * np.std([20, 30], ddof=1) / math.sqrt(2)
    assert f"| segformer_b0_lr0.0005 | 3.72 M | 2 | 25.0 ± {half:.1f} | 20.0, 30.0 | 650 |" in lines
    assert not any("nan" in line for line in lines)


def test_a_peer_at_its_own_learning_rate_is_named_for_it_and_gets_the_rate(monkeypatch, tmp_path):
    assert sa.run_label("segformer_b0", 0.0005) == "segformer_b0_lr0.0005"
    assert sa.run_label("segformer_b0", None) == "segformer_b0"
    assert sa.run_label("quickstart", 0.0005) == "quickstart"  # ExFuse models keep the shared recipe

    seen = {}

    class Done:
        returncode, stderr, stdout = 0, "", '{"val_miou": 0.5}\n'

    monkeypatch.setattr(sa.os.path, "isfile", lambda path: True)
    monkeypatch.setattr(sa.subprocess, "run", lambda command, **kw: seen.setdefault("command", command) and Done())
    assert sa.train_peer("segformer_b0", "data.yaml", 200, 1, str(tmp_path), 0.0005) == {"val_miou": 0.5}
    command = seen["command"]
    assert command[command.index("--learning-rate") + 1] == "0.0005"
    seen.clear()
    sa.train_peer("segformer_b0", "data.yaml", 200, 1, str(tmp_path))
    assert "--learning-rate" not in seen["command"]


def test_results_json_keeps_the_earlier_calls_runs_and_commands(tmp_path):
    """A second call (another model, another rate) adds to results.json instead of replacing it."""
    import json

    def finished(model, seed, miou):
        run_dir = tmp_path / model / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({"model": model, "seed": seed, "val_miou": miou}))

    finished("quickstart", 0, 0.24)
    finished("segformer_b0", 0, 0.07)
    # What the first version wrote: one command, only that call's runs.
    (tmp_path / "results.json").write_text(json.dumps({"command": "first", "runs": []}))
    sa.write_results(str(tmp_path), "second")
    finished("segformer_b0_lr0.0005", 0, 0.13)
    finished("quickstart", 1, 0.26)
    runs = sa.write_results(str(tmp_path), "third")
    sa.write_results(str(tmp_path), "third")  # the same command again is listed once
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["commands"] == ["first", "second", "third"]
    assert [(r["model"], r["seed"]) for r in written["runs"]] == [
        ("quickstart", 0), ("quickstart", 1), ("segformer_b0", 0), ("segformer_b0_lr0.0005", 0)]
    assert runs == written["runs"]


def test_stray_unreadable_or_mislabelled_results_are_left_out_with_a_warning(tmp_path, capsys):
    import json

    def write(relative, text):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    good = {"model": "quickstart", "seed": 0, "val_miou": 0.24}
    write("quickstart/seed0/result.json", json.dumps(good))
    write("quickstart/seed0.bak/result.json", json.dumps(good))  # a copy: not a seed folder
    write("quickstart/seed1/result.json", '{"model": "quickstart", "se')  # cut short
    write("renamed/seed0/result.json", json.dumps(good))  # names another model than its folder
    write("quickstart/seed2/result.json", json.dumps([good]))  # not a result
    assert sa.collected_runs(str(tmp_path)) == [good]
    err = capsys.readouterr().err
    assert "quickstart/seed1/result.json: not a readable result" in err
    assert "renamed/seed0/result.json: expected the result of model renamed seed 0; left out" in err
    assert "quickstart/seed2/result.json: expected the result of model quickstart seed 2" in err
    assert "seed0.bak" not in err

    (tmp_path / "results.json").write_text("[1, 2]")  # not the file this tool writes
    assert sa.write_results(str(tmp_path), "again") == [good]
    assert "results.json: not a readable results file" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text()) == {"commands": ["again"], "runs": [good]}
    (tmp_path / "results.json").write_text(json.dumps({"command": None, "runs": []}))
    sa.write_results(str(tmp_path), "later")
    assert json.loads((tmp_path / "results.json").read_text())["commands"] == ["later"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["results.json"]  # no temporary sibling left


def test_a_call_refuses_an_output_that_holds_another_budget(tmp_path, capsys):
    """Its finished runs would be skipped as this call's and averaged with them."""
    import json

    run_dir = tmp_path / "quickstart" / "seed0"
    run_dir.mkdir(parents=True)
    data = "configs/data/scenes_128.yaml"
    (run_dir / "result.json").write_text(json.dumps({"model": "quickstart", "seed": 0, "steps": 1000, "data": data}))
    runs = sa.collected_runs(str(tmp_path))
    assert sa.other_budgets(runs, 1000, data) == []
    assert sa.other_budgets(runs, 1000, sa.os.path.abspath(data)) == []  # the same file, spelled absolute
    assert sa.other_budgets(runs, 2000, data) == [f"quickstart seed 0: steps=1000, data={data}"]
    assert sa.other_budgets(runs, 1000, "configs/data/scenes.yaml") != []
    assert sa.main(["--models", "quickstart", "--seeds", "1", "--steps", "2000", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quickstart seed 0: steps=1000" in err and "its own --output" in err
    assert not (tmp_path / "results.json").exists()


def test_a_call_refuses_to_skip_a_broken_result_of_its_own_runs(tmp_path, capsys):
    """A truncated or mislabelled result.json of a run this call would train is not taken as
    finished (it was printed as a score and then missing from the table)."""
    import json

    seed0 = tmp_path / "quickstart" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "result.json").write_text('{"model": "quickstart", "se')
    argv = ["--models", "quickstart", "--seeds", "1", "--steps", "2000", "--output", str(tmp_path)]
    assert sa.main(argv) == 2
    assert "quickstart/seed0/result.json: not a readable result" in capsys.readouterr().err
    (seed0 / "result.json").write_text(json.dumps({"model": "quickstart", "seed": 1, "steps": 2000,
                                                   "data": "configs/data/scenes_128.yaml"}))
    assert sa.main(argv) == 2
    err = capsys.readouterr().err
    assert "expected the result of model quickstart seed 0; move it away to train this run again" in err
    assert not (tmp_path / "results.json").exists()


def test_data_paths_are_recorded_from_the_project_root_whatever_the_working_directory(tmp_path, monkeypatch):
    import os

    runs = [{"model": "quickstart", "seed": 0, "steps": 2000, "data": "configs/data/scenes_128.yaml"}]
    config = os.path.join(sa.ROOT, "configs", "data", "scenes_128.yaml")
    assert sa.data_path(config) == "configs/data/scenes_128.yaml"
    monkeypatch.chdir(tmp_path)  # the same file named from elsewhere is the same data ...
    assert sa.other_budgets(runs, 2000, config) == []
    assert sa.other_budgets(runs, 2000, os.path.relpath(config)) == []
    (tmp_path / "configs" / "data").mkdir(parents=True)
    (tmp_path / "configs" / "data" / "scenes_128.yaml").write_text("data: {}\n")
    # ... and another file that happens to have the same relative name is not
    assert sa.other_budgets(runs, 2000, "configs/data/scenes_128.yaml") != []
    assert sa.data_path("configs/data/scenes_128.yaml") == str(tmp_path.resolve() / "configs/data/scenes_128.yaml")


def test_only_plain_seed_folders_count_and_commands_must_be_a_list(tmp_path, capsys):
    import json

    for folder in ("seed01", "seed1"):
        (tmp_path / "quickstart" / folder).mkdir(parents=True)
        (tmp_path / "quickstart" / folder / "result.json").write_text(json.dumps({"model": "quickstart", "seed": 1}))
    assert sa.collected_runs(str(tmp_path)) == [{"model": "quickstart", "seed": 1}]
    (tmp_path / "results.json").write_text(json.dumps({"commands": "first"}))
    sa.write_results(str(tmp_path), "second")
    assert json.loads((tmp_path / "results.json").read_text())["commands"] == ["second"]
    assert "its commands are not a list" in capsys.readouterr().err
