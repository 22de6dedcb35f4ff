//! Node-disjoint batch colouring for parallel relationship writes, and [`TxnObserver`], a hook that
//! sees the node keys of every transaction (for tests and diagnostics).
//!
//! Nodes are hashed into `k` groups (`k` = [`GraphConfig::workers`](crate::GraphConfig::workers)).
//! A relationship row `(a, b)` goes to bucket `(group(a), group(b))`. [`colour_rounds`] orders the
//! buckets into rounds in which no two buckets share a group, so the transactions of one round touch
//! disjoint node sets; rounds run one after another (the scheme of neo4j-parallel-spark-loader). The
//! writer also holds one lock per (node kind, group) for the life of each transaction, taken in a
//! fixed order, so concurrent calls (several pipeline workers, node and relationship writes at once)
//! never put one node into two concurrent transactions either, and never deadlock on those locks.

/// The rounds of buckets for `k` node groups. Each bucket `(i, j)` is (start group, end group).
///
/// - `same_kind = false` (bipartite: start and end nodes are different node kinds, so their groups
///   are different node sets): `k` rounds of `k` buckets, round `r` = `(i, (i + r) mod k)` for every
///   `i` — each start group and each end group once per round; all `k²` buckets covered.
/// - `same_kind = true` (monopartite: both ends are nodes of one kind, so group `g` on either side
///   is the same node set): buckets are unordered, `(min, max)`; round `r` = the pairs `{i, j}` with
///   `i + j ≡ r (mod k)` — each group appears in exactly one bucket of a round; all `k(k+1)/2`
///   buckets covered in `k` rounds.
///
/// ```
/// let rounds = etlkit_neo4j::colour_rounds(3, true);
/// assert_eq!(rounds, vec![vec![(0, 0), (1, 2)], vec![(0, 1), (2, 2)], vec![(0, 2), (1, 1)]]);
/// ```
pub fn colour_rounds(k: usize, same_kind: bool) -> Vec<Vec<(usize, usize)>> {
    (0..k)
        .map(|r| {
            let mut round: Vec<(usize, usize)> = (0..k)
                .filter_map(|i| {
                    if same_kind {
                        let j = (r + k - i) % k;
                        (i <= j).then_some((i, j))
                    } else {
                        Some((i, (i + r) % k))
                    }
                })
                .collect();
            round.sort_unstable();
            round
        })
        .collect()
}

/// The bucket of a relationship row whose start node is in group `a` and end node in group `b`.
pub(crate) fn bucket(a: usize, b: usize, same_kind: bool) -> (usize, usize) {
    if same_kind { (a.min(b), a.max(b)) } else { (a, b) }
}

/// One node a transaction writes or matches: its kind (the labels as written in Cypher, e.g.
/// `` :`Learner` ``) and its key values (rendered).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// The node kind: its labels, escaped as in the generated Cypher.
    pub kind: String,
    /// The key values, rendered with `Debug`.
    pub key: String,
}

/// One write transaction as the [`TxnObserver`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct TxnInfo<'a> {
    /// A number unique within the writer.
    pub id: u64,
    /// The mapping written, e.g. `[:HAS_SKILL]` or `(:Skill)`.
    pub spec: &'a str,
    /// Every node the transaction merges (node writes) or matches (both ends of relationship
    /// writes), each once.
    pub nodes: &'a [NodeKey],
}

/// Sees every write transaction of a [`GraphWriter`](crate::GraphWriter): `begin` once its node locks
/// are held and before its first attempt, `end` after its last attempt (committed or failed), still
/// holding the locks. Two transactions are concurrent exactly when one begins between the other's
/// `begin` and `end`. Set with [`GraphWriter::with_observer`](crate::GraphWriter::with_observer);
/// computing the key sets costs time, so use it in tests and diagnostics.
pub trait TxnObserver: Send + Sync {
    /// A transaction is about to run.
    fn begin(&self, txn: &TxnInfo<'_>);
    /// The transaction is over.
    fn end(&self, txn: &TxnInfo<'_>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_round_is_node_disjoint_and_every_bucket_is_scheduled_once() {
        for k in 1..=9 {
            for same in [false, true] {
                let rounds = colour_rounds(k, same);
                assert_eq!(rounds.len(), k);
                let mut all = HashSet::new();
                for round in &rounds {
                    let (mut starts, mut ends, mut groups) = (HashSet::new(), HashSet::new(), HashSet::new());
                    for &(i, j) in round {
                        assert!(all.insert((i, j)), "k={k} same={same}: bucket ({i},{j}) twice");
                        if same {
                            assert!(groups.insert(i), "k={k}: group {i} twice in {round:?}");
                            assert!(i == j || groups.insert(j), "k={k}: group {j} twice in {round:?}");
                        } else {
                            assert!(starts.insert(i) && ends.insert(j), "k={k}: {round:?}");
                        }
                    }
                }
                let expected = if same { k * (k + 1) / 2 } else { k * k };
                assert_eq!(all.len(), expected, "k={k} same={same}");
                for a in 0..k {
                    for b in 0..k {
                        assert!(all.contains(&bucket(a, b, same)), "k={k}: ({a},{b}) unscheduled");
                    }
                }
            }
        }
    }
}
