// NCHW float tensors on the host: image conversion, reflect padding to the shape contract, cropping, .npy dumps.
//
// Padding and rounding follow the Python side exactly (deploykit.imaging.tiling.padded_size / reflect_index,
// deploykit.imaging.images.quantize): right/bottom reflection without edge repeat, extended periodically when the pad is
// larger than the image; output values clamped to [0, 1] and rounded half-to-even (np.rint) to 8 or 16 bits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "deploykit/image.hpp"
#include "deploykit/manifest.hpp"

namespace dk {

struct Tensor {
    std::vector<int64_t> shape;  // N, C, H, W
    std::vector<float> data;

    Tensor() = default;
    explicit Tensor(std::vector<int64_t> dims);
    int64_t numel() const;
    int64_t dim(size_t i) const { return shape.at(i); }
    std::string shape_text() const;  // "1x3x40x52"
};

// image samples (0..peak) -> [1, C, H, W] floats in [lo, hi]
Tensor image_to_nchw(const Image& image, float lo, float hi);

// [1, C, H, W] in [lo, hi] -> samples: normalise to [0, 1], clamp, scale to the bit depth's peak, round half-even
Image nchw_to_image(const Tensor& tensor, int bit_depth, float lo, float hi);

// smallest (H, W) >= (height, width) meeting the contract (multiple_of, min_size, square); right/bottom padding only
std::pair<int, int> padded_size(int height, int width, const Contract& contract);

// index `i` (may be >= length) folded into [0, length) by reflection without edge repeat, periodic
int64_t reflect_index(int64_t i, int64_t length);

// reflect-pad [N, C, H, W] right/bottom to (height, width) >= its size (x is moved through when no pad is needed)
Tensor pad_reflect(Tensor x, int height, int width);

// top-left [N, C, height, width] of x (moved through when it is that size already)
Tensor crop(Tensor x, int height, int width);

// NumPy .npy (format 1.0, little-endian float32, C order) of the tensor's shape
void write_npy(const std::filesystem::path& path, const Tensor& tensor);

}  // namespace dk
