"""The compose model a migration records keeps the project's shape and none of its values.

The models here are what `docker compose config --format json` (2.40) printed for a project
with planted secrets, resolved and `--no-interpolate --no-env-resolution`."""

from __future__ import annotations

import json
from typing import Any

from davit.adapters.compose.model_mask import MASK, masked_model

SECRETS = (
    "Xr3dispw",
    "HealthPw9",
    "dbpwd-value",
    "smtp-from-dotenv",
    "npm-token-value",
    "label-secret-value",
    "entry-secret",
    "cifspw",
    "xsecret",
    "6380",
    "/srv/hostdir-from-dotenv",
    "4242",
)


def resolved() -> dict[str, Any]:
    return {
        "name": "probe",
        "networks": {"back": {"name": "probe_back", "ipam": {}}},
        "services": {
            "cache": {
                "build": {"context": "/srv/probe", "dockerfile": "Dockerfile", "args": {"NPM_TOKEN": "npm-token-value"}},
                "command": ["redis-server", "--requirepass", "Xr3dispw"],
                "entrypoint": ["/bin/sh", "-c", "exec x --key entry-secret"],
                "environment": {"DB_PWD": "dbpwd-value", "SMTP_PW": "smtp-from-dotenv", "EMPTY": None},
                "healthcheck": {"test": ["CMD", "mysqladmin", "ping", "-pHealthPw9"], "retries": 4242},
                "image": "redis:7",
                "labels": {"com.example.token": "label-secret-value"},
                "networks": {"back": None},
                "ports": [
                    {"mode": "ingress", "target": 6379, "published": "6380", "protocol": "tcp"},
                    {"mode": "ingress", "host_ip": "127.0.0.1", "target": 9000, "published": "9000", "protocol": "udp"},
                ],
                "volumes": [
                    {"type": "volume", "source": "data", "target": "/data", "volume": {}},
                    {
                        "type": "bind",
                        "source": "/srv/probe/site",
                        "target": "/site",
                        "read_only": True,
                        "bind": {"create_host_path": True},
                    },
                    {"type": "bind", "source": "/srv/hostdir-from-dotenv", "target": "/host", "bind": {"create_host_path": True}},
                ],
                "depends_on": {"db": {"condition": "service_healthy", "required": True, "restart": True}},
                "x-custom": {"a": "xsecret"},
            },
            "db": {"image": "postgres:16", "environment": {"POSTGRES_PASSWORD": "dbpwd-value"}},
        },
        "volumes": {"data": {"name": "probe_data", "driver_opts": {"o": "username=u,password=cifspw"}}},
    }


def as_written() -> dict[str, Any]:
    model = resolved()
    cache = model["services"]["cache"]
    cache["environment"]["SMTP_PW"] = "${SMTP_FROM_ENV}"
    cache["ports"][0] = "${PUBLISHED}:6379"  # short syntax: it is parsed only after interpolation
    cache["volumes"][2] = {"type": "volume", "source": "${HOSTDIR}", "target": "/host", "volume": {}}
    return model


def test_no_planted_value_survives_whatever_its_name_says() -> None:
    text = json.dumps(masked_model(resolved(), as_written()))
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} reached the recorded model"


def test_the_projects_shape_stays_readable() -> None:
    model = masked_model(resolved(), as_written())
    cache = model["services"]["cache"]
    assert model["name"] == "probe" and set(model["services"]) == {"cache", "db"}
    assert cache["image"] == "redis:7" and model["services"]["db"]["image"] == "postgres:16"
    assert cache["ports"][1] == {
        "mode": "ingress",
        "host_ip": "127.0.0.1",
        "target": 9000,
        "published": "9000",
        "protocol": "udp",
    }
    assert cache["volumes"][0] == {"type": "volume", "source": "data", "target": "/data", "volume": {}}
    assert cache["volumes"][1]["source"] == "/srv/probe/site" and cache["volumes"][1]["read_only"] is True
    assert cache["networks"] == {"back": None} and model["networks"]["back"]["name"] == "probe_back"
    assert model["volumes"]["data"]["name"] == "probe_data"
    assert cache["depends_on"] == {"db": {"condition": "service_healthy", "required": True, "restart": True}}
    assert cache["build"]["context"] == "/srv/probe"


def test_values_are_masked_by_position_and_names_stay() -> None:
    cache = masked_model(resolved(), as_written())["services"]["cache"]
    assert cache["command"] == [MASK] * 3 and cache["entrypoint"] == [MASK] * 3
    assert cache["healthcheck"] == {"test": [MASK] * 4, "retries": MASK}
    assert cache["environment"] == {"DB_PWD": MASK, "SMTP_PW": MASK, "EMPTY": None}
    assert cache["build"]["args"] == {"NPM_TOKEN": MASK}
    assert cache["labels"] == {"com.example.token": MASK}
    assert cache["x-custom"] == MASK


def test_a_readable_field_that_was_interpolated_is_masked() -> None:
    cache = masked_model(resolved(), as_written())["services"]["cache"]
    assert cache["ports"][0] == {"mode": MASK, "target": MASK, "published": MASK, "protocol": MASK}
    assert cache["volumes"][2]["source"] == MASK and cache["volumes"][2]["target"] == "/host"


def test_without_the_written_model_nothing_outside_the_readable_fields_is_shown() -> None:
    text = json.dumps(masked_model(resolved()))
    assert not [s for s in ("Xr3dispw", "HealthPw9", "dbpwd-value", "npm-token-value", "cifspw") if s in text]


def test_a_build_context_url_keeps_its_repository_and_loses_its_token() -> None:
    """A build context may be a git repository or a tarball URL (readable: it is where the image
    comes from), written with a token in its user information or its query; `docker compose
    config` prints it as written. Only the token goes."""
    model = {
        "services": {
            "app": {"image": "app", "build": {"context": "https://x-access-token:ghp-ctx-token-1@github.com/org/app.git#main"}},
            "web": {"image": "web", "build": {"context": "https://files.example/ctx.tar.gz?sig=ctx-sig-2&x=1#sub"}},
        }
    }
    masked = masked_model(model, model)
    assert "ghp-ctx-token-1" not in json.dumps(masked) and "ctx-sig-2" not in json.dumps(masked)
    assert masked["services"]["app"]["build"]["context"] == "https://***@github.com/org/app.git#main"
    assert masked["services"]["web"]["build"]["context"] == f"https://files.example/ctx.tar.gz?{MASK}#sub"
