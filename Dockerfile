# skuwatch server image: build with the Rust toolchain, run on distroless
# (glibc and CA certificates, no shell, user `nonroot`, uid 65532).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin skuwatch \
 && mkdir -p /out/data \
 && cp target/release/skuwatch /out/skuwatch

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/skuwatch /usr/local/bin/skuwatch
# A writable working directory for the default SQLite file.
COPY --from=build --chown=nonroot:nonroot /out/data /data
WORKDIR /data
USER nonroot
ENV SKUWATCH_BIND=0.0.0.0:8000 \
    SKUWATCH_LOG_FORMAT=json
EXPOSE 8000
# No curl in the image: the binary probes its own /readyz.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
  CMD ["/usr/local/bin/skuwatch", "probe", "http://127.0.0.1:8000/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/skuwatch"]
CMD ["serve"]
