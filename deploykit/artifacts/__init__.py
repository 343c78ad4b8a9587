"""Layer artifacts: what an export left on disk -- the manifest (its one reader and writer), engine records,
finding an export and its files and checking them against their sha256.

May import: zoo, imaging, util, errors."""
