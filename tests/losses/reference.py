"""Independent float64 NumPy references (loop form) of the losses."""
from __future__ import annotations

import numpy as np


def dist(a: np.ndarray, b: np.ndarray, squared: bool) -> float:
    d2 = float(np.sum((a - b) ** 2))
    return d2 if squared else float(np.sqrt(d2))


def semihard(labels, x, margin, squared=True) -> float:
    total, count = 0.0, 0
    n = len(labels)
    for a in range(n):
        negs = [k for k in range(n) if labels[k] != labels[a]]
        if not negs:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = dist(x[a], x[p], squared)
            d_an = [dist(x[a], x[k], squared) for k in negs]
            harder = [d for d in d_an if d > d_ap]
            chosen = min(harder) if harder else max(d_an)
            total += max(d_ap - chosen + margin, 0.0)
            count += 1
    return total / count if count else 0.0


def batch_hard(labels, x, margin, squared=False, soft=False) -> float:
    losses = []
    n = len(labels)
    for a in range(n):
        pos = [dist(x[a], x[k], squared) for k in range(n) if k != a and labels[k] == labels[a]]
        neg = [dist(x[a], x[k], squared) for k in range(n) if labels[k] != labels[a]]
        if pos and neg:
            gap = max(pos) - min(neg)
            losses.append(np.log1p(np.exp(gap)) if soft else max(gap + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def dsa(x, agents, own, num_classes, lam, alpha, beta, considered) -> float:
    total = 0.0
    for i in range(len(x)):
        d_own = np.sum((x[i] - agents[own[i]]) ** 2) / 4
        push = 0.0
        for j in considered:
            if j == own[i] or (own[i] >= num_classes and j >= num_classes):
                continue
            push += max(alpha * d_own - np.sum((x[i] - agents[j]) ** 2) / 4 + beta, 0.0)
        total += lam * d_own + (1 - lam) * push / len(considered)
    return total / len(x)


def lsr(labels, logits, sequence_ids) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    out = np.zeros(len(labels))
    for i in range(len(labels)):
        if sequence_ids[i] >= 0:
            out[i] = -np.mean(log_p[i], axis=-1).sum()
        else:
            out[i] = -np.sum(log_p[i][..., labels[i]])
    return out
