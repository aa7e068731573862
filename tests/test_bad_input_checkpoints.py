"""Bad checkpoints, ONNX folders and shot lists: a vidrt error naming the problem and the fix, never a raw traceback."""
import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidrt.checkpoints.load import resolve_layout
from vidrt.checkpoints.state import LazyStateDict
from vidrt.errors import CheckpointError, ConfigError, PromptError
from vidrt.longclip.shots import Shot, as_shots, load_shots
from vidrt.longclip.stream import save_stream
from vidrt.models.config_types import check_config, field_types
from vidrt.pipeline import GenerationDefaults, Pipeline


@pytest.fixture
def broken(tiny_wan, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(tiny_wan, dst)
    return dst


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ----------------------------------------------------------------------------- config.json value types


def test_config_that_is_not_an_object(broken):
    (broken / "transformer" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"transformer/config.json holds an array, not a JSON object"):
        Pipeline.from_pretrained(broken)


@pytest.mark.parametrize("component,key,value,phrase", [
    ("transformer", "num_layers", "eight", "key 'num_layers' must be an int, got 'eight'"),
    ("transformer", "patch_size", [1, 2], "key 'patch_size' must be a list of 3 ints"),
    ("vae", "dim_mult", "1244", "key 'dim_mult' must be a list of ints, got '1244'"),
    ("text_encoder", "num_heads", "two", "key 'num_heads' must be an int, got 'two'"),
])
def test_config_value_of_wrong_type(broken, component, key, value, phrase):
    _edit_json(broken / component / "config.json", **{key: value})
    with pytest.raises(CheckpointError, match=rf"{component}/config.json: {phrase}"):
        Pipeline.from_pretrained(broken)


def test_vae_folder_as_transformer(tiny_wan):
    with pytest.raises(CheckpointError, match=r"vae/config.json is not a transformer config .*no patch_size"):
        Pipeline.from_pretrained(tiny_wan, transformer=tiny_wan / "vae")


def test_image_to_video_checkpoint_is_refused_at_load(broken):
    """A Wan 2.2 I2V-style transformer (36 input channels: latents + the conditioning image's) fails at load, naming
    the pipeline class, not at the first sampler step."""
    from safetensors.torch import load_file, save_file

    _edit_json(broken / "model_index.json", _class_name="WanImageToVideoPipeline")
    _edit_json(broken / "transformer" / "config.json", in_channels=36)
    f = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    w = sd["patch_embedding.weight"]
    sd["patch_embedding.weight"] = torch.zeros(w.shape[0], 36, *w.shape[2:])
    save_file(sd, f)
    with pytest.raises(CheckpointError, match=r"reads 36 and writes 16 latent channels.*have 16: an image-to-video"
                                              r".*names WanImageToVideoPipeline"):
        Pipeline.from_pretrained(broken)


def test_generation_defaults_types(broken):
    # vidrt.json's defaults: the shared checker over GenerationDefaults (wired into GenerationDefaults.from_dict)
    with pytest.raises(CheckpointError, match=r"vidrt.json: key 'height' must be an int, got 'sixty-four'"):
        check_config({"height": "sixty-four", "steps": 2}, field_types(GenerationDefaults), "vidrt.json")
    check_config({"height": 64, "fps": 16, "shift": None, "sampler": "auto"}, field_types(GenerationDefaults), "x")
    (broken / "vidrt.json").write_text('"fast"')
    with pytest.raises(CheckpointError, match=r"vidrt.json holds a string, not a JSON object"):
        resolve_layout(broken)
    # wired into loading: a wrong type in a model's vidrt.json names the file and the key
    (broken / "vidrt.json").write_text('{"height": "sixty-four"}')
    with pytest.raises(CheckpointError, match=r"broken/vidrt.json: key 'height' must be an int, got 'sixty-four'"):
        Pipeline.from_pretrained(broken)


# ----------------------------------------------------------------------------- checkpoint messages


def test_missing_component_lists_only_components(broken):
    _edit_json(broken / "model_index.json", boundary_ratio=None, expand_timesteps=False, transformer_2=[None, None])
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match=r"lacks component folder\(s\) vae .*names scheduler, text_encoder, "
                                              r"tokenizer, transformer, vae\); copy the missing folder") as e:
        Pipeline.from_pretrained(broken)
    assert "boundary_ratio" not in str(e.value) and "transformer_2" not in str(e.value)


def test_corrupt_tokenizer_names_the_file(broken):
    (broken / "tokenizer" / "tokenizer.json").write_text("nope")
    with pytest.raises(CheckpointError, match=r"tokenizer.json is not valid JSON .*copy it from the original"):
        Pipeline.from_pretrained(broken)


def test_missing_scheduler_warns_about_the_fallback(broken, caplog):
    shutil.rmtree(broken / "scheduler")
    with caplog.at_level(logging.WARNING, logger="vidrt.checkpoints.load"):
        assert resolve_layout(broken).scheduler_config["_class_name"] == "UniPCMultistepScheduler"
    assert "no scheduler/scheduler_config.json; using vidrt's default Wan 2.1 scheduler" in caplog.text


def test_unknown_scheduler_names_the_real_option():
    from vidrt.samplers.factory import make_sampler

    with pytest.raises(ConfigError, match=r"sampler='euler' or sampler='unipc' \(CLI: --sampler"):
        make_sampler("auto", 2, config={"_class_name": "DDIMScheduler"})


@pytest.mark.parametrize("name,data", [("afile.txt", b"hi\n"), ("bad.pth", bytes(range(7, 250)) * 4),
                                       ("x.bin", b"\x80\x02junk")])
def test_garbage_weight_file(tiny_wan, tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(CheckpointError, match="is not a readable PyTorch/safetensors checkpoint") as e:
        Pipeline.from_pretrained(tiny_wan, transformer=f)
    assert "_use_new_zipfile_serialization" not in str(e.value)


def test_legacy_torch_save_file_still_reads(tmp_path):
    f = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, f, _use_new_zipfile_serialization=False)
    assert torch.equal(LazyStateDict([f])["w"], torch.ones(2))


# ----------------------------------------------------------------------------- ONNX folders


def test_truncated_onnx_graph(tmp_path):
    pytest.importorskip("onnxruntime")
    from vidrt.export.ort_backend import OrtSession

    f = tmp_path / "transformer.onnx"
    f.write_bytes(b"\x08\x07\x12\x0bpytorch\x1a\xff\xff")  # a graph cut short
    with pytest.raises(CheckpointError, match=r"transformer.onnx is corrupt or truncated.*vidrt export onnx"):
        OrtSession(f, torch.device("cpu"))


@pytest.mark.parametrize("precision,phrase", [("fp8", r"use backend='torch' for precision='fp8'"),
                                              ("fp16", r"vidrt export onnx --precision fp16")])
def test_onnx_precision_mismatch_wording(tmp_path, precision, phrase):
    pytest.importorskip("onnxruntime")
    from vidrt.export.onnx_export import FORMAT, FORMAT_VERSION, MANIFEST

    (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                                 "precision": "fp32"}))
    with pytest.raises(ConfigError, match=phrase) as e:
        Pipeline.from_pretrained(tmp_path, backend="onnxruntime", precision=precision)
    assert "--precision fp8" not in str(e.value)


# ----------------------------------------------------------------------------- shot lists


def _shots_file(tmp_path, text, name="shots.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_shot_negative_prompt_must_be_a_string(tmp_path):
    with pytest.raises(PromptError, match="negative_prompt must be a string"):
        Shot("a red circle", negative_prompt=5)
    f = _shots_file(tmp_path, "- a red circle moves right\n- prompt: the red circle bounces\n  negative_prompt: 5\n")
    with pytest.raises(PromptError, match="shot 2: negative_prompt must be a string"):
        load_shots(f)


def test_shot_seconds_must_be_a_number(tmp_path):
    with pytest.raises(PromptError, match="seconds must be a number, got '10'"):
        Shot("a red circle", seconds="10")
    with pytest.raises(PromptError, match="shot 1: seconds must be a number, got 'ten'"):
        load_shots(_shots_file(tmp_path, "- prompt: a red circle\n  seconds: ten\n"))
    assert load_shots(_shots_file(tmp_path, "- prompt: a red circle\n  seconds: '10'\n"))[0].seconds == 10.0


def test_shot_prompt_list_is_rejected(tmp_path):
    with pytest.raises(PromptError, match=r"shot 1: a shot needs a non-empty prompt string, got \['a', 'b'\]"):
        load_shots(_shots_file(tmp_path, "- prompt: [a, b]\n"))
    with pytest.raises(PromptError, match="give a prompt, a Shot, a list"):
        as_shots(123)


def test_shot_file_with_other_extension(tmp_path):
    f = _shots_file(tmp_path, "a red circle moves right\n", name="shots.txt")
    with pytest.raises(PromptError, match=r"use a .yaml/.yml or .json file \(not .txt\)"):
        load_shots(f)


def test_stream_error_keeps_and_reports_finished_frames(tmp_path, caplog):
    def parts():
        yield SimpleNamespace(frames=np.zeros((5, 16, 16, 3), np.uint8), fps=16.0, timings={"part_s": 0.1})
        raise PromptError("shot 2: something went wrong")

    out = tmp_path / "long.mp4"
    with caplog.at_level(logging.WARNING, logger="vidrt.longclip.stream"):
        with pytest.raises(PromptError, match="shot 2") as e:
            save_stream(parts(), out)
    assert e.value.kept_frames == 5 and e.value.kept_path == out and out.stat().st_size > 0
    assert f"{out} holds the 5 finished frames" in caplog.text
