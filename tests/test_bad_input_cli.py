"""Bad command-line input: exit code 2 and a message naming the problem and the fix, before any model loads."""
import sys
from pathlib import Path

import numpy as np
import pytest

import vidrt
from vidrt.cli import main

UNWRITABLE = "/proc/nope" if Path("/proc/self").is_dir() else None


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model, exporting or reading an ONNX folder."""
    import vidrt.export.onnx_export as onnx_export
    import vidrt.pipeline
    import vidrt.quant.compare as compare

    def fail(*a, **k):
        pytest.fail("the command started working before rejecting its arguments")

    monkeypatch.setattr(vidrt.pipeline.Pipeline, "from_pretrained", fail)
    monkeypatch.setattr(compare, "run_compare", fail)
    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    monkeypatch.setattr(onnx_export, "load_manifest", fail)


def rejected(capsys, argv, *phrases):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    return err


@pytest.mark.parametrize("cmd", [["generate", "a red circle"], ["stream", "a red circle"], ["calibrate"],
                                 ["bench", "--model", "random:tiny"]])
@pytest.mark.parametrize("threads", ["-2", "0"])
def test_threads_below_one(no_work, capsys, cmd, threads):
    rejected(capsys, cmd + ["--threads", threads], f"--threads {threads}", "at least 1")


def test_output_paths_checked_before_work(no_work, capsys, tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    under_file = afile / "x.json"  # a file where a folder is needed: portable "cannot write here"
    rejected(capsys, ["generate", "a red circle", "-o", tmp_path / "a.txt"], "cannot write .txt", "use .mp4")
    rejected(capsys, ["generate", "a red circle", "-o", tmp_path], "is a folder", "give a file path")
    rejected(capsys, ["generate", "a red circle", "--json", under_file], "is a file", "choose another path")
    rejected(capsys, ["stream", "a red circle", "-o", tmp_path / "st.txt"], "cannot write .txt", ".png")
    rejected(capsys, ["stream", "a red circle", "--json", under_file], "--json")
    rejected(capsys, ["bench", "--json", under_file], "--json")
    rejected(capsys, ["bench", "--plot", tmp_path / "p.txt"], "--plot", "use .png")
    rejected(capsys, ["info", "--json", under_file], "--json")
    rejected(capsys, ["calibrate", "--json", under_file], "--json")
    rejected(capsys, ["compare", "--markdown", under_file], "--markdown")
    rejected(capsys, ["export", "tensorrt", "--onnx", tmp_path, "--shapes", "64x64x1", "--check-only", "--json",
                      under_file], "--json")
    rejected(capsys, ["export", "onnx", "-o", afile], "is an existing file, not a folder")


@pytest.mark.skipif(UNWRITABLE is None, reason="needs /proc")
@pytest.mark.parametrize("argv", [
    ["generate", "a red circle", "-o", f"{UNWRITABLE}/a.png"],
    ["generate", "a red circle", "--json", f"{UNWRITABLE}/x.json"],
    ["stream", "a red circle", "--json", f"{UNWRITABLE}/x.json"],
    ["compare", "--plot", f"{UNWRITABLE}/x.png"],
    ["export", "onnx", "-o", f"{UNWRITABLE}/onnx"],
])
def test_unwritable_folder(no_work, capsys, argv):
    rejected(capsys, argv, "cannot create files in /proc", "choose a folder you can write to")


def test_multi_frame_png_is_animated_and_jpg_is_one_frame(tmp_path):
    from PIL import Image

    v = vidrt.Video(np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8))
    assert Image.open(v.save(tmp_path / "a.png")).n_frames == 5
    assert Image.open(vidrt.Video(v.frames[:1]).save(tmp_path / "one.png")).n_frames == 1
    with pytest.raises(vidrt.ConfigError, match="a JPEG holds one image"):
        v.save(tmp_path / "a.jpg")


def test_generate_png_keeps_every_frame(tiny_wan, tmp_path, capsys):
    from PIL import Image

    out, js = tmp_path / "new" / "a5.png", tmp_path / "new2" / "run.json"  # missing folders are created
    assert main(["generate", "a red circle moves right", "--model", str(tiny_wan), "--frames", "5", "--height", "16",
                 "--width", "16", "--steps", "1", "--threads", "1", "-o", str(out), "--json", str(js)]) == 0
    assert "(5 frames" in capsys.readouterr().out
    assert Image.open(out).n_frames == 5 and js.is_file()


def test_generate_jpg_with_frames_rejected(no_work, capsys, tmp_path):
    rejected(capsys, ["generate", "a red circle", "--frames", "5", "-o", tmp_path / "a.jpg"],
             "a JPEG holds one image, not 5 frames", "--frames 1")


@pytest.mark.parametrize("seconds", ["0", "-3", "nan"])
def test_generate_seconds_not_positive(no_work, capsys, seconds):
    rejected(capsys, ["generate", "a red circle", "--seconds", seconds], "--seconds", "above 0")


@pytest.mark.parametrize("argv, phrase", [
    (["compare", "--steps", "0"], "--steps 0"),
    (["calibrate", "--steps", "0"], "--steps 0"),
    (["calibrate", "--height", "0"], "--height 0"),
    (["stream", "a red circle", "--chunk-frames", "0"], "--chunk-frames 0"),
    (["stream", "a red circle", "--chunk-frames", "-3"], "--chunk-frames -3"),
])
def test_zero_is_not_the_default(no_work, capsys, argv, phrase):
    err = rejected(capsys, argv, phrase, "at least 1", "leave")
    assert "KV cache" not in err and "frame_tokens" not in err


def test_calibrate_arguments(no_work, capsys, tmp_path):
    one, empty = tmp_path / "one.txt", tmp_path / "empty.txt"
    one.write_text("a red circle moves right\n")
    empty.write_text("\n  \n")
    rejected(capsys, ["calibrate", "--prompts", tmp_path / "nope.txt"], "cannot read --prompts", "one prompt per line")
    rejected(capsys, ["calibrate", "--prompts", empty], "holds no prompts")
    rejected(capsys, ["calibrate", "--thresholds", "abc"], "--thresholds 'abc'", "e.g. 0.1,0.2,0.4")
    rejected(capsys, ["calibrate", "--thresholds=-0.5"], "above 0")
    rejected(capsys, ["calibrate", "--steps", "2"], "only 4 calibration points", "use --steps 3 or more")
    rejected(capsys, ["calibrate", "--prompts", one, "--steps", "5"], "only 4 calibration points", "--steps 6")


def test_calibrate_late_fit_error_is_clean(tiny_wan, tmp_path, capsys, monkeypatch):
    import vidrt.caching.calibration as calibration

    def too_few(*a, **k):
        raise ValueError("only 1 calibration points for a degree-4 fit; use more steps or prompts")

    monkeypatch.setattr(calibration, "fit_teacache", too_few)
    rejected(capsys, ["calibrate", "--model", tiny_wan, "--height", "16", "--width", "16", "--frames", "1",
                      "--skip-quality"], "only 1 calibration points", "use more steps or prompts")


def test_missing_optional_dependencies(no_work, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    rejected(capsys, ["compare", "--plot", tmp_path / "c.png"], "--plot needs matplotlib", "vidrt[bench]")
    rejected(capsys, ["bench", "--plot", tmp_path / "c.png"], "--plot needs matplotlib", "vidrt[bench]")
    rejected(capsys, ["bench", "--model", "random:tiny", "--baseline", "diffusers"], "needs diffusers",
             "vidrt[bench]", "drop --baseline")
    rejected(capsys, ["export", "tensorrt", "--onnx", tmp_path, "--shapes", "64x64x1", "--check-only"],
             "needs onnx", "vidrt[onnx]")


def test_values_checked(no_work, capsys, tmp_path):
    rejected(capsys, ["export", "tensorrt", "--onnx", tmp_path, "--shapes", "64x64x1", "--check-only",
                      "--precision", "fp12"], "--precision fp12", "fp16")
    rejected(capsys, ["compare", "--precision", ","], "names no precision", "fp32,bf16")
    rejected(capsys, ["bench", "--compare", tmp_path / "a.json", tmp_path / "b.json", "--min-change", "-1"],
             "--min-change -1", "0 or more")
    shots = tmp_path / "shots.txt"
    shots.write_text("a red circle moves right\n")
    rejected(capsys, ["stream", "--shots", shots], "use a .yaml/.yml or .json file")


def test_bench_out_of_memory(tiny_wan, capsys, monkeypatch):
    from vidrt.bench.targets import VidrtTarget

    def oom(self, req, latents):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 2818572288 bytes. Error code 12")

    monkeypatch.setattr(VidrtTarget, "generate", oom)
    rejected(capsys, ["bench", "--model", tiny_wan, "--shapes", "16x16x1", "--steps", "1", "--warmup", "0",
                      "--repeats", "1", "--quality", "off", "--no-progress"],
             "16x16x1 at batch 1 needs more memory than this machine has", "lower --shapes")
