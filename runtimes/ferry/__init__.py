"""Ferry: model-server runtimes for KServe and Seldon Core."""

__version__ = "0.1.0"
