"""Image nodes: files in and out (naming, safety, metadata), masks from alpha, and the pixel transforms."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.context import RunContext
from nodes.image import (EmptyImage, ImageBatch, ImageInvert, ImageScale, ImageScaleBy, LoadImage, LoadImageMask,
                         OutputPathError, PreviewImage, SaveImage, write_new_file)
from nodes.png_metadata import read_png_metadata, read_png_text
from nodes.registry import Registry, spec_of
from nodes.services import RunSettings, Services


class TmpFolders:
    """nodes.services.Folders over a temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        for kind in ("input", "output", "temp", "user"):
            (root / kind).mkdir(exist_ok=True)

    def directory(self, kind):
        return self.root / kind

    def model_files(self, folder):
        return []

    def model_path(self, folder, name):
        raise FileNotFoundError(name)

    def input_path(self, name):
        base = (self.root / "input").resolve()
        path = (base / name).resolve()
        if base not in path.parents:
            raise ValueError(f"{name} is outside the input folder")
        return path


def make_ctx(tmp_path, *, save_metadata=True, hidden=None):
    services = Services(folders=TmpFolders(tmp_path), settings=RunSettings(save_metadata=save_metadata))
    return RunContext(node_id="9", prompt_id="p1", services=services, hidden=hidden or {})


def run(node, ctx, **inputs):
    return spec_of(node).call(ctx, inputs)


def gradient(batch=1, height=8, width=16, channels=3):
    ramp = torch.linspace(0, 1, height * width * channels).reshape(1, height, width, channels)
    return ramp.repeat(batch, 1, 1, 1)


# ---- SaveImage / PreviewImage -----------------------------------------------------------------------------------
def test_save_image_counts_on_from_the_highest_existing_number_for_its_prefix(tmp_path):
    ctx = make_ctx(tmp_path)
    output = tmp_path / "output"
    for name in ("ComfyUI_00007_.png", "ComfyUI_00002_.png", "Other_00050_.png", "ComfyUI_extra_00099_.png"):
        (output / name).write_bytes(b"x")
    result = run(SaveImage, ctx, images=gradient(batch=2), filename_prefix="ComfyUI")
    assert result.values == ()
    assert result.ui == {"images": [{"filename": "ComfyUI_00008_.png", "subfolder": "", "type": "output"},
                                    {"filename": "ComfyUI_00009_.png", "subfolder": "", "type": "output"}]}
    with Image.open(output / "ComfyUI_00009_.png") as saved:
        assert saved.size == (16, 8) and saved.mode == "RGB"


def test_save_image_writes_into_subfolders_and_substitutes_size_variables(tmp_path):
    result = run(SaveImage, make_ctx(tmp_path), images=gradient(height=32, width=64),
                 filename_prefix="runs/%width%x%height%/img")
    assert result.ui["images"] == [{"filename": "img_00001_.png", "subfolder": "runs/64x32", "type": "output"}]
    assert (tmp_path / "output" / "runs" / "64x32" / "img_00001_.png").is_file()


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", "link/escape", "", "sub/.."])
def test_save_image_refuses_to_write_outside_the_output_folder(tmp_path, prefix):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "link").symlink_to(outside)
    with pytest.raises(OutputPathError):
        run(SaveImage, make_ctx(tmp_path), images=gradient(), filename_prefix=prefix)
    assert list(outside.iterdir()) == []


def test_saved_png_carries_prompt_then_workflow_text_chunks(tmp_path):
    prompt = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}}
    workflow = {"nodes": [], "links": [], "version": 0.4, "note": "ünïcode ✓"}
    ctx = make_ctx(tmp_path, hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": workflow}})
    result = run(SaveImage, ctx, images=gradient())
    path = tmp_path / "output" / result.ui["images"][0]["filename"]
    assert list(read_png_text(path)) == ["prompt", "workflow"]
    assert read_png_metadata(path.read_bytes()) == {"prompt": prompt, "workflow": workflow}


def test_hidden_values_passed_as_arguments_are_used_too(tmp_path):
    result = run(SaveImage, make_ctx(tmp_path), images=gradient(), prompt={"1": {"class_type": "X", "inputs": {}}},
                 extra_pnginfo={"workflow": {"nodes": []}})
    path = tmp_path / "output" / result.ui["images"][0]["filename"]
    assert read_png_metadata(path)["workflow"] == {"nodes": []}


def test_metadata_is_left_out_when_the_server_disables_it(tmp_path):
    ctx = make_ctx(tmp_path, save_metadata=False, hidden={"PROMPT": {"1": {}}, "EXTRA_PNGINFO": {"workflow": {}}})
    result = run(SaveImage, ctx, images=gradient())
    assert read_png_text(tmp_path / "output" / result.ui["images"][0]["filename"]) == {}


def test_quantization_truncates_like_comfyui(tmp_path):
    image = torch.tensor([0.999, 0.5, 1.7, -0.2, 0.00393, 0.0039]).reshape(1, 1, 2, 3)
    result = run(SaveImage, make_ctx(tmp_path), images=image)
    with Image.open(tmp_path / "output" / result.ui["images"][0]["filename"]) as saved:
        pixels = np.array(saved).reshape(-1).tolist()
    # 255*0.999 = 254.7 -> 254 (truncated, not rounded); clipped at both ends; 255*0.00393 = 1.002 -> 1
    assert pixels == [254, 127, 255, 0, 1, 0]


def test_a_taken_name_is_never_overwritten(tmp_path):
    (tmp_path / "a_00001_.png").write_bytes(b"original")
    name, counter = write_new_file(tmp_path, lambda n: f"a_{n:05}_.png", 1, b"new")
    assert (name, counter) == ("a_00002_.png", 2)
    assert (tmp_path / "a_00001_.png").read_bytes() == b"original"
    assert (tmp_path / "a_00002_.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_00001_.png", "a_00002_.png"]  # no temp file left


def test_concurrent_saves_with_one_prefix_get_distinct_files(tmp_path):
    ctx = make_ctx(tmp_path)
    start = threading.Barrier(4)
    results = []

    def save(shade):
        start.wait()
        results.append(run(SaveImage, ctx, images=torch.full((3, 4, 4, 3), shade), filename_prefix="race"))

    threads = [threading.Thread(target=save, args=(s,)) for s in (0.1, 0.3, 0.6, 0.9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [item["filename"] for r in results for item in r.ui["images"]]
    assert len(names) == 12 and len(set(names)) == 12
    files = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert files == sorted(names)  # all complete, none lost, no temporary files left
    shades = {np.array(Image.open(tmp_path / "output" / n))[0, 0, 0] for n in names}
    assert len(shades) == 4


def test_preview_image_writes_to_temp_with_a_random_suffix(tmp_path):
    ctx = make_ctx(tmp_path)
    first = run(PreviewImage, ctx, images=gradient()).ui["images"][0]
    second = run(PreviewImage, ctx, images=gradient()).ui["images"][0]
    assert first["type"] == "temp" and first["subfolder"] == ""
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", first["filename"])
    assert (tmp_path / "temp" / first["filename"]).is_file()
    assert first["filename"] != second["filename"]
    assert list((tmp_path / "output").iterdir()) == []


def test_save_and_preview_object_info_match_comfyui():
    info = Registry().add(SaveImage).info(lambda i: None)
    assert info["input"]["required"]["filename_prefix"][1]["default"] == "ComfyUI"
    assert info["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert (info["output_node"], info["output"], info["display_name"], info["category"]) == \
        (True, [], "Save Image", "image")


# ---- LoadImage / LoadImageMask ----------------------------------------------------------------------------------
def test_load_image_gives_colours_and_a_mask_of_one_minus_alpha(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[1, 1, 3] = 51
    ctx = make_ctx(tmp_path)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input" / "cut.png")
    image, mask = run(LoadImage, ctx, image="cut.png").values
    assert image.shape == (1, 4, 6, 3) and image.dtype == torch.float32
    assert torch.all(image[..., 0] == 1.0) and torch.all(image[..., 1:] == 0.0)
    assert mask.shape == (1, 4, 6)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == pytest.approx(0.8) and mask[0, 2, 2] == 0.0


def test_load_image_without_alpha_gives_a_64x64_empty_mask(tmp_path):
    ctx = make_ctx(tmp_path)
    Image.new("RGB", (10, 7), (0, 128, 255)).save(tmp_path / "input" / "rgb.png")
    image, mask = run(LoadImage, ctx, image="rgb.png").values
    assert image.shape == (1, 7, 10, 3)
    assert image[0, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert mask.shape == (1, 64, 64) and mask.abs().sum() == 0


def test_load_image_applies_the_exif_orientation(tmp_path):
    ctx = make_ctx(tmp_path)
    picture = Image.new("RGB", (10, 4), (255, 0, 0))
    exif = picture.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    picture.save(tmp_path / "input" / "turned.png", exif=exif)
    image, _ = run(LoadImage, ctx, image="turned.png").values
    assert image.shape == (1, 10, 4, 3)


def test_load_image_concatenates_frames_of_an_animation(tmp_path):
    ctx = make_ctx(tmp_path)
    frames = [Image.new("RGB", (5, 5), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "input" / "anim.png", save_all=True, append_images=frames[1:])
    image, mask = run(LoadImage, ctx, image="anim.png").values
    assert image.shape == (3, 5, 5, 3) and mask.shape == (3, 64, 64)
    assert image[:, 0, 0].argmax(dim=-1).tolist() == [0, 1, 2]


def test_load_image_fingerprint_follows_the_file_content(tmp_path):
    ctx = make_ctx(tmp_path)
    fingerprint = spec_of(LoadImage).fingerprint
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "input" / "a.png")
    first = fingerprint(ctx, {"image": "a.png"})
    assert fingerprint(ctx, {"image": "a.png"}) == first
    Image.new("RGB", (4, 4), (3, 2, 1)).save(tmp_path / "input" / "a.png")
    assert fingerprint(ctx, {"image": "a.png"}) != first


def test_load_image_mask_reads_the_chosen_channel(tmp_path):
    ctx = make_ctx(tmp_path)
    Image.new("RGBA", (3, 2), (255, 51, 0, 204)).save(tmp_path / "input" / "m.png")
    (red,) = run(LoadImageMask, ctx, image="m.png", channel="red").values
    (green,) = run(LoadImageMask, ctx, image="m.png", channel="green").values
    (alpha,) = run(LoadImageMask, ctx, image="m.png", channel="alpha").values
    assert red.shape == (1, 2, 3) and torch.all(red == 1.0)
    assert torch.allclose(green, torch.full((1, 2, 3), 0.2))
    assert torch.allclose(alpha, torch.full((1, 2, 3), 1 - 0.8))
    Image.new("RGB", (3, 2), (0, 0, 255)).save(tmp_path / "input" / "rgb.png")
    (alpha_of_rgb,) = run(LoadImageMask, ctx, image="rgb.png", channel="alpha").values
    assert torch.all(alpha_of_rgb == 0.0)  # an opaque image: nothing to repaint


def test_load_image_object_info_has_the_upload_widget_and_the_input_files():
    registry = Registry(list_files=lambda files: ["a.png", "b.jpg"] if files.images_only else ["a.png", "x.txt"])
    registry.add(LoadImage)
    assert registry.object_info()["LoadImage"]["input"]["required"]["image"] == [["a.png", "b.jpg"],
                                                                                 {"image_upload": True}]


# ---- transforms -------------------------------------------------------------------------------------------------
def test_image_scale_keeps_the_aspect_ratio_when_one_side_is_zero():
    image = gradient(height=30, width=40)
    (by_width,) = run(ImageScale, None, image=image, upscale_method="bilinear", width=20, height=0,
                      crop="disabled").values
    (by_height,) = run(ImageScale, None, image=image, upscale_method="area", width=0, height=45,
                       crop="disabled").values
    assert by_width.shape == (1, 15, 20, 3) and by_height.shape == (1, 45, 60, 3)
    (same,) = run(ImageScale, None, image=image, upscale_method="bicubic", width=0, height=0, crop="center").values
    assert same is image


def test_image_scale_center_crop_cuts_the_sides_to_the_target_aspect():
    image = gradient(height=4, width=8)
    (square,) = run(ImageScale, None, image=image, upscale_method="nearest-exact", width=4, height=4,
                    crop="center").values
    assert torch.equal(square, image[:, :, 2:6, :])
    (tall,) = run(ImageScale, None, image=gradient(height=8, width=4), upscale_method="nearest-exact", width=4,
                  height=4, crop="center").values
    assert torch.equal(tall, gradient(height=8, width=4)[:, 2:6])


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_every_upscale_method_gives_the_requested_size_and_keeps_flat_colours(method):
    image = torch.full((2, 6, 9, 3), 0.6)
    (resized,) = run(ImageScaleBy, None, image=image, upscale_method=method, scale_by=1.5).values
    assert resized.shape == (2, 9, 14, 3)  # round(9 * 1.5) = round(13.5) = 14, as Python rounds (to even)
    expected = 153 / 255 if method == "lanczos" else 0.6  # lanczos goes through 8-bit pixels, as ComfyUI's
    assert torch.allclose(resized, torch.full_like(resized, expected), atol=1e-5)


def test_image_invert_returns_a_new_tensor():
    image = gradient()
    before = image.clone()
    (inverted,) = run(ImageInvert, None, image=image).values
    assert torch.allclose(inverted, 1 - before) and torch.equal(image, before)


def test_image_batch_resizes_the_second_batch_to_the_first():
    first, second = torch.zeros(2, 8, 8, 3), torch.ones(1, 4, 16, 3)
    (batch,) = run(ImageBatch, None, image1=first, image2=second).values
    assert batch.shape == (3, 8, 8, 3)
    assert torch.equal(batch[:2], first) and torch.allclose(batch[2], torch.ones(8, 8, 3))
    (mixed,) = run(ImageBatch, None, image1=torch.zeros(1, 4, 4, 4), image2=torch.zeros(1, 4, 4, 3)).values
    assert mixed.shape == (2, 4, 4, 4) and torch.all(mixed[1, ..., 3] == 1.0)


def test_empty_image_unpacks_the_colour():
    (image,) = run(EmptyImage, None, width=5, height=3, batch_size=2, color=0xFF8000).values
    assert image.shape == (2, 3, 5, 3) and image.dtype == torch.float32
    assert image[1, 2, 4].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    info = Registry().add(EmptyImage).info(lambda i: None)["input"]["required"]
    assert info["color"] == ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}]
