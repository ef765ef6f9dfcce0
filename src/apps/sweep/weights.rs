//! The weight vectors a sweep visits: a grid for two experts, the simplex lattice for any
//! number, or an explicit list; and the key that identifies a vector in stored generations.
//! Pure Rust.

use crate::error::invalid;
use anyhow::Result;

/// The most weight vectors one sweep may visit.
pub const MAX_POINTS: usize = 10_000;

/// Weight vectors from `--grid A:B:STEP` (two experts: (w, 1 − w) for w = A, A+STEP, …, B).
pub fn grid(spec: &str) -> Result<Vec<Vec<f64>>> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [a, b, step] = parts[..] else {
        return Err(invalid("grid", "takes START:END:STEP, e.g. 0:1:0.1"));
    };
    let num = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| invalid("grid", format!("'{s}' is not a number")))
    };
    let (a, b, step) = (num(a)?, num(b)?, num(step)?);
    if step <= 0.0 || b < a {
        return Err(invalid("grid", "needs START ≤ END and STEP > 0"));
    }
    let n = ((b - a) / step + 1e-9).floor();
    if n >= MAX_POINTS as f64 {
        return Err(invalid("grid", format!("gives {} points; use a larger STEP", n + 1.0)));
    }
    let n = n as usize;
    Ok((0..=n).map(|i| a + i as f64 * step).map(|w| vec![round(w), round(1.0 - w)]).collect())
}

/// Every weight vector on the simplex of `experts` dimensions with coordinates in steps of
/// 1/n (a simplex lattice).
pub fn simplex(experts: usize, n: usize) -> Result<Vec<Vec<f64>>> {
    if experts == 0 || n == 0 {
        return Err(invalid("simplex", "needs N ≥ 1 and at least one expert"));
    }
    // C(n + experts − 1, experts − 1) points: refuse early, before enumerating them.
    let mut count = 1.0f64;
    for k in 1..experts {
        count = count * (n + k) as f64 / k as f64;
    }
    if count > MAX_POINTS as f64 {
        return Err(invalid(
            "simplex",
            format!("{n} gives {count:.0} points for {experts} experts; use a smaller N"),
        ));
    }
    let mut out = Vec::new();
    let mut counts = vec![0usize; experts];
    fn fill(i: usize, left: usize, n: usize, counts: &mut Vec<usize>, out: &mut Vec<Vec<f64>>) {
        if i + 1 == counts.len() {
            counts[i] = left;
            out.push(counts.iter().map(|&c| round(c as f64 / n as f64)).collect());
            return;
        }
        for c in (0..=left).rev() {
            counts[i] = c;
            fill(i + 1, left - c, n, counts, out);
        }
    }
    fill(0, n, n, &mut counts, &mut out);
    Ok(out)
}

/// An explicit list: `0.2,0.8;0.5,0.5`.
pub fn list(spec: &str) -> Result<Vec<Vec<f64>>> {
    let out: Vec<Vec<f64>> = spec
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            crate::pipeline::recipe::parse_weights(s)
                .map_err(|e| invalid("list", format!("'{}': {e}", s.trim())))
        })
        .collect::<Result<_>>()?;
    if out.is_empty() {
        return Err(invalid("list", "holds no weight vector; give e.g. \"0.2,0.8;0.5,0.5\""));
    }
    if out.len() > MAX_POINTS {
        return Err(invalid("list", format!("holds more than {MAX_POINTS} weight vectors")));
    }
    Ok(out)
}

/// The key of a weight vector: its coordinates to 1e-9. Stored generations are matched to
/// a sweep's weight vectors by it, so that a value read back from JSON a last digit off
/// still finds its vector.
pub fn key(weights: &[f64]) -> Vec<i64> {
    weights.iter().map(|w| (w * 1e9).round() as i64).collect()
}

/// Checks that no two weight vectors share a key; `what` names the flag they came from.
pub fn check_distinct(weights: &[Vec<f64>], what: &str) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, w) in weights.iter().enumerate() {
        if let Some(j) = seen.insert(key(w), i) {
            return Err(invalid(
                what,
                format!(
                    "gives the weight vector {w:?} twice (numbers {} and {}); list each once",
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_lattices_and_lists() {
        let g = grid("0:1:0.25").unwrap();
        assert_eq!(
            g,
            vec![
                vec![0.0, 1.0],
                vec![0.25, 0.75],
                vec![0.5, 0.5],
                vec![0.75, 0.25],
                vec![1.0, 0.0]
            ]
        );
        assert_eq!(grid("0:1:0.1").unwrap().len(), 11);
        assert!(grid("0:1").is_err() && grid("1:0:0.1").is_err() && grid("0:1:0").is_err());
        assert!(grid("0:1:1e-9").is_err() && grid("0:NaN:0.1").is_err());
        let s = simplex(3, 2).unwrap();
        assert_eq!(s.len(), 6, "C(2+2, 2) points");
        assert!(s
            .iter()
            .all(|w| (w.iter().sum::<f64>() - 1.0).abs() < 1e-9 && w.iter().all(|x| *x >= 0.0)));
        assert_eq!(simplex(2, 4).unwrap().len(), 5);
        // C(n + 2, 2) for three experts: 10 000 is refused, ≤ 10 000 accepted.
        assert!(simplex(3, 140).is_err() && simplex(3, 139).is_ok());
        assert_eq!(list("0.2,0.8; 0.5,0.5").unwrap(), vec![vec![0.2, 0.8], vec![0.5, 0.5]]);
        let e = format!("{:#}", list("0.2,x").unwrap_err());
        assert!(e.contains("list") && e.contains("'x'"), "{e}");
        assert!(list(" ; ").is_err());
    }

    #[test]
    fn keys_match_to_1e9_and_duplicates_are_refused() {
        assert_eq!(key(&[0.1, 0.9]), key(&[0.1 + 1e-15, 0.9 - 1e-15]));
        assert_ne!(key(&[0.1, 0.9]), key(&[0.1 + 2e-9, 0.9]));
        assert!(check_distinct(&grid("0:1:0.1").unwrap(), "grid").is_ok());
        let e = check_distinct(&list("0.5,0.5;0.2,0.8;0.5,0.5").unwrap(), "list").unwrap_err();
        assert!(format!("{e:#}").contains("numbers 1 and 3"), "{e:#}");
    }
}
