"""Stand-in HTTP servers for tests (an API server, KFP's API, an OpenAI-compatible judge): one base handler
that is quiet and speaks JSON, and one way to start a server on a free port of 127.0.0.1.

    class Handler(JSONHandler):
        def do_POST(self):
            self.send_json(200, chat_reply(json.dumps({"score": 1})))

    httpd, url = serve(Handler)   # url: http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def json_body(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def send_json(self, status: int, body, headers: dict | None = None) -> None:
        """`body` as JSON (a str goes as text/plain), with extra `headers`."""
        text = isinstance(body, str)
        data = (body if text else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def serve(handler: type[BaseHTTPRequestHandler], server_class=ThreadingHTTPServer):
    """Start `handler` on a free port of 127.0.0.1 in a daemon thread: (server, base URL). Stop it with
    `server.shutdown()`."""
    httpd = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def chat_reply(content) -> dict:
    """An OpenAI chat completion whose one choice says `content`."""
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
