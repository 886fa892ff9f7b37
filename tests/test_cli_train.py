"""`mrcnn-tf train` argument handling (no training: every case fails or is decided before the model)."""
import pytest

from mrcnn_tf.cli import main
from mrcnn_tf.cli.train import parse_schedule
from mrcnn_tf.errors import ConfigError


def test_parse_schedule_cumulative_stages_and_learning_rates():
    assert parse_schedule("heads:20,all:40", 0.001) == [("heads", 20, 0.001), ("all", 40, 0.001)]
    assert parse_schedule("heads:2, 4+:5, all:9", 0.01, later_lr_factor=0.1) == [
        ("heads", 2, 0.01), ("4+", 5, pytest.approx(0.001)), ("all", 9, pytest.approx(0.001))]
    assert parse_schedule("all:3@0.0005", 0.001) == [("all", 3, 0.0005)]


@pytest.mark.parametrize("text, fragment", [
    ("heads:20,all:10", "cumulative"),
    ("heads:20,all:20", "cumulative"),
    ("backbone:5", "STAGE"),
    ("heads20", "STAGE"),
    ("heads:x", "whole number"),
    ("all:3@-1", "positive"),
])
def test_parse_schedule_errors_say_how_to_fix(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_schedule(text, 0.001)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr()


def test_heads_stage_from_scratch_is_refused(tmp_path, capsys):
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", "none", "--logs", str(tmp_path / "logs"),
                         "--schedule", "heads:2,all:4"], capsys)
    assert code == 2
    assert out.err.count("\n") == 1 and "random weights" in out.err and "all:" in out.err
    assert not (tmp_path / "logs").exists()


def test_bad_schedule_and_missing_weights_file_are_one_line_errors(tmp_path, capsys):
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", "coco", "--schedule", "all:5,heads:2",
                         "--logs", str(tmp_path)], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "cumulative" in out.err
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", str(tmp_path / "nope.h5"),
                         "--logs", str(tmp_path)], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "no such file" in out.err
