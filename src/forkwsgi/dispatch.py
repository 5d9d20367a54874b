"""One request through the application: environ -> app -> response.

Owns: calling the WSGI application exactly once per request, iterating its
result and always calling ``close()`` on it, turning app failures into a
500 (traceback to the error log, never to the client unless ``debug``),
draining an unread body so the connection can be reused, the scoreboard
busy/idle marks, the pre/post_request hooks and the access log call.

Must never: parse HTTP, accept connections, or read settings per request:
everything it needs is bound once in ``Dispatcher.__init__``.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

from forkwsgi.http.errors import HTTPError
from forkwsgi.http.parser import Limits, RequestHead
from forkwsgi.netio import ClientDisconnected, ClientTimeout, pending_bytes, send_all
from forkwsgi.request_body import NO_BODY, BodyError, RequestBody
from forkwsgi.response import AppError, FileWrapper, Response, date_header
from forkwsgi.scoreboard import describe

log = logging.getLogger("forkwsgi.error")

_ERROR_500 = (b"HTTP/1.1 500 Internal Server Error\r\n%s"
              b"Content-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n")


# What the worker does with the connection after a request.
KEEP, CLOSE, LINGER = 1, 0, 2  # LINGER: close, but read and drop the client's bytes first
ABORT = 3  # reset: the response started but failed, and the client must be able to tell


class Dispatcher:
    """Per-worker: the app and everything a request needs, bound once."""

    def __init__(self, app, cfg, slot, worker, access_logger=None) -> None:
        self.app = app
        self.slot = slot
        self.worker = worker
        self.limits = Limits(request_line=cfg.limit_request_line, fields=cfg.limit_request_fields,
                             field_size=cfg.limit_request_field_size, head=cfg.limit_request_head,
                             body=cfg.limit_request_body)
        self.body_timeout = cfg.body_timeout or 3600.0
        self.server_header = b"Server: forkwsgi\r\n" if cfg.server_header else b""
        self.debug = cfg.debug
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        self.access = access_logger
        self.keep_alive = cfg.keep_alive > 0

    def serve(self, conn, head: RequestHead, buffered: bytes, received=None
              ) -> tuple[int, bytes]:
        """Serve one request on ``conn``; ``(KEEP, CLOSE or LINGER, bytes after the body)``.

        ``received``: the whole body, already received by the event loop into
        ``conn.spool`` (a file-like), with ``buffered`` the bytes after it; else
        ``buffered`` holds what came after the head and the app reads the body from the
        socket.
        """
        start = time.monotonic()
        cached = conn.last_environ
        if cached and head is conn.last_head:
            # The connection repeats its head, so the environ is the same (it depends on the
            # head and the connection only): a copy of the pristine one kept from before,
            # and so is the request the scoreboard shows.
            self.slot.busy(start, conn.last_request)
            environ = cached.copy()
        else:
            request = describe(head.method, head.target, conn.client)
            self.slot.busy(start, request)
            environ = conn.protocol.environ(head, conn.environ, conn.trusted)
            if cached is None and head is conn.last_head:  # its second time: keep one
                conn.last_environ = environ.copy()
                conn.last_request = request
            elif head is conn.last_head:
                conn.last_environ = None  # first time: keep one if it comes again
        sock = conn.sock
        has_body = head.content_length or head.chunked
        if received is not None:
            body = NO_BODY  # nothing left on the socket: drained by construction
            environ["wsgi.input"] = received
            if head.chunked:
                # The body is whole, so its length is known: frameworks that read
                # CONTENT_LENGTH bytes (Django, Falcon) get chunked uploads too. The
                # transfer coding was hop-by-hop framing, undone here (as nginx does).
                environ["CONTENT_LENGTH"] = str(conn.spool.size)
                environ.pop("HTTP_TRANSFER_ENCODING", None)
        else:
            if has_body:
                body = RequestBody(sock, buffered, head.content_length, head.chunked,
                                   head.expect_continue, self.body_timeout, self.limits)
            else:
                body = NO_BODY  # RFC 9112 section 6.3: no length, no chunking: no body
            environ["wsgi.input"] = body
        protocol = conn.protocol
        response = Response(sock, self.body_timeout, head.version == "HTTP/1.1",
                            head.method == "HEAD",
                            head.keep_alive and self.keep_alive,
                            self.server_header, body, self.worker,
                            protocol.framer and protocol.framer(head))
        keep = True
        aborted = False
        try:
            if self.pre_request is not None:
                self.pre_request(self.worker, environ)
            self._call_app(environ, response)
        except (ClientDisconnected, ClientTimeout) as exc:
            log.debug("client %s went away: %s", conn.client, exc)
            keep = False
        except BodyError as exc:
            log.info("bad request body from %s: %s", conn.client, exc)
            keep = False
            if not response.head_sent:
                error = exc.http_error
                self._send_error(conn, head, self.error_response(error))
                response.status = f"{error.status} {error.reason}"
        except Exception:
            keep = False
            aborted = response.head_sent
            self._app_failed(conn, head, environ, response, sys.exc_info())
        if keep:
            keep = response.keep_alive and response.complete and body.drain()
        status = response.status or "500 Internal Server Error"
        now = time.monotonic()
        self.slot.done(now, now - start, status,
                       conn.spool.size if received is not None else body.received,
                       response.sent)
        if self.post_request is not None:
            try:
                self.post_request(self.worker, environ, status)
            except Exception:
                log.exception("post_request hook failed")
        if self.access is not None:
            self.access(environ, status, response.headers, response.sent, now - start)
        rest = buffered if body is NO_BODY else body.leftover
        if aborted:
            return ABORT, b""
        if not keep:
            # Closing with the client's bytes unread makes the kernel send a RST, which can
            # destroy the end of our response in the client's buffers (RFC 9112 section
            # 9.6). Close at once only when the client asked to close and nothing of its is
            # left over (a body is read to its exact end, so what follows it may still be in
            # the socket: one ioctl tells, on requests with a body only). Else linger.
            if head.keep_alive or rest or not body.finished or (
                    has_body and pending_bytes(sock)):
                return LINGER, b""
            return CLOSE, b""
        return KEEP, rest

    def error_response(self, error: HTTPError) -> bytes:
        """The server's own answer to a request error, with its Date and Server fields."""
        return error.response(date_header() + self.server_header)

    def _call_app(self, environ: dict, response: Response) -> None:
        result = self.app(environ, response.start_response)
        try:
            if type(result) is list and len(result) == 1 and type(result[0]) is bytes:
                response.send_whole(result[0])  # the common case: one send for everything
            elif type(result) is FileWrapper and response.send_file(result):
                pass
            else:
                write = response.write
                for chunk in result:
                    if chunk:
                        write(chunk)
                response.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _app_failed(self, conn, head: RequestHead, environ: dict, response: Response,
                    exc_info) -> None:
        kind = "broke PEP 3333" if isinstance(exc_info[1], AppError) else "raised"
        log.error("Error handling request %s %s: the application %s",
                  environ.get("REQUEST_METHOD"), environ.get("RAW_URI"), kind, exc_info=exc_info)
        if response.head_sent:
            return  # too late for a 500: the connection is reset, so the client sees the cut
        text = "".join(traceback.format_exception(*exc_info)) if self.debug \
            else "Internal Server Error\n"
        payload = text.encode("utf-8", "replace")
        error_head = _ERROR_500 % (date_header() + self.server_header, len(payload))
        self._send_error(conn, head, error_head + payload)
        response.status = "500 Internal Server Error"
        response.headers = []
        response.sent = len(payload)

    def _send_error(self, conn, head: RequestHead, data: bytes) -> None:
        """The server's own answer, in the connection's protocol's form (Protocol.refuse)."""
        refuse = conn.protocol.refuse
        try:
            send_all(conn.sock, data if refuse is None else refuse(data, head), 5.0)
        except OSError:
            pass
