# syntax=docker/dockerfile:1
# One image for both processes: `node dist/apps/api/...` (default) or the worker (see compose).

FROM node:20-bookworm-slim AS build
WORKDIR /app
ENV PUPPETEER_SKIP_DOWNLOAD=true
COPY package.json package-lock.json .puppeteerrc.cjs ./
RUN npm ci --no-audit --no-fund
COPY nest-cli.json tsconfig.json ./
COPY apps ./apps
COPY libs ./libs
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
# Debian's Chromium for the whatsapp-web.js engine, tini as PID 1 so signals reach node and
# Chromium's zombies are reaped, fonts so media previews render.
RUN apt-get update \
  && apt-get install -y --no-install-recommends chromium tini fonts-liberation ca-certificates \
  && rm -rf /var/lib/apt/lists/*
# CHROMIUM_SANDBOX=false: Docker's default seccomp profile refuses the user namespaces
# Chromium's sandbox needs, and the image runs as `node`, not root (see .env.example).
# NODE_OPTIONS: the young generation's semi-spaces at 32 MB, not 16 (node's default): a busy
# process collects its short-lived garbage half as often (about a tenth less CPU per accepted
# send in `npm run bench`) for at most ~48 MB more heap. Setting NODE_OPTIONS replaces it.
ENV NODE_ENV=production \
    NODE_OPTIONS=--max-semi-space-size=32 \
    PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium \
    CHROMIUM_SANDBOX=false \
    WWEBJS_DATA_DIR=/data/wwebjs \
    PORT=3000
WORKDIR /app
COPY --from=build /app/package.json /app/.puppeteerrc.cjs ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /data/wwebjs && chown -R node:node /data
USER node
VOLUME ["/data/wwebjs"]
# 3000: the api; 3001: a worker's health and metrics port (WORKER_HEALTH_PORT).
EXPOSE 3000 3001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/apps/api/apps/api/src/main.js"]
