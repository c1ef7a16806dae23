"""Nodes that write files (nodes/animated.py, nodes/latent_files.py): ComfyUI's names and counters in the output
folder, the metadata each format carries, the SaveLatent -> LoadLatent round trip, and safetensors-only loading."""

import json
import pickle
import struct

import pytest
import torch
from PIL import Image, ImageSequence
from safetensors.torch import load_file, save_file

from nodes.animated import SaveAnimatedPNG, SaveAnimatedWEBP, SaveSVGNode, with_svg_metadata
from nodes.image import OutputPathError
from nodes.latent_files import LatentFileError, LoadLatent, SaveLatent
from nodes.types import Latent
from tests.nodes.test_image import make_ctx, run

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {}}}
WORKFLOW = {"nodes": [], "links": []}


def frames(count=3, size=8):
    return torch.stack([torch.full((size, size, 3), i / max(count - 1, 1)) for i in range(count)])


def test_animated_webp_holds_every_frame_and_the_metadata_in_exif(tmp_path):
    ctx = make_ctx(tmp_path, hidden={"PROMPT": PROMPT, "EXTRA_PNGINFO": {"workflow": WORKFLOW}})
    result = run(SaveAnimatedWEBP, ctx, images=frames(), filename_prefix="anim/clip", fps=4.0, lossless=True,
                 quality=80, method="fastest")
    assert result.ui == {"images": [{"filename": "clip_00001_.webp", "subfolder": "anim", "type": "output"}],
                         "animated": (True,)}
    with Image.open(tmp_path / "output" / "anim" / "clip_00001_.webp") as saved:
        assert saved.n_frames == 3 and saved.info["loop"] == 0
        exif = saved.getexif()
        pixels = [frame.convert("RGB").getpixel((0, 0)) for frame in ImageSequence.Iterator(saved)]
    assert pixels == [(0, 0, 0), (127, 127, 127), (255, 255, 255)]  # lossless, quantized like SaveImage
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT) and exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)
    again = run(SaveAnimatedWEBP, ctx, images=frames(1), filename_prefix="anim/clip", fps=4.0, lossless=False,
                quality=50, method="default")
    assert again.ui == {"images": [{"filename": "clip_00002_.webp", "subfolder": "anim", "type": "output"}]}


def test_animated_png_is_an_apng_with_comf_chunks_after_the_image_data(tmp_path):
    ctx = make_ctx(tmp_path, hidden={"PROMPT": PROMPT, "EXTRA_PNGINFO": {"workflow": WORKFLOW}})
    result = run(SaveAnimatedPNG, ctx, images=frames(2), filename_prefix="ComfyUI", fps=2.0, compress_level=1)
    name = result.ui["images"][0]["filename"]
    assert name == "ComfyUI_00001_.png" and result.ui["animated"] == (True,)
    path = tmp_path / "output" / name
    with Image.open(path) as saved:
        assert saved.n_frames == 2 and saved.info["duration"] == 500
    chunks = _png_chunks(path.read_bytes())
    kinds = [kind for kind, _ in chunks]
    comf = [body for kind, body in chunks if kind == b"comf"]
    assert comf == [b"prompt\0" + json.dumps(PROMPT).encode(), b"workflow\0" + json.dumps(WORKFLOW).encode()]
    assert kinds.index(b"comf") > kinds.index(b"IDAT")


def _png_chunks(data):
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def test_animations_without_metadata_and_outside_the_output_folder(tmp_path):
    ctx = make_ctx(tmp_path, save_metadata=False, hidden={"PROMPT": PROMPT})
    result = run(SaveAnimatedPNG, ctx, images=frames(2), filename_prefix="plain", fps=6.0, compress_level=4)
    assert b"comf" not in (tmp_path / "output" / result.ui["images"][0]["filename"]).read_bytes()
    with pytest.raises(OutputPathError):
        run(SaveAnimatedWEBP, ctx, images=frames(), filename_prefix="../escape", fps=6.0, lossless=True,
            quality=80, method="default")
    with pytest.raises(ValueError, match="images"):
        run(SaveAnimatedPNG, ctx, images=torch.zeros(0, 4, 4, 3), filename_prefix="x", fps=6.0, compress_level=4)


def test_save_svg_injects_comfyuis_metadata_block_and_numbers_the_files(tmp_path):
    ctx = make_ctx(tmp_path, hidden={"PROMPT": PROMPT})
    documents = ['<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', b"<svg><circle/></svg>"]
    result = run(SaveSVGNode, ctx, svg=documents, filename_prefix="svg/ComfyUI")
    assert [i["filename"] for i in result.ui["images"]] == ["ComfyUI_00001_.svg", "ComfyUI_00002_.svg"]
    text = (tmp_path / "output" / "svg" / "ComfyUI_00001_.svg").read_text()
    block = json.dumps({"prompt": PROMPT}, indent=2)
    assert text == ('<svg xmlns="http://www.w3.org/2000/svg">\n  <metadata>\n                <![CDATA[\n'
                    f"            {block}\n                ]]>\n            </metadata>\n            <rect/></svg>")
    assert with_svg_metadata("<p/>", "{}") == "<p/>"


def test_save_latent_then_load_latent_round_trips(tmp_path):
    samples = torch.randn(2, 4, 3, 5)
    ctx = make_ctx(tmp_path, hidden={"PROMPT": PROMPT, "EXTRA_PNGINFO": {"workflow": WORKFLOW}})
    result = run(SaveLatent, ctx, samples=Latent(samples, batch_index=(3, 4)), filename_prefix="latents/ComfyUI")
    assert result.ui == {"latents": [{"filename": "ComfyUI_00001_.latent", "subfolder": "latents",
                                      "type": "output"}]}
    saved = tmp_path / "output" / "latents" / "ComfyUI_00001_.latent"
    stored = load_file(saved)
    assert set(stored) == {"latent_tensor", "latent_format_version_0"}
    header = json.loads(saved.read_bytes()[8:8 + struct.unpack("<Q", saved.read_bytes()[:8])[0]])
    assert header["__metadata__"] == {"prompt": json.dumps(PROMPT), "workflow": json.dumps(WORKFLOW)}
    (tmp_path / "input" / "copy.latent").write_bytes(saved.read_bytes())
    loaded = run(LoadLatent, ctx, latent="copy.latent").values[0]
    assert torch.equal(loaded.samples, samples) and loaded.batch_index is None
    second = run(SaveLatent, ctx, samples=Latent(samples), filename_prefix="latents/ComfyUI")
    assert second.ui["latents"][0]["filename"] == "ComfyUI_00002_.latent"


def test_load_latent_scales_old_files_and_fingerprints_the_content(tmp_path):
    ctx = make_ctx(tmp_path)
    path = tmp_path / "input" / "old.latent"
    save_file({"latent_tensor": torch.full((1, 4, 2, 2), 0.18215)}, path)
    assert torch.allclose(run(LoadLatent, ctx, latent="old.latent").values[0].samples, torch.ones(1, 4, 2, 2))
    before = LoadLatent.fingerprint(ctx, latent="old.latent")
    save_file({"latent_tensor": torch.zeros(1, 4, 2, 2)}, path)
    assert LoadLatent.fingerprint(ctx, latent="old.latent") != before


def test_load_latent_refuses_pickles_and_files_without_a_latent(tmp_path):
    ctx = make_ctx(tmp_path)
    (tmp_path / "input" / "evil.latent").write_bytes(pickle.dumps({"latent_tensor": [1, 2]}))
    with pytest.raises(LatentFileError, match="not a safetensors"):
        run(LoadLatent, ctx, latent="evil.latent")
    save_file({"other": torch.zeros(1)}, tmp_path / "input" / "empty.latent")
    with pytest.raises(LatentFileError, match="latent_tensor"):
        run(LoadLatent, ctx, latent="empty.latent")
    with pytest.raises(LatentFileError, match="no such file"):
        run(LoadLatent, ctx, latent="missing.latent")


def test_load_latent_lists_only_latent_files():
    combo = LoadLatent.latent
    listing = ["a.png", "b.latent", "sub/c.latent"]
    assert combo.schema(listing) == [["b.latent", "sub/c.latent"]]
    assert combo.coerce("b.latent", listing) == "b.latent"
    with pytest.raises(Exception, match="a.png"):
        combo.coerce("a.png", listing)
