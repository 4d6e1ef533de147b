from decimal import Decimal

import pytest

from models.providers import INSTANT_PROVIDER, LOCAL_PROVIDER, load_catalog
from models.settings import ConfigError, Settings

GOOD = """
[providers.openai]
type = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "EXAMPLE_KEY"
default_model = "m1"
max_retries = 2
[providers.openai.prices.m1]
prompt = "0.15"
completion = "0.60"
"""


def test_builtins_are_always_there():
    catalog = load_catalog(None)
    assert {LOCAL_PROVIDER, INSTANT_PROVIDER} <= set(catalog)
    assert Settings.from_env({}).default_provider == LOCAL_PROVIDER


def test_file_adds_providers_with_exact_prices(tmp_path):
    path = tmp_path / "providers.toml"
    path.write_text(GOOD)
    settings = Settings.from_env({"ROOMCAST_PROVIDERS_FILE": str(path)})
    openai = settings.providers()["openai"]
    assert openai.base_url == "https://api.example.com/v1" and openai.max_retries == 2
    assert openai.price("m1").cost(1000, 2000) == Decimal("0.00135")
    assert openai.price("unpriced").cost(10, 10) == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[providers.x]\ntype = 'nope'\ndefault_model = 'm'", "type must be"),
        ("[providers.x]\ntype = 'openai'\ndefault_model = 'm'", "base_url"),
        ("[providers.local]\ntype = 'instant'\ndefault_model = 'm'", "built in"),
        ("[providers.x]\ntype = 'instant'\ndefault_model = 'm'\ncolour = 1", "unknown key"),
        (
            "[providers.x]\ntype = 'instant'\ndefault_model = 'm'\n"
            "[providers.x.prices.m]\nprompt = 'abc'",
            "must be a number",
        ),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_provider_files_fail_fast(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env({"ROOMCAST_PROVIDERS_FILE": str(path)})


def test_unknown_default_provider_fails_fast():
    with pytest.raises(ConfigError, match="ROOMCAST_DEFAULT_PROVIDER"):
        Settings.from_env({"ROOMCAST_DEFAULT_PROVIDER": "nope"})


def test_clients_read_the_catalog_without_its_configuration(settings, migrated, user, tmp_path):
    """GET /providers: names, models and the default, never a URL, a key's name or a price."""
    from dataclasses import replace

    from api import create_app
    from api.state import state

    path = tmp_path / "providers.toml"
    path.write_text(GOOD.replace("max_retries = 2\n", 'max_retries = 2\nmodels = ["m1", "m2"]\n'))
    app = create_app(replace(settings, providers_file=str(path)), {"TESTING": True})
    try:
        client = app.test_client()
        assert client.get("/api/v1/providers").status_code == 401
        response = client.get("/api/v1/providers", headers=user.headers)
        assert response.status_code == 200
        listed = {p["name"]: p for p in response.json["data"]}
        assert list(listed) == sorted(listed)
        assert {LOCAL_PROVIDER, INSTANT_PROVIDER, "openai"} <= set(listed)
        assert listed["openai"] == {
            "name": "openai",
            "type": "openai",
            "default_model": "m1",
            "models": ["m1", "m2"],
            "tool_calling": "native",
            "default": False,
        }
        assert listed[LOCAL_PROVIDER]["default"] is True
        assert listed[INSTANT_PROVIDER]["models"] == []  # any model name
        assert "example.com" not in response.get_data(as_text=True)
        assert "EXAMPLE_KEY" not in response.get_data(as_text=True)
    finally:
        state(app).engine.dispose()
