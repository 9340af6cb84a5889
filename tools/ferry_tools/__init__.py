"""Ferry's development tools, kept out of every image: the demo builder (``ferry demo``, ``ferry bucket``), the
local stack (``ferry up``) and its check (``ferry up --check``). They need a source checkout and the predictor
environment (torch, onnx, mlflow, feast); the serving packages never import them."""
