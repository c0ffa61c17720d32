# mailbridge container image: configured by a mounted TOML file and
# MAILBRIDGE_ environment variables, state on a volume at /var/lib/mailbridge.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mailbridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/mailbridge --create-home mailbridge
COPY --from=build /src/target/release/mailbridge /usr/local/bin/mailbridge
USER mailbridge
ENV MAILBRIDGE_STATE__DIRECTORY=/var/lib/mailbridge \
    MAILBRIDGE_METRICS__LISTEN=0.0.0.0:9464 \
    MAILBRIDGE_LOG_FORMAT=json
VOLUME /var/lib/mailbridge
EXPOSE 9464
# The slim image has no curl: `mailbridge health` requests /healthz on the
# [metrics] listen address of the same configuration.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["mailbridge", "health"]
ENTRYPOINT ["mailbridge"]
CMD ["run"]
