"""Layer util: plain helpers every layer may use -- lazy imports, atomic files, staging and sha256, folder locks,
writer identity (pid + start time) and signal handling, system facts (/proc, CPU identity, memory, the peak-RSS
probe), the one size parser, text helpers, step progress.

May import: deploykit.errors, the standard library and filelock."""
