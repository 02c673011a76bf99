# Multi-stage build: compile in the Rust image, run as a non-root user in a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sesame

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sesame --create-home sesame
COPY --from=build /src/target/release/sesame /usr/local/bin/sesame
COPY config /etc/sesame/config
ENV SESAME_ENV=production \
    SESAME_CONFIG_DIR=/etc/sesame/config \
    SESAME__STORE__PATH=/var/lib/sesame/data
USER sesame
WORKDIR /var/lib/sesame
EXPOSE 8080
# Probes the port the gateway listens on (SESAME__SERVER__BIND may move it).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD port="${SESAME__SERVER__BIND:-0.0.0.0:8080}"; curl -fsS "http://127.0.0.1:${port##*:}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/sesame"]
CMD ["serve"]
