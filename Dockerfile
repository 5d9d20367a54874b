# forkwsgi serving its bundled example:
#   docker build -t forkwsgi . && docker run --rm -p 8000:8000 forkwsgi
# To serve your application, see "Docker" in docs/deployment.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /usr/src/forkwsgi
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

# forkwsgi is PID 1, running as "app": it takes docker stop's TERM as a graceful stop
# and reaps orphaned processes, so no init such as tini is needed.
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl in the slim image: Python checks that the server answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=4)"]
ENTRYPOINT ["forkwsgi"]
CMD ["-b", "0.0.0.0:8000", "-w", "2", "forkwsgi.examples.hello:app"]
