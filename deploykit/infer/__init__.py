"""Layer infer (a job): restore image files with any runner -- files in and out, padding and tiling, the runner
from weights, an exported artifact or an engine.

May import: exporting and everything below it; not bench, serve, doctor or cli."""
