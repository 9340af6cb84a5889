"""Ferry's gRPC transport, in three layers: ``frames`` (HTTP/2 framing and HPACK, no state but the decoder's),
``connection`` (an HTTP/2 server connection's state machine: streams, flow control, settings, shutdown; no
application protocol) and ``grpc_wire`` (unary gRPC on that connection, and the listener that serves it)."""

from ferry.server.h2.grpc_wire import H2GrpcServer

__all__ = ["H2GrpcServer"]
