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
COPY build.rs ./
COPY src ./src
COPY benches ./benches
# The git commit for gateway_build_info and the dashboard (.git is not in the context):
#   docker build --build-arg GATEWAY_COMMIT=$(git rev-parse --short=12 HEAD) -t gateway .
ARG GATEWAY_COMMIT=unknown
ENV GATEWAY_COMMIT=${GATEWAY_COMMIT}
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
# The examples of conf/ (auth.yaml, multi-service.yaml), and as the default config the
# container one: the upstream and the admin token from the environment, the admin
# listener on 0.0.0.0:9100 (deploy/container/gateway.yaml; docker-compose.yml mounts
# deploy/compose/gateway.yaml over it).
COPY conf /etc/gateway
COPY deploy/container/gateway.yaml /etc/gateway/gateway.yaml
# Fail the build if a shipped config does not validate (the default with example values
# for the two variables it requires).
RUN export GATEWAY_UPSTREAM=127.0.0.1:3000 GATEWAY_ADMIN_TOKEN=build-time-check-only-0123456789 \
 && for f in /etc/gateway/*.yaml; do /usr/local/bin/gateway --check-config "$f" || exit 1; done
USER gateway
# 8000: the proxy. 9100: the admin listener (/metrics with the token; /healthz, /readyz).
EXPOSE 8000 9100
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:9100/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["-c", "/etc/gateway/gateway.yaml"]
