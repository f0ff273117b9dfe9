# syntax=docker/dockerfile:1
# exai in a container: built in one stage, run from a slim one as a non-root user.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
# Dependencies first, with empty sources: this layer is reused until Cargo.toml or
# Cargo.lock change, so a code change rebuilds exai alone.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src migrations \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY . .
# The stubs' build is newer than the copied sources; touching them makes Cargo see them.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/exai /usr/local/bin/exai

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 exai \
    && useradd --system --uid 10001 --gid exai --home-dir /data --no-create-home exai \
    && mkdir /data \
    && chown exai:exai /data
COPY --from=build /usr/local/bin/exai /usr/local/bin/exai
# All interfaces, for the container network: exai then refuses to start without
# EXAI_API_KEYS (or EXAI_ALLOW_UNAUTHENTICATED=true).
ENV EXAI_BIND=0.0.0.0:8080 \
    EXAI_DATA_DIR=/data \
    EXAI_LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["exai", "healthcheck"]
ENTRYPOINT ["exai"]
CMD ["serve"]
