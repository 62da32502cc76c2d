#!/usr/bin/env python3
"""The demo workload of examples/chaos: a small HTTP service that needs secrets.

It never talks to Coffer. It reads what `coffer agent` rendered into its tmpfs
(`$SECRETS_FILE`, JSON: `api_key`, and `db_username`/`db_password` when the demo
has a database) on every request, as an app that re-reads its credentials would.

GET /health answers 200 when the secrets file is there and complete and, with a
database, a login with the current database credentials works; 503 otherwise.
The answer names what it checked and never contains a secret:
    {"ok": true, "secrets_file": true, "secret_version": 3, "database": "ok",
     "db_username": "v-..."}
The database username is not a secret (it is in the audit log and pg_roles);
showing it lets an experiment see that the agent delivered new credentials.
"""

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRETS_FILE = os.environ.get("SECRETS_FILE", "/run/app-secrets/app.json")
DB_HOST = os.environ.get("DB_HOST", "")
DB_PORT = os.environ.get("DB_PORT", "5432")
DB_NAME = os.environ.get("DB_NAME", "postgres")
LISTEN = os.environ.get("LISTEN", "127.0.0.1:8080")


def check():
    state = {"ok": False, "secrets_file": False}
    try:
        with open(SECRETS_FILE, encoding="utf-8") as f:
            secrets = json.load(f)
    except (OSError, ValueError) as e:
        state["error"] = f"secrets file: {type(e).__name__}"
        return state
    if not secrets.get("api_key"):
        state["error"] = "secrets file has no api_key"
        return state
    state["secrets_file"] = True
    # Which version of secret/app the app holds (a number, not the secret): lets an experiment
    # check that a rotation reached it.
    state["secret_version"] = secrets.get("secret_version")
    if DB_HOST:
        user, password = secrets.get("db_username"), secrets.get("db_password")
        state["db_username"] = user
        if not user or not password:
            state["database"] = "no credentials"
            return state
        env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="3")
        run = subprocess.run(
            ["psql", "-h", DB_HOST, "-p", DB_PORT, "-U", user, "-d", DB_NAME,
             "-tAc", "select 1"],
            env=env, capture_output=True, text=True, timeout=10, check=False,
        )
        if run.returncode != 0:
            state["database"] = "login failed"
            return state
        state["database"] = "ok"
    state["ok"] = True
    return state


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        state = check()
        body = json.dumps(state).encode()
        self.send_response(200 if state["ok"] else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    host, port = LISTEN.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"demo app listening on {LISTEN}, secrets from {SECRETS_FILE}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
