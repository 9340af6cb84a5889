"""Thin adapters that put Ferry handlers inside other servers (KServe ModelServer, MLServer)."""
