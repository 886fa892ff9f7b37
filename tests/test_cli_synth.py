"""`mrcnn-tf synth`: writes the same tree as the library call, and reports bad input on one line."""
import hashlib
import json

import pytest
from click.testing import CliRunner

from mrcnn_tf.wbc import synth
from mrcnn_tf.cli import cli, main


def _digests(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_synth_command_writes_the_library_tree(tmp_path):
    out = tmp_path / "out dir ü"
    result = CliRunner().invoke(cli, ["synth", str(out), "--per-class", "1", "--mixt", "1", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 images" in result.output and "seed 2" in result.output
    manifest = json.loads((out / "synth_manifest.json").read_text())
    assert [e["folder"] for e in manifest["images"]] == ["Baso", "eosi", "lymp", "mono", "neut", "mixt"]
    synth.write_lisc(tmp_path / "lib", per_class=1, mixt=1, seed=2)
    assert _digests(out) == _digests(tmp_path / "lib")


def test_synth_defaults_and_help(tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "d"), "--per-class", "1"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "d" / "LISC Database" / "Main Dataset" / "mixt").exists()
    assert "--per-class" in CliRunner().invoke(cli, ["synth", "--help"]).output


@pytest.mark.parametrize("args, message", [([], "Missing option '--per-class'"),
                                           (["--per-class", "-1"], "-1 is not in the range x>=0"),
                                           (["--per-class", "1", "--mixt", "x"], "'x' is not a valid integer")])
def test_synth_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output


def test_unwritable_output_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(blocker / "sub"), "--per-class", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "cannot write the synthetic set" in err and len(err.splitlines()) == 1


def test_error_exit_drops_only_the_thread_pool_teardown_noise(monkeypatch, capsys):
    """After the one-line error, a leaked thread pool's EBADF at exit prints nothing; other errors still do."""
    import multiprocessing.pool
    import sys
    import types

    from mrcnn_tf.errors import MrcnnError

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def fail(**kwargs):
        raise MrcnnError("multi-worker training stopped in epoch 3: worker 1 is gone")

    monkeypatch.setattr(cli, "main", fail)
    with pytest.raises(SystemExit) as info:
        main(["synth", "somewhere"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "Error: multi-worker training stopped in epoch 3: worker 1 is gone"

    def unraisable(exc, obj):
        return types.SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, err_msg=None, object=obj)

    sys.unraisablehook(unraisable(OSError(9, "Bad file descriptor"), multiprocessing.pool.Pool.__del__))
    assert reported == []
    for other in (unraisable(ValueError("a bug"), multiprocessing.pool.Pool.__del__),
                  unraisable(OSError(9, "Bad file descriptor"), _digests)):
        sys.unraisablehook(other)
    assert [r.exc_type for r in reported] == [ValueError, OSError]
