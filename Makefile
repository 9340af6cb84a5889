# The two commands a newcomer needs:
#   make up     build what is missing (environments, demo models, feature store) and serve the local stack
#   make test   every test in every environment, plus lint
.PHONY: up test envs demo lint format images images-smoke
up: envs
	.venv/bin/ferry up

test:
	scripts/test.sh

envs:
	scripts/envs.sh all

demo: envs
	.venv/bin/ferry demo --out .ferry/demo

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

# The CPU container images, built with buildah (no Docker engine needed), then each run as a KServe pod runs it.
images:
	scripts/images.sh

images-smoke:
	scripts/images.sh --smoke
