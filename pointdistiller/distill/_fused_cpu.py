"""CPU kernels of the fused local-distillation pass (numba, compiled once and cached on disk).

They compute in one loop over edges and channels what the chunked PyTorch pass of
``local._GraphLoss`` computes with a dozen tensor operations per chunk: the weighted squared error
between the teacher's and the student's graph features (BN with folded statistics, ReLU, optional
max over the K neighbours) and the per-edge BN-output gradients ``dz``, reduced onto the neighbour
rows, over each centre's edges and per channel. Serial and deterministic; no ``[Q, K, C']`` tensor
is ever built.
"""
import numba
import numpy as np


@numba.njit(cache=True)
def graph_pass_max(p_hat, c_hat, gamma, beta, nbr, weights, need_grad, with_c, scatter, k_dz,
                   ch_dzx):
    """The pass with a max over each centre's K neighbours, centre by centre.

    Args:
        p_hat: ``[n, 2C']`` float32 neighbour tables (teacher | student), normalised.
        c_hat: ``[Q, 2C']`` float32 centre tables, normalised.
        gamma, beta: ``[2C']`` float32 BN affine parameters.
        nbr: ``[Q, K]`` int64 neighbour rows.
        weights: ``[Q]`` float32 per-centre loss weights.
        need_grad: fill the three outputs below (else they are untouched).
        with_c: also add ``c_hat[q]`` onto the rows of its neighbours (``scatter[:, 2C':]``).
        scatter: ``[n, 2C']`` or ``[n, 4C']`` float32, zero on entry: ``dz`` summed per row.
        k_dz: ``[Q, 2C']`` float32: ``dz`` summed over each centre's K edges.
        ch_dzx: ``[2C']`` float64, zero on entry: ``sum dz * xhat`` per channel.

    Returns:
        ``sum_q w_q sum_c (max_j y_T - max_j y_S)^2`` as a float.
    """
    nq, k = nbr.shape
    both = p_hat.shape[1]
    width = both // 2
    zero = np.float32(0.0)
    loss = 0.0
    xh = np.empty((k, both), np.float32)
    y = np.empty((k, both), np.float32)
    best = np.empty(both, np.int64)
    for q in range(nq):
        wq = weights[q]
        g2 = wq + wq
        for j in range(k):
            r = nbr[q, j]
            for ch in range(both):
                x = p_hat[r, ch] + c_hat[q, ch]
                z = beta[ch] + x * gamma[ch]
                xh[j, ch] = x
                y[j, ch] = z if z > zero else zero
        for ch in range(both):
            best[ch] = 0
        for j in range(1, k):
            for ch in range(both):
                if y[j, ch] > y[best[ch], ch]:      # the first maximum, as torch.max
                    best[ch] = j
        part = 0.0
        for ch in range(width):
            d = y[best[ch], ch] - y[best[width + ch], width + ch]
            part += d * d
            if need_grad:
                g = g2 * d
                for side in (ch, width + ch):
                    jb = best[side]
                    grad = g if y[jb, side] > zero else zero
                    k_dz[q, side] = grad
                    scatter[nbr[q, jb], side] += grad
                    ch_dzx[side] += grad * xh[jb, side]
        loss += wq * part
        if need_grad and with_c:
            for j in range(k):
                r = nbr[q, j]
                for ch in range(both):
                    scatter[r, both + ch] += c_hat[q, ch]
    return loss


@numba.njit(cache=True)
def edges_by_row(nbr, num_rows):
    """Counting sort of the edges by neighbour row: ``(starts [num_rows + 1] int64, centres [Q K]
    int64)``; the edges of row ``m`` are ``centres[starts[m]:starts[m + 1]]`` (centre indices,
    ascending)."""
    nq, k = nbr.shape
    starts = np.zeros(num_rows + 1, np.int64)
    for q in range(nq):
        for j in range(k):
            starts[nbr[q, j] + 1] += 1
    for m in range(num_rows):
        starts[m + 1] += starts[m]
    fill = starts[:-1].copy()
    centres = np.empty(nq * k, np.int64)
    for q in range(nq):
        for j in range(k):
            r = nbr[q, j]
            centres[fill[r]] = q
            fill[r] += 1
    return starts, centres


@numba.njit(cache=True)
def graph_pass_rows(p_hat, c_hat, gamma, beta, starts, centres, weights, need_grad, with_c,
                    scatter, k_dz, ch_dzx):
    """The pass without pooling, visiting the edges row by row (``edges_by_row``): the ``[n, .]``
    tables are read and written once, in order, and the random accesses fall on the small
    ``[Q, .]`` tables of the centres. Arguments as :func:`graph_pass_max` (``starts``/``centres``
    in place of ``nbr``; ``k_dz`` zero on entry); returns ``sum_q w_q sum_{j,c} (y_T - y_S)^2``."""
    num_rows, both = p_hat.shape
    width = both // 2
    zero = np.float32(0.0)
    loss = 0.0
    xh = np.empty(both, np.float32)
    y = np.empty(both, np.float32)
    dz = np.empty(both, np.float32)
    sq = np.empty(width, np.float32)          # per row: sum w (y_T - y_S)^2 per channel
    acc = np.empty(both, np.float32)          # per row: sum dz
    acc_x = np.empty(both, np.float32)        # per row: sum dz xhat
    acc_c = np.empty(both, np.float32)        # per row: sum c_hat of the using centres
    for m in range(num_rows):
        if starts[m] == starts[m + 1]:
            continue
        for ch in range(width):
            sq[ch] = zero
        for ch in range(both):
            acc[ch] = zero
            acc_x[ch] = zero
            acc_c[ch] = zero
        for t in range(starts[m], starts[m + 1]):
            q = centres[t]
            wq = weights[q]
            g2 = wq + wq
            for ch in range(both):
                x = p_hat[m, ch] + c_hat[q, ch]
                z = beta[ch] + x * gamma[ch]
                xh[ch] = x
                y[ch] = z if z > zero else zero
            for ch in range(width):
                d = y[ch] - y[width + ch]
                sq[ch] += wq * (d * d)
                g = g2 * d
                dz[ch] = g if y[ch] > zero else zero
                dz[width + ch] = g if y[width + ch] > zero else zero
            if need_grad:
                for ch in range(both):
                    acc[ch] += dz[ch]
                    acc_x[ch] += dz[ch] * xh[ch]
                    k_dz[q, ch] += dz[ch]
                if with_c:
                    for ch in range(both):
                        acc_c[ch] += c_hat[q, ch]
        part = 0.0
        for ch in range(width):
            part += sq[ch]
        loss += part
        if need_grad:
            for ch in range(both):
                scatter[m, ch] = acc[ch]
                ch_dzx[ch] += acc_x[ch]
            if with_c:
                for ch in range(both):
                    scatter[m, both + ch] = acc_c[ch]
    return loss
