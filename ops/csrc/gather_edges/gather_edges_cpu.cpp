// CPU kernels of pointdistiller::gather_edges and gather_edges_backward (contract in
// gather_edges.h). Forward: parallel over queries, neighbours gathered in blocks of 16 rows.
// Backward: parallel over channel ranges, each thread walks every (q, j) in order, so sums are
// deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "gather_edges/gather_edges.h"

namespace pointdistiller {
namespace {

constexpr int64_t kRowBlock = 16;

template <typename scalar_t>
void gather_forward(const scalar_t* f, const int64_t* idx, const int64_t* centre, int64_t Q,
                    int64_t C, int64_t k, scalar_t* out) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * C * k));
  at::parallel_for(0, Q, grain, [&](int64_t q0, int64_t q1) {
    const scalar_t* rows[kRowBlock];
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t* iq = idx + q * k;
      scalar_t* oq = out + q * 2 * C * k;
      for (int64_t j0 = 0; j0 < k; j0 += kRowBlock) {
        const int64_t nj = std::min(kRowBlock, k - j0);
        for (int64_t jj = 0; jj < nj; ++jj) rows[jj] = f + iq[j0 + jj] * C;
        for (int64_t c = 0; c < C; ++c) {
          scalar_t* o = oq + c * k + j0;
          for (int64_t jj = 0; jj < nj; ++jj) o[jj] = rows[jj][c];
        }
      }
      const scalar_t* cr = f + centre[q] * C;
      for (int64_t c = 0; c < C; ++c) std::fill(oq + (C + c) * k, oq + (C + c + 1) * k, cr[c]);
    }
  });
}

// acc [num_rows, C] zero-initialised, in the accumulation type.
template <typename scalar_t, typename acc_t>
void gather_backward(const scalar_t* g, const int64_t* idx, const int64_t* centre, int64_t Q,
                     int64_t C, int64_t k, acc_t* acc) {
  // Threads own disjoint channel ranges of at least 16 channels (no shared cache lines).
  at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t* iq = idx + q * k;
      const scalar_t* gq = g + q * 2 * C * k;
      acc_t* ctr = acc + centre[q] * C;
      for (int64_t c = c0; c < c1; ++c) {
        const scalar_t* gn = gq + c * k;
        for (int64_t j = 0; j < k; ++j) acc[iq[j] * C + c] += static_cast<acc_t>(gn[j]);
        const scalar_t* gc = gq + (C + c) * k;
        acc_t s = 0;
        for (int64_t j = 0; j < k; ++j) s += static_cast<acc_t>(gc[j]);
        ctr[c] += s;
      }
    }
  });
}

at::Tensor gather_edges_cpu(const at::Tensor& features, const at::Tensor& idx,
                            const at::Tensor& centre) {
  gather_edges_detail::check_forward_args(features, idx, centre);
  const at::Tensor f = features.contiguous();
  const at::Tensor i = idx.contiguous();
  const at::Tensor c = centre.contiguous();
  const int64_t Q = i.size(0), k = i.size(1), C = f.size(1);
  at::Tensor out = at::empty({Q, 2 * C, k}, f.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "gather_edges_cpu",
                                  [&] {
                                    gather_forward<scalar_t>(
                                        f.data_ptr<scalar_t>(), i.data_ptr<int64_t>(),
                                        c.data_ptr<int64_t>(), Q, C, k, out.data_ptr<scalar_t>());
                                  });
  return out;
}

at::Tensor gather_edges_backward_cpu(const at::Tensor& grad, const at::Tensor& idx,
                                     const at::Tensor& centre, int64_t num_rows) {
  gather_edges_detail::check_backward_args(grad, idx, centre, num_rows);
  const at::Tensor g = grad.contiguous();
  const at::Tensor i = idx.contiguous();
  const at::Tensor c = centre.contiguous();
  const int64_t Q = i.size(0), k = i.size(1), C = g.size(1) / 2;
  const at::ScalarType acc_type = at::toOpMathType(g.scalar_type());
  at::Tensor acc = at::zeros({num_rows, C}, g.options().dtype(acc_type));
  if (Q > 0 && k > 0 && C > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, g.scalar_type(), "gather_edges_backward_cpu", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          gather_backward<scalar_t, acc_t>(g.data_ptr<scalar_t>(), i.data_ptr<int64_t>(),
                                           c.data_ptr<int64_t>(), Q, C, k,
                                           acc.data_ptr<acc_t>());
        });
  }
  return acc_type == g.scalar_type() ? acc : acc.to(g.scalar_type());
}

}  // namespace
}  // namespace pointdistiller

TORCH_LIBRARY_IMPL(pointdistiller, CPU, m) {
  m.impl("gather_edges", &pointdistiller::gather_edges_cpu);
  m.impl("gather_edges_backward", &pointdistiller::gather_edges_backward_cpu);
}
