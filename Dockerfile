# Multi-stage build: compile in the Rust image, run from a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change does not rebuild Pingora.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in hot_path ratelimit auth; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --bin gateway \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY conf /etc/gateway
# Fail the build if the shipped config does not validate.
RUN /usr/local/bin/gateway --check-config /etc/gateway/gateway.yaml
USER gateway
EXPOSE 8000
# The admin listener (9100) binds 127.0.0.1 in the default config; set listen.admin to
# 0.0.0.0:9100 in a mounted config to scrape it from outside the container.
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:9100/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["-c", "/etc/gateway/gateway.yaml"]
