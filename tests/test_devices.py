"""`--device mps` (Apple Silicon) is accepted wherever `--device` is, and refused in one line where
this machine has no MPS."""
import argparse

import pytest
import torch

from lmzoo.cli.main import build_parser, main
from lmzoo.devices import resolve_device
from lmzoo.errors import LmzooError


def verbs_with_device(parser: argparse.ArgumentParser, prefix=()) -> dict[tuple, argparse.Action]:
    found = {}
    for action in parser._actions:
        if "--device" in action.option_strings:
            found[prefix] = action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(verbs_with_device(sub, (*prefix, name)))
    return found


def test_every_device_option_documents_mps():
    found = verbs_with_device(build_parser())
    assert {("generate",), ("chat",), ("eval",), ("train",), ("finetune",)} <= set(found)
    undocumented = [" ".join(verb) for verb, action in found.items() if "mps" not in (action.help or "")]
    assert not undocumented, f"--device help without mps: {undocumented}"


def test_mps_resolves_where_the_machine_has_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")


def test_mps_is_refused_in_one_line_without_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(LmzooError, match="MPS is not available; use --device cpu"):
        resolve_device("mps")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
@pytest.mark.parametrize("argv", [["generate", "{missing}", "--prompt", "hi"], ["eval", "{missing}", "--data", "x"],
                                  ["chat", "{missing}"]])
def test_cli_names_mps_as_missing_not_unknown(argv, tmp_path, capsys):
    argv = [a.replace("{missing}", str(tmp_path / "model")) for a in argv]
    assert main([*argv, "--device", "mps"]) == 2
    err = capsys.readouterr().err
    assert "MPS is not available" in err and "Traceback" not in err
