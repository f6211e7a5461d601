# Build on the official Rust image; the Lua scripts are embedded in the binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
COPY benches ./benches
RUN cargo build --release --locked --bin quotad \
    && strip target/release/quotad

# Run on slim Debian as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/quotad --create-home quotad
COPY --from=build /src/target/release/quotad /usr/local/bin/quotad
USER quotad
WORKDIR /var/lib/quotad
ENV QUOTAD_LISTEN=0.0.0.0:8080 \
    QUOTAD_AUDIT_DB=/var/lib/quotad/quotad-audit.db
EXPOSE 8080
# Listening beyond loopback needs QUOTAD_ADMIN_TOKEN; quotad refuses to start without it.
ENTRYPOINT ["/usr/local/bin/quotad"]
CMD ["serve"]
