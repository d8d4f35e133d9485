// Frontend unit tests: pure modules of js/ (codec, geometry, hover, history) in Node.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["js/**/*.test.ts"],
    environment: "node",
  },
});
