"""/view, /upload/image, /upload/mask: content types, channels, previews, naming without silent overwrites."""

from __future__ import annotations

import io

from aiohttp import FormData
from PIL import Image

from tests.server.conftest import png_bytes


def upload_form(data: bytes, name: str = "pic.png", **fields: str) -> FormData:
    form = FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def test_upload_then_view_returns_the_same_bytes(client, config):
    data = png_bytes()
    response = await client.post("/upload/image", data=upload_form(data))
    assert response.status == 200
    assert await response.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert (config.input_dir / "pic.png").read_bytes() == data
    view = await client.get("/view", params={"filename": "pic.png", "type": "input"})
    assert view.status == 200 and await view.read() == data
    assert view.headers["Content-Disposition"] == 'filename="pic.png"'


async def test_same_content_keeps_the_name_and_different_content_gets_a_new_one(client, config):
    first = await (await client.post("/upload/image", data=upload_form(png_bytes()))).json()
    same = await (await client.post("/upload/image", data=upload_form(png_bytes()))).json()
    other = await (await client.post("/upload/image", data=upload_form(png_bytes(color=(0, 255, 0, 255))))).json()
    third = await (await client.post("/upload/image", data=upload_form(png_bytes(color=(0, 0, 255, 255))))).json()
    assert [first["name"], same["name"], other["name"], third["name"]] == \
           ["pic.png", "pic.png", "pic (1).png", "pic (2).png"]
    assert Image.open(config.input_dir / "pic.png").getpixel((0, 0)) == (255, 0, 0, 255)


async def test_overwrite_replaces_the_file(client, config):
    await client.post("/upload/image", data=upload_form(png_bytes()))
    response = await client.post("/upload/image", data=upload_form(png_bytes(color=(1, 2, 3, 255)), overwrite="true"))
    assert (await response.json())["name"] == "pic.png"
    assert Image.open(config.input_dir / "pic.png").getpixel((0, 0)) == (1, 2, 3, 255)


async def test_upload_into_a_subfolder_and_temp(client, config):
    body = await (await client.post("/api/upload/image", data=upload_form(png_bytes(), subfolder="pasted",
                                                                          type="temp"))).json()
    assert body == {"name": "pic.png", "subfolder": "pasted", "type": "temp"}
    assert (config.temp_dir / "pasted" / "pic.png").is_file()
    view = await client.get("/view", params={"filename": "pic.png", "subfolder": "pasted", "type": "temp"})
    assert view.status == 200


async def test_uploaded_image_appears_in_load_image_choices(client):
    await client.post("/upload/image", data=upload_form(png_bytes(), name="cat.png"))
    await client.post("/upload/image", data=upload_form(png_bytes(), name="dog.png", subfolder="pets"))
    info = await (await client.get("/object_info/LoadImage")).json()
    choices = info["LoadImage"]["input"]["required"]["image"][0]
    assert "cat.png" in choices and "pets/dog.png" in choices


async def test_no_temp_files_are_left_behind(client, config):
    for color in ((1, 1, 1, 255), (2, 2, 2, 255), (1, 1, 1, 255)):
        await client.post("/upload/image", data=upload_form(png_bytes(color=color)))
    assert sorted(p.name for p in config.input_dir.iterdir()) == ["pic (1).png", "pic.png"]


async def test_view_channel_rgb_drops_alpha_and_a_keeps_only_alpha(client, config):
    await client.post("/upload/image", data=upload_form(png_bytes(color=(10, 20, 30, 40))))
    rgb = await client.get("/view", params={"filename": "pic.png", "type": "input", "channel": "rgb"})
    picture = Image.open(io.BytesIO(await rgb.read()))
    assert picture.mode == "RGB" and picture.getpixel((0, 0)) == (10, 20, 30)
    alpha = await client.get("/view", params={"filename": "pic.png", "type": "input", "channel": "a"})
    picture = Image.open(io.BytesIO(await alpha.read()))
    assert picture.mode == "RGBA" and picture.getpixel((0, 0))[3] == 40


async def test_view_preview_reencodes_as_webp_or_jpeg(client):
    await client.post("/upload/image", data=upload_form(png_bytes(size=(32, 32), mode="RGB", color=(200, 0, 0))))
    webp = await client.get("/view", params={"filename": "pic.png", "type": "input", "preview": "webp;50"})
    assert webp.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(await webp.read())).format == "WEBP"
    jpeg = await client.get("/view", params={"filename": "pic.png", "type": "input", "preview": "jpeg;80"})
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(await jpeg.read())).format == "JPEG"


async def test_view_sends_active_content_as_a_download(client, config):
    config.output_dir.mkdir(parents=True, exist_ok=True)
    for name in ("page.html", "script.js", "drawing.svg", "data.xml"):
        (config.output_dir / name).write_text("<script>alert(1)</script>")
        response = await client.get("/view", params={"filename": name})
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream", name
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_view_annotated_filename_picks_the_folder(client, config):
    await client.post("/upload/image", data=upload_form(png_bytes(), name="ann.png"))
    response = await client.get("/view", params={"filename": "ann.png [input]"})
    assert response.status == 200


async def test_mask_upload_copies_alpha_into_the_original_and_keeps_its_text(client, config):
    original = png_bytes(size=(8, 8), color=(50, 60, 70, 255), text={"prompt": '{"k": 1}'})
    await client.post("/upload/image", data=upload_form(original, name="orig.png"))
    mask = png_bytes(size=(8, 8), color=(0, 0, 0, 0))
    form = upload_form(mask, name="clipspace-mask.png",
                       original_ref='{"filename": "orig.png", "subfolder": "", "type": "input"}')
    response = await client.post("/upload/mask", data=form)
    body = await response.json()
    assert response.status == 200, body
    assert body == {"name": "clipspace-mask.png", "subfolder": "", "type": "input"}
    result = Image.open(config.input_dir / "clipspace-mask.png")
    assert result.getpixel((0, 0)) == (50, 60, 70, 0)
    assert result.info["prompt"] == '{"k": 1}'


async def test_mask_of_another_size_is_refused(client):
    await client.post("/upload/image", data=upload_form(png_bytes(size=(8, 8)), name="orig.png"))
    form = upload_form(png_bytes(size=(4, 4)), name="m.png", original_ref='{"filename": "orig.png", "type": "input"}')
    response = await client.post("/upload/mask", data=form)
    assert response.status == 400 and (await response.json())["error"]["type"] == "mask_size_mismatch"


async def test_mask_with_a_missing_original_is_404(client):
    form = upload_form(png_bytes(), name="m.png", original_ref='{"filename": "gone.png", "type": "input"}')
    response = await client.post("/upload/mask", data=form)
    assert response.status == 404
