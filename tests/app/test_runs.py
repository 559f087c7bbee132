import json

import pytest

from compressbo.exceptions import UserInputError
from compressbo.app.rundir import RunDirectory, package_versions


def test_create_writes_config_and_refuses_to_overwrite(tmp_path):
    run = RunDirectory.create(tmp_path / "run", {"acq": "cei"})
    assert run.config == {"acq": "cei"}
    with pytest.raises(UserInputError, match="--resume"):
        RunDirectory.create(tmp_path / "run", {"acq": "ei"})
    assert RunDirectory.open(tmp_path / "run").config == {"acq": "cei"}


def test_open_missing_run_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match="no config.json") as info:
        RunDirectory.open(tmp_path / "nowhere")
    assert "\n" not in str(info.value)


def test_unwritable_out_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="writable --out"):
        RunDirectory.create(tmp_path / "file" / "run", {})


def test_history_appends_in_order_and_drops_a_torn_last_line(tmp_path):
    run = RunDirectory.create(tmp_path, {})
    for i in range(3):
        run.append({"iteration": i, "y": 0.5 * i})
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"iteration": 3, "y"')  # the process died mid-write
    assert [r["iteration"] for r in run.history()] == [0, 1, 2]
    run.append({"iteration": 3, "y": 1.5})
    assert [r["iteration"] for r in run.history()] == [0, 1, 2, 3]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2, 3]


def test_state_round_trips_and_leaves_no_temporary_file(tmp_path):
    run = RunDirectory.create(tmp_path, {})
    assert run.load_state() is None
    run.save_state({"X": [[0.1, 0.2]], "n": 1})
    run.save_state({"X": [[0.1, 0.2], [0.3, 0.4]], "n": 2})
    assert run.load_state() == {"X": [[0.1, 0.2], [0.3, 0.4]], "n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "optimizer_state.json"]


def test_package_versions_names_the_stack():
    versions = package_versions()
    for name in ("python", "torch", "botorch", "compressbo"):
        assert versions[name] and versions[name] != "not installed"


def test_discard_if_empty_frees_the_directory_only_before_any_evaluation(tmp_path):
    run = RunDirectory.create(tmp_path / "a", {})
    run.discard_if_empty()
    assert not (tmp_path / "a").exists()
    RunDirectory.create(tmp_path / "a", {})  # --out is free again

    run = RunDirectory.create(tmp_path / "b", {})
    run.append({"iteration": 0})
    run.discard_if_empty()
    assert (tmp_path / "b" / "config.json").exists()


def test_history_refuses_a_damaged_complete_line_and_changes_nothing(tmp_path):
    run = RunDirectory.create(tmp_path, {})
    for i in range(4):
        run.append({"iteration": i})
    path = tmp_path / "history.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    for number, bad in [(2, "garbage\n"), (3, "[1, 2]\n"), (2, "\n")]:
        damaged = "".join(lines[: number - 1]) + bad + "".join(lines[number:]) + '{"iteration": 4, "y'
        path.write_text(damaged)
        with pytest.raises(UserInputError) as info:
            run.history()
        message = str(info.value)
        assert f"{path} line {number} is not a JSON object" in message
        assert "damaged" in message and "nothing was changed" in message and "\n" not in message
        assert path.read_text() == damaged  # every later record, and the torn tail, are kept


def test_create_refuses_a_directory_of_other_files_a_file_and_an_empty_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" must not mean the current directory
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "report.md").write_text("my report")
    message = "--out .*mine exists and holds other files.*choose a new or empty directory"
    with pytest.raises(UserInputError, match=message):
        RunDirectory.create(mine, {"acq": "cei"})
    assert sorted(p.name for p in mine.iterdir()) == ["model", "report.md"]
    assert (mine / "report.md").read_text() == "my report"

    (tmp_path / "file").write_text("data")
    with pytest.raises(UserInputError, match="--out .*file is a file, not a directory") as info:
        RunDirectory.create(tmp_path / "file", {})
    assert "\n" not in str(info.value) and (tmp_path / "file").read_text() == "data"
    with pytest.raises(UserInputError, match="--out must name a directory"):
        RunDirectory.create("", {})
    assert not (tmp_path / "config.json").exists()

    (tmp_path / "empty").mkdir()
    assert RunDirectory.create(tmp_path / "empty", {"acq": "ei"}).config == {"acq": "ei"}
