.PHONY: test build run

# The one test command (CI runs exactly this through .ci/run).
test:
	./scripts/test

build:
	CGO_ENABLED=0 go build -o errand .

run:
	go run .
