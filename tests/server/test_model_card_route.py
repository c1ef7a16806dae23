"""GET /chisel/model_card/{folder}?filename=: the Markdown card beside a model file (the editor reads a model's
recommended size and sampler settings from it), null without one, and clear errors for bad requests."""

from __future__ import annotations


async def test_the_card_beside_a_model_is_served(client, config):
    folder = config.base_dir / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "carded.safetensors").write_bytes(b"\0" * 16)
    (folder / "carded.md").write_text("# Carded\n\nRecommended size: 64 x 64\n", encoding="utf-8")
    (folder / "bare.safetensors").write_bytes(b"\0" * 16)

    response = await client.get("/chisel/model_card/checkpoints", params={"filename": "carded.safetensors"})
    assert response.status == 200
    assert (await response.json())["card"].startswith("# Carded")

    response = await client.get("/chisel/model_card/checkpoints", params={"filename": "bare.safetensors"})
    assert response.status == 200 and (await response.json())["card"] is None


async def test_bad_requests_are_named(client):
    assert (await client.get("/chisel/model_card/checkpoints")).status == 400
    assert (await client.get("/chisel/model_card/nonsense", params={"filename": "x.safetensors"})).status == 404
    missing = await client.get("/chisel/model_card/checkpoints", params={"filename": "absent.safetensors"})
    assert missing.status == 404
    escape = await client.get("/chisel/model_card/checkpoints", params={"filename": "../../user/x.safetensors"})
    assert escape.status in (400, 403, 404)
