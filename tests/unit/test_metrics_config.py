"""The [metrics] section: off unless asked; a loopback listener unless a remote one is stated;
a textfile node_exporter will read; each problem named with its field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.daemon.config import read_config
from davit.domain.errors import InvalidConfig


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "davit.toml"
    path.write_text(f"[metrics]\n{body}\n")
    return path


def problems(tmp_path: Path, body: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidConfig) as caught:
        read_config(config(tmp_path, body))
    return [(p.field, p.reason) for p in caught.value.problems]


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    section = read_config(tmp_path / "absent.toml").metrics
    assert section.listen == "" and section.textfile == "" and section.address() is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [("127.0.0.1:9808", ("127.0.0.1", 9808)), ("[::1]:9808", ("::1", 9808)), ("localhost:9100", ("127.0.0.1", 9100))],
    ids=["ipv4-loopback", "ipv6-loopback", "localhost"],
)
def test_a_loopback_listener_is_accepted(tmp_path: Path, listen: str, address: tuple[str, int]) -> None:
    assert read_config(config(tmp_path, f'listen = "{listen}"')).metrics.address() == address


def test_a_listener_on_every_interface_is_refused_unless_allow_remote_says_so(tmp_path: Path) -> None:
    [(field, reason)] = problems(tmp_path, 'listen = "0.0.0.0:9808"')
    assert field == "metrics"
    assert "'0.0.0.0:9808' is not a loopback address" in reason and "allow_remote = true" in reason
    section = read_config(config(tmp_path, 'listen = "0.0.0.0:9808"\nallow_remote = true')).metrics
    assert section.address() == ("0.0.0.0", 9808)


@pytest.mark.parametrize(
    ("listen", "words"),
    [
        ("9808", "is not HOST:PORT"),
        ("metrics.example.com:9808", "is not an IP address"),
        ("127.0.0.1:70000", "port 70000 is not between 1 and 65535"),
        ("127.0.0.1:0", "port 0 is not between 1 and 65535"),
    ],
    ids=["no-host", "host-name", "port-too-big", "port-zero"],
)
def test_a_listen_value_that_is_not_an_address_is_refused_by_name(tmp_path: Path, listen: str, words: str) -> None:
    [(field, reason)] = problems(tmp_path, f'listen = "{listen}"')
    assert field == "metrics.listen" and words in reason


@pytest.mark.parametrize(
    ("textfile", "words"),
    [("davit.prom", "give an absolute path"), ("/var/lib/node_exporter/textfile/davit.txt", "only files named *.prom")],
    ids=["relative", "not-prom"],
)
def test_a_textfile_node_exporter_would_not_read_is_refused(tmp_path: Path, textfile: str, words: str) -> None:
    [(field, reason)] = problems(tmp_path, f'textfile = "{textfile}"')
    assert field == "metrics.textfile" and words in reason


def test_an_unknown_metrics_key_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, 'metrics_listen = "127.0.0.1:9808"') == [("metrics.metrics_listen", "unknown field")]
