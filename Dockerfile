# syntax=docker/dockerfile:1

# errand's container image: one static binary on distroless, run as nonroot.
#
#   docker build -t errand .
#   docker run --rm -p 8080:8080 errand          # embedded backends
#
# docker-compose.yml builds this for api-1..3 and worker-1..3.

# ---------------------------------------------------------------- build
FROM golang:1.26 AS build
WORKDIR /src

# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
# -trimpath drops this machine's paths from the binary; -s -w drop the
# symbol table and DWARF, which a distroless image has no debugger for.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/errand .

# -------------------------------------------------------------- runtime
# static-debian12 has CA certificates, /etc/passwd with nonroot (65532)
# and tzdata, and no shell: `errand healthcheck` is the HEALTHCHECK, so
# no curl or wget is needed.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/errand /errand
USER nonroot:nonroot
EXPOSE 8080
# errand healthcheck asks GET /health on ADDR's port over loopback and
# exits 0 only on 200. /health answers 503 while a dependency is down, so
# an instance that cannot serve is reported unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/errand", "healthcheck"]
ENTRYPOINT ["/errand"]
