import pytest

from models.settings import EMBEDDED_BROKER_URL, ConfigError, Settings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.database_url == f"sqlite:///{tmp_path}/var/roomcast.db"
    assert s.worker_database_url == s.database_url
    assert s.broker_url == EMBEDDED_BROKER_URL and s.embedded_broker
    assert s.registration_enabled is True
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert s.token_cache_seconds == 2


def test_worker_database_url_precedence():
    pg = "postgresql://u@db/roomcast"
    assert Settings.from_env({"DATABASE_URL": pg}).worker_database_url == pg
    s = Settings.from_env({"DATABASE_URL": pg, "ROOMCAST_WORKER_DATABASE_URL": "sqlite:///w.db"})
    assert s.database_url == pg and s.worker_database_url == "sqlite:///w.db"


def test_values_are_parsed():
    s = Settings.from_env(
        {
            "CELERY_BROKER_URL": "redis://localhost:6379/0",
            "ROOMCAST_REGISTRATION_ENABLED": "off",
            "ROOMCAST_MAX_UPLOAD_BYTES": "2048",
            "ROOMCAST_LOG_LEVEL": "debug",
            "ROOMCAST_TOKEN_CACHE_SECONDS": "0.5",
        }
    )
    assert not s.embedded_broker and not s.registration_enabled
    assert s.max_upload_bytes == 2048 and s.log_level == "DEBUG"
    assert s.token_cache_seconds == 0.5
    assert Settings.from_env({"ROOMCAST_TOKEN_CACHE_SECONDS": "0"}).token_cache_seconds == 0


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": "amqp://guest@localhost//"}, "CELERY_BROKER_URL"),
        ({"ROOMCAST_REGISTRATION_ENABLED": "maybe"}, "ROOMCAST_REGISTRATION_ENABLED"),
        ({"ROOMCAST_MAX_UPLOAD_BYTES": "ten"}, "ROOMCAST_MAX_UPLOAD_BYTES"),
        ({"ROOMCAST_MAX_UPLOAD_BYTES": "0"}, "ROOMCAST_MAX_UPLOAD_BYTES"),
        ({"ROOMCAST_SECRET_KEY": "short"}, "ROOMCAST_SECRET_KEY"),
        ({"ROOMCAST_LOG_LEVEL": "loud"}, "ROOMCAST_LOG_LEVEL"),
        ({"ROOMCAST_REGISTRATON_ENABLED": "true"}, "unknown setting"),
        ({"ROOMCAST_BUDGET_COST": "-1"}, "ROOMCAST_BUDGET_COST"),
        ({"ROOMCAST_BUDGET_COST": "a lot"}, "ROOMCAST_BUDGET_COST"),
        ({"ROOMCAST_BUDGET_PERIOD": "year"}, "ROOMCAST_BUDGET_PERIOD"),
        ({"ROOMCAST_TURN_LEASE_SECONDS": "1"}, "ROOMCAST_TURN_LEASE_SECONDS"),
        ({"ROOMCAST_TOKEN_CACHE_SECONDS": "-1"}, "ROOMCAST_TOKEN_CACHE_SECONDS"),
        ({"ROOMCAST_TOKEN_CACHE_SECONDS": "301"}, "ROOMCAST_TOKEN_CACHE_SECONDS"),
        ({"ROOMCAST_TOKEN_CACHE_SECONDS": "nan"}, "ROOMCAST_TOKEN_CACHE_SECONDS"),
        ({"ROOMCAST_TOKEN_CACHE_SECONDS": "soon"}, "ROOMCAST_TOKEN_CACHE_SECONDS"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_secret_key_is_not_in_repr():
    s = Settings.from_env({"ROOMCAST_SECRET_KEY": "s" * 32})
    assert "s" * 32 not in repr(s)


def test_file_and_tool_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.files_dir == str(tmp_path / "var" / "files")
    assert s.user_storage_bytes == 100 * 1024 * 1024 and s.max_tool_rounds == 4
    s = Settings.from_env(
        {
            "ROOMCAST_FILES_DIR": "store",
            "ROOMCAST_USER_STORAGE_BYTES": "0",
            "ROOMCAST_MAX_TOOL_ROUNDS": "20",
        }
    )
    assert s.files_dir == str(tmp_path / "store")
    assert s.user_storage_bytes == 0 and s.max_tool_rounds == 20
    for env in (
        {"ROOMCAST_USER_STORAGE_BYTES": "-1"},
        {"ROOMCAST_MAX_TOOL_ROUNDS": "21"},
        {"ROOMCAST_MAX_TOOL_ROUNDS": "-1"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)


def test_webhook_settings():
    s = Settings.from_env({})
    assert s.webhook_allowed_hosts == frozenset() and s.webhook_timeout_seconds == 10
    assert s.webhook_retry_base_seconds == 10 and s.webhook_retry_window_seconds == 86400
    s = Settings.from_env(
        {
            "ROOMCAST_WEBHOOK_ALLOWED_HOSTS": " hooks.internal, 10.0.0.5:8080,[fd00::5]:443,"
            "LOCALHOST., ",
            "ROOMCAST_WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "ROOMCAST_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
            "ROOMCAST_WEBHOOK_RETRY_WINDOW_SECONDS": "3600",
        }
    )
    assert s.webhook_allowed_hosts == {
        ("hooks.internal", None),
        ("10.0.0.5", 8080),
        ("fd00::5", 443),
        ("localhost", None),
    }
    assert s.webhook_timeout_seconds == 2.5 and s.webhook_retry_base_seconds == 0.05
    assert s.webhook_retry_window_seconds == 3600


@pytest.mark.parametrize(
    "env",
    [
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "http://hooks.internal"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "hooks.internal/path"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "hooks.internal:0"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "hooks.internal:70000"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "hooks internal"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "[not-an-address]:80"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": ":80"},
        {"ROOMCAST_WEBHOOK_ALLOWED_HOSTS": "user@hooks.internal"},
        {"ROOMCAST_WEBHOOK_TIMEOUT_SECONDS": "0"},
        {"ROOMCAST_WEBHOOK_TIMEOUT_SECONDS": "31"},
        {"ROOMCAST_WEBHOOK_RETRY_BASE_SECONDS": "soon"},
        {"ROOMCAST_WEBHOOK_RETRY_WINDOW_SECONDS": "-1"},
    ],
)
def test_bad_webhook_settings_fail_naming_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)
