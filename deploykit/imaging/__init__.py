"""Layer imaging: pictures -- reading and writing image files (bit depth, alpha, colour), shape-contract padding,
overlapping tiles with blending, the official recursive chop.

May import: util, errors."""
