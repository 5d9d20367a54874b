"""A single-file Django project (settings, views, urls) with the shared route set.

``DEBUG_PROPAGATE_EXCEPTIONS`` is project-wide in Django, so the test that
wants it starts a second server with ``TEST_DJANGO_PROPAGATE_EXCEPTIONS=1``.
Sessions are signed cookies: no database.
"""

from __future__ import annotations

import hashlib
import json
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    DEBUG_PROPAGATE_EXCEPTIONS=os.environ.get("TEST_DJANGO_PROPAGATE_EXCEPTIONS") == "1",
    SECRET_KEY="forkwsgi-tests-not-a-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    DATABASES={},
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    USE_TZ=True,
    # The default config only logs request errors to the console when DEBUG is on.
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR",
                                       "propagate": False}},
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)
from django.http import (  # noqa: E402
    FileResponse,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_POST, require_safe  # noqa: E402

from tests.framework_apps import error_message, stream_chunks  # noqa: E402


@require_safe
def hello(request):
    return HttpResponse("hello from django\n", content_type="text/plain")


@require_POST
def upload(request):
    file = request.FILES.get("file")
    if file is None:
        return HttpResponseBadRequest("no file part")
    data = file.read()
    return JsonResponse({"filename": file.name, "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    count = int(request.GET.get("n", "5"))
    return StreamingHttpResponse(stream_chunks(count, request.GET.get("gate")),
                                 content_type="text/plain")


def download(request):
    return FileResponse(open(request.GET["path"], "rb"), content_type="application/octet-stream")


def session_set(request):
    request.session["user"] = request.GET["user"]
    return JsonResponse({"ok": True})


def session_get(request):
    return JsonResponse({"user": request.session.get("user")})


def to_hello(request):
    return HttpResponseRedirect("/hello")


def error(request):
    raise RuntimeError(error_message("django", "error"))


def propagate_error(request):
    raise RuntimeError(error_message("django", "propagate"))


@require_POST
def json_echo(request):
    data = json.loads(request.body)
    return JsonResponse({"received": data, "sum": sum(data["numbers"])})


def whoami(request):
    return JsonResponse({"remote_port": request.META["REMOTE_PORT"], "pid": os.getpid()})


urlpatterns = [
    path("hello", hello),
    path("upload", upload),
    path("stream", stream),
    path("download", download),
    path("session/set", session_set),
    path("session/get", session_get),
    path("redirect", to_hello),
    path("error", error),
    path("propagate/error", propagate_error),
    path("json", json_echo),
    path("whoami", whoami),
]

application = get_wsgi_application()
