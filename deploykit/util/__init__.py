"""Layer util: plain helpers every layer may use -- lazy imports, atomic files and sha256, system facts (/proc,
CPU identity, memory, the peak-RSS probe), the one size parser, text helpers, step progress.

May import: deploykit.errors and the standard library only."""
