"""Configuration loading: defaults < config file < HERALD_* environment < command line, and validation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from herald.core.config import NamespaceOptions, NodeConfig, add_node_options, load_node_config
from herald.core.protocol.errors import ConfigError

#: The minimum a non-dev node needs.
KEYS = {"HERALD_JWT_SECRET": "s" * 32, "HERALD_API_KEY": "key"}


def load(
    cli: dict[str, Any] | argparse.Namespace | None = None, env: dict[str, str] | None = None, **kw: Any
) -> NodeConfig:
    return load_node_config(cli or {}, {**KEYS, **(env or {})}, **kw)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_node_options(parser)
    return parser.parse_args(list(argv))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


TOML = """
port = 9000
partitions = 8
node-id = "from-file"
allowed_origins = ["https://a.example", "https://b.example"]
history_size = 50
client_rate = 5.5

[namespaces.room]
join_leave = true
history_size = 10
"""


# --- precedence ---------------------------------------------------------------------------


def test_defaults_apply_when_nothing_is_set() -> None:
    """With only the required keys, every option has its documented default."""
    c = load()
    assert (c.host, c.port, c.partitions, c.max_connections, c.history_size, c.ping_interval) == (
        "0.0.0.0",
        8000,
        64,
        20_000,
        100,
        25.0,
    )
    assert c.allowed_origins == () and c.redis == () and c.dev is False


def test_a_toml_config_file_overrides_defaults(tmp_path: Path) -> None:
    """Values from a TOML file (dashed or underscored keys) replace the defaults, with their types."""
    c = load({"config": write(tmp_path, "herald.toml", TOML)})
    assert c.port == 9000 and c.partitions == 8 and c.node_id == "from-file" and c.client_rate == 5.5
    assert c.allowed_origins == ("https://a.example", "https://b.example")
    assert c.namespaces == {"room": {"join_leave": True, "history_size": 10}}


def test_a_json_config_file_overrides_defaults(tmp_path: Path) -> None:
    """A .json file is read as JSON."""
    path = write(tmp_path, "herald.json", json.dumps({"port": 9001, "max-connections": 5, "redis": ["redis://a"]}))
    c = load({"config": path})
    assert c.port == 9001 and c.max_connections == 5 and c.redis == ("redis://a",)


def test_the_config_file_can_come_from_herald_config(tmp_path: Path) -> None:
    """HERALD_CONFIG names the file when --config is not given."""
    c = load(env={"HERALD_CONFIG": write(tmp_path, "h.toml", "port = 9002\n")})
    assert c.port == 9002


def test_the_environment_overrides_the_config_file(tmp_path: Path) -> None:
    """HERALD_PORT beats `port` in the file; untouched file values stay."""
    c = load({"config": write(tmp_path, "herald.toml", TOML)}, {"HERALD_PORT": "9100"})
    assert c.port == 9100 and c.partitions == 8


def test_the_command_line_overrides_the_environment(tmp_path: Path) -> None:
    """--port beats HERALD_PORT, which beats the file."""
    path = write(tmp_path, "herald.toml", TOML)
    c = load({"config": path, "port": "9200"}, {"HERALD_PORT": "9100", "HERALD_PARTITIONS": "16"})
    assert c.port == 9200 and c.partitions == 16 and c.history_size == 50


def test_parsed_argparse_options_are_accepted(tmp_path: Path) -> None:
    """An argparse.Namespace from add_node_options works; unset options (None) do not override."""
    path = write(tmp_path, "herald.toml", TOML)
    c = load(parse("--config", path, "--port", "9300", "--jwt-secret", "cli-secret"), {"HERALD_PARTITIONS": "4"})
    assert c.port == 9300 and c.partitions == 4 and c.jwt_secret == "cli-secret" and c.node_id == "from-file"


def test_explicit_defaults_are_overridden_by_everything_else() -> None:
    """`defaults=` (as herald dev uses) sits below file, environment and command line."""
    c = load({"port": "1"}, {"HERALD_PARTITIONS": "2"}, defaults={"port": 5, "partitions": 6, "host": "127.0.0.1"})
    assert (c.port, c.partitions, c.host) == (1, 2, "127.0.0.1")


def test_the_contract_option_names_exist_on_the_command_line() -> None:
    """Every option CONTRACT §1 names is accepted by the parser."""
    ns = parse(
        "--jwt-secret",
        "s",
        "--jwt-algorithm",
        "HS256",
        "--jwt-public-key",
        "f",
        "--jwks-file",
        "j",
        "--api-key",
        "k",
        "--partitions",
        "3",
        "--node-id",
        "n",
        "--drain-window",
        "2",
        "--max-connections",
        "9",
        "--max-connections-per-user",
        "2",
        "--allowed-origins",
        "a",
        "--history-size",
        "7",
        "--history-ttl",
        "60",
        "--redis",
        "redis://x",
        "--host",
        "h",
        "--port",
        "1",
    )
    assert ns.jwks_file == "j" and ns.jwt_public_key == "f" and ns.redis == ["redis://x"]


# --- lists --------------------------------------------------------------------------------


def test_list_options_are_comma_separated_in_the_environment() -> None:
    """HERALD_ALLOWED_ORIGINS=a,b is two origins; blanks are dropped."""
    c = load(env={"HERALD_ALLOWED_ORIGINS": "a, b,,", "HERALD_REDIS": "redis://1,redis://2"})
    assert c.allowed_origins == ("a", "b") and c.redis == ("redis://1", "redis://2")


def test_list_options_repeat_and_split_on_the_command_line() -> None:
    """--allowed-origins a --allowed-origins b,c gives three origins."""
    c = load(parse("--allowed-origins", "a", "--allowed-origins", "b,c"))
    assert c.allowed_origins == ("a", "b", "c")


# --- errors -------------------------------------------------------------------------------


def test_an_unknown_key_in_the_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A typo in the file is reported with the key and file, not ignored."""
    path = write(tmp_path, "herald.toml", "prot = 9000\n")
    with pytest.raises(ConfigError, match="prot"):
        load({"config": path})
    with pytest.raises(ConfigError, match="nope"):
        load({"config": write(tmp_path, "h.json", '{"nope": 1}')})


@pytest.mark.parametrize("text", ["port = ", "[[[", "port = 'x"])
def test_an_unparsable_config_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    """A malformed TOML file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="config"):
        load({"config": write(tmp_path, "bad.toml", text)})


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError."""
    with pytest.raises(ConfigError):
        load({"config": str(tmp_path / "absent.toml")})


def test_a_node_without_a_jwt_key_refuses_to_start_with_a_clear_message() -> None:
    """Outside dev mode, no JWT secret/key is a ConfigError naming the option to set."""
    with pytest.raises(ConfigError, match="--jwt-secret"):
        load_node_config({}, {"HERALD_API_KEY": "k"})
    with pytest.raises(ConfigError, match="--jwt-public-key"):
        load_node_config({"jwt_algorithm": "RS256"}, {"HERALD_API_KEY": "k"})


def test_a_node_without_an_api_key_refuses_to_start_with_a_clear_message() -> None:
    """Outside dev mode, no API key is a ConfigError naming --api-key."""
    with pytest.raises(ConfigError, match="--api-key"):
        load_node_config({}, {"HERALD_JWT_SECRET": "s"})


def test_dev_mode_starts_without_keys() -> None:
    """With dev=True no secret or API key is required."""
    assert load_node_config({"dev": True}, {}).dev is True


def test_herald_dev_in_the_environment_does_not_enable_dev_mode() -> None:
    """Development mode cannot be switched on by an environment variable."""
    with pytest.raises(ConfigError):
        load_node_config({}, {"HERALD_DEV": "1"})


def test_an_rs256_node_with_a_public_key_file_is_configured() -> None:
    """RS256 counts as configured with --jwt-public-key (no secret needed)."""
    c = load_node_config({"jwt_algorithm": "RS256", "jwt_public_key": "/k.pem"}, {"HERALD_API_KEY": "k"})
    assert c.jwt.algorithm == "RS256" and c.jwt.public_key_file == "/k.pem"


@pytest.mark.parametrize(
    "cli",
    [
        {"port": "abc"},
        {"port": "70000"},
        {"port": "-1"},
        {"partitions": "0"},
        {"max_connections": "-5"},
        {"max_connections_per_user": "0"},
        {"max_connections_per_ip": "-1"},
        {"max_subscriptions": "0"},
        {"client_burst": "0"},
        {"client_rate": "0"},
        {"ping_interval": "0"},
        {"drain_window": "-1"},
        {"drain_window": "soon"},
        {"history_size": "-1"},
        {"history_ttl": "0"},
        {"history_ttl": "-30"},
        {"jwt_algorithm": "none"},
        {"jwt_algorithm": "HS512"},
        {"log_format": "xml"},
        {"namespaces": "{not json"},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_bad_values_are_config_errors(cli: dict[str, str]) -> None:
    """Unparsable, out-of-range or negative values are rejected at load time."""
    with pytest.raises(ConfigError):
        load(cli)


def test_a_bad_value_message_names_the_option() -> None:
    """The message says which option is wrong."""
    with pytest.raises(ConfigError, match="--port"):
        load({"port": "abc"})


@pytest.mark.parametrize(
    "namespaces",
    [{"room": {"history_sise": 1}}, {"room": {"history_size": -1}}, {"room": {"history_ttl": 0}}, {"room": 5}],
    ids=repr,
)
def test_invalid_namespace_options_are_config_errors(tmp_path: Path, namespaces: dict[str, Any]) -> None:
    """Unknown or out-of-range namespace options are rejected."""
    with pytest.raises(ConfigError):
        load({"config": write(tmp_path, "h.json", json.dumps({"namespaces": namespaces}))})


# --- namespaces ---------------------------------------------------------------------------


def test_namespace_options_resolve_over_the_default_namespace(tmp_path: Path) -> None:
    """A namespace's table overrides the top-level history settings; other namespaces get the defaults."""
    c = load({"config": write(tmp_path, "herald.toml", TOML)}, {"HERALD_HISTORY_TTL": "60"})
    room = c.namespace("room")
    assert room == NamespaceOptions(history_size=10, history_ttl=60.0, join_leave=True)
    assert c.namespace("") == NamespaceOptions(history_size=50, history_ttl=60.0)
    assert c.namespace("news") == c.namespace("")


def test_namespaces_can_be_given_as_json_in_the_environment() -> None:
    """HERALD_NAMESPACES holds a JSON object."""
    c = load(env={"HERALD_NAMESPACES": '{"chat": {"allow_publish": false, "presence": false}}'})
    assert c.namespace("chat").allow_publish is False and c.namespace("chat").presence is False
    assert c.namespace("room").allow_publish is True
