# The two commands of the README. Each sets up what it needs first (scripts/setup.sh is idempotent).
.PHONY: setup compare test
setup:
	@bash scripts/setup.sh

compare: setup
	.venv/bin/vgg compare

test: setup
	.venv/bin/python -m pytest -q
