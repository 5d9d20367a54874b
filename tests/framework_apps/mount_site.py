"""The Flask site that the mount tests serve at ``/``, beside mount_admin.py's Django.

``/links`` answers what ``url_for`` makes of its own routes, so a test sees
the URLs the site would put in its pages under the mount it was given.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.get("/pages/<name>")
def page(name):
    return jsonify(page=name)


@app.get("/links")
def links():
    return jsonify(framework="flask", page=url_for("page", name="about"),
                   external=url_for("page", name="about", _external=True),
                   script_name=request.environ["SCRIPT_NAME"],
                   path_info=request.environ["PATH_INFO"], pid=os.getpid())
