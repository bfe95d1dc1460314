"""The CLI's failures: an expected one (a file not UTF-8, a damaged model, a path that is a folder) is one line
naming the file and the fix, exit 1, no traceback (``--debug`` shows it); a bug keeps its traceback and says where
to report it. And the CLI sends nothing anywhere: Haystack's telemetry is off unless the user turned it on."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syntriever_haystack.cli import main
from syntriever_haystack.errors import describe_failure

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LATIN1 = "dataset:\n  path: caf\xe9\n".encode("latin-1")


def _cli(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syntriever_haystack", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_non_utf8_recipe_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(LATIN1)
    _one_line_error(_cli(["recipe", "check", str(recipe)], subprocess_env), str(recipe), "UTF-8", "iconv")
    for args in (["--debug", "recipe", "check", str(recipe)], ["recipe", "check", str(recipe), "--debug"]):
        result = _cli(args, subprocess_env)
        assert result.returncode == 1
        assert "Traceback" in result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith(f"error: {recipe}")


def test_binary_onnx_file_is_one_line(
    exported_bi_encoder: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(exported_bi_encoder, model)
    meta = json.loads((model / "syntriever.json").read_text())
    (model / meta["files"]["fp32"]).write_bytes(bytes(range(256)) * 64)
    line = _one_line_error(_cli(["embed", str(model), "hello"], subprocess_env), "ONNX", "syntriever export")
    assert str(model) in line


def test_binary_tokenizer_and_metadata_name_the_file(
    exported_bi_encoder: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(exported_bi_encoder, model)
    (model / "tokenizer.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    _one_line_error(_cli(["info", str(model)], subprocess_env), str(model / "tokenizer.json"), "not UTF-8")
    (model / "syntriever.json").write_bytes(b"\xff\xfe{}")
    _one_line_error(_cli(["info", str(model)], subprocess_env), str(model / "syntriever.json"), "syntriever export")


def test_non_utf8_corpus_is_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_bytes(b'{"_id": "d1", "title": "", "text": "caf\xe9"}\n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "coffee"}\n')
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    args = ["evaluate", "--dataset", str(data), "--system", "bm25", "--no-cache", "--quiet"]
    _one_line_error(_cli(args, subprocess_env), str(data / "corpus.jsonl"), "UTF-8", "iconv")


def test_expected_failures_become_one_line_and_bugs_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import syntriever_haystack.cli as cli

    def fail_with(exc: BaseException) -> None:
        def run(args: object) -> int:
            raise exc

        monkeypatch.setattr(cli, "_cmd_info", run)  # build_parser() in main() picks it up

    cases = [
        (IsADirectoryError(errno.EISDIR, "Is a directory", str(tmp_path)), f"{tmp_path}: Is a directory; it is a"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "/root/x: Permission denied; check its"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8 text (byte 0: invalid start"),
        (json.JSONDecodeError("Expecting value", "x", 0), "invalid JSON (Expecting value at line 1, column 1)"),
    ]
    for exc, expected in cases:
        fail_with(exc)
        assert main(["info", "x"]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert expected in err, err
        assert len(err.strip().splitlines()) == 1
    fail_with(ZeroDivisionError("division by zero"))
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ZeroDivisionError" in err
    assert "please report it" in err


def test_describe_failure_knows_damaged_model_files(tmp_path: Path) -> None:
    import onnxruntime as ort

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(Exception, match="INVALID_PROTOBUF") as info:
        ort.InferenceSession(str(bad))
    message = describe_failure(info.value)
    assert message is not None
    assert str(bad) in message
    assert "syntriever export" in message
    from safetensors.numpy import load_file

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(Exception, match="deserializing header") as info:
        load_file(str(weights))
    assert "safetensors" in (describe_failure(info.value) or "")
    assert describe_failure(ZeroDivisionError()) is None
    assert describe_failure(ValueError("from a library")) is None  # not raised by our code: a bug to report


# --------------------------------------------------------------------------------------------- telemetry
_CHILD = """
import os, sys
import syntriever_haystack, syntriever_haystack.flow.recipe
print("after import:", os.environ.get("HAYSTACK_TELEMETRY_ENABLED"))
from syntriever_haystack.cli import main
main(["recipe", "dump"])
import haystack.telemetry._telemetry as t
state = "enabled" if t.telemetry else "disabled"
print("after main:", os.environ.get("HAYSTACK_TELEMETRY_ENABLED"), state, file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("explicit", "after_import", "after_main"),
    [(None, "None", "False disabled"), ("True", "True", "True enabled"), ("False", "False", "False disabled")],
)
def test_cli_turns_telemetry_off_unless_the_user_chose(
    explicit: str | None, after_import: str, after_main: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})  # no ~/.haystack config
    if explicit is not None:
        env["HAYSTACK_TELEMETRY_ENABLED"] = explicit
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"after import: {after_import}" in result.stdout  # importing the library changes nothing
    assert f"after main: {after_main}" in result.stderr
