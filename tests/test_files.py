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
