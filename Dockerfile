# Images for a real deployment: the control plane, and Envoy with the Keygate filter.
# Build context: the repository root (the crates share the workspace).
#   docker build --target control-plane -t keygate/control-plane .
#   docker build --target envoy -t keygate/envoy .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The filter: built to wasm32-wasip1 by keygate-plugin-artifacts, which also trims the module's
# exports to the filter's own callbacks (Envoy then skips the others on every request).
RUN rustup target add wasm32-wasip1 \
 && cargo build --release --locked -p keygate-control-plane --bin keygate \
 && cargo run --release --locked -p keygate-plugin-artifacts --bin keygate-plugin-wasm \
      -- /src/keygate_plugin.wasm

FROM debian:bookworm-slim AS control-plane
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/keygate keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
USER keygate
WORKDIR /var/lib/keygate
EXPOSE 8080
ENTRYPOINT ["keygate"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--database-url", "sqlite:///var/lib/keygate/keygate.db"]

FROM envoyproxy/envoy:v1.36-latest AS envoy
COPY --from=build /src/keygate_plugin.wasm /etc/envoy/keygate_plugin.wasm
COPY envoy/envoy.yaml /etc/envoy/envoy.yaml
