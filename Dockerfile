# syntax=docker/dockerfile:1
# certmail: one static binary on a small Alpine base (busybox wget serves the
# healthchecks). Build: docker build --build-arg VERSION=$(git describe --tags --always) -t certmail .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same flags as `make build` (a test in deploy/ compares them).
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/certmail/certmail/internal/buildinfo.Version=${VERSION}" -o /out/certmail ./cmd/certmail

FROM alpine:3.22
RUN apk add --no-cache ca-certificates tzdata \
    && addgroup -S -g 10001 certmail \
    && adduser -S -D -H -u 10001 -G certmail certmail
COPY --from=build /out/certmail /usr/local/bin/certmail
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["certmail"]
CMD ["--help"]
