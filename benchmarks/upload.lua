-- wrk script for the upload scenario: POST a 1 MiB body to /upload.
-- wrk adds Content-Length itself when wrk.body is set.
wrk.method = "POST"
wrk.body = string.rep("x", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
