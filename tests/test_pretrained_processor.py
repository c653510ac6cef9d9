"""A ``save_pretrained`` folder's preprocessing (:func:`vidxai.pretrained.load_pretrained`) against the pixel values
transformers' own processor computes from the same uint8 frames.

Each processor config is written by transformers' processor class itself (``save_pretrained``), next to a tiny
random VideoMAE classifier (the processor config, not the model, decides the preprocessing); frames that need a
real resize (30 x 40, aspect kept or not) and a centre crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from vidxai.pretrained import load_pretrained  # noqa: E402

FRAMES = 4
TINY = dict(num_frames=FRAMES, image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32, tubelet_size=2, num_labels=3)
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]  # channels differ: a swapped channel order would show
SHORTEST = dict(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}, image_mean=MEAN, image_std=STD)

#: processor class -> its settings (each also saved as the class writes them); the bicubic ones differ from the
#: bilinear default, ViViT's video processor offsets the rescaled pixels in its code (no ``offset`` key)
PROCESSORS = {
    "VideoMAEImageProcessor": SHORTEST,
    "VideoMAEImageProcessorPil": SHORTEST,  # transformers' PIL backend (writes the same image_processor_type)
    "VideoMAEVideoProcessor": SHORTEST,
    "VideoMAEVideoProcessor-bicubic": {**SHORTEST, "resample": 3},
    "TimesformerVideoProcessor": SHORTEST,
    "VivitImageProcessor": SHORTEST,  # offset=True in its config
    "VivitVideoProcessor": SHORTEST,
    "VJEPA2VideoProcessor": dict(crop_size=16, image_mean=MEAN, image_std=STD),  # resizes to crop * 256 / 224
    # VideoPrism's (transformers' video_processing_auto): an exact (H, W) resize, bicubic, no crop
    "LlavaOnevisionVideoProcessor": dict(size={"height": 18, "width": 14}, image_mean=MEAN, image_std=STD),
    # a crop larger than the (resized: 12 x 16 / 16 x 12) frame: transformers pads it with zeros (its torchvision
    # backend, the default; the PIL backend puts an odd padding's extra column on the other side)
    "VideoMAEVideoProcessor-pad": {**SHORTEST, "size": {"shortest_edge": 12}},
    "TimesformerVideoProcessor-pad": {**SHORTEST, "do_resize": False, "crop_size": {"height": 36, "width": 36}},
}


def _folder(root: Path, name: str) -> tuple[Path, object]:
    cls = getattr(transformers, name.split("-")[0])
    folder = root / name
    torch.manual_seed(0)
    transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(**TINY)).save_pretrained(folder)
    processor = cls(**PROCESSORS[name])
    processor.save_pretrained(folder)
    return folder, processor


def _frames(seed: int = 0, size: tuple[int, int] = (30, 40)) -> torch.Tensor:
    return torch.randint(0, 256, (FRAMES, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_preprocessing_equals_the_transformers_processor(name: str, tmp_path: Path) -> None:
    folder, processor = _folder(tmp_path, name)
    _, pre, _, report = load_pretrained(folder)
    for size in ((30, 40), (41, 29)):  # landscape and portrait, odd sides: the resize and crop offsets
        frames = _frames(size=size)
        ours = pre.frames_to_input(frames)
        video = list(frames) if "Image" in name else frames  # image processors take a video as a list of frames
        if "Pil" in name:
            video = [f.permute(1, 2, 0).numpy() for f in frames]  # PIL's backend: (H, W, C) arrays
        out = processor(video, return_tensors="pt")
        ref = out["pixel_values"] if "pixel_values" in out else out["pixel_values_videos"]  # V-JEPA 2, VideoPrism
        assert ours.shape == ref.shape, (ours.shape, ref.shape)
        torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-5)
    written = "video_preprocessor_config.json" if "VideoProcessor" in name else "preprocessor_config.json"
    assert (folder / written).is_file() and written in report.block()


def test_the_resize_is_transformers_own_not_torchvision_v1s(tmp_path: Path) -> None:
    """Why it matches: transformers resizes the uint8 frames with torchvision.transforms.v2, whose uint8 bilinear
    kernel rounds a part of the pixels one level off the v1 resize (which torchvision's VideoClassification preset
    uses, and vidxai for torchvision's models); with v1 the pixel values are one level (1 / 255 / std) apart."""
    folder, processor = _folder(tmp_path, "VideoMAEVideoProcessor")
    _, pre, _, _ = load_pretrained(folder)
    assert pre.transforms_v2 and pre.antialias and pre.interpolation == "bilinear"
    frames = _frames(1)
    ref = processor(frames, return_tensors="pt")["pixel_values"]
    pre.transforms_v2 = False
    gap = (pre.frames_to_input(frames) - ref).abs().amax(dim=(0, 1, 3, 4))
    torch.testing.assert_close(gap, torch.tensor(STD).reciprocal() / 255, rtol=1e-4, atol=0)


def test_a_bare_int_size_is_the_shorter_side_as_transformers_reads_it(tmp_path: Path) -> None:
    """Older configs write ``"size": 224``: transformers' processors read it as the shorter side (aspect kept), and a
    bare int ``crop_size`` as a square."""
    import json

    folder, _ = _folder(tmp_path, "VideoMAEVideoProcessor")
    path = folder / "video_preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "size": 20, "crop_size": 16}))
    _, pre, _, _ = load_pretrained(folder)
    assert (pre.resize, pre.crop_size) == (20, (16, 16))
    frames = _frames()
    ref = transformers.VideoMAEVideoProcessor.from_pretrained(folder)(frames, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pre.frames_to_input(frames), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("size", {"shortest_edge": 20, "longest_edge": 24}, "also bounds the longer side"),
    ("resample", 9, "unknown resample 9"),
    ("resample", "sinc", "unknown resample 'sinc'"),
    ("fps", "fast", "do_sample_frames=true with fps='fast'"),
])
def test_a_processor_setting_vidxai_does_not_apply_is_one_error_line(key: str, value: object, message: str,
                                                                     tmp_path: Path) -> None:
    import json

    from vidxai.errors import ConfigError

    folder, _ = _folder(tmp_path, "VideoMAEVideoProcessor")
    path = folder / "video_preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value, "do_sample_frames": True}))
    with pytest.raises(ConfigError, match=message) as err:
        load_pretrained(folder)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------- frame sampling
def _sampling_folder(root: Path, **settings: object) -> tuple[object, object]:
    """A tiny VideoMAE (trained on ``FRAMES`` frames) with a video processor config that asks for sampling."""
    folder, _ = _folder(root, "VideoMAEVideoProcessor")
    processor = transformers.VideoMAEVideoProcessor(**SHORTEST, do_sample_frames=True, **settings)
    processor.save_pretrained(folder)
    _, pre, _, report = load_pretrained(folder)
    return processor, pre, report


def _processor_indices(processor: object, n: int, video_fps: float, **kwargs: object) -> list[int]:
    from transformers.video_utils import VideoMetadata

    return processor.sample_frames(VideoMetadata(total_num_frames=n, fps=video_fps), **kwargs).tolist()


def test_sampling_by_num_frames_equals_the_processors(tmp_path: Path) -> None:
    """``do_sample_frames`` with ``num_frames``: the same frame indices as transformers, and the same pixels from a
    decoded frame array with its metadata (each frame distinct, so another frame would show)."""
    from transformers.video_utils import VideoMetadata

    processor, pre, report = _sampling_folder(tmp_path, num_frames=FRAMES)
    assert pre.sample_frames and "do_sample_frames=true" in report.block()
    assert "frame i * n // 4" in report.block()
    for n in (4, 7, 10, 33):
        idx, how = pre.frame_indices(n, 8.0)
        assert idx.tolist() == _processor_indices(processor, n, 8.0), (n, idx)
        assert "as transformers samples" in how
    video = torch.randint(0, 256, (11, 3, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    idx, _ = pre.frame_indices(11, 8.0)
    ref = processor(video, video_metadata=VideoMetadata(total_num_frames=11, fps=8.0), return_tensors="pt")
    torch.testing.assert_close(pre.frames_to_input(video[torch.from_numpy(idx)]), ref["pixel_values"], rtol=0,
                               atol=1e-5)


def test_sampling_by_fps_keeps_the_models_frame_count(tmp_path: Path) -> None:
    """``do_sample_frames`` with ``fps`` only: transformers' count depends on the video's length; the model takes
    config.json's ``num_frames``. Where the counts agree the indices are transformers'; a longer video gives the
    middle ones of transformers' indices; a shorter one falls back to its ``num_frames`` rule, and says so."""
    processor, pre, report = _sampling_folder(tmp_path, fps=2)
    assert pre.num_frames == FRAMES and pre.sample_fps == 2.0 and "fps=2" in report.block()
    for n in (16, 19):  # 2 s at 8 fps: int(n / 8 * 2) == 4 frames
        idx, _ = pre.frame_indices(n, 8.0)
        assert idx.tolist() == _processor_indices(processor, n, 8.0), n
    theirs = _processor_indices(processor, 48, 8.0)  # 12 frames at 2 fps
    idx, how = pre.frame_indices(48, 8.0)
    assert len(theirs) == 12 and idx.tolist() == theirs[4:8] and "the middle 4 of its 12" in how
    idx, how = pre.frame_indices(10, 8.0)  # 2 frames at 2 fps: too short
    assert idx.tolist() == _processor_indices(processor, 10, 8.0, num_frames=FRAMES, fps=None)
    assert "gives 2 frames at 2 fps; the model takes 4" in how
    idx, how = pre.frame_indices(10, 0.0)
    assert len(idx) == FRAMES and "frame rate is unknown" in how


def test_sampling_a_written_video_equals_the_processor_on_its_decoded_frames(tmp_path: Path) -> None:
    """A clip the test writes, read by vidxai, against the processor given all its decoded frames and metadata."""
    from helpers import make_video
    from transformers.video_utils import VideoMetadata

    from vidxai.data.decoders import open_video

    processor, pre, _ = _sampling_folder(tmp_path, num_frames=FRAMES)
    path = make_video(tmp_path / "clip.mp4", num_frames=9, size=(30, 40))
    frames, idx, fps, _ = pre.read_frames(path)
    with open_video(str(path)) as dec:
        n = int(dec.num_frames)
        every = torch.from_numpy(np.ascontiguousarray(dec.get_frames(np.arange(n)))).permute(0, 3, 1, 2)
    assert n == 9 and idx.tolist() == _processor_indices(processor, n, fps)
    ref = processor(every, video_metadata=VideoMetadata(total_num_frames=n, fps=fps), return_tensors="pt")
    torch.testing.assert_close(pre.frames_to_input(frames), ref["pixel_values"], rtol=0, atol=1e-5)


def test_the_models_frame_count_wins_over_the_processors(tmp_path: Path) -> None:
    _, pre, report = _sampling_folder(tmp_path, num_frames=FRAMES + 2)
    assert pre.num_frames == FRAMES
    assert "num_frames=6 differs from config.json's num_frames=4" in report.block()
    assert pre.frame_indices(12, 8.0)[0].tolist() == [0, 3, 6, 9]


def test_without_do_sample_frames_frames_are_spread_and_it_says_so(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, "VideoMAEVideoProcessor")
    _, pre, _, report = load_pretrained(folder)
    assert not pre.sample_frames and "no do_sample_frames=true" in report.block()
    assert pre.frame_indices(8, 8.0)[0].tolist() == [1, 3, 5, 7]  # segment centres


def test_a_padded_crop_maps_boxes_inside_it(tmp_path: Path) -> None:
    """Frames 30 x 40 resized to 12 x 16 and padded to 16 x 16: the whole frame is rows 2..14 of the clip."""
    folder, _ = _folder(tmp_path, "VideoMAEVideoProcessor-pad")
    _, pre, _, report = load_pretrained(folder)
    assert "padded with zeros" in report.block() and pre.may_pad()
    box = pre.eval_boxes([[0, 0, 40, 30]], (30, 40), None)
    np.testing.assert_allclose(box, [[0, 2, 16, 14]])


def test_a_padded_crop_equals_torchvisions_center_crop() -> None:
    """torchvision's ``center_crop`` (which its ``VideoClassification`` preset calls) pads the same way: odd padding's
    extra row/column right/below, then its rounded crop start in the other dimension."""
    from torchvision.transforms import functional as tf

    from vidxai.pretrained import Preprocess

    pre = Preprocess(1, mean=(0, 0, 0), std=(1 / 255,) * 3, crop_size=(16, 16), round_crop=True, layout="BTCHW")
    assert pre.may_pad() and not Preprocess(16, crop_size=112, resize=[128, 171]).may_pad()
    for size in ((11, 21), (21, 13), (9, 9)):
        frames = _frames(size=size)[:1]
        torch.testing.assert_close(pre.frames_to_input(frames)[0], tf.center_crop(frames, [16, 16]).float())
