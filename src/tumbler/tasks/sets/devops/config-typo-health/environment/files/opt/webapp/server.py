import configparser, http.server

config = configparser.ConfigParser()
config.read("/etc/webapp/webapp.ini")
port = config.getint("server", "port", fallback=9999)
health = config.get("health", "path", fallback="/health")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == health
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"healthy" if ok else b"no")
    def log_message(self, *args):
        pass

print(f"listening on 127.0.0.1:{port}", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
