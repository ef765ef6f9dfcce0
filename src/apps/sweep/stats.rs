//! The statistics of a sweep, pure Rust: per weight vector the mean implicit reward of each
//! expert over the prompts with its standard error, the mean length, and the Pareto set of
//! the mean reward vectors.

use serde::Serialize;

/// A mean over prompts and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// Standard error of the mean, s/√n with the sample standard deviation s (n − 1 in its
    /// denominator); `None` below two values.
    pub se: Option<f64>,
}

/// The mean of `xs` and its standard error; `None` for no values. Two passes (the mean,
/// then the squared deviations from it), which keeps the variance accurate when the values
/// are large and close together.
pub fn estimate(xs: &[f64]) -> Option<Estimate> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let se = (xs.len() > 1).then(|| {
        let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (n - 1.0) / n).sqrt()
    });
    Some(Estimate { mean, se })
}

/// Whether `a` dominates `b`: at least as large in every coordinate and larger in one.
/// Any comparison with NaN is false.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x >= y) && a.iter().zip(b).any(|(x, y)| x > y)
}

/// For each point, whether it is in the Pareto set: no other point dominates it (higher is
/// better in every coordinate). Equal points do not dominate each other, so both stay; a
/// point with a coordinate that is not finite is never in the set and dominates nothing.
///
/// Points are visited in decreasing lexicographic order, where any point that dominates
/// another comes first; each is compared only with the set found so far, which suffices
/// because dominance is transitive.
pub fn pareto_set(points: &[Vec<f64>]) -> Vec<bool> {
    let mut order: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].iter().all(|x| x.is_finite())).collect();
    order.sort_by(|&i, &j| {
        points[j]
            .iter()
            .zip(&points[i])
            .map(|(a, b)| a.total_cmp(b))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut set: Vec<usize> = Vec::new();
    for i in order {
        if !set.iter().any(|&s| dominates(&points[s], &points[i])) {
            set.push(i);
        }
    }
    let mut out = vec![false; points.len()];
    set.into_iter().for_each(|i| out[i] = true);
    out
}

/// What one generation adds to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Implicit reward of each expert, in recipe order.
    pub rewards: Vec<f64>,
    /// Generated tokens.
    pub tokens: usize,
}

/// One row of the sweep table: the statistics of the generations at one weight vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub weights: Vec<f64>,
    /// Mean implicit reward of each expert over the prompts, in recipe order (`None` when
    /// no generation succeeded).
    pub rewards: Vec<Option<f64>>,
    /// Their standard errors (`None` below two generations).
    pub rewards_se: Vec<Option<f64>>,
    /// Mean generated tokens.
    pub mean_tokens: Option<f64>,
    /// Generations that went into the means, and generations that failed.
    pub generations: usize,
    pub errors: usize,
    /// In the Pareto set of the rows' mean rewards.
    pub pareto: bool,
}

/// The table: one row per weight vector from its samples and error count, with the Pareto
/// set over the rows' mean rewards.
pub fn table(weights: &[Vec<f64>], samples: &[Vec<Sample>], errors: &[usize]) -> Vec<Row> {
    let experts = weights.first().map_or(0, Vec::len);
    let mut rows: Vec<Row> = weights
        .iter()
        .zip(samples)
        .zip(errors)
        .map(|((w, s), &errors)| {
            let per_expert: Vec<Option<Estimate>> = (0..experts)
                .map(|k| estimate(&s.iter().map(|x| x.rewards[k]).collect::<Vec<_>>()))
                .collect();
            let tokens = estimate(&s.iter().map(|x| x.tokens as f64).collect::<Vec<_>>());
            Row {
                weights: w.clone(),
                rewards: per_expert.iter().map(|e| e.map(|e| e.mean)).collect(),
                rewards_se: per_expert.iter().map(|e| e.and_then(|e| e.se)).collect(),
                mean_tokens: tokens.map(|t| t.mean),
                generations: s.len(),
                errors,
                pareto: false,
            }
        })
        .collect();
    let points: Vec<Vec<f64>> =
        rows.iter().map(|r| r.rewards.iter().map(|x| x.unwrap_or(f64::NAN)).collect()).collect();
    for (row, on) in rows.iter_mut().zip(pareto_set(&points)) {
        row.pareto = on;
    }
    rows
}

/// The table as CSV: `w_<expert>…, reward_<expert>, se_<expert>…, mean_tokens, generations,
/// errors, pareto`; a value that does not exist is an empty cell.
pub fn csv(experts: &[String], rows: &[Row]) -> String {
    let mut header: Vec<String> = experts.iter().map(|n| format!("w_{n}")).collect();
    for n in experts {
        header.push(format!("reward_{n}"));
        header.push(format!("se_{n}"));
    }
    header.extend(["mean_tokens", "generations", "errors", "pareto"].map(String::from));
    let cell = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x}"));
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let mut cells: Vec<String> = r.weights.iter().map(|w| format!("{w}")).collect();
        for (m, se) in r.rewards.iter().zip(&r.rewards_se) {
            cells.push(cell(*m));
            cells.push(cell(*se));
        }
        cells.push(cell(r.mean_tokens));
        cells.push(r.generations.to_string());
        cells.push(r.errors.to_string());
        cells.push(r.pareto.to_string());
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sample::Rng;

    #[test]
    fn estimates_match_closed_forms() {
        // 1..=n: mean (n+1)/2, sample variance n(n+1)/12, so SE = √((n+1)/12).
        for n in [2usize, 3, 10, 101] {
            let xs: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            let e = estimate(&xs).unwrap();
            assert!((e.mean - (n as f64 + 1.0) / 2.0).abs() < 1e-12);
            let want = ((n as f64 + 1.0) / 12.0).sqrt();
            assert!((e.se.unwrap() - want).abs() < 1e-12 * want, "n={n}");
        }
        // Two values a, b: SE = |a − b| / 2.
        let e = estimate(&[3.0, -1.0]).unwrap();
        assert_eq!((e.mean, e.se), (1.0, Some(2.0)));
        assert_eq!(estimate(&[5.0]), Some(Estimate { mean: 5.0, se: None }));
        assert_eq!(estimate(&[]), None);
        // A large offset does not swamp a small spread: {1e9 + 1, 1e9 + 2, 1e9 + 3}, SE 1/√3.
        let e = estimate(&[1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0]).unwrap();
        assert!((e.se.unwrap() - (1.0f64 / 3.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn estimates_match_a_direct_computation_on_random_samples() {
        let mut rng = Rng::new(7);
        for n in 2..40 {
            let xs: Vec<f64> = (0..n).map(|_| (rng.next_f64() - 0.3) * 50.0).collect();
            // Textbook one-pass form: s² = (Σx² − (Σx)²/n) / (n − 1).
            let (s1, s2) = xs.iter().fold((0.0, 0.0), |(a, b), x| (a + x, b + x * x));
            let var = (s2 - s1 * s1 / n as f64) / (n as f64 - 1.0);
            let e = estimate(&xs).unwrap();
            assert!((e.mean - s1 / n as f64).abs() < 1e-12);
            assert!((e.se.unwrap() - (var / n as f64).sqrt()).abs() < 1e-9, "n={n}");
        }
    }

    /// The definition, applied to every pair.
    fn brute_force(points: &[Vec<f64>]) -> Vec<bool> {
        (0..points.len())
            .map(|i| {
                points[i].iter().all(|x| x.is_finite())
                    && !(0..points.len()).any(|j| {
                        j != i
                            && points[j].iter().all(|x| x.is_finite())
                            && (0..points[i].len()).all(|k| points[j][k] >= points[i][k])
                            && (0..points[i].len()).any(|k| points[j][k] > points[i][k])
                    })
            })
            .collect()
    }

    #[test]
    fn pareto_set_equals_brute_force_dominance() {
        let mut rng = Rng::new(42);
        for case in 0..600 {
            let dims = 1 + case % 4;
            let n = rng.next_u64() as usize % 40;
            // Few distinct values in half the cases, so that ties and duplicates occur.
            let levels = if case % 2 == 0 { 4.0 } else { 1e6 };
            let points: Vec<Vec<f64>> = (0..n)
                .map(|_| {
                    (0..dims)
                        .map(|_| match rng.next_u64() % 50 {
                            0 if case % 3 == 0 => f64::NAN,
                            _ => (rng.next_f64() * levels).floor() - levels / 2.0,
                        })
                        .collect()
                })
                .collect();
            let got = pareto_set(&points);
            assert_eq!(got, brute_force(&points), "case {case}: {points:?}");
            if points.iter().any(|p| p.iter().all(|x| x.is_finite())) {
                assert!(got.iter().any(|&b| b), "a finite point set has a non-empty front");
            }
        }
    }

    #[test]
    fn pareto_set_of_a_known_front() {
        // A trade-off curve, a point under it, a duplicated end point and a point just
        // beyond the end that the end dominates.
        let p = vec![
            vec![0.0, 1.0],
            vec![0.25, 0.75],
            vec![0.1, 0.5],
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![0.9, -0.1],
        ];
        assert_eq!(pareto_set(&p), vec![true, true, false, true, true, false]);
    }

    #[test]
    fn table_rows_and_csv() {
        let weights = vec![vec![0.0, 1.0], vec![0.5, 0.5], vec![1.0, 0.0]];
        let s = |a: f64, b: f64, t: usize| Sample { rewards: vec![a, b], tokens: t };
        let samples = vec![
            vec![s(1.0, 4.0, 10), s(3.0, 6.0, 20)],
            vec![s(0.0, 2.0, 5), s(2.0, 2.0, 7)],
            vec![],
        ];
        let rows = table(&weights, &samples, &[0, 1, 2]);
        assert_eq!(rows[0].rewards, vec![Some(2.0), Some(5.0)]);
        assert_eq!(rows[0].rewards_se, vec![Some(1.0), Some(1.0)]);
        assert_eq!(rows[0].mean_tokens, Some(15.0));
        assert_eq!(rows[1].rewards_se, vec![Some(1.0), Some(0.0)]);
        assert!(rows[0].pareto && !rows[1].pareto && !rows[2].pareto, "(1,2) < (2,5)");
        assert_eq!((rows[2].generations, rows[2].errors, rows[2].mean_tokens), (0, 2, None));
        let names = vec!["a".to_string(), "b".to_string()];
        let text = csv(&names, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "w_a,w_b,reward_a,se_a,reward_b,se_b,mean_tokens,generations,errors,pareto"
        );
        assert_eq!(lines[1], "0,1,2,1,5,1,15,2,0,true");
        assert_eq!(lines[3], "1,0,,,,,,0,2,false");
    }
}
