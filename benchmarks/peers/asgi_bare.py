"""The ceiling: a bare uvicorn ASGI app that answers every request with a fixed JSON body.

No framework, no model: what uvicorn + httptools + uvloop can do on one core. If wrk measures this at ~25k
req/s, wrk is not what limits the slower servers.

    python benchmarks/peers/asgi_bare.py --http_port P
"""

from __future__ import annotations

import argparse

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, default=8080)
    args, _ = parser.parse_known_args()  # model flags are accepted and ignored
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
