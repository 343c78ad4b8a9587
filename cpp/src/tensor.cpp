#include "deploykit/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "deploykit/error.hpp"

namespace dk {

Tensor::Tensor(std::vector<int64_t> dims) : shape(std::move(dims)) { data.assign(static_cast<size_t>(numel()), 0.f); }

int64_t Tensor::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return shape.empty() ? 0 : n;
}

std::string Tensor::shape_text() const {
    std::string text;
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? "x" : "") + std::to_string(shape[i]);
    return text;
}

Tensor image_to_nchw(const Image& image, float lo, float hi) {
    const int64_t c = image.channels, h = image.height, w = image.width;
    Tensor t({1, c, h, w});
    // float32(1 / peak) times the sample, as deploykit.imaging.images does: the same bits as the Python path
    const float scale = static_cast<float>(1.0 / (image.bit_depth == 16 ? 65535.0 : 255.0));
    for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
            for (int64_t k = 0; k < c; ++k) {
                const float v = static_cast<float>(image.samples[static_cast<size_t>((y * w + x) * c + k)]) * scale;
                t.data[static_cast<size_t>((k * h + y) * w + x)] = lo + v * (hi - lo);
            }
    return t;
}

Image nchw_to_image(const Tensor& t, int bit_depth, float lo, float hi) {
    if (t.shape.size() != 4 || t.shape[0] != 1) throw Error("expected a [1, C, H, W] output, got " + t.shape_text());
    Image image;
    image.channels = static_cast<int>(t.shape[1]);
    image.height = static_cast<int>(t.shape[2]);
    image.width = static_cast<int>(t.shape[3]);
    image.bit_depth = bit_depth;
    image.file_channels = image.channels;
    const float peak = bit_depth == 16 ? 65535.0f : 255.0f;
    const int64_t c = image.channels, h = image.height, w = image.width;
    image.samples.resize(static_cast<size_t>(c * h * w));
    for (int64_t k = 0; k < c; ++k)
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x) {
                float v = t.data[static_cast<size_t>((k * h + y) * w + x)];
                v = (v - lo) / (hi - lo);
                if (!(v >= 0.0f)) v = 0.0f;  // NaN -> 0 as well
                v = std::min(v, 1.0f);
                image.samples[static_cast<size_t>((y * w + x) * c + k)] =
                    static_cast<uint16_t>(std::nearbyint(v * peak));  // default rounding mode: half to even (np.rint)
            }
    return image;
}

std::pair<int, int> padded_size(int height, int width, const Contract& contract) {
    auto round_up = [&](int n) {
        const int m = std::max(1, contract.multiple_of);
        n = std::max(n, contract.min_size);
        return (n + m - 1) / m * m;
    };
    int h = round_up(height), w = round_up(width);
    if (contract.square) h = w = std::max(h, w);
    return {h, w};
}

int64_t reflect_index(int64_t i, int64_t length) {
    if (length == 1) return 0;
    const int64_t period = 2 * (length - 1);
    i %= period;
    if (i < 0) i += period;
    return i >= length ? period - i : i;
}

Tensor pad_reflect(Tensor x, int height, int width) {
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    if (height < h || width < w) throw Error("pad_reflect: target smaller than the input");
    if (height == h && width == w) return x;  // no copy: a 2K float image is 50 MB, its x4 output 805 MB
    Tensor y({n, c, height, width});
    std::vector<int64_t> cols(static_cast<size_t>(width));
    for (int64_t xx = 0; xx < width; ++xx) cols[static_cast<size_t>(xx)] = reflect_index(xx, w);
    for (int64_t p = 0; p < n * c; ++p) {
        const float* src = x.data.data() + p * h * w;
        float* dst = y.data.data() + p * height * width;
        for (int64_t yy = 0; yy < height; ++yy) {
            const float* row = src + reflect_index(yy, h) * w;
            float* out = dst + yy * width;
            std::memcpy(out, row, static_cast<size_t>(w) * sizeof(float));
            for (int64_t xx = w; xx < width; ++xx) out[xx] = row[cols[static_cast<size_t>(xx)]];
        }
    }
    return y;
}

Tensor crop(Tensor x, int height, int width) {
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    if (height > h || width > w) {
        throw Error("output " + x.shape_text() + " is smaller than the expected " + std::to_string(height) + "x" +
                    std::to_string(width));
    }
    if (height == h && width == w) return x;
    Tensor y({n, c, height, width});
    for (int64_t p = 0; p < n * c; ++p)
        for (int64_t yy = 0; yy < height; ++yy)
            std::memcpy(y.data.data() + (p * height + yy) * width, x.data.data() + (p * h + yy) * w,
                        static_cast<size_t>(width) * sizeof(float));
    return y;
}

void write_npy(const std::filesystem::path& path, const Tensor& t) {
    std::string shape = "(";
    for (size_t i = 0; i < t.shape.size(); ++i) shape += std::to_string(t.shape[i]) + ", ";
    if (t.shape.size() > 1) shape.erase(shape.size() - 2);
    else if (!t.shape.empty()) shape.erase(shape.size() - 1);
    shape += ")";
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    const size_t unpadded = 10 + header.size() + 1;  // magic(6) + version(2) + len(2) + header + '\n'
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    const std::string magic = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(header.size() & 0xff) +
                              static_cast<char>(header.size() >> 8) + header;
    std::vector<uint8_t> bytes(magic.size() + t.data.size() * sizeof(float));
    std::memcpy(bytes.data(), magic.data(), magic.size());
    // x86-64 / aarch64 are little-endian: the float32 payload is written as it is in memory
    std::memcpy(bytes.data() + magic.size(), t.data.data(), t.data.size() * sizeof(float));
    write_file_atomic(path, bytes);
}

}  // namespace dk
