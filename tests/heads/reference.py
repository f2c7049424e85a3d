"""Independent float64 NumPy references of the heads' formulas (textbook arccos form)."""
from __future__ import annotations

import math

import numpy as np


def unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def cosines(x: np.ndarray, kernel: np.ndarray, normalize_input: bool = True) -> np.ndarray:
    xs = unit(x, 1) if normalize_input else x
    return np.clip(xs @ unit(kernel, 0), -1.0, 1.0)


def with_target(labels, plain: np.ndarray, target_fn) -> np.ndarray:
    """``plain`` with entry [i, labels[i]] replaced by ``target_fn(plain[i, labels[i]])`` (label -1: none)."""
    out = plain.copy()
    for i, y in enumerate(np.asarray(labels).reshape(-1)):
        if y >= 0:
            out[i, y] = target_fn(plain[i, y])
    return out


def arcface(x, kernel, labels, s=64.0, m=0.5, easy_margin=False, normalize_input=True):
    def target(c):
        phi = math.cos(math.acos(c) + m)
        if easy_margin:
            return phi if c > 0 else c
        return phi if c > math.cos(math.pi - m) else c - m * math.sin(math.pi - m)

    return s * with_target(labels, cosines(x, kernel, normalize_input), target)


def cosface(x, kernel, labels, s=64.0, m=0.35, normalize_input=True):
    return s * with_target(labels, cosines(x, kernel, normalize_input), lambda c: c - m)


def combined(x, kernel, labels, s=64.0, m1=1.0, m2=0.3, m3=0.2, normalize_input=True):
    return s * with_target(labels, cosines(x, kernel, normalize_input), lambda c: math.cos(m1 * math.acos(c) + m2) - m3)


def normface(x, kernel, labels, s=30.0, normalize_input=True):
    return s * cosines(x, kernel, normalize_input)


def softmax(x, kernel, bias):
    return x @ kernel + bias


def sphereface_psi(theta: float, m: int) -> float:
    """The paper's psi: (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m]."""
    for k in range(m):
        if k * math.pi / m <= theta <= (k + 1) * math.pi / m:
            return (-1) ** k * math.cos(m * theta) - 2 * k
    raise ValueError(theta)


def sphereface_lambda(iteration, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    return max(base * (1.0 + gamma * iteration) ** (-power), lambda_min)


def sphereface(x, kernel, labels, m=4, lam=5.0):
    norms = np.linalg.norm(x, axis=1)
    cos = np.clip(unit(x, 1) @ unit(kernel, 0), -1.0, 1.0)
    out = norms[:, None] * cos
    for i, y in enumerate(np.asarray(labels).reshape(-1)):
        if y >= 0:
            c = cos[i, y]
            out[i, y] = norms[i] * (lam * c + sphereface_psi(math.acos(c), m)) / (1.0 + lam)
    return out


def sphereface_caffe_psi(c: float, m: int) -> float:
    """psi as SphereFace-Caffe writes it: Chebyshev polynomials and sign tricks, no arccos."""
    sign0 = np.sign(c)
    if m == 1:
        return c
    if m == 2:
        return 2.0 * sign0 * c * c - 1.0
    if m == 3:
        sign1 = np.sign(abs(c) - 0.5)
        sign2 = sign0 * (1.0 + sign1) - 2.0
        return sign1 * (4.0 * c**3 - 3.0 * c) + sign2
    sign3 = sign0 * np.sign(2.0 * c * c - 1.0)
    sign4 = 2.0 * sign0 + sign3 - 3.0
    return sign3 * (8.0 * c**4 - 8.0 * c * c + 1.0) + sign4


def sphereface_caffe_grads(x, kernel, labels, upstream, m, lam):
    """SphereFace-Caffe's normalised backward (x: normalised coefficients; w: inner-product grad)."""
    w_unit = unit(kernel, 0)
    norms = np.linalg.norm(x, axis=1)
    dx = np.zeros_like(x)
    dw_unit = x.T @ upstream  # Caffe's weight gradient, w.r.t. the normalised centres
    for i, y in enumerate(labels):
        for j in range(kernel.shape[1]):
            g = upstream[i, j]
            if j != y:
                dx[i] += g * w_unit[:, j]
                continue
            c = float(np.clip(x[i] @ w_unit[:, j] / norms[i], -1, 1))
            h = 1e-7  # psi'(c) numerically from the Caffe polynomial form (no branch change at this c)
            dpsi = (sphereface_caffe_psi(c + h, m) - sphereface_caffe_psi(c - h, m)) / (2 * h)
            coeff_w = dpsi
            coeff_x = (sphereface_caffe_psi(c, m) - c * dpsi) / norms[i]
            r = math.hypot(coeff_w, coeff_x)
            dx[i] += g / (1 + lam) * (coeff_w / r * w_unit[:, j] + coeff_x / r * x[i]) + g * lam / (1 + lam) * w_unit[:, j]
    # through w_unit = w / ||w||
    wn = np.linalg.norm(kernel, axis=0)
    dw = (dw_unit - w_unit * np.sum(w_unit * dw_unit, axis=0)) / wn
    return dx, dw


def numeric_grad(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar f at a (float64)."""
    a = np.array(a, np.float64)
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        up = f(a)
        a[idx] = old - h
        down = f(a)
        a[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


def at_angle(center: np.ndarray, theta: float, rng: np.random.Generator, norm: float = 1.0) -> np.ndarray:
    """A vector of norm ``norm`` at angle theta from ``center``."""
    c = center / np.linalg.norm(center)
    u = rng.normal(size=c.shape)
    u -= (u @ c) * c
    u /= np.linalg.norm(u)
    return norm * (math.cos(theta) * c + math.sin(theta) * u)


# ---------------------------------------------------------------- adaptive margins (issue 29)
def cross_entropy(logits: np.ndarray, labels) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)) - logits[np.arange(len(logits)), np.asarray(labels)]


def adaface_statistics(x, mean, std, alpha=0.01, h=0.333, training=True, eps=1e-3):
    """AdaFace eq. (12)-(13): z = clip(||x||), moving mean/std (unbiased), z_hat; returns (z_hat, mean, std)."""
    z = np.clip(np.linalg.norm(x, axis=1), 0.001, 100.0)
    if training:
        mean = alpha * z.mean() + (1 - alpha) * mean
        std = alpha * z.std(ddof=1) + (1 - alpha) * std
    return np.clip(h * (z - mean) / (std + eps), -1.0, 1.0), mean, std


def adaface(x, kernel, labels, z_hat, s=64.0, m=0.4, eps=1e-3):
    """AdaFace eq. (11): s (cos(theta + g_angle) - g_add), g_angle = -m z_hat, g_add = m z_hat + m."""
    out = cosines(x, kernel)
    for i, y in enumerate(np.asarray(labels)):
        if y >= 0:
            theta = min(max(math.acos(out[i, y]) - m * z_hat[i], eps), math.pi - eps)
            out[i, y] = math.cos(theta) - (m + m * z_hat[i])
    return s * out


def magface_margin(x, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8):
    a = np.clip(np.linalg.norm(x, axis=1), l_a, u_a)
    return a, (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m


def magface(x, kernel, labels, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, easy_margin=True):
    """MagFace eq. (4)-(5): ArcFace with the margin m(a), linear in the clipped magnitude a."""
    _, margins = magface_margin(x, l_a, u_a, l_m, u_m)
    out = cosines(x, kernel)
    for i, y in enumerate(np.asarray(labels)):
        if y >= 0:
            c, m = out[i, y], margins[i]
            phi = math.cos(math.acos(c) + m)
            if easy_margin:
                out[i, y] = phi if c > 0 else c
            else:
                out[i, y] = phi if c > math.cos(math.pi - m) else c - m * math.sin(math.pi - m)
    return s * out


def magface_regulariser(x, l_a=10.0, u_a=110.0, lambda_g=35.0):
    """lambda_g g(a), g(a) = a / u_a^2 + 1 / a (eq. 6), per example."""
    a, _ = magface_margin(x, l_a, u_a)
    return lambda_g * (a / u_a**2 + 1.0 / a)


def curricular_t(x, kernel, labels, t, momentum=0.01):
    """CurricularFace's t <- momentum * mean target cosine + (1 - momentum) t (rows with a label)."""
    cos = cosines(x, kernel)
    rows = [i for i, y in enumerate(labels) if y >= 0]
    return momentum * np.mean([cos[i, labels[i]] for i in rows]) + (1 - momentum) * t


def curricular_hard(x, kernel, labels, m=0.5):
    """Mask of the hard negatives: cos_j > cos(theta_y + m)."""
    cos = cosines(x, kernel)
    hard = np.zeros_like(cos, bool)
    for i, y in enumerate(labels):
        if y >= 0:
            hard[i] = cos[i] > math.cos(math.acos(cos[i, y]) + m)
            hard[i, y] = False
    return hard


def curricularface(x, kernel, labels, t, hard, s=64.0, m=0.5):
    """CurricularFace eq. (8)-(10): hard negatives cos (t + cos), target ArcFace's (with fallback)."""
    cos = cosines(x, kernel)
    out = np.where(hard, cos * (t + cos), cos)
    arc = arcface(x, kernel, labels, 1.0, m)
    for i, y in enumerate(labels):
        if y >= 0:
            out[i, y] = arc[i, y]
    return s * out


def subcenter_arcface(x, kernel, labels, k=3, s=64.0, m=0.5):
    """Sub-center ArcFace eq. (2): per class the largest of its K sub-centre cosines, then ArcFace."""
    sub = cosines(x, kernel).reshape(len(x), -1, k).max(axis=2)
    out = sub.copy()
    for i, y in enumerate(labels):
        if y >= 0:
            c = sub[i, y]
            out[i, y] = math.cos(math.acos(c) + m) if c > math.cos(math.pi - m) else c - m * math.sin(math.pi - m)
    return s * out
