from pathlib import Path

from compressbo.paths import user_cache_dir


def test_user_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("COMPRESSBO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "compressbo"
    monkeypatch.setenv("COMPRESSBO_CACHE", str(tmp_path / "own"))
    assert user_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("COMPRESSBO_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "compressbo"
