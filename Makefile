.PHONY: test lint bench demo

test:
	bash scripts/test

lint:
	bash scripts/lint

bench:
	bash scripts/bench
