// Served by cohostd under /console, so every asset path starts there.
export default {
  base: "/console/",
  build: { outDir: "dist", emptyOutDir: true },
};
