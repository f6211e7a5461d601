# quotad image: build on the official Rust image, run on slim Debian as a numeric user.
#   docker build -t quotad .
#   docker run -v quotad-data:/var/lib/quotad -e QUOTAD_REDIS_URL=redis://redis:6379 \
#     -v "$PWD/admin_token:/run/secrets/quotad_admin_token:ro" quotad
# deploy/compose.yaml runs a whole fleet with it.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: build them against stub targets (every
# target Cargo.toml names), so a change to quotad's sources rebuilds quotad alone.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in engine audit_writer http_load; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin quotad \
    && rm -rf src benches
COPY src ./src
COPY lua ./lua
COPY benches ./benches
# COPY keeps the sources' old mtimes; touching them makes Cargo rebuild over the stubs.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin quotad \
    && strip target/release/quotad

FROM debian:bookworm-slim
# ca-certificates: rediss:// verifies against the system roots when no redis_ca_file
# is set. Nothing else: the health check is `quotad health`, not curl.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 quotad \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/quotad --no-create-home quotad \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/quotad
COPY --from=build /src/target/release/quotad /usr/local/bin/quotad
# A numeric user, so orchestrators can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/quotad
# The admin token comes from a mounted secret file, never from the environment
# (`docker inspect` shows the environment); override the path if yours differs.
# The variable holds a path, not the token, hence the ignore.
# hadolint ignore=DL3064
ENV QUOTAD_LISTEN=0.0.0.0:8080 \
    QUOTAD_AUDIT_DB=/var/lib/quotad/audit.db \
    QUOTAD_ADMIN_TOKEN_FILE=/run/secrets/quotad_admin_token
# The audit writer's SQLite file; a named volume inherits the directory's owner.
VOLUME /var/lib/quotad
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["quotad", "health"]
ENTRYPOINT ["quotad"]
CMD ["serve"]
