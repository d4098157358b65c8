#!/usr/bin/python3
"""Demo backend for the bundled example: answers every request with a short text that
shows what it received (method, path, a few forwarded headers). Standard library only."""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        text = (f"hello from the demo backend\n"
                f"method: {self.command}\npath: {self.path}\n"
                f"x-forwarded-for: {self.headers.get('X-Forwarded-For')}\n"
                f"x-request-id: {self.headers.get('X-Request-Id')}\n"
                f"body bytes: {len(body)}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
