"""A Falcon application with the shared route set (see the package docstring).

Falcon has no session: ``/session/*`` uses a plain cookie. Propagation is
Falcon's idiom for it: an error handler that re-raises sends the exception
out of ``App.__call__`` to the server.
"""

from __future__ import annotations

import hashlib
import os

import falcon

from tests.framework_apps import error_message, stream_chunks


class Propagated(Exception):
    """Raised by /propagate/error; its handler re-raises it to forkwsgi."""


class Hello:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "hello from falcon\n"

    on_head = on_get  # Falcon has no implicit HEAD; it drops the body itself


class Upload:
    def on_post(self, req, resp):
        for part in req.get_media():
            if part.name == "file":
                data = part.stream.read()
                resp.media = {"filename": part.filename, "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}
                return
        raise falcon.HTTPBadRequest(description="no file part")


class Stream:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = stream_chunks(req.get_param_as_int("n", default=5), req.get_param("gate"))


class Download:
    def on_get(self, req, resp):
        path = req.get_param("path", required=True)
        resp.content_type = "application/octet-stream"
        resp.stream = open(path, "rb")  # Falcon hands it to wsgi.file_wrapper
        resp.content_length = os.path.getsize(path)

    on_head = on_get


class SessionSet:
    def on_get(self, req, resp):
        resp.set_cookie("user", req.get_param("user", required=True), secure=False, path="/")
        resp.media = {"ok": True}


class SessionGet:
    def on_get(self, req, resp):
        resp.media = {"user": req.cookies.get("user")}


class Redirect:
    def on_get(self, req, resp):
        raise falcon.HTTPFound("/hello")


class Error:
    def on_get(self, req, resp):
        raise RuntimeError(error_message("falcon", "error"))


class PropagateError:
    def on_get(self, req, resp):
        raise Propagated(error_message("falcon", "propagate"))


class Json:
    def on_post(self, req, resp):
        data = req.get_media()
        resp.media = {"received": data, "sum": sum(data["numbers"])}


class WhoAmI:
    def on_get(self, req, resp):
        resp.media = {"remote_port": req.env["REMOTE_PORT"], "pid": os.getpid()}


def _reraise(req, resp, error, params):
    raise error


app = falcon.App()
app.add_route("/hello", Hello())
app.add_route("/upload", Upload())
app.add_route("/stream", Stream())
app.add_route("/download", Download())
app.add_route("/session/set", SessionSet())
app.add_route("/session/get", SessionGet())
app.add_route("/redirect", Redirect())
app.add_route("/error", Error())
app.add_route("/propagate/error", PropagateError())
app.add_route("/json", Json())
app.add_route("/whoami", WhoAmI())
app.add_error_handler(Propagated, _reraise)
