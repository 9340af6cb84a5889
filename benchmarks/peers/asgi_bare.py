"""The ceiling: a bare uvicorn ASGI app that answers every request with a fixed JSON body.

No framework, no model: what uvicorn + httptools + uvloop can do on one core. If wrk measures this at ~25k
req/s, wrk is not what limits the slower servers. ``--transport=ferry`` answers the same body on Ferry's own
HTTP/1.1 transport (``ferry.server.http``) instead: the per-request cost of Ferry's transport alone, and a
higher ceiling for the load generator.

    python benchmarks/peers/asgi_bare.py --http_port P [--transport ferry]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvicorn

BODY = b'{"model_name":"model","id":"","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,10],"data":[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    more = True
    while more:  # drain the request body so the connection can be reused
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def serve_on_ferry(port: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runtimes"))
    import uvloop
    from ferry.server.http import HttpServer
    from ferry.server.rest import Response

    class FixedApp:
        max_body_bytes = 64 << 20

        async def handle(self, method, path, headers, body):
            return Response(BODY)

        def payload_too_large(self, size):
            return Response(b"{}", 413)

    async def main():
        await HttpServer(FixedApp()).start("127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--transport", choices=("uvicorn", "ferry"), default="uvicorn")
    args, _ = parser.parse_known_args()  # model flags are accepted and ignored
    if args.transport == "ferry":
        serve_on_ferry(args.http_port)
        sys.exit(0)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.http_port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
