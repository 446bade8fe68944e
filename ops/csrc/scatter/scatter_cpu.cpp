// CPU kernel of pointdistiller::scatter_reduce (contract in scatter.h).
//
// One pass over the points in input order per range of channels; channel ranges run in parallel,
// so every output value is accumulated in the same order whatever the thread count.
#include "scatter/scatter.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace pointdistiller {
namespace scatter {
namespace {

// Channels per parallel chunk such that a chunk holds about 32k (point, channel) pairs.
int64_t channel_grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)); }

template <typename T>
void mean_cpu(const T* f, const int64_t* idx, int64_t n, int64_t c, int64_t s, T* out,
              int64_t* counts) {
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] >= 0) ++counts[idx[i]];
  }
  at::parallel_for(0, c, channel_grain(n), [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; ++i) {
      if (idx[i] < 0) continue;
      T* o = out + idx[i] * c;
      const T* row = f + i * c;
      for (int64_t k = c0; k < c1; ++k) o[k] += row[k];
    }
    for (int64_t seg = 0; seg < s; ++seg) {
      if (counts[seg] == 0) continue;
      const T count = static_cast<T>(counts[seg]);
      for (int64_t k = c0; k < c1; ++k) out[seg * c + k] /= count;
    }
  });
}

template <typename T>
void max_cpu(const T* f, const int64_t* idx, int64_t n, int64_t c, T* out, int64_t* arg) {
  at::parallel_for(0, c, channel_grain(n), [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; ++i) {
      if (idx[i] < 0) continue;
      T* o = out + idx[i] * c;
      int64_t* a = arg + idx[i] * c;
      const T* row = f + i * c;
      for (int64_t k = c0; k < c1; ++k) {
        const T v = row[k];
        // Strictly greater keeps the lowest index on ties; the first NaN wins and stays.
        if (a[k] < 0 || v > o[k] || (v != v && o[k] == o[k])) {
          o[k] = v;
          a[k] = i;
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> scatter_reduce_cpu(const at::Tensor& features,
                                                      const at::Tensor& index,
                                                      int64_t num_segments,
                                                      c10::string_view reduce) {
  const Reduce op = check_args(features, index, num_segments, reduce);
  const at::Tensor f = features.contiguous();
  const at::Tensor ix = index.contiguous();
  const int64_t n = f.size(0), c = f.size(1);
  const int64_t* idx = ix.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] < -1 || idx[i] >= num_segments) throw_bad_index(i, idx[i], num_segments);
  }
  at::Tensor out = at::zeros({num_segments, c}, f.options());
  at::Tensor aux;
  if (op == Reduce::kMean) {
    aux = at::zeros({num_segments}, ix.options());
  } else {
    aux = at::full({num_segments, c}, -1, ix.options());
  }
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "scatter_reduce_cpu", [&] {
    if (op == Reduce::kMean) {
      mean_cpu<scalar_t>(f.data_ptr<scalar_t>(), idx, n, c, num_segments,
                         out.data_ptr<scalar_t>(), aux.data_ptr<int64_t>());
    } else {
      max_cpu<scalar_t>(f.data_ptr<scalar_t>(), idx, n, c, out.data_ptr<scalar_t>(),
                        aux.data_ptr<int64_t>());
    }
  });
  return {out, aux};
}

}  // namespace
}  // namespace scatter
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) {
  m.impl("scatter_reduce", &pointdistiller::scatter::scatter_reduce_cpu);
}
