"""The Django project that the mount tests serve at ``/admin``, beside mount_site.py's Flask.

Its own settings (Django's are per process, so it never shares a worker with
django_app.py). ``/links`` answers what ``reverse()`` and ``request.path``
make of its routes: Django takes its script prefix from SCRIPT_NAME.
"""

from __future__ import annotations

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="forkwsgi-tests-not-a-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    DATABASES={},
    MIDDLEWARE=[],
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)
from django.http import JsonResponse  # noqa: E402
from django.urls import path, reverse  # noqa: E402


def user(request, name):
    return JsonResponse({"user": name})


def links(request):
    return JsonResponse({"framework": "django", "page": reverse("user", args=["alice"]),
                         "path": request.path, "path_info": request.path_info,
                         "external": request.build_absolute_uri(reverse("user", args=["alice"])),
                         "pid": os.getpid()})


urlpatterns = [
    path("users/<str:name>", user, name="user"),
    path("links", links),
]

application = get_wsgi_application()
