//! Measures of a churn score against what really happened: how well it ranks (ROC AUC, PR AUC,
//! lift in the top decile), how well it is calibrated when it claims to be a probability (Brier
//! score, expected calibration error, a reliability table), and precision and recall at a
//! threshold. Every function takes `(score, positive)` pairs, higher scores meaning "more likely
//! positive", and is a pure function of them.

use serde::Serialize;

/// One bin of a reliability table: the customers whose score fell in `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin.
    pub lo: f64,
    /// Upper edge of the bin (the last bin includes it).
    pub hi: f64,
    /// Customers in the bin.
    pub n: usize,
    /// Their mean score: the rate the score predicts.
    pub mean_score: f64,
    /// The share of them that were positive: the rate observed.
    pub observed: f64,
}

/// Calibration of a probability: how far its claims are from the rates observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Mean squared difference between the probability and the 0/1 outcome.
    pub brier: f64,
    /// Expected calibration error: the customer-weighted mean |predicted − observed| over the
    /// reliability bins.
    pub ece: f64,
    /// The reliability table, in equal-width bins over [0, 1]; empty bins are left out.
    pub reliability: Vec<ReliabilityBin>,
}

/// Ranking quality of one score over one labelled population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// Customers scored.
    pub n: usize,
    /// Positives among them.
    pub positives: usize,
    /// Area under the ROC curve (ties count one half); `None` without both classes.
    pub roc_auc: Option<f64>,
    /// Area under the precision-recall curve (average precision); `None` without positives.
    pub pr_auc: Option<f64>,
    /// Positive rate among the top-scored tenth, over the positive rate overall; `None`
    /// without positives.
    pub lift_top_decile: Option<f64>,
}

/// Precision and recall of flagging every customer scored at or above a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Flagging {
    /// The threshold.
    pub threshold: f64,
    /// Customers flagged.
    pub flagged: usize,
    /// Flagged positives over flagged; `None` when none is flagged.
    pub precision: Option<f64>,
    /// Flagged positives over positives; `None` without positives.
    pub recall: Option<f64>,
}

/// Returns the ROC AUC: the probability that a random positive scores above a random negative,
/// ties counting one half (the Mann-Whitney statistic over average ranks).
pub fn roc_auc(scored: &[(f64, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let sorted = sorted_ascending(scored);
    // Sum of the positives' ranks (1-based), tied scores sharing their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + 1 + j) as f64 / 2.0;
        let tied_positives = sorted[i..j].iter().filter(|(_, p)| *p).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Returns the average precision: the mean, over the positives, of the precision among the
/// customers scored at least as high as each. Tied scores are taken as one step.
pub fn average_precision(scored: &[(f64, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    if positives == 0 {
        return None;
    }
    let mut sorted = sorted_ascending(scored);
    sorted.reverse();
    let (mut seen, mut hits, mut sum) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let tied_hits = sorted[i..j].iter().filter(|(_, p)| *p).count();
        seen += j - i;
        hits += tied_hits;
        sum += tied_hits as f64 * hits as f64 / seen as f64;
        i = j;
    }
    Some(sum / positives as f64)
}

/// Returns the positive rate among the highest-scored `share` of customers over the rate
/// overall. Ties at the cut are shared pro rata, so the answer does not depend on input order.
pub fn lift(scored: &[(f64, bool)], share: f64) -> Option<f64> {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    if positives == 0 || scored.is_empty() || !(share > 0.0 && share <= 1.0) {
        return None;
    }
    let mut sorted = sorted_ascending(scored);
    sorted.reverse();
    let take = (share * scored.len() as f64).max(1.0);
    let (mut taken, mut hits) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() && taken < take {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let group = (j - i) as f64;
        let group_hits = sorted[i..j].iter().filter(|(_, p)| *p).count() as f64;
        let part = (take - taken).min(group) / group;
        taken += group * part;
        hits += group_hits * part;
        i = j;
    }
    let overall = positives as f64 / scored.len() as f64;
    Some(hits / taken / overall)
}

/// Returns the ranking measures of a score.
pub fn ranking(scored: &[(f64, bool)]) -> Ranking {
    Ranking {
        n: scored.len(),
        positives: scored.iter().filter(|(_, p)| *p).count(),
        roc_auc: roc_auc(scored),
        pr_auc: average_precision(scored),
        lift_top_decile: lift(scored, 0.1),
    }
}

/// Returns the calibration of a probability over `bins` equal-width bins (at least one);
/// scores outside [0, 1] are clamped into it.
pub fn calibration(scored: &[(f64, bool)], bins: usize) -> Calibration {
    let bins = bins.max(1);
    let mut n = vec![0usize; bins];
    let mut score_sum = vec![0.0; bins];
    let mut hits = vec![0usize; bins];
    let mut squared = 0.0;
    for &(score, positive) in scored {
        let p = score.clamp(0.0, 1.0);
        let outcome = if positive { 1.0 } else { 0.0 };
        squared += (p - outcome) * (p - outcome);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        n[b] += 1;
        score_sum[b] += p;
        hits[b] += usize::from(positive);
    }
    let total = scored.len().max(1) as f64;
    let reliability: Vec<ReliabilityBin> = (0..bins)
        .filter(|b| n[*b] > 0)
        .map(|b| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            n: n[b],
            mean_score: score_sum[b] / n[b] as f64,
            observed: hits[b] as f64 / n[b] as f64,
        })
        .collect();
    let ece = reliability
        .iter()
        .map(|r| r.n as f64 * (r.mean_score - r.observed).abs())
        .sum::<f64>()
        / total;
    Calibration {
        brier: squared / total,
        ece,
        reliability,
    }
}

/// Returns precision and recall of flagging every score at or above `threshold`.
pub fn flagging(scored: &[(f64, bool)], threshold: f64) -> Flagging {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    let flagged = scored.iter().filter(|(s, _)| *s >= threshold).count();
    let hits = scored.iter().filter(|(s, p)| *p && *s >= threshold).count();
    Flagging {
        threshold,
        flagged,
        precision: (flagged > 0).then(|| hits as f64 / flagged as f64),
        recall: (positives > 0).then(|| hits as f64 / positives as f64),
    }
}

fn sorted_ascending(scored: &[(f64, bool)]) -> Vec<(f64, bool)> {
    let mut sorted: Vec<(f64, bool)> = scored
        .iter()
        .map(|(s, p)| (if s.is_nan() { f64::NEG_INFINITY } else { *s }, *p))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn a_perfect_ranking_has_auc_one_and_a_reversed_one_zero() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(roc_auc(&perfect), Some(1.0));
        assert_eq!(average_precision(&perfect), Some(1.0));
        let reversed = perfect.map(|(s, p)| (s, !p));
        assert_eq!(roc_auc(&reversed), Some(0.0));
    }

    #[test]
    fn auc_counts_ties_as_one_half() {
        // Every pair tied: AUC 0.5 whatever the labels.
        let tied = [(0.5, true), (0.5, false), (0.5, false), (0.5, true)];
        assert_eq!(roc_auc(&tied), Some(0.5));
        // Pairs (positive, negative): (0.8, 0.5) win, (0.8, 0.3) win, (0.5, 0.5) tie,
        // (0.5, 0.3) win: 3.5 of 4.
        let mixed = [(0.8, true), (0.5, true), (0.5, false), (0.3, false)];
        assert!(close(roc_auc(&mixed).unwrap(), 3.5 / 4.0));
    }

    #[test]
    fn auc_needs_both_classes() {
        assert_eq!(roc_auc(&[(0.1, true), (0.2, true)]), None);
        assert_eq!(roc_auc(&[]), None);
        assert_eq!(average_precision(&[(0.1, false)]), None);
    }

    #[test]
    fn average_precision_is_the_mean_precision_at_each_positive() {
        // Ranked: P N P N: precision 1/1 at the first positive, 2/3 at the second.
        let s = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        assert!(close(
            average_precision(&s).unwrap(),
            (1.0 + 2.0 / 3.0) / 2.0
        ));
    }

    #[test]
    fn lift_compares_the_top_share_with_the_base_rate() {
        // 20 customers, 5 positive; the top two (10%) are both positive: lift 1 / 0.25 = 4.
        let mut s: Vec<(f64, bool)> = (0..20).map(|i| (f64::from(i), false)).collect();
        for i in [19, 18, 10, 5, 2] {
            s[i].1 = true;
        }
        assert!(close(lift(&s, 0.1).unwrap(), 4.0));
        // A constant score has no lift.
        let flat: Vec<(f64, bool)> = s.iter().map(|(_, p)| (0.5, *p)).collect();
        assert!(close(lift(&flat, 0.1).unwrap(), 1.0));
    }

    #[test]
    fn a_calibrated_score_has_small_ece_and_an_overconfident_one_large() {
        // Scores of 0.25 with one positive in four, 0.75 with three in four: exact.
        let mut s = Vec::new();
        for i in 0..400 {
            s.push((0.25, i % 4 == 0));
            s.push((0.75, i % 4 != 0));
        }
        let c = calibration(&s, 10);
        assert!(c.ece < 1e-12, "{c:?}");
        assert!(close(c.brier, 0.1875));
        assert_eq!(c.reliability.len(), 2);
        let overconfident: Vec<(f64, bool)> = s
            .iter()
            .map(|(p, y)| (if *p > 0.5 { 1.0 } else { 0.0 }, *y))
            .collect();
        assert!(close(calibration(&overconfident, 10).ece, 0.25));
    }

    #[test]
    fn flagging_counts_precision_and_recall_at_a_threshold() {
        let s = [(0.9, true), (0.6, false), (0.55, true), (0.2, true)];
        let f = flagging(&s, 0.5);
        assert_eq!(f.flagged, 3);
        assert!(close(f.precision.unwrap(), 2.0 / 3.0));
        assert!(close(f.recall.unwrap(), 2.0 / 3.0));
        assert_eq!(flagging(&s, 0.95).precision, None);
    }
}
