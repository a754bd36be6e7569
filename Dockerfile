# syntax=docker/dockerfile:1
#
# The jetchat node (and its load tool): built with the Go toolchain, run on
# a small Alpine image as an unprivileged user. compose.yaml builds it:
#
#   docker build -t jetchat .
#   docker run --rm jetchat serve -h
#
# The Go version follows go.mod (a test checks it).

FROM golang:1.26-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/jetchat ./cmd/jetchat \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/jetchat-bench ./cmd/jetchat-bench

FROM alpine:3.22
# wget (busybox) serves the health checks; tzdata and certificates for TLS
# to external NATS or Postgres.
RUN apk add --no-cache ca-certificates tzdata \
 && adduser -D -H -u 10001 jetchat \
 && mkdir -p /var/lib/jetchat && chown jetchat /var/lib/jetchat
COPY --from=build /out/ /usr/local/bin/
USER jetchat
WORKDIR /var/lib/jetchat
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s \
  CMD wget -q -O /dev/null http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["jetchat"]
CMD ["serve", "--data", "/var/lib/jetchat"]
