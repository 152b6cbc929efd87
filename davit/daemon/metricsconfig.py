"""The `[metrics]` section of davit.toml: where davitd exposes its Prometheus metrics.

Both outputs are opt-in (an empty value is off); with neither set davitd exposes nothing and
reads nothing for it.
- `listen = "127.0.0.1:9808"`: an HTTP listener serving the exposition format (any path).
  The address is an IP literal (`[::1]:9808` for IPv6) or `localhost`: a host name could
  resolve somewhere else than the operator meant. An address that is not loopback is refused
  unless `allow_remote = true` says so: the endpoint has neither authentication nor TLS, and
  the metrics name every job and repository and tell when backups run and fail, which is worth
  knowing to someone who would like them to fail.
- `textfile = "/var/lib/node_exporter/textfile/davit.prom"`: the same metrics written for
  node_exporter's textfile collector (an absolute path ending in `.prom`, the files that
  collector reads), replaced atomically at every refresh (`davit/daemon/metricsfile.py`).
- `refresh_seconds`: how often the figures are brought up to date from the event log (and the
  textfile rewritten).
These are read at start-up: a reload names a change of them as needing a restart.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PORT = 9808
_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[0-9A-Za-z.]{1,253})):(?P<port>[0-9]{1,5})$")


def parse_listen(value: str) -> tuple[str, int]:
    """(IP address, port) of a `listen` value; ValueError naming the accepted form."""
    found = _LISTEN.match(value)
    if found is None:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. '127.0.0.1:{DEFAULT_PORT}', '[::1]:{DEFAULT_PORT}')")
    port = int(found["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    host = found["v6"] or found["host"]
    if host == "localhost":
        return "127.0.0.1", port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (a host name could resolve elsewhere): give its address") from None
    return str(address), port


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


class MetricsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = ""  # "" for no listener
    allow_remote: bool = False
    textfile: str = ""  # "" for no textfile
    refresh_seconds: float = Field(default=5.0, ge=0.1, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen_is_an_address(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value

    @field_validator("textfile")
    @classmethod
    def _textfile_is_a_prom_file(cls, value: str) -> str:
        if not value:
            return value
        path = Path(value)
        if not path.is_absolute():
            raise ValueError("give an absolute path (node_exporter's --collector.textfile.directory and the file's name)")
        if not path.name.endswith(".prom") or path.name == ".prom":
            raise ValueError("node_exporter's textfile collector reads only files named *.prom")
        if "\0" in value:
            raise ValueError("it holds a NUL byte")
        return value

    @model_validator(mode="after")
    def _remote_is_stated(self) -> MetricsSection:
        if self.listen and not self.allow_remote:
            host, _ = parse_listen(self.listen)
            if not is_loopback(host):
                raise ValueError(
                    f"listen {self.listen!r} is not a loopback address: the metrics endpoint has no authentication "
                    "or TLS; set allow_remote = true to serve it there anyway (behind a firewall or a proxy)"
                )
        return self

    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen else None
