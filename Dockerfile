# pgbusd's container image. The build stage uses the same Debian 12
# packages as `make build`; the runtime stage has only the shared libraries
# pgbusd links (tests/deploy/image_test.sh checks both lists against
# scripts/deps.sh and `readelf -d build/pgbusd`), runs as a fixed non-root
# UID and needs no shell. The Helm chart (helm/pgbus) runs this image for
# the server and for its migration Job (`pgbusd migrate`).
#
#   docker build -t pgbus:dev .
FROM debian:bookworm AS build
# Versions come from Debian 12's archive, as for `make build` (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto \
      libabsl-dev libpqxx-dev libpq-dev libssl-dev prometheus-cpp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY migrations migrations
COPY service service
COPY sdk/cpp sdk/cpp
COPY cli cli
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGBUS_TESTS=OFF \
 && cmake --build build --target pgbusd \
 && strip --strip-debug build/pgbusd

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 libgrpc++1.51 libgrpc29 libpq5 libpqxx-6.4 libprotobuf32 libssl3 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/pgbusd /usr/local/bin/pgbusd
# Listen on every interface of the pod; the chart sets the rest.
ENV PGBUS_LISTEN=0.0.0.0:50051
EXPOSE 50051 9090
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/pgbusd"]
CMD ["serve"]
