"""A Flask application with the shared route set (see the package docstring).

``/propagate/*`` is a second Flask app mounted with werkzeug's
DispatcherMiddleware and ``PROPAGATE_EXCEPTIONS = True``: its errors leave
Flask and reach forkwsgi, which must answer its own 500.
"""

from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, jsonify, redirect, request, send_file, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from tests.framework_apps import error_message, stream_chunks

app = Flask(__name__)
app.secret_key = "forkwsgi-tests-not-a-secret"
app.config["PROPAGATE_EXCEPTIONS"] = False


@app.get("/hello")
def hello():
    return Response("hello from flask\n", mimetype="text/plain")


@app.post("/upload")
def upload():
    file = request.files["file"]
    data = file.read()
    return jsonify(filename=file.filename, size=len(data),
                   sha256=hashlib.sha256(data).hexdigest())


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "5"))
    return Response(stream_chunks(count, request.args.get("gate")), mimetype="text/plain")


@app.get("/download")
def download():
    return send_file(request.args["path"], mimetype="application/octet-stream")


@app.get("/session/set")
def session_set():
    session["user"] = request.args["user"]
    return jsonify(ok=True)


@app.get("/session/get")
def session_get():
    return jsonify(user=session.get("user"))


@app.get("/redirect")
def to_hello():
    return redirect("/hello", code=302)


@app.get("/error")
def error():
    raise RuntimeError(error_message("flask", "error"))


@app.post("/json")
def json_echo():
    data = request.get_json()
    return jsonify(received=data, sum=sum(data["numbers"]))


@app.get("/whoami")
def whoami():
    return jsonify(remote_port=request.environ["REMOTE_PORT"], pid=os.getpid())


propagating = Flask(__name__ + ".propagating")
propagating.config["PROPAGATE_EXCEPTIONS"] = True


@propagating.get("/error")
def propagating_error():
    raise RuntimeError(error_message("flask", "propagate"))


app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/propagate": propagating})
