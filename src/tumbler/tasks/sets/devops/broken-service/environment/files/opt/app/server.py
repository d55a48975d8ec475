import http.server, os, sys

conf = dict(line.strip().split("=", 1) for line in open("/etc/app/app.conf")
            if "=" in line and not line.startswith("#"))
data_dir = conf["data_dir"].strip()
if not os.path.isdir(data_dir):
    sys.exit(f"fatal: data_dir {data_dir} does not exist")
with open(os.path.join(data_dir, "app.pid"), "w") as fh:
    fh.write(str(os.getpid()))

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"not found")
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(conf["port"])), Handler).serve_forever()
