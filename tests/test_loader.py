"""loader: APP specs, import errors, the import path."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from forkwsgi.loader import AppLoadError, AppSpec, load_app, prepare_import_path, validate_spec

_counter = itertools.count()


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """``make_module(source) -> name``: a fresh importable module (unique name, no caching)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(source: str, name: str | None = None) -> str:
        name = name or f"loader_case_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


WSGI = "def app(environ, start_response):\n    return []\n"


# --- the grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, parsed", [
    ("pkg.mod", AppSpec("pkg.mod", (), None)),
    ("pkg.mod:app", AppSpec("pkg.mod", ("app",), None)),
    (" pkg.mod:app ", AppSpec("pkg.mod", ("app",), None)),
    ("pkg.mod:obj.wsgi_app", AppSpec("pkg.mod", ("obj", "wsgi_app"), None)),
    ("m:create_app()", AppSpec("m", ("create_app",), ((), {}))),
    ('m:create_app("prod", debug=False)', AppSpec("m", ("create_app",), (("prod",), {"debug": False}))),
    ("m:factories.make(1, x=[1, {'a': None}])",
     AppSpec("m", ("factories", "make"), ((1,), {"x": [1, {"a": None}]}))),
])
def test_valid_specs(spec, parsed):
    assert validate_spec(spec) == parsed


@pytest.mark.parametrize("spec, message", [
    ("", "expected 'module:attribute'"),
    (":app", "expected 'module:attribute'"),
    ("pkg..mod:app", "is not a dotted module name"),
    ("my-app:app", "is not a dotted module name"),
    ("m:", "nothing after ':'"),
    ("m:app(", "is not an attribute name or a factory call"),
    ("m:app[0]", "must be a name"),
    ("m:create_app()()", "must be a name"),
    ("m:create_app(os.environ)", "must be literals"),
    ("m:create_app(__import__('os').system('x'))", "must be literals"),
    ("m:create_app(*args)", "must be literals"),
    ("m:create_app(**kw)", "must be literals"),
    ("m:lambda: 1", "must be a name"),
])
def test_invalid_specs(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_spec(spec)


def test_spec_round_trips_through_str():
    spec = 'm:create_app("prod", debug=False)'
    assert str(validate_spec(spec)) == "m:create_app('prod', debug=False)"
    assert validate_spec(str(validate_spec(spec))) == validate_spec(spec)


# --- loading ---------------------------------------------------------------------------------


def test_attribute(make_module):
    name = make_module(WSGI)
    assert load_app(f"{name}:app").__name__ == "app"


def test_nested_attribute(make_module):
    name = make_module(WSGI + "class Holder:\n    wsgi = staticmethod(app)\n")
    assert load_app(f"{name}:Holder.wsgi").__name__ == "app"


def test_bare_module_prefers_application_over_app(make_module):
    name = make_module(WSGI + "def application(environ, start_response):\n    return []\n")
    assert load_app(name).__name__ == "application"
    only_app = make_module(WSGI)
    assert load_app(only_app).__name__ == "app"
    neither = make_module("x = 1\n")
    with pytest.raises(AppLoadError, match="has no 'application' or 'app' attribute"):
        load_app(neither)


def test_factory_with_literal_arguments(make_module):
    name = make_module("""\
        calls = []
        def create_app(env="dev", *, debug=True, extra=None):
            calls.append((env, debug, extra))
            def app(environ, start_response):
                return []
            return app
        """)
    load_app(f'{name}:create_app("prod", debug=False, extra={{"a": [1]}})')
    load_app(f"{name}:create_app()")
    assert sys.modules[name].calls == [("prod", False, {"a": [1]}), ("dev", True, None)]


def test_factory_failure_shows_the_users_traceback(make_module):
    name = make_module("""\
        def create_app():
            raise KeyError("DATABASE_URL")
        """)
    with pytest.raises(AppLoadError) as info:
        load_app(f"{name}:create_app()")
    assert info.value.summary == (f"application factory '{name}:create_app()' raised "
                                  f"KeyError: 'DATABASE_URL'")
    assert f"{name}.py\", line 2, in create_app" in info.value.details
    assert "loader.py" not in info.value.details


def test_missing_module(make_module):
    with pytest.raises(AppLoadError) as info:
        load_app("surely_no_such_module_here:app")
    assert info.value.summary.startswith(
        "cannot import module 'surely_no_such_module_here': no module named "
        "'surely_no_such_module_here'")
    assert info.value.details == ""


def test_error_inside_the_module_keeps_the_original_traceback(make_module):
    name = make_module("""\
        import os

        def helper():
            return 1 / 0

        helper()
        """)
    with pytest.raises(AppLoadError) as info:
        load_app(f"{name}:app")
    assert info.value.summary == f"error importing module '{name}': ZeroDivisionError: division by zero"
    details = info.value.details
    assert details.startswith("Traceback (most recent call last):")
    assert f"{name}.py\", line 6, in <module>" in details
    assert f"{name}.py\", line 4, in helper" in details
    assert "importlib" not in details and "loader.py" not in details


def test_missing_dependency_is_not_a_missing_app_module(make_module):
    name = make_module("import surely_not_installed_dependency\n")
    with pytest.raises(AppLoadError) as info:
        load_app(f"{name}:app")
    assert info.value.summary.startswith(f"error importing module '{name}': ModuleNotFoundError")
    assert "surely_not_installed_dependency" in info.value.details


def test_syntax_error_in_the_module(make_module):
    name = make_module("def app(:\n")
    with pytest.raises(AppLoadError) as info:
        load_app(f"{name}:app")
    assert "SyntaxError" in info.value.summary
    assert f"{name}.py\", line 1" in info.value.details


def test_sys_exit_at_import_is_a_load_error(make_module):
    name = make_module("import sys\nsys.exit(3)\n")
    with pytest.raises(AppLoadError, match="SystemExit: 3"):
        load_app(f"{name}:app")


def test_missing_attribute_suggests(make_module):
    name = make_module(WSGI)
    with pytest.raises(AppLoadError, match=rf"module '{name}' has no attribute 'ap' "
                                           r"\(did you mean 'app'\?\)"):
        load_app(f"{name}:ap")
    with pytest.raises(AppLoadError, match=rf"object '{name}:app' has no attribute 'wsgi'"):
        load_app(f"{name}:app.wsgi")


def test_not_callable(make_module):
    name = make_module("app = {'not': 'an app'}\n")
    with pytest.raises(AppLoadError, match="is not callable \\(it is of type 'dict'\\)"):
        load_app(f"{name}:app")


def test_asgi_application_is_refused(make_module):
    name = make_module("""\
        async def app(scope, receive, send):
            pass

        class Starlette:
            async def __call__(self, scope, receive, send):
                pass

        instance = Starlette()
        """)
    for attr in ("app", "instance"):
        with pytest.raises(AppLoadError, match="async \\(ASGI\\)"):
            load_app(f"{name}:{attr}")


def test_bad_spec_is_an_app_load_error():
    with pytest.raises(AppLoadError, match="invalid application spec"):
        load_app("m:create_app(os)")


# --- import path -----------------------------------------------------------------------------


def test_prepare_import_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "site").mkdir()
    (tmp_path / "lib").mkdir()
    cfg = SimpleNamespace(chdir=str(tmp_path / "site"), pythonpath=[str(tmp_path / "lib"), "rel"])
    prepare_import_path(cfg)
    site = str(tmp_path / "site")
    assert os.getcwd() == site
    assert sys.path[:3] == [site, str(tmp_path / "lib"), os.path.join(site, "rel")]
    before = list(sys.path)
    prepare_import_path(cfg)  # a reload calls it again: nothing moves, nothing doubles
    assert sys.path == before


def test_prepare_import_path_bad_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = SimpleNamespace(chdir=str(tmp_path / "missing"), pythonpath=[])
    with pytest.raises(AppLoadError, match="cannot change directory to .*missing"):
        prepare_import_path(cfg)


def test_cwd_module_imports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    Path("cwd_only_app.py").write_text(WSGI)
    try:
        prepare_import_path(SimpleNamespace(chdir=None, pythonpath=[]))
        assert load_app("cwd_only_app:app").__name__ == "app"
    finally:
        sys.modules.pop("cwd_only_app", None)
