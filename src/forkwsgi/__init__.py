"""forkwsgi: a pre-fork WSGI server.

The request path, one module per step:
listeners -> arbiter (forks) -> worker -> http.parser -> environ -> app -> response -> accesslog.
"""

__version__ = "0.1.0"
