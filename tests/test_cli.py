"""The `keras-effconv` command line."""

import json

import pytest

from keras_effconv import cli


def test_profile_prints_summary_and_json(capsys):
    assert cli.main(["profile", "eff_resnet20", "--conv", "hetconv"]) == 0
    assert "eff_resnet20:" in capsys.readouterr().out
    assert cli.main(["profile", "eff_resnet20", "--conv", "standard", "--json", "--input-shape", "28,28,1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [28, 28, 1] and data["total_macs"] > 0


def test_profile_a_saved_model(tmp_path, capsys):
    from keras_effconv import applications

    path = str(tmp_path / "m.keras")
    applications.EffResNet20(conv="igc").save(path)
    assert cli.main(["profile", path, "--layers"]) == 0
    out = capsys.readouterr().out
    assert "InterleavedGroupConv2D" in out and "MACs" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "resnet9"], "unknown model"),
        (["profile", "missing.keras"], "not found"),
        (["profile", "eff_resnet20", "--conv", "winograd"], "invalid choice"),
        (["profile", "eff_resnet20", "--conv-config", "{part: 2}"], "not valid JSON"),
        (["profile", "eff_resnet20", "--conv-config", '{"parts": 2}'], "unknown argument"),
        (["profile", "eff_resnet20", "--input-shape", "28,28"], "three positive integers"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
