"""``--device`` on every command that runs the model: a device that is not there is one line and exit 2, before
anything is loaded or written. (That each command computes on a GPU what it computes on the CPU is
tests/tracer/test_cuda.py's, marker gpu.)"""

from pathlib import Path

import pytest

from workbench.cli import main
from workbench.paths import world_dir

WORLD = world_dir()
MODEL, PLT = str(WORLD / "model"), str(WORLD / "plt")
BAD = "cuda:99"  # no machine has it: refused with or without CUDA


def _argv(command: str, tmp: Path) -> list[str]:
    prompts = tmp / "prompts.txt"
    prompts.write_text("Two days after Friday is\n")
    fit = tmp / "manifold.json"
    fit.write_text("{}")
    model = ["--model", MODEL, "--transcoders", PLT]
    return {
        "trace": ["trace", *model, "--prompt", "Two days after Friday is", "--out", str(tmp / "out" / "g.safetensors")],
        "intervene": ["intervene", *model, "--prompt", "Two days after Friday is", "--set", "1:2:3=0", "--out",
                      str(tmp / "out" / "i.json")],
        "activations": ["activations", *model, "--prompts", str(prompts), "--out", str(tmp / "out" / "acts")],
        "cluster": ["cluster", str(WORLD / "manifest.json"), *model, "--out", str(tmp / "out" / "s.json")],
        "families": ["families", *model, "--prompts", str(prompts), "--out", str(tmp / "out" / "f.json")],
        "manifold fit": ["manifold", "fit", *model, "--world", str(WORLD), "--family", "day", "--layer", "4",
                         "--out", str(tmp / "out" / "fit")],
        "manifold steer": ["manifold", "steer", "--fit", str(fit), "--world", str(WORLD), "--family", "day",
                           "--out", str(tmp / "out" / "steer.json")],
        "manifold discover": ["manifold", "discover", *model, "--prompts", str(prompts), "--out",
                              str(tmp / "out" / "disc")],
    }[command]


@pytest.mark.skipif(not (WORLD / "manifest.json").is_file(), reason="data/world is not built")
@pytest.mark.parametrize("command", ["trace", "intervene", "activations", "cluster", "families", "manifold fit",
                                     "manifold steer", "manifold discover"])
@pytest.mark.parametrize("device", [BAD, "tpu"])
def test_a_device_that_is_not_there_is_one_line_and_nothing_is_written(tmp_path, capsys, command, device):
    (tmp_path / "out").mkdir()
    code = main([*_argv(command, tmp_path), "--device", device])
    err = capsys.readouterr().err
    assert code == 2 and "device must be" in err and repr(device) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert list((tmp_path / "out").iterdir()) == []
