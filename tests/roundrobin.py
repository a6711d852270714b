"""A small round-robin load balancer for webhooks, in front of several `serve` replicas."""

from __future__ import annotations

import http.server
import itertools
import threading
from typing import Any

import requests


class RoundRobin:
    """A small load balancer: each webhook POST goes to the next replica; a replica that refuses the
    connection (killed) is skipped, as a Service drops an endpoint whose Pod is gone."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.turn = itertools.count()
        self.sent: dict[str, int] = dict.fromkeys(targets, 0)
        balancer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                status = 502
                start = next(balancer.turn)
                for i in range(len(balancer.targets)):
                    target = balancer.targets[(start + i) % len(balancer.targets)]
                    try:
                        status = requests.post(target + self.path, data=body, headers=headers, timeout=10).status_code
                    except requests.ConnectionError:
                        continue
                    balancer.sent[target] += 1
                    break
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
