from pathlib import Path

from compressbo.files import user_cache_dir


def test_user_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("COMPRESSBO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "compressbo"
    monkeypatch.setenv("COMPRESSBO_CACHE", str(tmp_path / "own"))
    assert user_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("COMPRESSBO_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "compressbo"


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path):
    import json

    import pytest

    from compressbo.files import atomic_write, write_json_atomic

    target = tmp_path / "state.json"
    write_json_atomic(target, {"n": 1})
    write_json_atomic(target, {"n": 2})
    assert json.loads(target.read_text()) == {"n": 2}

    def crash(temporary):
        temporary.write_text('{"n": 3')  # half written, then the writer dies
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_gives_the_mode_open_would_give(tmp_path):
    import os

    from compressbo.files import write_json_atomic

    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o077, 0o002):
            os.umask(umask)
            atomic, plain = tmp_path / f"atomic-{umask:o}.json", tmp_path / f"plain-{umask:o}.json"
            write_json_atomic(atomic, {"n": 1})
            write_json_atomic(atomic, {"n": 2})  # replacing keeps the same rule
            plain.write_text("{}")
            assert atomic.stat().st_mode & 0o777 == 0o666 & ~umask
            assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    finally:
        os.umask(previous)


def test_check_output_directory_accepts_only_new_empty_or_own_directories(tmp_path):
    import pytest

    from compressbo.exceptions import UserInputError
    from compressbo.files import check_output_directory

    assert check_output_directory(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # checking writes nothing
    (tmp_path / "empty").mkdir()
    assert check_output_directory(tmp_path / "empty") == tmp_path / "empty"
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "runs.json").write_text("{}")
    (tmp_path / "own" / "summary.md").write_text("# old")
    assert check_output_directory(tmp_path / "own", keep=("runs.json",)) == tmp_path / "own"

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    cases = [
        (tmp_path / "mine", "--out .*mine exists and holds other files, not a compressbo run; choose a new"),
        (tmp_path / "file", "--out .*file is a file, not a directory; choose a new or empty directory"),
        ("", "--out must name a directory"),
        ("  ", "--out must name a directory"),
    ]
    for path, message in cases:
        with pytest.raises(UserInputError, match=message) as info:
            check_output_directory(path, keep=("runs.json",), kind="run")
        assert "\n" not in str(info.value)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"
