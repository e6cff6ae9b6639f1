from gateway.keys.model import KeyCreate


async def test_create_and_get(service) -> None:
    key, value = await service.create(KeyCreate(name="smoke", scope="read"))
    assert (await service.get(key.id)).name == "smoke"
    assert value.startswith("gw_")
