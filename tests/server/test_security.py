"""Security: path rules, symlinks, Host/Origin checks (CSRF, DNS rebinding, Origin: null), the auth token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import WSServerHandshakeError

from server.app import create_app
from server.security import (PathRefused, clean_relative_name, host_allowed, origin_allowed, resolve_inside,
                             safe_content_type, session_value, token_matches)
from tests.server.conftest import MODEL_FREE, make_config

TOKEN = "correct-horse-battery"


# ---- pure rules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x.png", "a/../../x", "/etc/passwd", "\\\\server\\share", "C:\\Windows\\x",
                                  "c:/x", "a\x00b.png", "line\nbreak.png", "..", "a/..", "..\\x"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(PathRefused):
        clean_relative_name(name, field="filename")


@pytest.mark.parametrize("name, cleaned", [("test..png", "test..png"), ("a/b.png", "a/b.png"),
                                           ("a\\b.png", "a/b.png"), ("./a//b.png", "a/b.png"),
                                           ("ünïcode ñame.png", "ünïcode ñame.png")])
def test_safe_names_pass(name, cleaned):
    assert clean_relative_name(name, field="filename") == cleaned


def test_a_symlink_pointing_out_of_the_folder_is_refused(tmp_path):
    root = tmp_path / "output"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, root / "link.png")
    os.symlink(tmp_path, root / "dirlink")
    with pytest.raises(PathRefused, match="outside"):
        resolve_inside(root, "link.png", field="filename")
    with pytest.raises(PathRefused, match="outside"):
        resolve_inside(root, "dirlink", "secret.txt", field="filename")


def test_a_symlink_inside_the_folder_is_fine(tmp_path):
    root = tmp_path / "output"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.png").write_bytes(b"x")
    os.symlink(root / "real", root / "alias")
    assert resolve_inside(root, "alias", "a.png", field="f") == (root / "real" / "a.png").resolve()


@pytest.mark.parametrize("origin, host, allowed", [
    ("http://127.0.0.1:8188", "127.0.0.1:8188", True),
    ("http://localhost:8188", "localhost:8188", True),
    ("http://LOCALHOST:8188", "localhost:8188", True),
    ("https://studio.example", "studio.example", True),  # TLS proxy: Host without port, names decide
    ("null", "127.0.0.1:8188", False),
    ("", "127.0.0.1:8188", False),
    ("http://evil.example", "127.0.0.1:8188", False),
    ("http://127.0.0.1:9999", "127.0.0.1:8188", False),
    ("http://localhost", "localhost:8188", False),
    ("file://", "127.0.0.1:8188", False),
    ("http://127.0.0.1:8188", None, False),
])
def test_origin_rule(origin, host, allowed):
    assert origin_allowed(origin, host, ()) is allowed


def test_configured_origin_is_allowed():
    assert origin_allowed("https://Studio.Example:8443", "127.0.0.1:8188", ("https://studio.example:8443",))


@pytest.mark.parametrize("host, loopback_only, allowed_hosts, allowed", [
    ("127.0.0.1:8188", True, (), True),
    ("localhost:8188", True, (), True),
    ("[::1]:8188", True, (), True),
    ("app.localhost:8188", True, (), True),
    ("evil.example:8188", True, (), False),  # DNS rebinding: a foreign name resolving to 127.0.0.1
    ("192.168.1.5:8188", True, (), False),
    ("proxy.example", True, ("proxy.example",), True),
    (None, True, (), False),
    ("not a host", True, (), False),
    ("evil.example", False, (), True),  # exposed on purpose, no host list: any Host
    ("evil.example", False, ("studio.example",), False),
])
def test_host_rule(host, loopback_only, allowed_hosts, allowed):
    assert host_allowed(host, loopback_only=loopback_only, allowed_hosts=allowed_hosts) is allowed


def test_token_comparison():
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches("correct-horse-batterx", TOKEN)
    assert not token_matches("", TOKEN) and not token_matches(None, TOKEN)
    assert session_value(TOKEN) != TOKEN and len(session_value(TOKEN)) == 64


@pytest.mark.parametrize("name", ["a.html", "a.htm", "a.js", "a.mjs", "a.css", "a.svg", "a.xml", "a.xhtml"])
def test_active_content_types_are_neutralised(name):
    assert safe_content_type(name) == "application/octet-stream"


def test_images_keep_their_content_type():
    assert safe_content_type("a.png") == "image/png" and safe_content_type("a.webp") == "image/webp"


# ---- over HTTP --------------------------------------------------------------------------------------------------
async def test_origin_null_is_refused_on_state_changing_requests(client):
    response = await client.post("/prompt", json={"prompt": MODEL_FREE}, headers={"Origin": "null"})
    assert response.status == 403 and (await response.json())["error"]["type"] == "origin_not_allowed"
    assert (await client.get("/queue")).status == 200  # and the server goes on


async def test_foreign_origin_is_refused_and_same_origin_accepted(client):
    host = f"127.0.0.1:{client.port}"
    foreign = await client.post("/interrupt", headers={"Origin": "http://evil.example", "Host": host})
    assert foreign.status == 403
    same = await client.post("/interrupt", headers={"Origin": f"http://{host}", "Host": host})
    assert same.status == 200
    read = await client.get("/system_stats", headers={"Origin": "http://evil.example"})
    assert read.status == 200  # reads are not state-changing (and get no CORS headers)
    assert "Access-Control-Allow-Origin" not in read.headers


async def test_websocket_from_a_foreign_origin_is_refused(client):
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert caught.value.status == 403
    ws = await client.ws_connect("/ws", headers={"Origin": f"http://127.0.0.1:{client.port}",
                                                 "Host": f"127.0.0.1:{client.port}"})
    await ws.close()


async def test_dns_rebinding_host_is_refused(client):
    response = await client.get("/object_info", headers={"Host": f"attacker.example:{client.port}"})
    assert response.status == 403 and (await response.json())["error"]["type"] == "host_not_allowed"


async def test_allowed_host_and_origin_can_be_configured(aiohttp_client, tmp_path):
    config = make_config(tmp_path, allowed_hosts=("studio.example",), allowed_origins=("https://studio.example",))
    client = await aiohttp_client(create_app(config))
    response = await client.post("/interrupt", headers={"Host": "studio.example",
                                                        "Origin": "https://studio.example"})
    assert response.status == 200


async def test_view_refuses_a_symlink_pointing_outside(client, config, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(secret, config.output_dir / "innocent.png")
    response = await client.get("/view", params={"filename": "innocent.png"})
    assert response.status == 400 and "root:" not in await response.text()


async def test_upload_does_not_write_through_a_symlink(client, config, tmp_path):
    from tests.server.test_files import upload_form
    from tests.server.conftest import png_bytes

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    config.input_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, config.input_dir / "pic.png")
    response = await client.post("/upload/image", data=upload_form(png_bytes(), overwrite="true"))
    assert response.status == 200 and (await response.json())["name"] == "pic (1).png"
    assert outside.read_bytes() == b"keep"


async def test_upload_refuses_a_subfolder_symlinked_outside(client, config, tmp_path):
    from tests.server.test_files import upload_form
    from tests.server.conftest import png_bytes

    config.input_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path, config.input_dir / "escape")
    response = await client.post("/upload/image", data=upload_form(png_bytes(), subfolder="escape"))
    assert response.status == 400
    assert not (Path(tmp_path) / "pic.png").exists()


# ---- the auth token ---------------------------------------------------------------------------------------------
@pytest.fixture
async def token_client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(make_config(tmp_path, auth_token=TOKEN)))


async def test_every_route_needs_the_token(token_client):
    for method, path in (("GET", "/object_info"), ("GET", "/api/queue"), ("POST", "/prompt"), ("GET", "/view"),
                         ("GET", "/main.js"), ("POST", "/upload/image"), ("GET", "/settings")):
        response = await token_client.request(method, path)
        assert response.status == 401, (method, path)
        assert (await response.json())["error"]["type"] == "unauthorized"


async def test_bearer_header_and_query_token_are_accepted(token_client):
    ok = await token_client.get("/object_info", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    ok = await token_client.get("/system_stats", params={"token": TOKEN})
    assert ok.status == 200
    wrong = await token_client.get("/system_stats", headers={"Authorization": "Bearer wrong-token-value"})
    assert wrong.status == 401


async def test_query_token_does_not_authorise_state_changes(token_client):
    response = await token_client.post(f"/interrupt?token={TOKEN}")
    assert response.status == 401


async def test_websocket_needs_the_token(token_client):
    with pytest.raises(WSServerHandshakeError) as caught:
        await token_client.ws_connect("/ws?clientId=x")
    assert caught.value.status == 401
    ws = await token_client.ws_connect(f"/ws?clientId=x&token={TOKEN}")
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()


async def test_browser_is_sent_to_the_login_page_and_the_cookie_then_works(token_client):
    page = await token_client.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status == 302 and page.headers["Location"] == "/login"
    login_page = await token_client.get("/login")
    assert login_page.status == 200 and "token" in await login_page.text()
    wrong = await token_client.post("/login", data={"token": "nope"}, allow_redirects=False)
    assert wrong.status == 401
    right = await token_client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert right.status == 302
    cookie = right.cookies["chisel_session"]
    assert cookie.value != TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    after = await token_client.get("/object_info")  # the client's cookie jar now holds the session
    assert after.status == 200
