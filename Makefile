# The two commands of the README. Each sets up what it needs first (scripts/setup.sh is idempotent).
.PHONY: setup compare test
setup:
	@bash scripts/setup.sh

# ends with the chapter side by side with this run's numbers: runs/compare/index.html
compare: setup
	.venv/bin/vgg compare
	.venv/bin/vgg teach --run runs/compare --out runs/compare

# Lint, format, type and layering checks first: they take seconds, the suite takes much longer.
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q
