# syntax=docker/dockerfile:1
# OmniConsistency server on CUDA. One image for every role (see docker/compose.yaml and deploy/):
#   docker build -t omniconsistency:latest .
#   docker run --gpus all -p 8080:8080 -v omni-data:/data -v /srv/models:/models:ro \
#     -e OMNI__Auth__ApiKeys__0__Name=app -e OMNI__Auth__ApiKeys__0__Key=... omniconsistency:latest            # --role all
# Configuration comes from OMNI__Section__Key environment variables (src/OmniConsistency.Api/README.md).

ARG DOTNET_SDK_IMAGE=mcr.microsoft.com/dotnet/sdk:10.0-noble
ARG ASPNET_IMAGE=mcr.microsoft.com/dotnet/aspnet:10.0-noble
# Ubuntu 24.04: its libstdc++ (GCC 14) has GLIBCXX_3.4.32, which TorchSharp's native library asks for.
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---- build: the Api with the CUDA torch backend (TorchSharp-cuda-linux brings libtorch's CUDA libraries) ----
FROM ${DOTNET_SDK_IMAGE} AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Build.targets Directory.Packages.props ./
COPY build/ build/
COPY src/OmniConsistency.Inference/OmniConsistency.Inference.csproj src/OmniConsistency.Inference/
COPY src/OmniConsistency.Api/OmniConsistency.Api.csproj src/OmniConsistency.Api/
# Restore alone first: the layer is reused while only sources change.
RUN dotnet restore src/OmniConsistency.Api/OmniConsistency.Api.csproj -r linux-x64 -p:TorchBackend=cuda
COPY src/ src/
RUN dotnet publish src/OmniConsistency.Api/OmniConsistency.Api.csproj -c Release -r linux-x64 --self-contained false \
      -p:TorchBackend=cuda --no-restore -o /app

# ---- the ASP.NET Core 10 runtime, taken from Microsoft's image of the same Ubuntu release ----
FROM ${ASPNET_IMAGE} AS aspnet

# ---- runtime: CUDA runtime base + ASP.NET Core runtime, non-root ----
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libicu74 tzdata \
 && rm -rf /var/lib/apt/lists/*
COPY --from=aspnet /usr/share/dotnet /usr/share/dotnet
RUN ln -s /usr/share/dotnet/dotnet /usr/bin/dotnet \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin omni \
 && mkdir -p /data /models \
 && chown omni:omni /data
WORKDIR /app
COPY --from=build /app ./
# /data: the SQLite database (role all) or the shared result volume (filesystem blobs); /models: weights and style
# LoRAs, mounted read-only (point OMNI__Engine__* at them, e.g. OMNI__Engine__LoraFolder=/models/styles).
ENV ASPNETCORE_HTTP_PORTS=8080 \
    DOTNET_RUNNING_IN_CONTAINER=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    OMNI__Storage__DataDirectory=/data \
    OMNI__Logging__Json=true
EXPOSE 8080
VOLUME ["/data"]
USER 10001:10001
# Ready = model loaded (worker, all), style folder readable (api), job store reachable. Loading FLUX takes minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz > /dev/null || exit 1
ENTRYPOINT ["dotnet", "OmniConsistency.Api.dll"]
CMD ["--role", "all"]
