"""The HTTP listener that serves davitd's metrics, bounded: a few connections at a time, each
closed when it sends nothing for `IDLE_SECONDS`.

prometheus-client's own `start_http_server` starts a thread for every connection and waits
without end for its request: any local user (the listener is on loopback, open to every user of
the host) who opens connections and sends nothing adds a thread to davitd each time, for good.
At systemd's task limit davitd can start no thread at all, and every run (whose work runs in
threads) fails. Here a connection beyond `MAX_CONNECTIONS` is closed at once, unanswered, and an
idle one is closed after `IDLE_SECONDS`: a flood can deny the metrics for as long as it lasts,
never the backups. The metrics themselves are prometheus-client's WSGI app, as before.
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("davitd.metrics")
MAX_CONNECTIONS = 8  # a scraper or two, and room for an operator's curl
IDLE_SECONDS = 10.0  # a scraper sends its request at once; one that waits longer is not one


class _QuietHandler(WSGIRequestHandler):
    timeout = IDLE_SECONDS  # (StreamRequestHandler sets it on the connection: reads time out)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a scrape every few seconds is not worth a log line."""


class BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `MAX_CONNECTIONS` of them; others are closed at once."""

    daemon_threads = True  # a scrape in progress does not hold davitd's exit
    block_on_close = False
    request_queue_size = 64  # (socketserver's 5 would make a scraper's connect wait behind a flood)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed unanswered, no thread started
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that timed out or broke is the client's affair: not a traceback on
        davitd's stderr (the journal) for each, as socketserver's default prints."""
        log.debug("metrics connection from %s ended early", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` on `host`:`port` (an IP literal) from a daemon thread; `OSError` if the
    address cannot be bound. Stop it with `shutdown()` and `server_close()`."""

    class Server(BoundedServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="davit-metrics", daemon=True).start()
    return server
