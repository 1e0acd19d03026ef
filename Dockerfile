# Tether: multi-stage build, small non-root runtime image.
# Built elsewhere (no Docker engine runs on the development machines):
#   docker build --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) -t tether .
#   docker run -p 8080:8080 -v tether-data:/data \
#     -e TETHER_PUBLIC_URL=https://tether.example.com \
#     -e TETHER_ENCRYPTION_KEYS=k1:... -e TETHER_SESSION_KEY=... tether

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
# Cargo.toml declares the test and bench targets; cargo wants their files
# present even for a plain build.
COPY tests ./tests
COPY benches ./benches
# The context has no .git: the commit `tether --version` and /metrics name is
# passed in (docker build --build-arg GIT_COMMIT=$(git rev-parse --short HEAD)),
# else it is "unknown".
ARG GIT_COMMIT
# libpq and OpenSSL are built from source with the rest (perl and make are in
# this image) and linked statically: the runtime image needs no libssl.
RUN cargo build --release --locked && strip target/release/tether

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin tether \
 && mkdir -p /data && chown tether:tether /data && chmod 0700 /data
COPY --from=build /src/target/release/tether /usr/local/bin/tether
USER tether
WORKDIR /data
ENV TETHER_ENV=production \
    TETHER_BIND=0.0.0.0:8080 \
    TETHER_DATA_DIR=/data \
    TETHER_DATABASE_URL=sqlite:///data/tether.db \
    RUST_LOG=info
VOLUME ["/data"]
EXPOSE 8080
# No curl in the slim image: bash's /dev/tcp asks /healthz directly.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/tether"]
CMD ["serve"]
