# The benchmark server (`conduit-loadgen serve`) and the chat example, for containers.
# Not built in this repository's CI (base images are out of its reach); the behaviour
# it relies on is tested instead: under Docker's default seccomp profile io_uring is
# refused and `Runtime::Auto` runs on tokio (tests/interop.rs, under `no-io-uring`).
#
#   docker build -t conduit .
#   docker run --rm -p 8080:8080 conduit                        # chat example, tokio
#   docker run --rm -p 8080:8080 --security-opt seccomp=unconfined \
#       --ulimit memlock=67108864 conduit                        # chat example, glommio
#   docker run --rm -p 9000:9000 conduit conduit-loadgen serve --port 9000

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p conduit-loadgen --bin conduit-loadgen \
 && cargo build --release -p conduit --example chat_server \
 && mkdir -p /out \
 && cp target/release/conduit-loadgen target/release/examples/chat_server /out/

FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
ENV RUST_LOG=info PORT=8080
EXPOSE 8080
CMD ["chat_server"]
