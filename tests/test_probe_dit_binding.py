"""tools/probe_dit_binding.py: contrast prompts change only what their task names (and never give back the same
scene); the embedded DiT's implicit classifier recognises its own held-out scenes."""
from __future__ import annotations

import json
from pathlib import Path

from vidrt.testing import load_script
from vidrt.world.grammar import parse

ROOT = Path(__file__).resolve().parents[1]
tool = load_script(ROOT / "tools/probe_dit_binding.py")


def test_contrast_prompts():
    two = "a red circle moves left and a blue square grows on a gray background"
    assert tool.contrast("shape binding", two, [two], 0) == \
        "a red square moves left and a blue circle grows on a gray background"
    assert tool.contrast("motion binding", two, [two], 0) == \
        "a red circle grows and a blue square moves left on a gray background"
    three = parse("a red circle moves up and a blue circle stays still and a green triangle shrinks")
    rotated = parse(tool.contrast("shape binding", three.prompt(), [], 0))
    assert [o.shape for o in rotated.objects] == ["circle", "triangle", "circle"]
    assert [(o.color, o.motion) for o in rotated.objects] == [(o.color, o.motion) for o in three.objects]
    # nothing to bind: one object, equal shapes, or the same objects in another order
    assert tool.contrast("shape binding", "a red circle moves left", [], 0) is None
    assert tool.contrast("shape binding", "a red circle grows and a blue circle moves up", [], 0) is None
    assert tool.contrast("shape binding", "a red circle stays still and a red square stays still", [], 0) is None
    assert tool.contrast("shape", "a red triangle moves up", [], 0) == "a red circle moves up"
    assert tool.contrast("shape", two, [], 0) is None
    assert tool.contrast("prompt", two, ["x", two, "a blue square moves left"], 1) == "a blue square moves left"
    assert tool.contrast("prompt", two, [two], 0) is None                  # never the prompt itself
    same = "a red circle moves to the left and a blue square grows on a grey background"   # another wording
    assert tool.contrast("prompt", two, [two, same], 0) is None


def test_few_prompts_report_what_they_have(tmp_path, capsys):
    """A task with one render or none has no error bar or no accuracy: printed as n/a, the JSON still written."""
    out = tmp_path / "p.json"
    assert tool.main(["--sizes", "1x32x32", "--prompts", "1", "--seeds", "1", "--levels", "2", "--threads", "1",
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())["sizes"]["1x32x32"]
    assert res["prompt"]["renders"] == 0 and res["prompt"]["accuracy"] is None     # one prompt: nothing to contrast
    assert "n/a" in capsys.readouterr().out


def test_embedded_dit_recognises_its_scenes(tmp_path):
    out = tmp_path / "p.json"
    assert tool.main(["--sizes", "1x64x64", "--prompts", "8", "--seeds", "1", "--levels", "6", "--threads", "1",
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())["sizes"]["1x64x64"]
    assert set(res) == {"prompt", "shape", "shape binding"}        # no motion task on images
    assert res["prompt"]["renders"] == res["prompt"]["prompts"] == 8
    # measured on all 72 prompts x 2 seeds: 0.993 (another prompt's words), 0.938 (one object, another shape)
    assert res["prompt"]["accuracy"] >= 7 / 8 and res["prompt"]["margin"] > 1.0
    assert res["shape"]["renders"] >= 1 and res["shape binding"]["renders"] >= 1
    levels = res["prompt"]["by_level"]
    assert [v["s"] for v in levels] == [0.0833, 0.25, 0.4167, 0.5833, 0.75, 0.9167]
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in levels) and levels[0]["accuracy"] >= 7 / 8
