"""The image pipeline's flags (generated from RuntimeConfig): bad values are one line, exit 2."""

import pytest

from compressbo.app.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data-workers", "0"], "--data-workers must be an integer >= 1"),
        (["--data-workers", "-1"], "--data-workers must be an integer >= 1"),
        (["--data-on-device", "maybe"], "--data-on-device"),
    ],
)
def test_bad_pipeline_flags_exit_2_with_one_line(env, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["compress", "--out", str(env / "run"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compressbo: error:") and "\n" not in err and message in err
    assert "Traceback" not in err
    assert not (env / "run").exists()
