# The latentcam host in a container: built from this repository by the
# Rust image, run on Debian slim with the model files and a configuration.
#
#   docker build -t latentcam-host .
#   docker run --rm latentcam-host check-config
#
# deploy/compose.yaml runs it beside an MQTT broker. (Not built in CI: the
# project's CI has no container engine.)

FROM rust:bookworm AS build
WORKDIR /src
COPY . .
# The default build: tract for the encoder, no system library needed.
RUN cargo build --release --locked -p latentcam-host \
    && install -D -m 0755 target/release/latentcam-host /out/usr/bin/latentcam-host
# The model files (the manifest, encoder, head and labels; no test fixtures).
RUN mkdir -p /out/usr/share/latentcam-host/models \
    && cp models/manifest.toml /out/usr/share/latentcam-host/models/ \
    && cp -R models/efficientnet-lite0 /out/usr/share/latentcam-host/models/ \
    && rm -rf /out/usr/share/latentcam-host/models/efficientnet-lite0/fixtures

FROM debian:bookworm-slim
# CA certificates: an mqtts:// broker's certificate is checked against
# the system's authorities unless --mqtt-ca names others.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/latentcam --shell /usr/sbin/nologin latentcam \
    && install -d -o latentcam -g latentcam -m 0750 /var/lib/latentcam
COPY --from=build /out/ /
COPY host/deploy/host.example.toml /etc/latentcam/host.toml
USER latentcam
VOLUME /var/lib/latentcam
EXPOSE 7878 8080
ENV LATENTCAM_LOG=info
ENTRYPOINT ["/usr/bin/latentcam-host"]
CMD ["serve", "--config", "/etc/latentcam/host.toml"]
