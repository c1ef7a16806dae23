"""Bad input of every kind gets a 4xx with a structured error naming the problem, and the server serves the next
request normally (ComfyUI answered 70 of 500 malformed requests with 500 and then died)."""

from __future__ import annotations

import json

import pytest
from aiohttp import FormData

from server.app import create_app
from tests.server.conftest import MODEL_FREE, make_config, png_bytes


def prompt_with(**changes):
    prompt = json.loads(json.dumps(MODEL_FREE))
    for node_id, inputs in changes.items():
        prompt[node_id]["inputs"].update(inputs)
    return prompt


def form(data=b"", name="pic.png", **fields):
    body = FormData(default_to_multipart=True)
    if data is not None:
        body.add_field("image", data, filename=name, content_type="application/octet-stream")
    for key, value in fields.items():
        body.add_field(key, value)
    return body


def raw_upload(filename: str) -> dict:
    """A multipart body written by hand, so the file name arrives exactly as given (clients may not escape it)."""
    boundary = "chiselboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + png_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return {"data": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


CYCLE = {"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
DEEP = b'{"prompt": ' + b"[" * 20000 + b"]" * 20000 + b"}"

# (name, method, path, request kwargs (or a callable returning them), accepted statuses, error type, text in body)
CASES = [
    ("invalid json", "POST", "/prompt", {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
     {400}, "invalid_json", "not valid JSON"),
    ("empty body", "POST", "/prompt", {"data": b""}, {400}, "invalid_json", "empty"),
    ("body is a list", "POST", "/prompt", {"json": [1, 2]}, {400}, "invalid_body", "object"),
    ("not utf-8", "POST", "/prompt", {"data": b'{"prompt": "\xff\xfe"}'}, {400}, "invalid_json", "UTF-8"),
    ("deeply nested json", "POST", "/prompt", {"data": DEEP}, {400}, "invalid_json", "nest"),
    ("no prompt", "POST", "/prompt", {"json": {"client_id": "x"}}, {400}, "no_prompt", "prompt"),
    ("prompt is a string", "POST", "/prompt", {"json": {"prompt": "hello"}}, {400}, "invalid_prompt", "object"),
    ("node is a number", "POST", "/prompt", {"json": {"prompt": {"1": 5}}}, {400}, "invalid_prompt", "'1'"),
    ("inputs not an object", "POST", "/prompt",
     {"json": {"prompt": {"1": {"class_type": "SaveImage", "inputs": [1]}}}}, {400}, "invalid_prompt", "inputs"),
    ("unknown node", "POST", "/prompt", {"json": {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}},
     {400}, "missing_node_type", "NoSuchNode"),
    ("missing class_type", "POST", "/prompt", {"json": {"prompt": {"7": {"inputs": {}}}}}, {400},
     "missing_node_type", "#7"),
    ("class_type not a string", "POST", "/prompt", {"json": {"prompt": {"1": {"class_type": ["x"], "inputs": {}}}}},
     {400}, "missing_node_type", "does not exist"),
    ("wrong literal type", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"1": {"width": "wide"}})}},
     {400}, "prompt_outputs_failed_validation", "width"),
    ("boolean for an int", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"1": {"height": True}})}},
     {400}, "prompt_outputs_failed_validation", "height"),
    ("huge number", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"1": {"width": 10**30}})}},
     {400}, "prompt_outputs_failed_validation", "width"),
    ("negative size", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"1": {"width": -5}})}},
     {400}, "prompt_outputs_failed_validation", "width"),
    ("NaN literal", "POST", "/prompt",
     {"data": json.dumps({"prompt": prompt_with(**{"1": {"width": float("nan")}})}).encode()},
     {400}, "prompt_outputs_failed_validation", "width"),
    ("overlong text", "POST", "/prompt",
     {"json": {"prompt": prompt_with(**{"3": {"filename_prefix": "x" * 1_000_001}})}},
     {400}, "prompt_outputs_failed_validation", "filename_prefix"),
    ("missing required input", "POST", "/prompt",
     {"json": {"prompt": {"3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}}},
     {400}, "prompt_outputs_failed_validation", "images"),
    ("cycle", "POST", "/prompt", {"json": {"prompt": CYCLE}}, {400}, "prompt_outputs_failed_validation",
     "dependency_cycle"),
    ("link to a missing node", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"2": {"image": ["99", 0]}})}},
     {400}, "prompt_outputs_failed_validation", "'99'"),
    ("link slot out of range", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"3": {"images": ["2", 5]}})}},
     {400}, "prompt_outputs_failed_validation", "slot 5"),
    ("malformed link", "POST", "/prompt", {"json": {"prompt": prompt_with(**{"3": {"images": ["2", 0, 1]}})}},
     {400}, "prompt_outputs_failed_validation", "bad_linked_input"),
    ("no output node", "POST", "/prompt",
     {"json": {"prompt": {"1": MODEL_FREE["1"]}}}, {400}, "prompt_no_outputs", "output"),
    ("extra_data not an object", "POST", "/prompt", {"json": {"prompt": MODEL_FREE, "extra_data": [1]}},
     {400}, "invalid_field", "extra_data"),
    ("client_id a number", "POST", "/prompt", {"json": {"prompt": MODEL_FREE, "client_id": 12}},
     {400}, "invalid_field", "client_id"),
    ("prompt_id a path", "POST", "/prompt", {"json": {"prompt": MODEL_FREE, "prompt_id": "../../x"}},
     {400}, "invalid_field", "prompt_id"),
    ("number not a number", "POST", "/prompt", {"json": {"prompt": MODEL_FREE, "number": "first"}},
     {400}, "invalid_field", "number"),
    ("number infinite", "POST", "/prompt", {"data": b'{"prompt": {}, "number": Infinity}'},
     {400}, "invalid_field", "number"),
    ("targets not a list", "POST", "/prompt",
     {"json": {"prompt": MODEL_FREE, "partial_execution_targets": "3"}}, {400}, "invalid_field",
     "partial_execution_targets"),
    ("targets name a missing node", "POST", "/prompt",
     {"json": {"prompt": MODEL_FREE, "partial_execution_targets": ["42"]}}, {400}, "invalid_prompt", "42"),
    ("history max_items=abc", "GET", "/history?max_items=abc", {}, {400}, "invalid_query_parameter", "max_items"),
    ("history offset=1.5", "GET", "/api/history?offset=1.5", {}, {400}, "invalid_query_parameter", "offset"),
    ("history max_items negative", "GET", "/history?max_items=-3", {}, {400}, "invalid_query_parameter",
     "max_items"),
    ("jobs limit=-1", "GET", "/api/jobs?limit=-1", {}, {400}, "invalid_query_parameter", "limit"),
    ("jobs unknown status", "GET", "/api/jobs?status=done", {}, {400}, "invalid_query_parameter", "status"),
    ("jobs bad sort", "GET", "/api/jobs?sort_by=name", {}, {400}, "invalid_query_parameter", "sort_by"),
    ("unknown job", "GET", "/api/jobs/nope", {}, {404}, "job_not_found", "nope"),
    ("view without filename", "GET", "/view", {}, {400}, "missing_field", "filename"),
    ("view unknown type", "GET", "/view?filename=a.png&type=models", {}, {400}, "invalid_query_parameter", "type"),
    ("view traversal", "GET", "/view?filename=../../../../etc/passwd", {}, {400}, "invalid_path", ".."),
    ("view absolute path", "GET", "/view?filename=/etc/passwd", {}, {400}, "invalid_path", "absolute"),
    ("view encoded slashes", "GET", "/view?filename=..%2F..%2Fetc%2Fpasswd", {}, {400}, "invalid_path", ".."),
    ("view NUL byte", "GET", "/view?filename=a.png%00.txt", {}, {400}, "invalid_path", "control"),
    ("view subfolder traversal", "GET", "/view?filename=passwd&subfolder=../../etc", {}, {400}, "invalid_path",
     "subfolder"),
    ("view windows path", "GET", "/view?filename=C:%5CWindows%5Cwin.ini", {}, {400}, "invalid_path", "absolute"),
    ("view bad channel", "GET", "/view?filename=a.png&channel=cmyk", {}, {400}, "invalid_query_parameter",
     "channel"),
    ("view bad preview quality", "GET", "/view?filename=a.png&preview=webp;500", {}, {400},
     "invalid_query_parameter", "preview"),
    ("view missing file", "GET", "/view?filename=nothing.png", {}, {404}, "file_not_found", "nothing.png"),
    ("upload non-image", "POST", "/upload/image", lambda: {"data": form(b"just some text", name="notes.png")},
     {415}, "not_an_image", "notes.png"),
    ("upload truncated png", "POST", "/upload/image", lambda: {"data": form(png_bytes()[:40], name="cut.png")},
     {415}, "not_an_image", "cut.png"),
    ("upload html", "POST", "/upload/image", lambda: {"data": form(b"<script></script>", name="x.html")},
     {415}, "unsupported_file_type", "x.html"),
    ("upload unknown type", "POST", "/upload/image", lambda: {"data": form(png_bytes(), type="models")},
     {400}, "invalid_field", "type"),
    ("upload no image part", "POST", "/upload/image", lambda: {"data": form(None, type="input")},
     {400}, "missing_field", "image"),
    ("upload not multipart", "POST", "/upload/image", {"json": {"image": "x"}}, {400}, "invalid_body",
     "multipart"),
    ("upload traversal name", "POST", "/upload/image", lambda: raw_upload("../evil.png"), {400}, "invalid_path",
     ".."),
    ("upload absolute name", "POST", "/upload/image", lambda: raw_upload("/tmp/evil.png"), {400}, "invalid_path",
     "refused"),
    ("upload subfolder traversal", "POST", "/upload/image",
     lambda: {"data": form(png_bytes(), subfolder="../../outside")}, {400}, "invalid_path", "subfolder"),
    ("upload absolute subfolder", "POST", "/upload/image", lambda: {"data": form(png_bytes(), subfolder="/tmp")},
     {400}, "invalid_path", "absolute"),
    ("mask without original_ref", "POST", "/upload/mask", lambda: {"data": form(png_bytes())}, {400},
     "missing_field", "original_ref"),
    ("mask original_ref not json", "POST", "/upload/mask", lambda: {"data": form(png_bytes(), original_ref="{x")},
     {400}, "invalid_field", "original_ref"),
    ("mask original_ref traversal", "POST", "/upload/mask",
     lambda: {"data": form(png_bytes(), original_ref='{"filename": "../../etc/passwd"}')}, {400},
     "invalid_path", ".."),
    ("queue delete not a list", "POST", "/queue", {"json": {"delete": "abc"}}, {400}, "invalid_field", "delete"),
    ("history clear not a bool", "POST", "/history", {"json": {"clear": "yes"}}, {400}, "invalid_field", "clear"),
    ("free flag not a bool", "POST", "/free", {"json": {"unload_models": "yes"}}, {400}, "invalid_field",
     "unload_models"),
    ("interrupt id a number", "POST", "/interrupt", {"json": {"prompt_id": 5}}, {400}, "invalid_field",
     "prompt_id"),
    ("interrupt invalid json", "POST", "/interrupt", {"data": b"{oops"}, {400}, "invalid_json", "JSON"),
    ("settings not an object", "POST", "/settings", {"json": [1]}, {400}, "invalid_body", "object"),
    ("userdata without dir", "GET", "/userdata", {}, {400}, "missing_field", "dir"),
    ("userdata dir traversal", "GET", "/userdata?dir=../../", {}, {403}, "invalid_path", ".."),
    ("userdata file traversal", "POST", "/userdata/..%2F..%2Fevil.txt", {"data": b"x"}, {400}, "invalid_path",
     ".."),
    ("userdata bad overwrite flag", "POST", "/userdata/a.json?overwrite=maybe", {"data": b"x"}, {400},
     "invalid_query_parameter", "overwrite"),
    ("unknown model folder", "GET", "/models/secrets", {}, {404}, "unknown_folder", "secrets"),
    ("view_metadata traversal", "GET", "/view_metadata/loras?filename=../../x.safetensors", {}, {404},
     "model_not_found", "x.safetensors"),
    ("convert not json", "POST", "/workflow/convert", {"data": b"<xml/>"}, {400}, "invalid_json", "JSON"),
    ("convert a string workflow", "POST", "/workflow/convert", {"json": {"workflow": "x"}}, {400},
     "invalid_workflow", "JSON object"),
    ("cancel jobs not a list", "POST", "/api/jobs/cancel", {"json": {"job_ids": 3}}, {400}, "invalid_field",
     "job_ids"),
    ("origin null", "POST", "/prompt", {"json": {"prompt": MODEL_FREE}, "headers": {"Origin": "null"}}, {403},
     "origin_not_allowed", "null"),
]


@pytest.mark.parametrize("name, method, path, kwargs, statuses, kind, text", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_a_structured_4xx_and_the_server_goes_on(client, name, method, path, kwargs, statuses,
                                                                       kind, text):
    request = kwargs() if callable(kwargs) else kwargs
    response = await client.request(method, path, **request)
    body = await response.json()
    assert response.status in statuses, (response.status, body)
    error = body["error"]
    assert error["type"] == kind, body
    shown = json.dumps(body)
    assert text in shown, shown[:400]
    assert error["message"]
    healthy = await client.get("/system_stats")
    assert healthy.status == 200


def test_there_are_at_least_thirty_bad_input_cases():
    assert len(CASES) >= 30


async def test_oversized_upload_is_413(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_config(tmp_path, max_upload_size=4096)))
    response = await client.post("/upload/image", data=form(b"\x89PNG" + b"0" * 10_000))
    body = await response.json()
    assert response.status == 413 and body["error"]["type"] == "request_too_large"
    assert "4096" in body["error"]["details"]
    big_json = await client.post("/prompt", data=b'{"prompt": "' + b"x" * 10_000 + b'"}')
    assert big_json.status == 413
    assert (await client.get("/system_stats")).status == 200


async def test_decompression_bomb_is_refused(client):
    from PIL import Image
    import io

    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG")  # 400 Mpixel, a few KB compressed
    response = await client.post("/upload/image", data=form(out.getvalue(), name="bomb.png"))
    assert response.status in (413, 415)
    assert (await client.get("/system_stats")).status == 200


async def test_a_burst_of_seeded_garbage_never_gets_a_5xx(client):
    import random

    rng = random.Random(1234)
    pieces = [b"{", b"}", b"[", b"]", b'"prompt"', b":", b",", b"1", b"null", b'"x"', b"-", b"1e999", b"true",
              b'"class_type"', b'"inputs"', b'"SaveImage"', b'["1", 0]', b"\xff"]
    paths = ["/prompt", "/queue", "/history", "/interrupt", "/free", "/settings", "/workflow/convert",
             "/api/jobs/cancel", "/userdata/x.json"]
    for _ in range(200):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        response = await client.post(rng.choice(paths), data=body)
        assert response.status < 500, (body, response.status, await response.text())
    assert (await client.get("/system_stats")).status == 200
