"""A JSON HTTP server on 127.0.0.1 for tests of the web clients (no test needs the internet)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class JsonServer:
    """Serves `respond(request) -> (status, payload, headers)` for GET and POST and records every
    request as {"method", "path", "query", "headers", "body"} (body: the parsed JSON of a POST)."""

    def __init__(self, respond):
        self.respond, self.requests = respond, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def _answer(self, body):
                url = urlsplit(self.path)
                request = {"method": self.command, "path": url.path, "headers": dict(self.headers),
                           "query": {k: v[0] for k, v in parse_qs(url.query).items()}, "body": body}
                outer.requests.append(request)
                status, payload, headers = outer.respond(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
