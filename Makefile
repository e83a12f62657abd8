# The two commands of the README. Each sets up what it needs first (scripts/setup.sh is idempotent).
.PHONY: setup compare test mutation
setup:
	@bash scripts/setup.sh

# ends with the chapter side by side with this run's numbers: runs/compare/index.html
compare: setup
	.venv/bin/vgg compare
	.venv/bin/vgg teach --run runs/compare --out runs/compare

# The modules that build 224 px and zoo-sized networks in four frameworks, each pair run in a pytest process of
# its own: the frameworks' allocators keep much of what a module frees, so one process running the whole suite
# grows past 4 GB, while each of these processes starts again from the imports (docs/conformance.md). The zoo's
# full VGG-16s come first in theirs, while it is small. The rest runs first, in two lanes side by side on two
# cores (pytest-xdist; the lanes: tests/conftest.py).
HEAVY_TESTS := tests/test_alexnet.py tests/test_interchange.py tests/test_weights.py tests/test_zoo.py

# mypy keeps what it learnt of the project and the frameworks' stubs in the user's cache folder, where the next
# clone finds it too (16 s from nothing, under a second from the cache: it checks again each module whose source
# changed, and starts again under another mypy version or other options).
MYPY_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/vgg/mypy

# Lint, format, type and layering checks first: they take seconds, the suite takes much longer.
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --cache-dir "$(MYPY_CACHE)"
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q -n 2 $(addprefix --ignore=,$(HEAVY_TESTS))
	.venv/bin/python -m pytest -q tests/test_alexnet.py tests/test_interchange.py
	.venv/bin/python -m pytest -q tests/test_zoo.py tests/test_weights.py

# Mutation testing of the framework-free core (common/: spec, arch, data, weights, training, checkpoint,
# distributed) with mutmut, configured in pyproject.toml. Not part of `make test`: it runs the framework-free
# tests once per mutant (hours on 2 cores). Its score and surviving mutants: docs/conformance.md.
mutation:
	@VGG_MUTATION=1 bash scripts/setup.sh
	.venv/bin/mutmut run --max-children 2
	.venv/bin/mutmut results
