"""PNG metadata: what SaveImage writes loads back to the same graph; the reader survives odd and broken files."""

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodes.context import RunContext
from nodes.image import SaveImage
from nodes.png_metadata import png_text_chunks, read_png_metadata, read_png_text
from nodes.registry import spec_of
from nodes.services import Services
from server.workflow import WorkflowError, convert_workflow, prompt_from_png
from tests.server.test_workflow import FIXTURES, registry  # noqa: F401  (the stub-node registry fixture)


class OutputOnly:
    """nodes.services.Folders with just an output folder."""

    def __init__(self, root: Path):
        self.root = root

    def directory(self, kind):
        path = self.root / kind
        path.mkdir(exist_ok=True)
        return path


def png_bytes(info=None, size=(2, 2)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_saved_image_carries_a_workflow_that_converts_back_to_the_same_prompt(tmp_path, registry):  # noqa: F811
    workflow = json.loads((FIXTURES / "primitive_seed.json").read_text())
    prompt = convert_workflow(workflow, registry)
    ctx = RunContext(node_id="9", prompt_id="p", services=Services(folders=OutputOnly(tmp_path)),
                     hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": workflow}})
    saved = spec_of(SaveImage).call(ctx, {"images": torch.rand(1, 8, 8, 3), "filename_prefix": "trip"})
    path = tmp_path / "output" / saved.ui["images"][0]["filename"]

    metadata = read_png_metadata(path)
    assert metadata["workflow"] == workflow and metadata["prompt"] == prompt
    assert convert_workflow(metadata["workflow"], registry) == prompt
    assert prompt_from_png(path, registry) == prompt

    only_workflow = png_bytes(png_text_chunks(None, {"workflow": workflow}))
    assert prompt_from_png(only_workflow, registry) == prompt
    with pytest.raises(WorkflowError) as err:
        prompt_from_png(png_bytes(), registry)
    assert err.value.kind == "no_metadata"


def test_text_chunks_are_written_in_comfyui_order_as_plain_tEXt():
    data = png_bytes(png_text_chunks({"1": {"class_type": "X", "inputs": {}}}, {"workflow": {"a": 1}, "extra": [1]}))
    assert data.index(b"tEXtprompt") < data.index(b"tEXtworkflow") < data.index(b"tEXtextra")
    assert read_png_text(data) == {"prompt": '{"1": {"class_type": "X", "inputs": {}}}', "workflow": '{"a": 1}',
                                   "extra": "[1]"}


def test_compressed_and_international_text_chunks_are_read():
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "Ünï", "inputs": {}}}, ensure_ascii=False), zip=True)
    info.add_itxt("workflow", json.dumps({"nodes": [], "title": "日本"}, ensure_ascii=False), zip=True)
    metadata = read_png_metadata(png_bytes(info))
    assert metadata == {"prompt": {"1": {"class_type": "Ünï", "inputs": {}}}, "workflow": {"nodes": [],
                                                                                          "title": "日本"}}
    ztxt = PngInfo()
    ztxt.add(b"zTXt", b"workflow\0\0" + zlib.compress(b'{"nodes": []}'))
    assert read_png_metadata(png_bytes(ztxt))["workflow"] == {"nodes": []}


@pytest.mark.parametrize("data", [b"", b"not a png at all", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_garbage_reads_as_no_metadata(data):
    assert read_png_metadata(data) == {"prompt": None, "workflow": None}


def test_broken_chunks_are_skipped_and_truncation_keeps_what_came_before():
    info = PngInfo()
    info.add_text("prompt", "{not json")
    info.add_text("workflow", '["a list, not an object"]')
    assert read_png_metadata(png_bytes(info)) == {"prompt": None, "workflow": None}

    good = png_bytes(png_text_chunks({"1": {"class_type": "X", "inputs": {}}}, {"workflow": {"w": 1}}))
    cut = good[:good.index(b"tEXtworkflow") + 20]
    assert read_png_metadata(cut) == {"prompt": {"1": {"class_type": "X", "inputs": {}}}, "workflow": None}

    bad_zip = PngInfo()
    bad_zip.add(b"zTXt", b"workflow\0\0" + b"\x78\x9cgarbage")
    bad_itxt = PngInfo()
    bad_itxt.add(b"iTXt", b"prompt\0\1\0\0\0not zlib")
    assert read_png_metadata(png_bytes(bad_zip)) == {"prompt": None, "workflow": None}
    assert read_png_metadata(png_bytes(bad_itxt)) == {"prompt": None, "workflow": None}


def test_a_decompression_bomb_is_not_inflated():
    packer = zlib.compressobj(1)
    block = b" " * (1 << 20)
    bomb = packer.compress(b"{") + b"".join(packer.compress(block) for _ in range(65)) + packer.compress(b"}")
    bomb += packer.flush()  # 65 MiB of JSON in about 60 KiB: past the 64 MiB limit
    chunk = PngInfo()
    chunk.add(b"zTXt", b"workflow\0\0" + bomb)
    assert read_png_metadata(png_bytes(chunk))["workflow"] is None


def test_reading_from_a_path_equals_reading_the_bytes(tmp_path):
    data = png_bytes(png_text_chunks({"5": {"class_type": "Y", "inputs": {}}}, None))
    (tmp_path / "a.png").write_bytes(data)
    assert read_png_metadata(tmp_path / "a.png") == read_png_metadata(data) == {
        "prompt": {"5": {"class_type": "Y", "inputs": {}}}, "workflow": None}
    assert struct.unpack(">I", data[8:12])[0] == 13  # sanity: IHDR first, so the walk starts right
