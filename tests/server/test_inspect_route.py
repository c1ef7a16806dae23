"""GET /chisel/sigmas: the editor's KSampler sigma curve, computed by the schedule code; bad parameters are 400s
that name the parameter."""

import pytest

from nodes.inspect import sigma_curve


async def test_sigmas_are_ksamplers_schedule(client):
    response = await client.get("/chisel/sigmas", params={"scheduler": "karras", "steps": "8", "denoise": "0.5",
                                                          "model_sampling": "eps"})
    assert response.status == 200
    body = await response.json()
    assert body == {"sigmas": sigma_curve("karras", 8, 0.5, "eps")} and len(body["sigmas"]) == 9
    default = await (await client.get("/api/chisel/sigmas")).json()
    assert default["sigmas"] == sigma_curve("normal", 20) and default["sigmas"][-1] == 0.0
    flow = await (await client.get("/chisel/sigmas?model_sampling=flow&steps=4&scheduler=simple")).json()
    assert flow["sigmas"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    dpm_2 = await (await client.get("/chisel/sigmas?steps=10&sampler_name=dpm_2")).json()
    assert dpm_2["sigmas"] == sigma_curve("normal", 10, sampler_name="dpm_2")


@pytest.mark.parametrize("query, parameter", [
    ("scheduler=fast", "scheduler"),
    ("steps=0", "steps"),
    ("steps=ten", "steps"),
    ("steps=20000", "steps"),
    ("denoise=1.5", "denoise"),
    ("denoise=nan", "denoise"),
    ("denoise=half", "denoise"),
    ("model_sampling=edm", "model_sampling"),
    ("sampler_name=euler_a", "sampler_name"),
])
async def test_bad_parameters_are_400_naming_the_parameter(client, query, parameter):
    response = await client.get(f"/chisel/sigmas?{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_query_parameter" and error["extra_info"]["parameter"] == parameter
    assert parameter in error["message"]


async def test_a_schedule_too_long_to_plot_is_a_400(client):
    response = await client.get("/chisel/sigmas?steps=1000&denoise=0.01")
    assert response.status == 400
    error = (await response.json())["error"]
    assert "steps / denoise" in error["details"]
