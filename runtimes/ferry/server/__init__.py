"""Ferry's lean server: one ASGI app (KServe V1, V2 REST, Seldon, metrics) and one grpc.aio server (V2)."""
