"""HTTP/1.1 on the wire, sans-I/O: bytes in, request heads and body chunks out.

Nothing in this package touches a socket, a clock or a setting object; the
worker feeds it bytes and limits. That keeps it testable and fuzzable with
plain bytes, and reusable by other gateway protocols' framers.
"""
