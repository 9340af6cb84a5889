"""Ferry's lean server: the transport-free request handling (``rest.RestApp`` for KServe V1, V2 REST, Seldon and
metrics; ``grpc.InferenceService`` for V2 gRPC) and Ferry's own transports that carry it, HTTP/1.1
(``http``) and HTTP/2 for gRPC (``h2``), started together by ``app.serve``."""
