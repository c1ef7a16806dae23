"""/users, /settings and /userdata as the editor uses them (save, list, open, rename, delete workflows)."""

from __future__ import annotations

import json


async def test_users_says_single_user_server_storage(client):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    response = await client.post("/users", json={"username": "bob"})
    assert response.status == 400 and (await response.json())["error"]["type"] == "multi_user_disabled"


async def test_settings_round_trip_and_merge(client, config):
    assert await (await client.get("/settings")).json() == {}
    assert (await client.post("/api/settings/Comfy.InstalledVersion", json="1.0")).status == 200
    assert (await client.post("/settings", json={"Comfy.TutorialCompleted": True})).status == 200
    assert await (await client.get("/settings")).json() == {"Comfy.InstalledVersion": "1.0",
                                                            "Comfy.TutorialCompleted": True}
    assert await (await client.get("/settings/Comfy.TutorialCompleted")).json() is True
    assert await (await client.get("/settings/Unknown.Key")).json() is None
    stored = json.loads((config.user_dir / "default" / "comfy.settings.json").read_text())
    assert stored["Comfy.TutorialCompleted"] is True


async def test_a_damaged_settings_file_does_not_stop_the_editor(client, config):
    path = config.user_dir / "default" / "comfy.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{broken")
    assert await (await client.get("/settings")).json() == {}
    assert (path.parent / "comfy.settings.json.broken").is_file()


async def test_save_list_open_rename_delete_a_workflow(client):
    doc = json.dumps({"nodes": [], "links": []}).encode()
    saved = await client.post("/api/userdata/workflows%2Fmine.json?overwrite=false&full_info=true", data=doc)
    info = await saved.json()
    assert saved.status == 200 and info["path"] == "workflows/mine.json" and info["size"] == len(doc)
    assert isinstance(info["modified"], float)
    again = await client.post("/api/userdata/workflows%2Fmine.json?overwrite=false", data=doc)
    assert again.status == 409 and (await again.json())["error"]["type"] == "file_exists"
    listing = await (await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")).json()
    assert [item["path"] for item in listing] == ["mine.json"]
    assert await (await client.get("/userdata?dir=workflows")).json() == ["mine.json"]
    assert await (await client.get("/userdata?dir=workflows&split=true")).json() == [["mine.json", "mine.json"]]
    opened = await client.get("/api/userdata/workflows%2Fmine.json")
    assert opened.status == 200 and await opened.read() == doc
    assert opened.headers["Content-Disposition"] == "attachment"
    moved = await client.post("/api/userdata/workflows%2Fmine.json/move/workflows%2Frenamed.json?full_info=true")
    assert (await moved.json())["path"] == "workflows/renamed.json"
    assert (await client.get("/api/userdata/workflows%2Fmine.json")).status == 404
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 204
    assert (await client.delete("/api/userdata/workflows%2Frenamed.json")).status == 404
    assert await (await client.get("/userdata?dir=workflows")).json() == []


async def test_listing_a_missing_folder_is_404_and_user_css_is_not_found_quietly(client):
    assert (await client.get("/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true")).status == 404
    assert (await client.get("/api/userdata/user.css")).status == 404
    assert (await client.get("/api/userdata/comfy.templates.json")).status == 404


async def test_move_does_not_overwrite_unless_asked(client):
    await client.post("/userdata/a.json", data=b"a")
    await client.post("/userdata/b.json", data=b"b")
    refused = await client.post("/userdata/a.json/move/b.json?overwrite=false")
    assert refused.status == 409
    assert (await client.post("/userdata/a.json/move/b.json?overwrite=true")).status == 200
    assert await (await client.get("/userdata/b.json")).read() == b"a"
