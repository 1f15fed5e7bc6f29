"""A real S3 implementation for tests: moto's server on loopback, with every request counted.

s3fs and botocore reach it through ``AWS_ENDPOINT_URL_S3``, which ``endpoint_environment``
sets before any Ray cluster of the test session starts (Ray workers inherit the driver's
environment when the cluster starts, not afterwards). Requests are counted by kind as S3
bills them: LIST, HEAD, GET, PUT, COPY (a PUT with ``x-amz-copy-source``), DELETE, POST
(multipart steps, batch deletes).
"""
from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from contextlib import contextmanager

ACCESS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_environment() -> str:
    """Point S3 clients of this process and of Ray clusters it starts later at a loopback port
    (the server itself starts only when a test asks for it); returns the endpoint URL."""
    if "DDP_TEST_S3_ENDPOINT" not in os.environ:
        os.environ["DDP_TEST_S3_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    endpoint = os.environ["DDP_TEST_S3_ENDPOINT"]
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    for name, value in ACCESS.items():
        os.environ.setdefault(name, value)
    return endpoint


def request_kind(environ: dict) -> str:
    method = environ["REQUEST_METHOD"]
    query = environ.get("QUERY_STRING", "")
    if method == "GET" and ("list-type" in query or environ.get("PATH_INFO", "/").count("/") <= 1):
        return "LIST"
    if method == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" in environ:
        return "COPY"
    return method


class S3Server:
    """moto's S3 server in a thread of this process, counting what it is asked."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.host, port = endpoint.removeprefix("http://").split(":")
        self.port = int(port)
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> "S3Server":
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            with self._lock:
                self.requests[request_kind(environ)] += 1
            return app(environ, start_response)

        self._server = make_server(self.host, self.port, counting, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join()

    def make_bucket(self, name: str) -> str:
        """A new empty bucket; returns ``s3://name``."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"

    @contextmanager
    def counting(self):
        """Counts of the requests made inside the block (a Counter filled in when it ends)."""
        with self._lock:
            before = Counter(self.requests)
        counts: Counter = Counter()
        yield counts
        with self._lock:
            counts.update(self.requests - before)

    @staticmethod
    def fresh_filesystem():
        """An s3fs filesystem with no cached listings or instances."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        return s3fs.S3FileSystem(skip_instance_cache=True)
