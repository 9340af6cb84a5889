# The two commands a newcomer needs:
#   make up     build what is missing (environments, demo models, feature store) and serve the local stack
#   make test   every test in every environment (the pod tests on the built images included), plus lint
.PHONY: up test envs demo lint format images images-smoke image-test
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

# The pod contract: the images built, then every Ferry workload in k8s/overlays run as its controller would run it
# (podman pods on a private bridge) and sent the user's requests. `make test` runs it too.
image-test:
	scripts/image-test.sh
