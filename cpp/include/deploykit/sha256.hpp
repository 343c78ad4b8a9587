// SHA-256 of a file, to check an artifact against the sha256 its manifest entry records (torn or foreign files).
#pragma once

#include <filesystem>
#include <string>

namespace dk {

// lowercase hex digest; throws dk::Error (kExitArtifact) when the file cannot be read
std::string sha256_file(const std::filesystem::path& path);

// lowercase hex digest of a byte string (for tests)
std::string sha256_bytes(const std::string& bytes);

}  // namespace dk
