"""Several applications in the same workers, each under a URL prefix (``--mount``).

In-process: the prefix table (longest prefix, segment boundary, the PEP 3333
split, the 404), the ``mount`` setting from each source, and loading. Then
the real CLI: Flask at ``/`` beside Django at ``/admin`` in two workers, each
generating its own URLs; a TOML ``[mount]`` table, ``FORKWSGI_MOUNT``,
``--preload``, one-line errors and ``--check-config``.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from forkwsgi import config, loader, mount, settings
from forkwsgi.settings import SettingError

from .conftest import FORKWSGI, REPO

PLAIN = "tests.framework_apps.mount_plain"
SITE = "tests.framework_apps.mount_site:app"
ADMIN = "tests.framework_apps.mount_admin:application"


# --- the prefix table ------------------------------------------------------------------------


def tagged(name: str):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [name.encode()]

    return app


def call(app, path: str, script_name: str = "") -> tuple[str, str, str, list[bytes], dict]:
    """(status, SCRIPT_NAME, PATH_INFO, body, headers) of one call."""
    environ = {"SCRIPT_NAME": script_name, "PATH_INFO": path, "REQUEST_METHOD": "GET"}
    got: dict = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, dict(headers)

    body = list(app(environ, start_response))
    return got["status"], environ["SCRIPT_NAME"], environ["PATH_INFO"], body, got["headers"]


@pytest.fixture
def table():
    return mount.Mounts({"/api": tagged("api"), "/api/v2": tagged("v2"), "/": tagged("root")})


@pytest.mark.parametrize("path, app, script_name, path_info", [
    ("/api/v2/users", b"v2", "/api/v2", "/users"),
    ("/api/v2", b"v2", "/api/v2", ""),
    ("/api/v2/", b"v2", "/api/v2", "/"),
    ("/api/v3", b"api", "/api", "/v3"),
    ("/api/v2x", b"api", "/api", "/v2x"),
    ("/api", b"api", "/api", ""),
    ("/api/", b"api", "/api", "/"),
    ("/apix", b"root", "", "/apix"),
    ("/", b"root", "", "/"),
    ("/other/api", b"root", "", "/other/api"),
])
def test_longest_prefix_on_a_segment_boundary_wins(table, path, app, script_name, path_info):
    status, got_script, got_path, body, _ = call(table, path)
    assert (body, got_script, got_path) == ([app], script_name, path_info)
    assert got_script + got_path == path  # PEP 3333: the path is still all there


def test_the_prefix_is_appended_to_a_script_name_already_set(table):
    _, script_name, path_info, body, _ = call(table, "/api/v2/x", script_name="/site")
    assert (body, script_name, path_info) == ([b"v2"], "/site/api/v2", "/x")
    _, script_name, path_info, body, _ = call(table, "/x", script_name="/site")
    assert (body, script_name, path_info) == ([b"root"], "/site", "/x")


@pytest.mark.parametrize("path", ["/", "/apix", "/ap", "", "*"])
def test_a_path_no_prefix_takes_is_a_plain_404_without_a_root_mount(path):
    table = mount.Mounts({"/api": tagged("api")})
    status, script_name, path_info, body, headers = call(table, path)
    assert status == "404 Not Found"
    assert (script_name, path_info) == ("", path)  # untouched
    assert body == [b"Not Found\n"]
    assert headers == {"Content-Type": "text/plain; charset=utf-8", "Content-Length": "10"}


def test_the_root_alone_is_the_application_itself():
    app = tagged("root")
    assert mount.compose({"/": app}) is app  # nothing between the dispatcher and the app
    assert isinstance(mount.compose({"/": app, "/a": app}), mount.Mounts)
    assert isinstance(mount.compose({"/a": app}), mount.Mounts)


def test_app_is_mounted_at_the_root_beside_the_mounts():
    assert mount.mount_table("site:app", {"/api": "api:app"}) == {"/api": "api:app",
                                                                  "/": "site:app"}
    assert mount.mount_table("site:app", {}) == {"/": "site:app"}
    assert mount.mount_table(None, {}) == {}
    with pytest.raises(ValueError, match=r"'site:app' \(APP\) and the mount '/' = "
                                         r"'other:app' both claim '/'"):
        mount.mount_table("site:app", {"/": "other:app"})


# --- the setting -----------------------------------------------------------------------------


def test_mount_from_repeated_flags_a_table_and_factories_with_keywords():
    assert settings.convert("mount", ["/api=pkg.api:app", "/=site:app"]) == {
        "/api": "pkg.api:app", "/": "site:app"}
    assert settings.convert("mount", {"/api": "pkg.api:app"}) == {"/api": "pkg.api:app"}
    assert settings.convert("mount", "/a = m:create(debug=True)") == {"/a": "m:create(debug=True)"}
    assert settings.convert("mount", []) == {}


@pytest.mark.parametrize("value, message", [
    ("api=m:app", "prefix 'api' must start with '/'"),
    ("/api/=m:app", "prefix '/api/' must not end with '/' (write '/api')"),
    ("/a//b=m:app", "prefix '/a//b' has an empty path segment"),
    ("/a?b=m:app", "prefix '/a?b' holds '?'"),
    (["/a=m:app", "/a=n:app"], "prefix '/a' is given twice"),
    ("/a", "expected PREFIX=APP (e.g. /api=pkg.api:app), got '/a'"),
    ("/a=", "the APP spec at '/a': expected 'module:attribute', got ''"),
    ("/a=m:app()(", "the APP spec at '/a': 'app()(' is not an attribute name"),
    ("/a=m:create(open('x'))", "the APP spec at '/a': factory arguments must be literals"),
    ({"/a": 3}, "the APP spec at '/a': '3' is not a dotted module name"),
])
def test_a_bad_mount_names_the_setting_and_what_is_wrong(value, message):
    with pytest.raises(SettingError) as caught:
        settings.convert("mount", value)
    assert str(caught.value).startswith("invalid value for setting 'mount': " + message)


def test_a_toml_mount_table(tmp_path):
    path = tmp_path / "forkwsgi.toml"
    path.write_text('[mount]\n"/api" = "pkg.api:app"\n"/" = "site:app"\n')
    assert config.read_config_file(str(path)) == {"mount": {"/api": "pkg.api:app",
                                                            "/": "site:app"}}
    path.write_text('[mount]\n"/api/" = "pkg.api:app"\n')
    with pytest.raises(config.ConfigError, match="invalid value for setting 'mount': "
                                                 "prefix '/api/' must not end"):
        config.read_config_file(str(path))


def test_forkwsgi_mount_is_split_like_other_repeatable_variables():
    values = config.read_environ({"FORKWSGI_MOUNT": "/api=pkg.api:app '/b=m:make(\"x y\")'"})
    assert values == {"mount": {"/api": "pkg.api:app", "/b": 'm:make("x y")'}}


def test_print_config_dumps_a_mount_table_that_reads_back(tmp_path):
    cfg = settings.make_config({"mount": {"/api": "pkg.api:app", "/": "site:app"}})
    path = tmp_path / "dumped.toml"
    path.write_text(config.dump(cfg))
    assert config.read_config_file(str(path))["mount"] == {"/api": "pkg.api:app",
                                                           "/": "site:app"}


# --- loading ---------------------------------------------------------------------------------


def cfg_for(app: str | None = None, mounts: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(app=app, mount=mounts or {})


def test_each_mounted_spec_loads_once():
    first = f'{PLAIN}:make("once-a")'
    apps = loader.load_apps(cfg_for(mounts={"/a": first, "/b": first,
                                            "/c": f'{PLAIN}:make("once-c")'}))
    assert apps["/a"] is apps["/b"] and apps["/c"] is not apps["/a"]
    from tests.framework_apps import mount_plain

    assert mount_plain.LOADS.count("once-a") == 1 and mount_plain.LOADS.count("once-c") == 1


def test_app_alone_loads_as_before():
    app = loader.load_from_config(cfg_for(app="tests.apps:hello"))
    from tests import apps

    assert app is apps.hello


def test_a_mount_that_fails_to_load_names_the_prefix_and_the_module():
    with pytest.raises(loader.AppLoadError) as caught:
        loader.load_apps(cfg_for(app="tests.apps:hello", mounts={"/x": "tests.apps_broken:app"}))
    assert caught.value.summary.startswith("mount '/x': error importing module "
                                           "'tests.apps_broken': ModuleNotFoundError")
    with pytest.raises(loader.AppLoadError, match="^APP at '/': module 'tests.apps' has no "
                                                  "attribute 'nope'"):
        loader.load_apps(cfg_for(app="tests.apps:nope", mounts={"/x": "tests.apps:hello"}))
    with pytest.raises(loader.AppLoadError, match="^no application"):
        loader.load_apps(cfg_for())


# --- the real server -------------------------------------------------------------------------


def serve_mounted(serve, mounts: dict[str, str], *args: str, **kwargs):
    """``serve`` with only ``--mount`` flags and no APP: serve() puts its APP argument
    last, so the last mount goes there, right after its flag."""
    pairs = [f"{prefix}={spec}" for prefix, spec in mounts.items()]
    flags = [part for pair in pairs[:-1] for part in ("--mount", pair)]
    return serve(pairs[-1], *args, *flags, "--mount", **kwargs)


def test_flask_at_the_root_and_django_at_admin_in_the_same_workers(serve):
    server = serve_mounted(serve, {"/": SITE, "/admin": ADMIN}, workers=2)
    workers = {worker.pid for worker in server.workers()}
    with requests.Session() as client:
        for _ in range(2):  # alternating on one connection: neither app's prefix leaks
            flask = client.get(f"{server.url}/links", timeout=10).json()
            assert flask["framework"] == "flask"
            assert (flask["page"], flask["script_name"], flask["path_info"]) == \
                ("/pages/about", "", "/links")
            assert flask["external"] == f"{server.url}/pages/about"
            django = client.get(f"{server.url}/admin/links", timeout=10).json()
            assert django["framework"] == "django"
            assert django["page"] == "/admin/users/alice"
            assert (django["path"], django["path_info"]) == ("/admin/links", "/links")
            assert django["external"] == f"{server.url}/admin/users/alice"
            assert {flask["pid"], django["pid"]} <= workers
        assert client.get(f"{server.url}/admin/users/bob", timeout=10).json() == {"user": "bob"}
        assert client.get(f"{server.url}/pages/faq", timeout=10).json() == {"page": "faq"}
        # /administrator is not under /admin: Flask's own 404, not Django's.
        response = client.get(f"{server.url}/administrator/links", timeout=10)
        assert response.status_code == 404 and "<!doctype html>" in response.text.lower()
    assert "Traceback" not in server.log()


def test_prefixes_over_http_and_a_404_without_a_root_mount(serve):
    server = serve_mounted(serve, {"/api": f'{PLAIN}:make("api")',
                                   "/api/v2": f'{PLAIN}:make("v2")'})
    with requests.Session() as client:
        def get(path):
            return client.get(f"{server.url}{path}", timeout=10)

        v2 = get("/api/v2/users?x=1").json()
        assert (v2["app"], v2["script_name"], v2["path_info"]) == ("v2", "/api/v2", "/users")
        api = get("/api/v22").json()
        assert (api["app"], api["script_name"], api["path_info"]) == ("api", "/api", "/v22")
        api = get("/api").json()
        assert (api["app"], api["script_name"], api["path_info"]) == ("api", "/api", "")
        for path in ("/apix", "/", "/v2/api"):
            response = get(path)
            assert response.status_code == 404
            assert response.text == "Not Found\n"
            assert response.headers["Content-Length"] == "10"
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert get("/api/v2").json()["app"] == "v2"  # the connection is still good


def test_toml_mount_table_with_app_at_the_root_and_a_script_name_set(serve, tmp_path):
    path = tmp_path / "forkwsgi.toml"
    path.write_text(textwrap.dedent(f"""\
        [mount]
        "/api" = '{PLAIN}:make("api")'
        "/api/v2" = '{PLAIN}:make("v2")'
        """))
    server = serve(f'{PLAIN}:make("root")', "-c", str(path), workers=2,
                   env={"SCRIPT_NAME": "/site"})
    workers = {worker.pid for worker in server.workers()}

    def get(path):
        return requests.get(f"{server.url}{path}", timeout=10).json()

    v2 = get("/site/api/v2/x")
    assert (v2["app"], v2["script_name"], v2["path_info"]) == ("v2", "/site/api/v2", "/x")
    root = get("/site/apix")
    assert (root["app"], root["script_name"], root["path_info"]) == ("root", "/site", "/apix")
    root = get("/elsewhere")  # outside SCRIPT_NAME: the whole path, to the root mount
    assert (root["app"], root["script_name"], root["path_info"]) == ("root", "", "/elsewhere")
    # Loaded in the worker, each once (the order is the table's: mounts, then APP).
    assert v2["loaded_in"] == v2["pid"] in workers
    assert v2["loads"] == ["api", "v2", "root"]


def test_forkwsgi_mount_with_preload_loads_once_in_the_arbiter(serve):
    server = serve(f'{PLAIN}:make("root")', "--preload", workers=2,
                   env={"FORKWSGI_MOUNT": f"'/api={PLAIN}:make(\"api\")'"})
    seen = set()
    for path in ("/api/a", "/b"):
        data = requests.get(f"{server.url}{path}", timeout=10).json()
        seen.add(data["app"])
        assert data["loaded_in"] == server.pid != data["pid"]
        assert data["loads"] == ["api", "root"]
    assert seen == {"api", "root"}


# --- the command line ------------------------------------------------------------------------


def forkwsgi(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO
             ) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FORKWSGI_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return subprocess.run([*FORKWSGI, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("forkwsgi: error: "), lines[0]
    return lines[0][len("forkwsgi: error: "):]


@pytest.mark.process
@pytest.mark.parametrize("args, env, message", [
    (["--mount", "api=m:app"], None,
     "invalid value for setting 'mount': prefix 'api' must start with '/'"),
    (["--mount", "/a=m:app", "--mount", "/a=n:app"], None,
     "invalid value for setting 'mount': prefix '/a' is given twice"),
    (["--mount", "/a=m:1"], None, "invalid value for setting 'mount': the APP spec at '/a': "),
    ([], {"FORKWSGI_MOUNT": "/a/=m:app"},
     "FORKWSGI_MOUNT: invalid value for setting 'mount': prefix '/a/' must not end with '/'"),
    (["--mount", "/=m:app", "site:app"], None,
     "the application 'site:app' (APP) and the mount '/' = 'm:app' both claim '/'"),
    ([], None, "no application: give APP (e.g. 'myapp:app'), FORKWSGI_APP, "
               "app = \"...\" in the config file, or --mount PREFIX=APP"),
])
def test_a_bad_mount_is_one_line_and_exit_2(tmp_path, args, env, message):
    result = forkwsgi("--check-config", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith(message)


@pytest.mark.process
def test_check_config_imports_every_mounted_app():
    result = forkwsgi("--check-config", "--mount", f"/admin={ADMIN}", SITE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "forkwsgi: configuration OK; mounted applications loaded:"
    assert lines[1].startswith(f"  /admin = '{ADMIN}' from ")
    assert lines[1].endswith("mount_admin.py")
    assert lines[2].startswith(f"  / = '{SITE}' from ")


@pytest.mark.process
def test_check_config_with_a_broken_mount_exits_1_naming_it():
    result = forkwsgi("--check-config", "--mount", "/ok=tests.apps:hello",
                      "--mount", "/broken=tests.apps_broken:app")
    assert result.returncode == 1
    first, *rest = result.stderr.splitlines()
    assert first == ("forkwsgi: error: mount '/broken': error importing module "
                     "'tests.apps_broken': ModuleNotFoundError: No module named "
                     "'this_module_does_not_exist'")
    assert any("apps_broken.py" in line for line in rest)  # the user's traceback follows
