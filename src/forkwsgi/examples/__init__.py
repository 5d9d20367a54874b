"""Example WSGI applications shipped with forkwsgi: ``forkwsgi forkwsgi.examples.hello:app``."""
