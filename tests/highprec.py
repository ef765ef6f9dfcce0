#!/usr/bin/env python3
"""High-precision reference for MOD scores (80 significant digits, mpmath).

Reads one JSON case per line on stdin: {"div": NAME, "w": [...], "lp_ref": [...],
"lp": [[...], ...]} (normalised log-probabilities) and writes one JSON line per case:
{"eq6": [...], "logp": [...]}: log(π_ref·h(Σ w_i g(r_i))) at Z = 0, and the normalised
log p(v) = log(π_ref·h(u − Z)) with Σ p = 1, Z found by bisection at 80 digits. Only the
textbook formulas of g and h are used.
"""
import json
import sys

from mpmath import mp, mpf, exp, log, lambertw

mp.dps = 80


def g(div, x):
    if div == "reverse-kl":
        return log(x) + 1
    if div == "forward-kl":
        return -1 / x
    if div == "jsd":
        return log(2 * x / (1 + x))
    if div == "jeffreys":
        return log(x) - 1 / x + 1
    a = mpf(div.split(":")[1])
    return (1 - x ** (-a)) / a


def pole(div):
    if div == "forward-kl":
        return mpf(0)
    if div == "jsd":
        return log(mpf(2))
    if div.startswith("alpha:"):
        return 1 / mpf(div.split(":")[1])
    return None


def log_h(div, u):
    if div == "reverse-kl":
        return u - 1
    if div == "forward-kl":
        return log(-1 / u)
    if div == "jsd":
        return log(exp(u) / (2 - exp(u)))
    if div == "jeffreys":
        return -log(lambertw(exp(1 - u)).real)
    a = mpf(div.split(":")[1])
    return log((1 - a * u) ** (-1 / a))


def solve(div, lp_ref, u):
    def total(z):
        return sum(exp(a + log_h(div, ui - z)) for a, ui in zip(lp_ref, u))

    p = pole(div)
    if p is None:
        lo, hi = mpf(-50), mpf(50)
        while total(lo) < 1:
            lo *= 2
        while total(hi) > 1:
            hi *= 2
    else:
        umax = max(u)
        lo = umax - p
        hi = lo + 1
        while total(hi) > 1:
            hi = lo + (hi - lo) * 2
    # Bisection on Z; near a pole the gap to it spans many decades, so bisect its log.
    if p is not None:
        base = lo
        llo, lhi = mpf(-160), log(hi - base)
        for _ in range(600):
            mid = (llo + lhi) / 2
            if total(base + exp(mid)) > 1:
                llo = mid
            else:
                lhi = mid
        return base + exp((llo + lhi) / 2)
    for _ in range(400):
        mid = (lo + hi) / 2
        if total(mid) > 1:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def main():
    for line in sys.stdin:
        case = json.loads(line)
        div = case["div"]
        w = [mpf(x) for x in case["w"]]
        lp_ref = [mpf(x) for x in case["lp_ref"]]
        lp = [[mpf(x) for x in row] for row in case["lp"]]
        n = len(lp_ref)
        if div == "reverse-kl":
            s = sum(w)
            raw = [(1 - s) * lp_ref[v] + sum(wi * row[v] for wi, row in zip(w, lp)) for v in range(n)]
            m = max(raw)
            z = m + log(sum(exp(x - m) for x in raw))
            eq6 = raw
            logp = [x - z for x in raw]
        else:
            u = [sum(wi * g(div, exp(row[v] - lp_ref[v])) for wi, row in zip(w, lp)) for v in range(n)]
            eq6 = [lp_ref[v] + log_h(div, u[v]) for v in range(n)]
            z = solve(div, lp_ref, u)
            logp = [lp_ref[v] + log_h(div, u[v] - z) for v in range(n)]
        print(json.dumps({"eq6": [float(x) for x in eq6], "logp": [float(x) for x in logp]}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
