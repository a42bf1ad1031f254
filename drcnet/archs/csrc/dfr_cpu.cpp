// CPU kernels of the DFR block, for inference (no autograd).
//
// drcnet.archs.cpu_kernels compiles this file on first use and registers the operators below as
// torch.ops.drcnet.*; without a compiler the block computes the same results with PyTorch operations.
//
//   channel_stats(x) -> (B, 2, H, W): the mean and the maximum over x's channels, the input of the
//       spatial response, read straight from x (a channel slice of a wider map is fine).
//   spatial_response(stats, w_response, w_affine, b_affine) -> (M_sr, affine): M_sr = sigmoid(conv7x7(stats))
//       and the gamma and beta maps conv7x7(M_sr) + bias, (B, 2, H, W); convolutions of one and two
//       channels, which oneDNN pads to sixteen, as row-wise loops.
//   region_norm_(x, mask, gamma, beta, weight, bias) -> x: the closed-form region normalisation with
//       per-image statistics and its modulation, ((x - mu_r) g_r + k) (1 + gamma) + beta, written over
//       x in three passes (region sums, squared deviations, output) instead of a dozen.
//   energy_attention_(x, delta, slope) -> x, energy_attention_mul_(product, x, delta, slope) -> product:
//       the energy attention x sigmoid((x - mean)^2 / (4 (var + delta)) + 1/2) and its leaky ReLU, written
//       over x or multiplied into product (the spatial branch), in three passes.
//
// Maps are (B, C, H, W) float32 with their pixels evenly spaced (planar NCHW, channels-last, or a channel
// slice of either); the mask (bool: True marks the degraded region), gamma and beta are (B, 1, H, W) maps
// with the same property. Sums are accumulated in double, in a fixed order: results do not depend on the
// number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kChunk = 4096;  // pixels per partial sum: the summation order never depends on threads
constexpr int64_t kTile = 64;    // pixels per tile: their cache lines stay in L1 across channel blocks
constexpr double kEps = 1e-5;     // nn.InstanceNorm2d's epsilon

// A (B, C, H, W) map seen as (B, C, P) with P = H * W evenly spaced pixels.
template <typename T>
struct Map {
  T* data;
  int64_t batch, channels, pixels, sb, sc, sp;
};

template <typename T>
Map<T> as_map(const at::Tensor& t, const char* name, int64_t channels = -1) {
  constexpr at::ScalarType kType = std::is_same<T, float>::value ? at::kFloat : at::kBool;
  TORCH_CHECK(t.dim() == 4, name, ": expected a (B, C, H, W) map, got ", t.dim(), " dimensions");
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == kType, name, ": expected a ", kType, " CPU map, got ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.size(3) == 1 || t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3), name,
              ": its pixels must be evenly spaced (row stride = width x column stride), got strides ", t.strides());
  if (channels >= 0) {
    TORCH_CHECK(t.size(1) == channels, name, ": expected ", channels, " channel(s), got ", t.size(1));
  }
  int64_t sp = t.size(3) > 1 ? t.stride(3) : (t.size(2) > 1 ? t.stride(2) : 1);
  T* data = static_cast<T*>(t.data_ptr());
  return {data, t.size(0), t.size(1), t.size(2) * t.size(3), t.stride(0), t.stride(1), sp};
}

void check_same_image(const at::Tensor& a, const at::Tensor& b, const char* name) {
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(2) && a.size(3) == b.size(3), name,
              ": expected ", a.size(0), " map(s) of ", a.size(2), "x", a.size(3), ", got ", b.sizes());
}

// Calls body(i, first, last) for every chunk i of [0, pixels), in parallel; chunk i covers the pixels
// [first, last) = [i * kChunk, (i + 1) * kChunk).
template <typename F>
void for_chunks(int64_t pixels, const F& body) {
  const int64_t chunks = (pixels + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      body(i, i * kChunk, std::min(pixels, (i + 1) * kChunk));
    }
  });
}

at::Tensor channel_stats(const at::Tensor& x) {
  Map<float> m = as_map<float>(x, "x");
  at::Tensor out = at::empty({m.batch, 2, x.size(2), x.size(3)}, x.options());
  float* o = out.data_ptr<float>();
  const int64_t c_count = m.channels, pixels = m.pixels;
  for (int64_t b = 0; b < m.batch; ++b) {
    const float* xb = m.data + b * m.sb;
    float* mean = o + b * 2 * pixels;
    float* amax = mean + pixels;
    for_chunks(pixels, [&](int64_t, int64_t first, int64_t last) {
      float sum[kTile], top[kTile];
      for (int64_t start = first; start < last; start += kTile) {
        const int64_t n = std::min(kTile, last - start);
        std::fill(sum, sum + n, 0.f);
        std::fill(top, top + n, -INFINITY);
        for (int64_t c = 0; c < c_count; ++c) {
          const float* xc = xb + c * m.sc + start * m.sp;
          for (int64_t p = 0; p < n; ++p) {
            const float v = xc[p * m.sp];
            sum[p] += v;
            // NaN wins, as in torch.amax
            top[p] = (v > top[p] || std::isnan(v)) ? v : top[p];
          }
        }
        for (int64_t p = 0; p < n; ++p) {
          mean[start + p] = sum[p] / static_cast<float>(c_count);
          amax[start + p] = top[p];
        }
      }
    });
  }
  return out;
}

// Per-channel sums over each region's pixels in [first, last), added to in[] and out[] (region 0 = mask
// True): of x when Squares is false, of (x - centre_r)^2 when true; accumulators are vector lanes, added up
// in a fixed order.
constexpr int kLanes = 8;

// Eight lanes as one value (GCC and Clang vector extensions): the channels-last loops below hold eight
// channels of a pixel in one register, which the auto-vectoriser does not manage on its own.
typedef float F8 __attribute__((vector_size(32)));
typedef double D8 __attribute__((vector_size(64)));

inline F8 load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, F8 v) { std::memcpy(p, &v, sizeof v); }

// Adds one value (or eight) to both regions' sums; w is 1 inside the region and 0 outside, so that the
// products are exact.
template <bool Squares, typename V, typename W>
inline void accumulate(V v, W w, V mu_in, V mu_out, V& a_in, V& a_out) {
  if (Squares) {
    const V d_in = v - mu_in, d_out = v - mu_out;
    a_in += w * d_in * d_in;
    a_out += (1.0 - w) * d_out * d_out;
  } else {
    a_in += w * v;
    a_out += v - w * v;
  }
}

// Channels-last: eight adjacent channels at a time, one pixel after the other (two accumulators for
// alternate pixels, so that additions do not wait on each other; added up in a fixed order).
template <bool Squares>
void sums_over_pixels(const float* x, int64_t sp, const uint8_t* mask, int64_t msp, int64_t first, int64_t last,
                      const double* mu_in, const double* mu_out, double* in, double* out) {
  D8 c_in = {}, c_out = {}, in0 = {}, in1 = {}, out0 = {}, out1 = {};
  if (Squares) {
    for (int j = 0; j < kLanes; ++j) c_in[j] = mu_in[j], c_out[j] = mu_out[j];
  }
  auto add = [&](int64_t p, D8& a_in, D8& a_out) {
    const double w = static_cast<double>(mask[p * msp]);
    accumulate<Squares>(__builtin_convertvector(load8(x + p * sp), D8), w, c_in, c_out, a_in, a_out);
  };
  int64_t p = first;
  for (; p + 1 < last; p += 2) {
    add(p, in0, out0);
    add(p + 1, in1, out1);
  }
  if (p < last) add(p, in0, out0);
  const D8 s_in = in0 + in1, s_out = out0 + out1;
  for (int j = 0; j < kLanes; ++j) in[j] += s_in[j], out[j] += s_out[j];
}

// One channel: eight adjacent pixels at a time on planar maps (a mask of stride 0 is one value for all
// pixels), one by one otherwise (the channels of a channels-last map left over after the blocks of eight).
template <bool Squares>
void sums_over_channel(const float* x, int64_t sp, const uint8_t* mask, int64_t msp, int64_t first, int64_t last,
                       double mu_in, double mu_out, double* in, double* out) {
  D8 a_in = {}, a_out = {};
  const D8 centre_in = D8{} + mu_in, centre_out = D8{} + mu_out;
  int64_t p = first;
  if (sp == 1 && (msp == 1 || msp == 0)) {
    typedef uint8_t U8 __attribute__((vector_size(8)));
    for (; p + kLanes <= last; p += kLanes) {
      D8 w;
      if (msp == 1) {
        U8 bytes;
        std::memcpy(&bytes, mask + p, sizeof bytes);
        w = __builtin_convertvector(bytes, D8);
      } else {
        w = D8{} + static_cast<double>(mask[0]);
      }
      accumulate<Squares>(__builtin_convertvector(load8(x + p), D8), w, centre_in, centre_out, a_in, a_out);
    }
  }
  double s_in = 0.0, s_out = 0.0;
  for (int j = 0; j < kLanes; ++j) s_in += a_in[j], s_out += a_out[j];
  for (; p < last; ++p) {
    accumulate<Squares>(static_cast<double>(x[p * sp]), static_cast<double>(mask[p * msp]), mu_in, mu_out, s_in,
                        s_out);
  }
  *in += s_in;
  *out += s_out;
}

// Per-channel sums over each region of x (centre == nullptr) or of (x - centre_r)^2 (centre = [mu_in(C),
// mu_out(C)]), into acc = [in(C), out(C)]; the regions' pixel counts into area[2] when it is given.
void region_sums(const float* xb, const Map<float>& m, const uint8_t* mask, int64_t msp, const double* centre,
                 double* acc, double* area) {
  const int64_t c_count = m.channels, pixels = m.pixels, stride = 2 * c_count + 2;
  const int64_t chunks = (pixels + kChunk - 1) / kChunk;
  const bool squares = centre != nullptr;
  std::vector<double> partial(chunks * stride, 0.0);
  for_chunks(pixels, [&](int64_t i, int64_t first, int64_t last) {
    double* in = partial.data() + i * stride;
    double* out = in + c_count;
    const double* mu_in = squares ? centre : nullptr;
    const double* mu_out = squares ? centre + c_count : nullptr;
    if (m.sc == 1) {
      // tiles of kTile pixels, so that the channel blocks of a tile read lines already in L1
      for (int64_t start = first; start < last; start += kTile) {
        const int64_t stop = std::min(last, start + kTile);
        int64_t c = 0;
        for (; c + kLanes <= c_count; c += kLanes) {
          if (squares) {
            sums_over_pixels<true>(xb + c, m.sp, mask, msp, start, stop, mu_in + c, mu_out + c, in + c, out + c);
          } else {
            sums_over_pixels<false>(xb + c, m.sp, mask, msp, start, stop, nullptr, nullptr, in + c, out + c);
          }
        }
        for (; c < c_count; ++c) {
          if (squares) {
            sums_over_channel<true>(xb + c, m.sp, mask, msp, start, stop, mu_in[c], mu_out[c], in + c, out + c);
          } else {
            sums_over_channel<false>(xb + c, m.sp, mask, msp, start, stop, 0.0, 0.0, in + c, out + c);
          }
        }
      }
    } else {
      for (int64_t c = 0; c < c_count; ++c) {
        if (squares) {
          sums_over_channel<true>(xb + c * m.sc, m.sp, mask, msp, first, last, mu_in[c], mu_out[c], in + c, out + c);
        } else {
          sums_over_channel<false>(xb + c * m.sc, m.sp, mask, msp, first, last, 0.0, 0.0, in + c, out + c);
        }
      }
    }
    if (area != nullptr) {
      int64_t n_in = 0;
      for (int64_t p = first; p < last; ++p) n_in += mask[p * msp];
      in[2 * c_count] = static_cast<double>(n_in);
      in[2 * c_count + 1] = static_cast<double>(last - first - n_in);
    }
  });
  std::fill(acc, acc + 2 * c_count, 0.0);
  if (area != nullptr) area[0] = area[1] = 0.0;
  for (int64_t i = 0; i < chunks; ++i) {  // in chunk order, whatever the threads
    const double* part = partial.data() + i * stride;
    for (int64_t j = 0; j < 2 * c_count; ++j) acc[j] += part[j];
    if (area != nullptr) {
      area[0] += part[2 * c_count];
      area[1] += part[2 * c_count + 1];
    }
  }
}

// The output over the pixels [first, last) of L adjacent channels of a channels-last map (L = 8 or 1);
// table holds L values each of mu_in, mu_out, g_in, g_out and k.
template <int L>
void modulate_pixels(float* x, int64_t sp, const uint8_t* mask, int64_t msp, const float* gamma, int64_t gsp,
                     const float* beta, int64_t bsp, int64_t first, int64_t last, const float* table) {
  for (int64_t p = first; p < last; ++p) {
    const int64_t r = (1 - mask[p * msp]) * L;  // the region's constants, without a branch
    const float scale = 1.f + gamma[p * gsp], shift = beta[p * bsp];
    float* xp = x + p * sp;
    if (L == kLanes) {
      const F8 v = ((load8(xp) - load8(table + r)) * load8(table + 2 * L + r) + load8(table + 4 * L)) * scale + shift;
      store8(xp, v);
    } else {
      xp[0] = ((xp[0] - table[r]) * table[2 * L + r] + table[4 * L]) * scale + shift;
    }
  }
}

at::Tensor& region_norm_(at::Tensor& x, const at::Tensor& mask_, const at::Tensor& gamma_, const at::Tensor& beta_,
                         const at::Tensor& weight_, const at::Tensor& bias_) {
  Map<float> m = as_map<float>(x, "x"), ga = as_map<float>(gamma_, "gamma", 1), be = as_map<float>(beta_, "beta", 1);
  Map<uint8_t> mk = as_map<uint8_t>(mask_, "mask", 1);
  check_same_image(x, mask_, "mask");
  check_same_image(x, gamma_, "gamma");
  check_same_image(x, beta_, "beta");
  const at::Tensor weight = weight_.contiguous(), bias = bias_.contiguous();
  TORCH_CHECK(weight.numel() == m.channels && bias.numel() == m.channels && weight.scalar_type() == at::kFloat &&
                  bias.scalar_type() == at::kFloat,
              "weight and bias: expected ", m.channels, " float32 values each, got ", weight.numel(), " and ",
              bias.numel());
  const int64_t c_count = m.channels, pixels = m.pixels;
  const float* w = weight.data_ptr<float>();
  const float* bi = bias.data_ptr<float>();
  std::vector<double> sums(2 * c_count), centre(2 * c_count), squares(2 * c_count);
  std::vector<float> centre_f(2 * c_count), gain_f(2 * c_count), offset_f(c_count), tables(5 * c_count);
  for (int64_t b = 0; b < m.batch; ++b) {
    float* xb = m.data + b * m.sb;
    const uint8_t* mask = mk.data + b * mk.sb;
    double area[2];
    region_sums(xb, m, mask, mk.sp, nullptr, sums.data(), area);
    double scale[2];
    for (int r = 0; r < 2; ++r) {
      const double a = std::max(area[r], 1.0);  // an empty region: mean 0, area 1
      scale[r] = std::sqrt(a / static_cast<double>(pixels));
      for (int64_t c = 0; c < c_count; ++c) {
        // the centre in float, as the map's own values are: x - mu_r is then what PyTorch computes
        centre_f[r * c_count + c] = static_cast<float>(sums[r * c_count + c] / a);
        centre[r * c_count + c] = centre_f[r * c_count + c];
      }
    }
    region_sums(xb, m, mask, mk.sp, centre.data(), squares.data(), nullptr);
    for (int r = 0; r < 2; ++r) {
      for (int64_t c = 0; c < c_count; ++c) {
        const double var = squares[r * c_count + c] / static_cast<double>(pixels);
        gain_f[r * c_count + c] = static_cast<float>(w[c] * scale[r] / std::sqrt(var + kEps));
      }
    }
    for (int64_t c = 0; c < c_count; ++c) offset_f[c] = static_cast<float>(bi[c] * (scale[0] + scale[1]));

    // per block of eight channels (then per channel): mu_in, mu_out, g_in, g_out, k, each for its lanes
    for (int64_t c = 0; c < c_count; c += kLanes) {
      const int64_t lanes = c + kLanes <= c_count ? kLanes : 1;
      for (int64_t c1 = c; c1 < std::min(c_count, c + kLanes); c1 += lanes) {
        float* t = &tables[c1 * 5];
        for (int64_t j = 0; j < lanes; ++j) {
          t[j] = centre_f[c1 + j];
          t[lanes + j] = centre_f[c_count + c1 + j];
          t[2 * lanes + j] = gain_f[c1 + j];
          t[3 * lanes + j] = gain_f[c_count + c1 + j];
          t[4 * lanes + j] = offset_f[c1 + j];
        }
      }
    }
    const float* gamma = ga.data + b * ga.sb;
    const float* beta = be.data + b * be.sb;
    for_chunks(pixels, [&](int64_t, int64_t first, int64_t last) {
      if (m.sc == 1) {
        for (int64_t start = first; start < last; start += kTile) {
          const int64_t stop = std::min(last, start + kTile);
          int64_t c = 0;
          for (; c + kLanes <= c_count; c += kLanes) {
            modulate_pixels<kLanes>(xb + c, m.sp, mask, mk.sp, gamma, ga.sp, beta, be.sp, start, stop,
                                    &tables[c * 5]);
          }
          for (; c < c_count; ++c) {
            modulate_pixels<1>(xb + c, m.sp, mask, mk.sp, gamma, ga.sp, beta, be.sp, start, stop, &tables[c * 5]);
          }
        }
      } else {
        for (int64_t c = 0; c < c_count; ++c) {
          float* xc = xb + c * m.sc;
          const float mu_in = centre_f[c], mu_out = centre_f[c_count + c];
          const float g_in = gain_f[c], g_out = gain_f[c_count + c], k = offset_f[c];
          auto one = [&](int64_t p, int64_t xs, int64_t ms, int64_t gs, int64_t bs) {
            const bool inside = mask[p * ms] != 0;
            const float mu = inside ? mu_in : mu_out, g = inside ? g_in : g_out;
            float& v = xc[p * xs];
            v = ((v - mu) * g + k) * (1.f + gamma[p * gs]) + beta[p * bs];
          };
          if (m.sp == 1 && mk.sp == 1 && ga.sp == 1 && be.sp == 1) {
            for (int64_t p = first; p < last; ++p) one(p, 1, 1, 1, 1);  // unit strides: vectorised
          } else {
            for (int64_t p = first; p < last; ++p) one(p, m.sp, mk.sp, ga.sp, be.sp);
          }
        }
      }
    });
  }
  return x;
}

// exp(-e) for e >= 0, to about one float rounding: e = n ln2 + r with |r| <= ln2 / 2, exp(-r) from its
// Taylor polynomial to degree 7 (remainder below 3e-9), 2^-n written into the exponent bits.
inline F8 exp_neg(F8 e) {
  typedef int32_t I8 __attribute__((vector_size(32)));
  const F8 t = -(e > 87.f ? 87.f : e);  // exp(-87) is still a normal float; NaN stays NaN
  const I8 n = __builtin_convertvector(t * 1.44269504f - 0.5f, I8);  // round to nearest (t <= 0)
  const F8 nf = __builtin_convertvector(n, F8);
  const F8 r = (t - nf * 0.693145752f) - nf * 1.42860677e-6f;  // ln 2 in two parts
  F8 p = F8{} + 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const I8 bits = (n + 127) << 23;
  F8 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// y = leaky_relu(x sigmoid((x - m)^2 s + 1/2)) for eight channels; the energy is at least 1/2.
inline F8 attend8(F8 x, F8 mean, F8 s, float slope) {
  const F8 d = x - mean;
  const F8 y = x / (1.f + exp_neg(d * d * s + 0.5f));
  return y > 0.f ? y : y * slope;
}

inline float attend1(float x, float mean, float s, float slope) {
  const float d = x - mean;
  const float y = x / (1.f + std::exp(-(d * d * s + 0.5f)));
  return y > 0.f ? y : y * slope;
}

// Energy attention (SimAM form) of x per image and channel, then leaky_relu: written over x, or
// multiplied into product (x unchanged) when product is given.
void energy_attention(const at::Tensor& x, double delta, double slope, at::Tensor* product) {
  Map<float> m = as_map<float>(x, "x");
  Map<float> pr = m;
  if (product != nullptr) {
    pr = as_map<float>(*product, "product", m.channels);
    check_same_image(x, *product, "product");
  }
  const int64_t c_count = m.channels, pixels = m.pixels;
  const uint8_t all = 1;  // one region holding every pixel: a mask of stride 0
  std::vector<double> sums(2 * c_count), centre(2 * c_count, 0.0), squares(2 * c_count);
  std::vector<float> mean_f(c_count), scale_f(c_count);
  const float leak = static_cast<float>(slope);
  for (int64_t b = 0; b < m.batch; ++b) {
    float* xb = m.data + b * m.sb;
    float* pb = pr.data + b * pr.sb;
    region_sums(xb, m, &all, 0, nullptr, sums.data(), nullptr);
    for (int64_t c = 0; c < c_count; ++c) {
      mean_f[c] = static_cast<float>(sums[c] / static_cast<double>(pixels));
      centre[c] = mean_f[c];
    }
    region_sums(xb, m, &all, 0, centre.data(), squares.data(), nullptr);
    const double n = static_cast<double>(std::max<int64_t>(pixels - 1, 1));
    for (int64_t c = 0; c < c_count; ++c) {
      scale_f[c] = static_cast<float>(1.0 / (4.0 * (squares[c] / n + delta)));
    }
    const bool blocks = m.sc == 1 && pr.sc == 1, planes = m.sp == 1 && pr.sp == 1;
    for_chunks(pixels, [&](int64_t, int64_t first, int64_t last) {
      if (blocks) {  // channels-last: eight channels at a time
        int64_t c = 0;
        for (; c + kLanes <= c_count; c += kLanes) {
          const F8 mean = load8(&mean_f[c]), s = load8(&scale_f[c]);
          for (int64_t p = first; p < last; ++p) {
            const F8 y = attend8(load8(xb + p * m.sp + c), mean, s, leak);
            float* out = pb + p * pr.sp + c;
            store8(out, product != nullptr ? load8(out) * y : y);
          }
        }
        for (; c < c_count; ++c) {
          for (int64_t p = first; p < last; ++p) {
            const float y = attend1(xb[p * m.sp + c], mean_f[c], scale_f[c], leak);
            float& out = pb[p * pr.sp + c];
            out = product != nullptr ? out * y : y;
          }
        }
      } else {  // one channel at a time, eight pixels at a time where they are adjacent
        for (int64_t c = 0; c < c_count; ++c) {
          const float* xc = xb + c * m.sc;
          float* oc = pb + c * pr.sc;
          const F8 mean = F8{} + mean_f[c], s = F8{} + scale_f[c];
          int64_t p = first;
          if (planes) {
            for (; p + kLanes <= last; p += kLanes) {
              const F8 y = attend8(load8(xc + p), mean, s, leak);
              store8(oc + p, product != nullptr ? load8(oc + p) * y : y);
            }
          }
          for (; p < last; ++p) {
            const float y = attend1(xc[p * m.sp], mean_f[c], scale_f[c], leak);
            float& out = oc[p * pr.sp];
            out = product != nullptr ? out * y : y;
          }
        }
      }
    });
  }
}

at::Tensor& energy_attention_(at::Tensor& x, double delta, double slope) {
  energy_attention(x, delta, slope, nullptr);
  return x;
}

at::Tensor& energy_attention_mul_(at::Tensor& product, const at::Tensor& x, double delta, double slope) {
  energy_attention(x, delta, slope, &product);
  return product;
}

// sigmoid(z) = 1 / (1 + exp(-z)) for z >= 0, exp(z) / (1 + exp(z)) below: exp of a negative number only.
inline F8 sigmoid8(F8 z) {
  const F8 e = exp_neg(z < 0.f ? -z : z);
  return z >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

// Zero-padded planes for the 7x7 convolutions: each row holds 3 zeros, the W values, and zeros up to
// `stride` = the width rounded up to kBlock, plus 6, so that a block of kBlock outputs reads no bounds.
constexpr int64_t kBlock = 32;  // outputs per register block: four vectors of eight

int64_t padded_stride(int64_t width) { return (width + kBlock - 1) / kBlock * kBlock + 6; }

// One output row y of a 7x7 convolution with zero padding 3, added to acc[0, rounded width): planes are
// padded (see above), w holds 49 weights per plane. Outputs are computed kBlock at a time in registers.
void conv7_row(const float* const* planes, int64_t count, int64_t stride, const float* w, int64_t y,
               int64_t height, int64_t width, float* acc) {
  for (int64_t x0 = 0; x0 < width; x0 += kBlock) {
    F8 a0 = load8(acc + x0), a1 = load8(acc + x0 + 8), a2 = load8(acc + x0 + 16), a3 = load8(acc + x0 + 24);
    for (int64_t ci = 0; ci < count; ++ci) {
      for (int64_t ky = 0; ky < 7; ++ky) {
        const int64_t yy = y + ky - 3;
        if (yy < 0 || yy >= height) continue;  // zero padding above and below
        const float* row = planes[ci] + yy * stride + x0;  // row[kx + j]: input column x0 + j + kx - 3
        for (int64_t kx = 0; kx < 7; ++kx) {
          const float wv = w[ci * 49 + ky * 7 + kx];
          a0 += wv * load8(row + kx);
          a1 += wv * load8(row + kx + 8);
          a2 += wv * load8(row + kx + 16);
          a3 += wv * load8(row + kx + 24);
        }
      }
    }
    store8(acc + x0, a0);
    store8(acc + x0 + 8, a1);
    store8(acc + x0 + 16, a2);
    store8(acc + x0 + 24, a3);
  }
}

const float* weights_of(const at::Tensor& w, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(w.sizes() == shape && w.scalar_type() == at::kFloat && w.device().is_cpu() && w.is_contiguous(), name,
              ": expected contiguous float32 CPU weights of shape ", shape, ", got ", w.sizes(), " ", w.scalar_type());
  return w.data_ptr<float>();
}

// The spatial response: M_sr = sigmoid(conv7x7(stats)) and the two-channel affine map conv7x7(M_sr) + bias
// (gamma, beta), from the channel mean and maximum stats (B, 2, H, W).
std::tuple<at::Tensor, at::Tensor> spatial_response(const at::Tensor& stats_, const at::Tensor& w_response,
                                                    const at::Tensor& w_affine, const at::Tensor& b_affine) {
  as_map<float>(stats_, "stats", 2);
  const float* w1 = weights_of(w_response, {1, 2, 7, 7}, "response weight");
  const float* w2 = weights_of(w_affine, {2, 1, 7, 7}, "affine weight");
  const float* b2 = weights_of(b_affine, {2}, "affine bias");
  const at::Tensor stats = stats_.contiguous();
  const int64_t batch = stats.size(0), height = stats.size(2), width = stats.size(3), pixels = height * width;
  at::Tensor response = at::empty({batch, 1, height, width}, stats.options());
  at::Tensor affine = at::empty({batch, 2, height, width}, stats.options());
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(width, 1));  // rows per task
  const int64_t stride = padded_stride(width), rounded = stride - 6;
  std::vector<float> padded(3 * height * stride, 0.f);  // the two statistics, then the response
  float* stat_planes[2] = {padded.data(), padded.data() + height * stride};
  float* response_plane = padded.data() + 2 * height * stride;
  for (int64_t b = 0; b < batch; ++b) {
    const float* s = stats.data_ptr<float>() + b * 2 * pixels;
    float* m = response.data_ptr<float>() + b * pixels;
    float* a = affine.data_ptr<float>() + b * 2 * pixels;
    at::parallel_for(0, height, grain, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t ci = 0; ci < 2; ++ci) std::memcpy(stat_planes[ci] + y * stride + 3, s + ci * pixels + y * width,
                                                       width * sizeof(float));
      }
    });
    const float* stat_in[2] = {stat_planes[0], stat_planes[1]};
    at::parallel_for(0, height, grain, [&](int64_t y0, int64_t y1) {
      std::vector<float> acc(rounded);
      for (int64_t y = y0; y < y1; ++y) {
        std::fill(acc.begin(), acc.end(), 0.f);
        conv7_row(stat_in, 2, stride, w1, y, height, width, acc.data());
        for (int64_t x = 0; x < width; x += kLanes) store8(acc.data() + x, sigmoid8(load8(acc.data() + x)));
        std::memcpy(m + y * width, acc.data(), width * sizeof(float));
        std::memcpy(response_plane + y * stride + 3, acc.data(), width * sizeof(float));
      }
    });
    const float* response_in[1] = {response_plane};
    at::parallel_for(0, height, grain, [&](int64_t y0, int64_t y1) {
      std::vector<float> acc(rounded);
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t o = 0; o < 2; ++o) {
          std::fill(acc.begin(), acc.end(), b2[o]);
          conv7_row(response_in, 1, stride, w2 + o * 49, y, height, width, acc.data());
          std::memcpy(a + o * pixels + y * width, acc.data(), width * sizeof(float));
        }
      }
    });
  }
  return {response, affine};
}

}  // namespace

TORCH_LIBRARY(drcnet, lib) {
  lib.def("channel_stats(Tensor x) -> Tensor");
  lib.def("region_norm_(Tensor(a!) x, Tensor mask, Tensor gamma, Tensor beta, Tensor weight, Tensor bias) -> Tensor(a!)");
  lib.def("energy_attention_(Tensor(a!) x, float delta, float slope) -> Tensor(a!)");
  lib.def("energy_attention_mul_(Tensor(a!) product, Tensor x, float delta, float slope) -> Tensor(a!)");
  lib.def("spatial_response(Tensor stats, Tensor w_response, Tensor w_affine, Tensor b_affine) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(drcnet, CPU, lib) {
  lib.impl("channel_stats", &channel_stats);
  lib.impl("region_norm_", &region_norm_);
  lib.impl("energy_attention_", &energy_attention_);
  lib.impl("energy_attention_mul_", &energy_attention_mul_);
  lib.impl("spatial_response", &spatial_response);
}
