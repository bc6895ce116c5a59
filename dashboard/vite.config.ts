/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the dashboard with hot reload and forwards the API and
// the socket to a local `skuwatch serve` (SKUWATCH_DEV_SERVER, default
// 127.0.0.1:8000). The Host header is passed through unchanged (no
// changeOrigin), so the server sees the page's own origin and the /ws Origin
// check passes without SKUWATCH_ALLOWED_ORIGINS.
const target = process.env.SKUWATCH_DEV_SERVER ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      "/api": { target },
      "/ws": { target: target.replace(/^http/, "ws"), ws: true },
    },
  },
  build: {
    // Committed and embedded in the binary: keep it small and reproducible.
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
