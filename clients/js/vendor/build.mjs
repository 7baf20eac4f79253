// Rebuilds vendor/msgpack.mjs from the @msgpack/msgpack package in node_modules:
// its ES module build (dist.esm/, one file per class) bundled into one ES module.
// Run from clients/js: `npm install && npm run vendor`.
import { build } from "esbuild";
import { readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync("node_modules/@msgpack/msgpack/package.json", "utf8"));
await build({
  entryPoints: ["node_modules/@msgpack/msgpack/dist.esm/index.mjs"],
  outfile: "vendor/msgpack.mjs",
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2020",
  minify: false,
  legalComments: "inline",
  banner: {
    js:
      `/*! @msgpack/msgpack ${pkg.version} | ISC License | Copyright 2019 The MessagePack Community.\n` +
      ` * https://github.com/msgpack/msgpack-javascript — bundled unmodified from dist.esm/ by vendor/build.mjs;\n` +
      ` * full license text in vendor/LICENSE-msgpack. */`,
  },
});
console.log(`vendor/msgpack.mjs: @msgpack/msgpack ${pkg.version}`);
